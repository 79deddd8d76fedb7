"""The defaults of issue 13: a small chunk cache and a small kernel readahead.

- The default cache_size is 32M: `npyfs stats` reports that capacity, and after a
  full pass over a member bigger than that the cache holds no more than 32 MiB,
  while the pass reads every byte right.
- As root the mount's kernel readahead (its bdi's read_ahead_kb) is set to the
  default 256K at the first open, and to what -o readahead= asks for.
- The kernel reads around a page fault of a mapped file by the readahead, and the
  daemon decodes all of it before the fault returns: one element read through
  np.load(mmap_mode='r') far into a fresh mount makes the kernel ask the daemon
  for at most 256 KiB (512 KiB with the former default), and the element is
  numpy's value.
"""

import json
import mmap
import os
import time

import numpy as np
import pytest

from conftest import guarded, in_child, npy_bytes, read_all

MiB = 1 << 20
N = 6 * MiB  # float64 elements: a 48 MiB member, bigger than the default cache


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("footprint")
    rng = np.random.default_rng(13)
    arr = np.round(np.cumsum(rng.normal(size=N)) * 0.01, 3)  # compresses about 4x
    p = d / "big.npz"
    np.savez_compressed(p, x=arr)
    return p, arr


def _stats(mnt):
    return json.loads(os.getxattr(mnt, "user.npyfs.stats.json"))


def _bdi_read_ahead_kb(mnt):
    """read_ahead_kb of the mount's backing device info, found by its device number."""
    dev = os.stat(mnt).st_dev
    with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb") as f:
        return int(f.read())


def test_default_cache_holds_at_most_32M(big, mount):
    src, arr = big
    mnt = mount(src, "index=lazy")
    data = guarded(read_all, mnt / "x.npy", timeout=300)
    assert data == npy_bytes(arr)
    st = _stats(mnt)
    assert st["cache"]["capacity"] == 32 * MiB
    assert st["bytes_decompressed"] >= len(data)  # every chunk went through the cache
    assert st["cache"]["bytes"] <= 32 * MiB


@pytest.mark.skipif(os.geteuid() != 0, reason="setting the kernel readahead needs root")
@pytest.mark.parametrize("opts, want_kb", [((), 256), (("readahead=64K",), 64)])
def test_kernel_readahead_set_once_mounted(big, mount, opts, want_kb):
    """Set by the time `npyfs mount` returns, no file opened yet; an open
    leaves it so."""
    src, _ = big
    mnt = mount(src, "index=lazy", *opts)
    assert _bdi_read_ahead_kb(mnt) == want_kb
    guarded(lambda: os.close(os.open(mnt / "x.npy", os.O_RDONLY)), timeout=60)
    assert _bdi_read_ahead_kb(mnt) == want_kb


def _served_settled(mnt):
    """bytes_served once it stops moving: the daemon counts a READ just after its
    reply, which may let the faulting process run (and ask) before the count."""
    last = _stats(mnt)["bytes_served"]
    for _ in range(100):
        time.sleep(0.05)
        now = _stats(mnt)["bytes_served"]
        if now == last:
            break
        last = now
    return last


def _one_element(path, i):
    a = np.load(path, mmap_mode="r")
    before = _served_settled(path.parent)
    value = float(a[i])
    return value, _served_settled(path.parent) - before


@pytest.mark.skipif(os.geteuid() != 0, reason="setting the kernel readahead needs root")
def test_mmap_fault_asks_for_the_readahead_only(big, mount):
    src, arr = big
    mnt = mount(src, "index=lazy")
    i = N * 3 // 4  # far from both ends: a full read-around
    value, asked = in_child(_one_element, mnt / "x.npy", i, timeout=300)
    assert value == arr[i]
    assert 0 < asked <= 256 * 1024


def test_chunks_served_whole_leave_the_cache_but_not_for_o_direct(big, mount):
    """A full read leaves the chunk cache (nearly) empty: every chunk a READ
    took whole is in the page cache and left ours at once. A read with
    O_DIRECT bypasses the page cache, so its chunks stay cached."""
    src, arr = big
    # threads=0: no readahead worker, whose look-ups of chunks it may decode
    # would count as misses of their own
    mnt = mount(src, "index=lazy", "threads=0")
    path = mnt / "x.npy"
    assert guarded(read_all, path, timeout=300) == npy_bytes(arr)
    st = _stats(mnt)
    assert st["bytes_decompressed"] >= len(npy_bytes(arr))
    assert st["cache"]["bytes"] <= 4 * 128 * 1024, st["cache"]

    def direct():
        buf = mmap.mmap(-1, MiB)  # page-aligned, as O_DIRECT wants
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            for off in range(0, 4 * MiB, MiB):
                assert os.preadv(fd, [buf], off) == MiB
        finally:
            os.close(fd)
    guarded(direct, timeout=120)
    before = _stats(mnt)["cache"]
    guarded(direct, timeout=120)  # the same bytes again: every chunk from our cache
    after = _stats(mnt)["cache"]
    assert after["misses"] == before["misses"], (before, after)
    assert after["hits"] - before["hits"] >= 32, (before, after)
