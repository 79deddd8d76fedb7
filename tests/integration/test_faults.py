"""Faults under a live mount (issue "Robustness").

- The archive truncated, overwritten in place (same size, different bytes),
  or replaced by rename while mounted, with the page cache dropped and a
  1 MiB chunk cache so reads really reach the archive. Rule: a full
  sequential read of each member returns bytes that are a prefix of the OLD
  content or a prefix of the NEW content, never a mix; and unless it is the
  complete old content, it ends in EIO (the directory npyfs holds describes
  the old content, CRC included). For 'replaced', npyfs keeps the old inode
  open, so serving the old content in full is the expected outcome.
- SIGINT / SIGTERM to a foreground daemon: exit status 0 and the mount gone
  within 15 s (also with a file held open). SIGKILL: `npyfs unmount MNT`
  clears the dead mount (exit 0, gone from /proc/self/mountinfo).
- A reader stuck decoding a long stretch of one member (a ~0.5 GiB member
  read near its end with spacing=4G, so the read has to inflate it all)
  does not block a reader of another member: the small read, started after
  the big one, finishes first.
"""

import errno
import os
import signal
import struct
import subprocess
import threading
import time
import zipfile
import zlib
from collections import Counter

import numpy as np
import pytest

from conftest import (cleanup_background, guarded, mounted_fuse, npy_bytes, read_all,
                      run, UNMOUNT_TIMEOUT)
from robust_util import (Ent, assert_alive_pid, build_zip, drop_caches, emit,
                         partial_read)

T = Counter()
N = 2_000_000                                   # 16 MB per member


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    emit(request.config,
         f"[test_faults] full passes after a change: {T['passes']} "
         f"(old complete {T['old']}, old prefix + EIO {T['old_eio']}, "
         f"new prefix + EIO {T['new_eio']}, new complete {T['new']}, mixed {T['mixed']}); "
         f"signals tested: {T['signals']}; slow reader: {T.get('slow', 'not run')}")


def _arrays(seed):
    a = (np.arange(N, dtype=np.int64) * (3 + seed)) % 1000003
    return {"s": a, "d": a[::-1].copy(), "early": np.arange(1000) + seed}


