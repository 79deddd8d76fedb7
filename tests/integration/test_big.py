"""Random access into >= 100 MB compressed members: the deflate index and cache.

A ~105 MB float64 member (smooth signal quantized to 1e-3) in an
np.savez_compressed archive, and a ~105 MB int64 random walk as .npy.gz, are
generated once per session. Against the true .npy bytes kept in memory:

- >= 1000 random os.pread ranges (log-uniform lengths 1 B .. 1 MiB, plus ranges
  across 1 MiB and 256 KiB boundaries, the last bytes, and past the end) under
  four mounts: default options, -o spacing=256K, -o cache_size=8M and
  -o cache_size=0;
- the same from 8 threads at once, with one fd per thread, with one shared
  fd, and with O_DIRECT fds;
- >= 1000 random preads through an O_DIRECT fd (no page cache, no readahead:
  every read reaches the daemon with its exact offset and length);
- reading backwards in 1 MiB + 4097 byte chunks from the end to the start;
- a sequential read and np.load(mmap_mode='r') of the whole array;
- the source archive's sha256, size and mtime are unchanged afterwards.

The page cache is dropped for the file (POSIX_FADV_DONTNEED) before each
phase so the reads reach the daemon rather than the kernel's cached pages.
"""

import concurrent.futures
import errno
import gzip
import hashlib
import os
import zipfile
import zlib

import numpy as np
import pytest

from conftest import (fingerprint, guarded, in_child, load, npy_bytes, read_all)

MiB = 1 << 20
N = 13_107_200  # float64/int64 elements: 100 MiB of data (+128 header bytes)
BIG_WATCHDOG = 900.0


@pytest.fixture(scope="session")
def big(tmp_path_factory):
    """Session cache: arrays, their true .npy bytes and the two sources."""
    d = tmp_path_factory.mktemp("big")
    t = np.arange(N, dtype=np.float64)
    sig = np.sin(t * 2.1e-5) * 100.0 + np.sin(t * 1.3e-3) * 3.0
    sig = np.round(sig * 1000.0) / 1000.0
    del t
    npz = d / "big.npz"
    np.savez_compressed(npz, signal=sig, small=np.arange(10))
    truth_npz = npy_bytes(sig)
    with zipfile.ZipFile(npz) as zf:
        info = zf.getinfo("signal.npy")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.file_size == len(truth_npz)
        assert info.CRC == zlib.crc32(truth_npz)
        assert info.compress_size < info.file_size  # really compressed

    rng = np.random.default_rng(42)
    walk = np.cumsum(rng.integers(-3, 4, size=N, dtype=np.int64))
    truth_gz = npy_bytes(walk)
    gz = d / "walk.npy.gz"
    with open(gz, "wb") as f:
        f.write(gzip.compress(truth_gz, compresslevel=6))
    assert len(truth_npz) >= 100_000_000 and len(truth_gz) >= 100_000_000
    return {"npz": npz, "npz_truth": truth_npz, "npz_arr": sig,
            "npz_member": "signal.npy",
            "gz": gz, "gz_truth": truth_gz, "gz_arr": walk, "gz_member": "walk.npy"}


def _drop_cache(fd):
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _ranges(size, n, seed, spacing=MiB):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        off = int(rng.integers(0, size))
        length = int(np.exp(rng.uniform(0, np.log(MiB))))
        out.append((off, max(1, length)))
    # Across access-point / chunk boundaries (1 MiB and the given spacing).
    for step in sorted({MiB, spacing, 256 * 1024}):
        ks = rng.integers(1, size // step, size=25)
        for k in ks:
            b = int(k) * step
            out.append((b - int(rng.integers(1, 5000)), int(rng.integers(2, 20000)) + 5000))
            out.append((b, int(rng.integers(1, MiB))))
            out.append((b - 1, 2))
    # End of file and beyond.
    out += [(0, 1), (0, 128), (127, 2), (size - 1, 1), (size - 1, MiB),
            (size - 5000, MiB), (size - MiB - 3, MiB + 3), (size, 1), (size + 12345, 100)]
    return out


def _check_ranges(fd, truth, ranges):
    mv = memoryview(truth)
    size = len(truth)
    for off, length in ranges:
        got = os.pread(fd, length, off)
        want_len = max(0, min(length, size - off))
        assert len(got) == want_len, f"pread(off={off}, len={length}) returned {len(got)} bytes"
        if got != mv[off:off + length]:
            bad = next(i for i in range(len(got)) if got[i] != truth[off + i])
            raise AssertionError(f"pread(off={off}, len={length}) differs "
                                 f"at file offset {off + bad}")
    return len(ranges)


def _open(path, direct=False):
    """O_DIRECT bypasses the page cache: every pread reaches the daemon with
    the caller's exact (unaligned) offset and length."""
    return os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))


def _random_preads(path, truth, spacing, direct=False):
    fd = _open(path, direct)
    try:
        assert os.fstat(fd).st_size == len(truth)
        _drop_cache(fd)
        ranges = _ranges(len(truth), 1000, seed=1, spacing=spacing)
        assert len(ranges) >= 1000
        return _check_ranges(fd, truth, ranges)
    finally:
        os.close(fd)


