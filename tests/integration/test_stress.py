"""Stress (issue "Robustness"): 16 workers at once, 8 threads doing random
os.pread and 8 forked processes doing random os.pread and
np.load(mmap_mode='r') slice reads, for STRESS_SECONDS over five members
(stored and deflate in an .npz, plus an .npy.gz; ~190 MB of data) mounted
with -o cache_size=4M, far smaller than the data, while the kernel page
cache is dropped every 0.5 s so the reads keep reaching the daemon.

Asserts: zero mismatches and zero errors; every worker finishes within its
timeout (no deadlock); and each daemon's peak RSS (VmHWM) stays within

    cache_size + 64 MiB + index memory

where index memory = (uncompressed deflate bytes / spacing + 1 per member)
x 33 KiB (one 32 KiB window per access point plus its record). The 64 MiB
covers the daemon's baseline (libraries, libfuse's per-thread request
buffers of ~1 MiB for up to 16 threads, thread stacks actually touched) and
the "few chunks more" that reads in flight may hold beyond cache_size; a
daemon whose cache bound leaks (e.g. chunks never freed, or decoders keeping
whole outputs) exceeds it quickly with ~190 MB going through a 4 MiB cache.
"""

import multiprocessing
import os
import random
import threading
import time
import zipfile
import gzip
from collections import Counter

import numpy as np
import pytest

from conftest import npy_bytes
import subprocess


def _sanitized(binary):
    """Is the daemon built with ASan/TSan (linked to their runtimes)?"""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    return any(lib in out.stdout for lib in ("libasan", "libtsan"))
from robust_util import assert_alive_pid, drop_caches, emit

STRESS_SECONDS = 20.0
WORKER_SLACK = 60.0           # seconds past the deadline before a worker counts as hung
CACHE = 4 << 20
SPACING = 1 << 20
T = Counter()


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    emit(request.config,
         f"[test_stress] reads done: {T['reads']} (pread {T['pread']}, mmap slices {T['mmap']}), "
         f"bytes checked: {T['bytes'] / 1e6:.0f} MB, mismatches: {T['mismatch']}, "
         f"errors: {T['errors']}; page cache drops: {T['drops']}; daemon peak RSS: {T.get('rss', 'n/a')}")


