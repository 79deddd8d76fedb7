"""Parallel readahead (-o threads=N): workers decode the segments between
access points ahead of sequential readers.

Readahead needs access points ahead of the reader, so each test first makes
one full sequential pass (which records points every `spacing` bytes), then
drops the kernel's pages for the file (POSIX_FADV_DONTNEED) and relies on a
small -o cache_size to have pushed the daemon's chunks out: the next reads
reach the daemon and its decoders again, now with points everywhere.

- Concurrent readers under threads=4 and an 8 MiB cache: sequential readers
  starting at different offsets (threads, plus one forked process mapping
  the file with np.load) and random preads, all at once; every byte must
  equal the truth. The readahead workers must have used CPU, so the test
  cannot pass without the readahead path running.
- The first pass (index=lazy, no saved index: no points ahead of anyone):
  a worker continues the sequential reader's decoder ahead of it. A lone
  sequential reader must leave CPU time on the workers (without the pipeline
  they have nothing to do), and concurrent sequential and random readers on
  a fresh mount must read every byte right.
- threads=1 and threads=0 read correctly.
- A bad threads value is refused: exit 1, one line naming the option.
"""

import concurrent.futures
import json
import os
import zipfile
import zlib

import numpy as np
import pytest

from conftest import guarded, in_child, load, npy_bytes, read_all, run

MiB = 1 << 20
N = 6_000_000          # float64: ~46 MiB, ~180 segments at 256K spacing
SPACING = "256K"
CACHE = "8M"           # far below the member: a pass evicts everything
WORKER_COMM = "npyfs-ra"


@pytest.fixture(scope="module")
def smooth(tmp_path_factory):
    d = tmp_path_factory.mktemp("readahead")
    rng = np.random.default_rng(7)
    arr = np.round(np.cumsum(rng.normal(size=N)) * 1e-3, 3)
    src = d / "smooth.npz"
    np.savez_compressed(src, x=arr)
    truth = npy_bytes(arr)
    with zipfile.ZipFile(src) as zf:
        assert zf.getinfo("x.npy").CRC == zlib.crc32(truth)
    return src, arr, truth


def _drop_pages(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _daemon_pid(mount, mnt):
    return mount.mount_of(mnt).proc.pid


def _ra_chunks(mnt):
    """Chunks the daemon's readahead workers have decoded into its cache (from
    the stats the mount root exposes; CPU ticks were too coarse to tell)."""
    return json.loads(os.getxattr(mnt, "user.npyfs.stats.json"))["readahead_chunks"]


def _workers(pid):
    """(count, cpu ticks) of the daemon's readahead worker threads."""
    count = ticks = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if comm == WORKER_COMM:
            count += 1
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return count, ticks


def _sequential(path, truth, start, step):
    """Read from start to the end in step-byte reads; compare every read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        off = start
        while off < len(truth):
            b = os.pread(fd, step, off)
            assert b == truth[off:off + step], f"mismatch at {off}"
            off += len(b)
        return off - start
    finally:
        os.close(fd)


def _random(path, truth, seed, count):
    rng = np.random.default_rng(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            off = int(rng.integers(0, len(truth)))
            n = int(rng.integers(1, 3 * MiB))
            assert os.pread(fd, n, off) == truth[off:off + n], f"mismatch at {off}+{n}"
    finally:
        os.close(fd)


def _mapped_sum(path, start):
    a = load(path)
    return float(a[start:].sum()), float(a[:start].sum())


def _concurrent_round(path, truth, arr, seed):
    size = len(truth)
    starts = [0, size // 3 + 4097, (2 * size) // 3 + 12345]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as ex:
        futs = [ex.submit(_sequential, path, truth, s, step)
                for s, step in zip(starts, (128 << 10, 1 << 20, 300_001))]
        futs += [ex.submit(_random, path, truth, seed + i, 60) for i in range(2)]
        start = len(arr) // 2
        got = in_child(_mapped_sum, path, start, timeout=240)
        assert got == (float(arr[start:].sum()), float(arr[:start].sum()))
        for f in futs:
            f.result(timeout=240)


def test_concurrent_readers(smooth, mount):
    src, arr, truth = smooth
    mnt = mount(src, f"threads=4,cache_size={CACHE},spacing={SPACING}")
    path = mnt / "x.npy"
    pid = _daemon_pid(mount, mnt)
    assert _workers(pid)[0] == 4
    # Pass 1 records the access points; nothing ahead to parallelize yet.
    assert guarded(read_all, path, timeout=120) == truth
    before = _ra_chunks(mnt)
    for seed in (1, 100):
        _drop_pages(path)
        guarded(_concurrent_round, path, truth, arr, seed, timeout=300)
    # A plain sequential pass over a known index: the workers must decode.
    _drop_pages(path)
    assert guarded(read_all, path, timeout=120) == truth
    count, after = _workers(pid)[0], _ra_chunks(mnt)
    assert count == 4
    assert after > before, "readahead workers never ran"


def test_first_pass_pipelined(smooth, mount, tmp_path):
    src, arr, truth = smooth
    opts = f"threads=2,cache_size={CACHE},spacing={SPACING},index=lazy"
    # A lone reader: only the pipelined decoder can give the workers work.
    mnt = mount(src, opts, f"index_dir={tmp_path / 'idx1'}")
    pid = _daemon_pid(mount, mnt)
    before = _ra_chunks(mnt)
    assert guarded(_sequential, mnt / "x.npy", truth, 0, 1 << 20, timeout=120) == len(truth)
    count, after = _workers(pid)[0], _ra_chunks(mnt)
    assert count == 2
    assert after > before, "no worker decoded ahead of the first pass"
    # Several sequential readers, random readers and a mapping, all at once,
    # on a fresh mount that has no points anywhere yet.
    mnt = mount(src, opts, f"index_dir={tmp_path / 'idx2'}")
    path = mnt / "x.npy"
    before = _ra_chunks(mnt)
    guarded(_concurrent_round, path, truth, arr, 11, timeout=300)
    assert _ra_chunks(mnt) > before, "readahead workers never ran"


@pytest.mark.parametrize("threads", [1, 0])
def test_few_threads(smooth, mount, threads):
    src, arr, truth = smooth
    mnt = mount(src, f"threads={threads},cache_size={CACHE},spacing={SPACING}")
    path = mnt / "x.npy"
    assert _workers(_daemon_pid(mount, mnt))[0] == threads
    for _ in range(2):
        _drop_pages(path)
        assert guarded(read_all, path, timeout=120) == truth
    _drop_pages(path)
    guarded(_concurrent_round, path, truth, arr, 5, timeout=300)


@pytest.mark.parametrize("value", ["x", "-1", "257", "", "1.5", "4k", "99999999999999999999"])
def test_bad_threads(npyfs_bin, smooth, tmp_path, value):
    src = smooth[0]
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = run([npyfs_bin, "mount", "-f", "-o", f"threads={value}", src, mnt], timeout=30)
    err = r.stderr.decode(errors="replace").strip().splitlines()
    assert r.returncode == 1
    assert r.stdout == b""
    assert err and err[0].startswith("npyfs: ") and f"threads={value}" in err[0], err
    # the message is one line; only the usual pointer to --help may follow
    assert err[1:] in ([], ["(see npyfs --help)"]), err
    assert not os.path.ismount(mnt)