def _threads(path, truth, shared_fd, direct=False):
    ranges = _ranges(len(truth), 1200, seed=2)
    per = [ranges[i::8] for i in range(8)]
    fd0 = _open(path, direct)
    _drop_cache(fd0)

    def work(rs):
        fd = fd0 if shared_fd else _open(path, direct)
        try:
            return _check_ranges(fd, truth, rs)
        finally:
            if not shared_fd:
                os.close(fd)

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            done = sum(f.result() for f in [ex.submit(work, rs) for rs in per])
        assert done == len(ranges)
    finally:
        os.close(fd0)


def _backwards(path, truth, chunk=MiB + 4097):
    fd = os.open(path, os.O_RDONLY)
    try:
        _drop_cache(fd)
        off = len(truth)
        mv = memoryview(truth)
        n = 0
        while off > 0:
            start = max(0, off - chunk)
            got = os.pread(fd, off - start, start)
            assert len(got) == off - start, (start, off)
            assert got == mv[start:off], f"backwards chunk [{start}, {off}) differs"
            off = start
            n += 1
        return n
    finally:
        os.close(fd)


def _sequential_and_mmap(path, truth, arr):
    fd = os.open(path, os.O_RDONLY)
    try:
        _drop_cache(fd)
    finally:
        os.close(fd)
    got = read_all(path)
    assert len(got) == len(truth)
    assert hashlib.sha256(got).digest() == hashlib.sha256(truth).digest()
    del got
    m = load(path, "r")
    try:
        assert isinstance(m, np.memmap)
        assert m.dtype == arr.dtype and m.shape == arr.shape
        assert np.array_equal(m, arr)
    finally:
        del m


SOURCES = ["npz", "gz"]
# cache128K: the smallest cache -o cache_size= takes, one chunk, so nearly
# every chunk is evicted as soon as its read is answered.
OPTION_SETS = {"default": (), "spacing256K": ("spacing=256K",), "cache8M": ("cache_size=8M",),
               "cache128K": ("cache_size=128K",)}


def _mount(big, kind, mount, opts):
    fp = fingerprint(big[kind])
    mnt = mount(big[kind], *opts, watchdog=BIG_WATCHDOG)
    path = mnt / big[f"{kind}_member"]
    return fp, path


@pytest.mark.parametrize("opts", list(OPTION_SETS))
@pytest.mark.parametrize("kind", SOURCES)
def test_big_random_preads(kind, opts, big, mount):
    fp, path = _mount(big, kind, mount, OPTION_SETS[opts])
    spacing = 256 * 1024 if opts == "spacing256K" else MiB
    n = guarded(_random_preads, path, big[f"{kind}_truth"], spacing, timeout=600)
    assert n >= 1000
    assert fingerprint(big[kind]) == fp


@pytest.mark.parametrize("kind", SOURCES)
def test_big_random_preads_odirect(kind, big, mount):
    """Every read reaches the daemon (no page cache, no readahead), with a
    small cache and small spacing so chunks are evicted and re-decoded."""
    fp, path = _mount(big, kind, mount, ("spacing=256K", "cache_size=8M"))
    _require_odirect(path)
    n = guarded(_random_preads, path, big[f"{kind}_truth"], 256 * 1024, True, timeout=600)
    assert n >= 1000
    assert fingerprint(big[kind]) == fp


def _require_odirect(path):
    try:
        os.close(_open(path, True))
    except OSError as e:
        if e.errno == errno.EINVAL:
            pytest.skip("O_DIRECT not supported on this mount")
        raise


THREAD_MODES = {"fd_per_thread": (False, False), "shared_fd": (True, False),
                "odirect_fd_per_thread": (False, True)}


@pytest.mark.parametrize("mode", list(THREAD_MODES))
@pytest.mark.parametrize("kind", SOURCES)
def test_big_threaded_preads(kind, mode, big, mount):
    # Small cache: eight readers evict each other's chunks all the time.
    shared_fd, direct = THREAD_MODES[mode]
    fp, path = _mount(big, kind, mount, ("cache_size=8M",))
    if direct:
        _require_odirect(path)
    guarded(_threads, path, big[f"{kind}_truth"], shared_fd, direct, timeout=600)
    assert fingerprint(big[kind]) == fp


@pytest.mark.parametrize("kind", SOURCES)
def test_big_backwards(kind, big, mount):
    fp, path = _mount(big, kind, mount, ("spacing=256K", "cache_size=8M"))
    n = guarded(_backwards, path, big[f"{kind}_truth"], timeout=600)
    assert n >= 95
    assert fingerprint(big[kind]) == fp


@pytest.mark.parametrize("kind", SOURCES)
def test_big_sequential_and_mmap(kind, big, mount):
    fp, path = _mount(big, kind, mount, ())
    in_child(_sequential_and_mmap, path, big[f"{kind}_truth"], big[f"{kind}_arr"],
            timeout=600)
    assert fingerprint(big[kind]) == fp


def test_big_npz_other_member(big, mount):
    """The small member next to the big one is unaffected."""
    mnt = mount(big["npz"])
    assert sorted(guarded(os.listdir, mnt, timeout=30)) == ["signal.npy", "small.npy"]
    assert guarded(read_all, mnt / "small.npy", timeout=60) == npy_bytes(np.arange(10))