def _arrays():
    i32 = np.arange(16_000_000, dtype=np.int32)
    return {
        # stored: pseudo-random doubles (an offset slip cannot go unnoticed)
        "st.npy": np.random.default_rng(1).standard_normal(6_000_000),
        # deflate, compressible but position-unique
        "df.npy": i32 ^ ((i32 >> 3) & 0xFF),
        "df2d.npy": np.asfortranarray(
            (np.arange(2000 * 4000, dtype=np.float32) % 9973).reshape(2000, 4000)),
        "small.npy": np.arange(250_000, dtype=np.int32) * 3,
        "g.npy": (np.arange(6_000_000, dtype=np.int64) * 2654435761) % 1000003,
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("stress")
    arrs = _arrays()
    npz = d / "stress.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("st.npy", npy_bytes(arrs["st.npy"]), compress_type=zipfile.ZIP_STORED)
        for k in ("df.npy", "df2d.npy", "small.npy"):
            zf.writestr(k, npy_bytes(arrs[k]), compress_type=zipfile.ZIP_DEFLATED,
                        compresslevel=1)
    gz = d / "g.npy.gz"
    with open(gz, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as f:
        f.write(npy_bytes(arrs["g.npy"]))
    truth = {k: npy_bytes(v) for k, v in arrs.items()}
    return npz, gz, arrs, truth


def _worker(seed, paths, truth, arrs, deadline, use_mmap):
    """Random reads until deadline; returns a Counter."""
    rnd = random.Random(seed)
    c = Counter()
    names = sorted(paths)
    maps = {}
    fds = {n: os.open(paths[n], os.O_RDONLY) for n in names}
    try:
        while time.monotonic() < deadline:
            n = rnd.choice(names)
            want_all = truth[n]
            if use_mmap and rnd.random() < 0.5:
                if n not in maps:
                    maps[n] = np.load(paths[n], mmap_mode="r")
                m, a = maps[n], arrs[n]
                flat_m = m.reshape(-1, order="A")
                flat_a = a.reshape(-1, order="A")
                i = rnd.randrange(flat_a.size)
                j = min(flat_a.size, i + rnd.choice((1, 100, 5000, 200_000)))
                ok = np.array_equal(flat_m[i:j], flat_a[i:j])
                c["mmap"] += 1
                c["bytes"] += (j - i) * a.itemsize
            else:
                size = len(want_all)
                ln = rnd.choice((1, 4096, 65536, 200_000, 1 << 20, 3 << 20))
                off = rnd.randrange(size) if rnd.random() < 0.9 else max(0, size - ln // 2)
                try:
                    got = os.pread(fds[n], ln, off)
                except OSError as e:
                    c["errors"] += 1
                    c[f"err {n} {e.errno}"] += 1
                    continue
                ok = got == want_all[off:off + ln]
                c["pread"] += 1
                c["bytes"] += len(got)
            c["reads"] += 1
            if not ok:
                c["mismatch"] += 1
                c[f"mismatch {n}"] += 1
    finally:
        for fd in fds.values():
            os.close(fd)
        maps.clear()
    return c


def _proc_main(q, *args):
    try:
        q.put(("ok", _worker(*args)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        q.put(("err", repr(e)))


def _hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _index_bytes(sizes):
    return sum(s // SPACING + 1 for s in sizes) * (33 << 10)


def test_stress_mixed_workers(data, mount, npyfs_bin):
    npz, gz, arrs, truth = data
    opts = (f"cache_size={CACHE >> 20}M", f"spacing={SPACING >> 20}M")
    m1 = mount(npz, *opts)
    m2 = mount(gz, *opts)
    paths = {k: (m2 if k == "g.npy" else m1) / k for k in truth}
    for k, p in paths.items():   # sizes first: exact before any payload read
        assert os.stat(p).st_size == len(truth[k]), k

    deadline = time.monotonic() + STRESS_SECONDS
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_proc_main, daemon=True,
                         args=(q, 100 + i, paths, truth, arrs, deadline, True))
             for i in range(8)]
    for p in procs:
        p.start()
    results, thread_errs = [], []

    def tmain(seed):
        try:
            results.append(_worker(seed, paths, truth, arrs, deadline, False))
        except BaseException as e:  # noqa: BLE001
            thread_errs.append(repr(e))
    threads = [threading.Thread(target=tmain, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()

    # Drop the kernel page cache every 0.5 s so reads keep reaching the
    # daemon (otherwise ~190 MB sits in the page cache after a few seconds).
    drops = Counter()

    def dropper():
        while time.monotonic() < deadline:
            if drop_caches():
                drops["n"] += 1
            time.sleep(0.5)
    dt = threading.Thread(target=dropper, daemon=True)
    dt.start()

    hard = deadline + WORKER_SLACK
    for t in threads:
        t.join(max(0.0, hard - time.monotonic()))
    hung_threads = sum(t.is_alive() for t in threads)
    proc_results, proc_errs = [], []
    for _ in procs:
        try:
            kind, val = q.get(timeout=max(0.1, hard - time.monotonic()))
        except Exception:  # queue.Empty
            break
        (proc_results if kind == "ok" else proc_errs).append(val)
    hung_procs = 0
    for p in procs:
        p.join(max(0.1, hard - time.monotonic()))
        if p.is_alive():
            hung_procs += 1
            p.kill()
            p.join(5)
        elif p.exitcode not in (0, None):
            proc_errs.append(f"worker process exit code {p.exitcode}"
                             + (" (SIGBUS: a mapped page could not be read)"
                                if p.exitcode == -7 else ""))

    total = Counter()
    for c in results + proc_results:
        total.update(c)
    T.update({k: v for k, v in total.items() if k in ("reads", "pread", "mmap", "bytes",
                                                      "mismatch", "errors")})
    detail = {k: v for k, v in total.items() if k.startswith(("err ", "mismatch "))}
    dt.join(10)
    T["drops"] = drops["n"]
    print(f"stress: {dict(total)}, page cache drops {drops['n']}")

    rss = {}
    for name, mnt in (("npz", m1), ("gz", m2)):
        proc = mount.mount_of(mnt).proc
        assert_alive_pid(mnt, proc)
        rss[name] = _hwm_kib(proc.pid)
    sizes_npz = [len(truth[k]) for k in ("df.npy", "df2d.npy", "small.npy")]
    bound = {"npz": CACHE + (64 << 20) + _index_bytes(sizes_npz),
             "gz": CACHE + (64 << 20) + _index_bytes([len(truth["g.npy"])])}
    T["rss"] = ", ".join(f"{k} {rss[k] / 1024:.1f} MiB (bound {bound[k] / 2**20:.1f} MiB)"
                         for k in rss)

    assert not hung_threads and not hung_procs, \
        f"{hung_threads} threads and {hung_procs} processes still reading " \
        f"{WORKER_SLACK:.0f} s past the deadline: deadlock?"
    assert not thread_errs and not proc_errs, thread_errs + proc_errs
    assert len(results) == 8 and len(proc_results) == 8
    assert total["mismatch"] == 0 and total["errors"] == 0, detail
    assert total["reads"] > 1000, f"only {total['reads']} reads in {STRESS_SECONDS} s"
    assert total["mmap"] > 0 and total["pread"] > 0
    # Sanitizer builds carry shadow memory and quarantines: their RSS says
    # nothing about the daemon's own bound.
    for k in rss if not _sanitized(npyfs_bin) else ():
        assert rss[k] * 1024 <= bound[k], \
            f"{k} daemon peak RSS {rss[k] / 1024:.1f} MiB > bound {bound[k] / 2**20:.1f} MiB"