def _archive(path, seed):
    """early.npy (deflate, first), s.npy (stored), d.npy (deflate level 0:
    the same compressed size for any content of the same length)."""
    arrs = _arrays(seed)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("early.npy", npy_bytes(arrs["early"]), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("s.npy", npy_bytes(arrs["s"]), compress_type=zipfile.ZIP_STORED)
        zf.writestr("d.npy", npy_bytes(arrs["d"]), compress_type=zipfile.ZIP_DEFLATED,
                    compresslevel=0)
    return {k + ".npy": npy_bytes(v) for k, v in arrs.items()}


def _judge(got, err, old, new, name):
    """Prefix of old or of new, never a mix; complete only if old."""
    T["passes"] += 1
    is_old = got == old[:len(got)]
    is_new = new is not None and got == new[:len(got)]
    if not (is_old or is_new):
        T["mixed"] += 1
        first_bad_old = next(i for i in range(len(got)) if got[i] != old[i])
        raise AssertionError(
            f"{name}: bytes are neither the old nor the new content "
            f"(differs from old at {first_bad_old}"
            + (f", from new at {next(i for i in range(len(got)) if got[i] != new[i])}"
               if new is not None else "") + f"; {len(got)} bytes read, err={err!r})")
    if err is None:
        if got == old:
            T["old"] += 1
            return "old"
        T["new"] += 1
        raise AssertionError(f"{name}: served the NEW content in full without an error, "
                             "while npyfs's directory (sizes, CRC) describes the old one")
    assert err.errno == errno.EIO, f"{name}: {err!r}"
    T["old_eio" if is_old else "new_eio"] += 1
    return "old+EIO" if is_old else "new+EIO"


def _warm(mnt, names, upto=1 << 20):
    """Read the first `upto` bytes of each member: fills caches and parks
    decoders."""
    for n in names:
        fd = os.open(mnt / n, os.O_RDONLY)
        try:
            off = 0
            while off < upto and os.pread(fd, 1 << 20, off):
                off += 1 << 20
        finally:
            os.close(fd)


@pytest.mark.parametrize("change", ["truncated", "overwritten", "overwritten_half_cached",
                                    "replaced"])
def test_archive_changes_under_mount(change, tmp_path, mount):
    """overwritten_half_cached: a 64 MiB chunk cache holds the first half of
    each member (read before the change), so a later full pass meets cached
    old chunks first and then has to decode from the archive: the bytes that
    come after the cached ones must not be new."""
    src = tmp_path / "live.npz"
    old = _archive(src, 0)
    newsrc = tmp_path / "new.npz"
    new = _archive(newsrc, 1)
    assert newsrc.stat().st_size == src.stat().st_size   # self-check: same layout
    if change == "overwritten_half_cached":
        mnt = mount(src, "cache_size=64M")
        guarded(_warm, mnt, list(old), 8 << 20, timeout=60)
    else:
        mnt = mount(src, "cache_size=1M")
        guarded(_warm, mnt, list(old), timeout=60)
    if change == "truncated":
        os.truncate(src, src.stat().st_size * 2 // 5)
        new = None
    elif change.startswith("overwritten"):
        with open(src, "r+b") as f:
            f.write(newsrc.read_bytes())
            f.flush()
            os.fsync(f.fileno())
    else:
        os.replace(newsrc, src)
    assert drop_caches(), "need root to drop the page cache"
    outcomes, failures = {}, []
    for n in ("s.npy", "d.npy", "early.npy"):
        got, err = guarded(partial_read, mnt / n, 1 << 20, timeout=60)
        try:
            outcomes[n] = _judge(got, err, old[n], new[n] if new else None, f"{change}: {n}")
        except AssertionError as e:
            outcomes[n] = "FAIL"
            failures.append(str(e))
    assert not failures, "\n".join(failures)
    if change == "replaced":
        # The old inode stays open in the daemon: the old content, complete.
        assert all(v == "old" for v in outcomes.values()), outcomes
    print(f"{change}: {outcomes}")
    assert_alive_pid(mnt, mount.mount_of(mnt).proc)


# ------------------------------------------------------------- signals ---

def _start_fg(npyfs_bin, src, mnt):
    err = open(mnt.parent / f"{mnt.name}.err", "wb")
    p = subprocess.Popen([str(npyfs_bin), "mount", "-f", str(src), str(mnt)],
                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    deadline = time.monotonic() + 20
    while not mounted_fuse(mnt):
        assert p.poll() is None, f"daemon exited early with {p.returncode}"
        assert time.monotonic() < deadline, "mount not live after 20 s"
        time.sleep(0.05)
    return p


def _wait_gone(mnt, timeout=UNMOUNT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while mounted_fuse(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not mounted_fuse(mnt)


@pytest.fixture
def small_src(tmp_path):
    p = tmp_path / "sig.npz"
    np.savez_compressed(p, a=np.arange(300_000), b=np.ones(10))
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("held", [False, True], ids=["idle", "file_open"])
def test_signal_clean_unmount(sig, held, npyfs_bin, small_src, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    p = _start_fg(npyfs_bin, small_src, mnt)
    fd = None
    try:
        assert guarded(read_all, mnt / "a.npy", timeout=30) == npy_bytes(np.arange(300_000))
        if held:
            fd = os.open(mnt / "b.npy", os.O_RDONLY)
        p.send_signal(sig)
        T["signals"] += 1
        try:
            rc = p.wait(timeout=UNMOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon still running {UNMOUNT_TIMEOUT:.0f} s after {sig.name}")
        assert rc == 0, f"exit status {rc} after {sig.name}"
        assert _wait_gone(mnt, 5), f"mount still listed after {sig.name}"
    finally:
        if fd is not None:
            os.close(fd)
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        cleanup_background(mnt)


def test_sigkill_then_unmount(npyfs_bin, small_src, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    p = _start_fg(npyfs_bin, small_src, mnt)
    try:
        guarded(read_all, mnt / "b.npy", timeout=30)
        p.kill()
        T["signals"] += 1
        p.wait(timeout=10)
        assert mounted_fuse(mnt), "self-check: a SIGKILLed daemon leaves its mount"
        r = run([npyfs_bin, "unmount", mnt], timeout=30)
        assert r.returncode == 0, r.stderr
        assert _wait_gone(mnt), "dead mount still listed after npyfs unmount"
        assert guarded(os.listdir, mnt, timeout=10) == []   # a plain directory again
    finally:
        if p.poll() is None:
            p.kill()
        cleanup_background(mnt)


# --------------------------------------------------------- slow reader ---

BLOCK = np.random.default_rng(7).integers(0, 4, 4 << 20, dtype=np.uint8).tobytes()
BIG_BLOCKS = 128                                 # 512 MiB uncompressed


def _big_zip(path):
    """big.bin: BIG_BLOCKS copies of a 4 MiB low-entropy block, deflated once
    and repeated (a full flush resets the dictionary, so the copies
    concatenate into one valid stream: cheap to write, slow to inflate).
    small.npy: an ordinary deflate member."""
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    one = c.compress(BLOCK) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(BIG_BLOCKS):
        crc = zlib.crc32(BLOCK, crc)
    small = npy_bytes(np.arange(200_000, dtype=np.int32))
    usize = len(BLOCK) * BIG_BLOCKS
    ents = [Ent("small.npy", small, method=8),
            Ent("big.bin", b"", method=8, payload=b"", crc=crc,
                csize=len(one) * BIG_BLOCKS + len(tail), usize=usize)]
    # Write by hand: the payload is streamed, not held in memory.
    head = build_zip(ents[:1])
    cd_start = head.rfind(b"PK\x01\x02")
    local = bytearray(head[:cd_start])
    big_lho = len(local)
    big = ents[1]
    local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, big.crc,
                         big.csize, big.usize, len(big.name), 0) + big.name
    with open(path, "wb") as f:
        f.write(local)
        for _ in range(BIG_BLOCKS):
            f.write(one)
        f.write(tail)
        end = f.tell()
    big.lho = big_lho
    ents[0].lho = 0
    tail_zip = build_zip(ents)   # only its directory is used, with fixed offsets
    cd = tail_zip[tail_zip.find(b"PK\x01\x02"):tail_zip.rfind(b"PK\x05\x06")]
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(cd), end, 0)
    with open(path, "ab") as f:
        f.write(cd + eocd)
    return small, usize


def test_slow_reader_does_not_block_others(tmp_path, mount):
    src = tmp_path / "slow.npz"
    small, usize = _big_zip(src)
    with zipfile.ZipFile(src) as zf:   # self-check of the hand-written archive
        assert [i.file_size for i in zf.infolist()] == [len(small), usize]
        assert zf.read("small.npy") == small
    mnt = mount(src, "spacing=4G", "cache_size=16M")
    times = {}

    def big_read():
        t0 = time.monotonic()
        fd = os.open(mnt / "big.bin", os.O_RDONLY)
        try:
            b = os.pread(fd, 4096, usize - (1 << 20))
        finally:
            os.close(fd)
        times["big"] = time.monotonic() - t0
        times["big_end"] = time.monotonic()
        off = (usize - (1 << 20)) % len(BLOCK)
        return b == BLOCK[off:off + 4096]

    res = {}
    th = threading.Thread(target=lambda: res.setdefault("ok", big_read()), daemon=True)
    th.start()
    time.sleep(0.3)                     # the big read is inflating by now
    assert th.is_alive(), "self-check: the big read must take longer than 0.3 s"
    t0 = time.monotonic()
    got = guarded(read_all, mnt / "small.npy", timeout=120)
    small_end = time.monotonic()
    times["small"] = small_end - t0
    assert got == small
    th.join(120)
    assert not th.is_alive(), "the big read did not finish within 120 s"
    assert res.get("ok"), "wrong bytes from the end of the big member"
    T["slow"] = f"big read {times['big']:.2f} s, small read {times['small']:.3f} s"
    print(f"big read {times['big']:.2f} s, small read {times['small']:.3f} s")
    assert small_end < times["big_end"], \
        f"the small read ({times['small']:.2f} s) waited for the big one ({times['big']:.2f} s)"
