"""Small files are in the page cache from their first open (prefill).

At the first open of a file of at most 256 KiB, npyfs decodes it (as a read
would, checks included) and hands the bytes to the kernel's page cache with
FUSE's store notification before it answers the open; the file is opened
with keep_cache, so the pages stay. Reading it then costs no READ request:
for an .npz of many small arrays loaded one by one, a third of the round
trips. What the kernel sends is read from its own FUSE trace events
(conftest.fuse_requests), and every byte is compared with numpy.

- small deflate and stored members: exact bytes through read() and mmap,
  no READ request, counted by `npyfs stats` (prefilled);
- a file above the limit is read with READ requests as before;
- a damaged small member puts nothing in the page cache: its reads fail
  with EIO, never with other bytes;
- only the first open prefills: a file whose pages the kernel dropped is
  read with READ requests again, and still exactly;
- a remote file is not prefilled (its fetch would hold up the open): it is
  read with READ requests, exactly.
"""

import errno
import json
import mmap
import os
import zipfile

import numpy as np
import pytest

from conftest import assert_same_array, fuse_requests, guarded, in_child, load, npy_bytes

LIMIT = 256 << 10

SMALL = {
    "a": np.arange(1000, dtype="<f8"),
    "b": np.linspace(0, 1, 20000).astype("<f4"),  # 80 KB: one chunk
    "c": np.arange(LIMIT // 8 - 16, dtype="<i8"),  # just under the limit: two chunks
    "d": np.zeros(0, dtype="<u2"),  # a header alone
}
BIG = np.arange(LIMIT // 8 + 4096, dtype="<i8")  # over the limit


def stats(mnt):
    return json.loads(os.getxattr(mnt, "user.npyfs.stats.json"))


def read_through(path):
    """Every byte by read(), and the whole file through a read-only mmap."""
    with open(path, "rb") as f:
        data = f.read()
    if data:
        def mapped():
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                return bytes(m)
        assert in_child(mapped) == data
    return data


@pytest.mark.parametrize("compressed", [True, False], ids=["deflate", "stored"])
def test_small_members_need_no_read_request(tmp_path, mount, compressed):
    src = tmp_path / "small.npz"
    (np.savez_compressed if compressed else np.savez)(src, big=BIG, **SMALL)
    for k, v in SMALL.items():
        assert len(npy_bytes(v)) <= LIMIT, k
    assert len(npy_bytes(BIG)) > LIMIT
    mnt = mount(src)

    def small():
        with fuse_requests(mnt) as sent:
            for k, v in SMALL.items():
                assert read_through(mnt / f"{k}.npy") == npy_bytes(v), k
                assert_same_array(load(mnt / f"{k}.npy", mmap_mode=None), v)
        return sent

    sent = guarded(small)
    assert sent["FUSE_OPEN"] >= len(SMALL), sent
    assert sent["FUSE_READ"] == 0, (sent, stats(mnt))
    assert stats(mnt)["prefilled"] == len(SMALL)

    def big():
        with fuse_requests(mnt) as sent:
            assert read_through(mnt / "big.npy") == npy_bytes(BIG)
        return sent

    sent = guarded(big)
    assert sent["FUSE_READ"] >= 1, sent
    assert stats(mnt)["prefilled"] == len(SMALL)


def test_dropped_pages_are_read_again(tmp_path, mount):
    """Prefill is for the first open: once the kernel has dropped the pages
    (here: drop_caches), the next reads are READ requests, exact as ever."""
    src = tmp_path / "small.npz"
    np.savez_compressed(src, **SMALL)
    mnt = mount(src)
    guarded(lambda: [read_through(mnt / f"{k}.npy") for k in SMALL])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")

    def again():
        with fuse_requests(mnt) as sent:
            for k, v in SMALL.items():
                assert read_through(mnt / f"{k}.npy") == npy_bytes(v), k
        return sent

    sent = guarded(again)
    assert sent["FUSE_READ"] >= 1, sent
    assert stats(mnt)["prefilled"] == len(SMALL)


def test_prefilled_members_leave_the_chunk_cache(tmp_path, mount):
    """A member put in the page cache at its open is there as a read served
    whole would put it: its decoded chunks leave the daemon's cache. So
    opening many small members neither fills the cache with them (a chunk
    buffer each, whatever their size) nor evicts the chunks of others."""
    src = tmp_path / "many.npz"
    arrays = {f"m{i:03d}": np.arange(i, i + 1000, dtype="<f8") for i in range(40)}
    np.savez_compressed(src, **arrays)
    mnt = mount(src, "cache_size=1M")  # 8 chunks: 40 members would evict 32

    def body():
        for k, v in arrays.items():
            assert_same_array(load(mnt / f"{k}.npy", mmap_mode=None), v)

    guarded(body)
    st = stats(mnt)
    assert st["prefilled"] == len(arrays), st
    assert st["cache"]["chunks"] == 0 and st["cache"]["evictions"] == 0, st["cache"]
    assert st["bytes_decompressed"] >= sum(len(npy_bytes(v)) for v in arrays.values()), st


def _damage_member(path, name):
    """Flip bytes in the middle of member name's compressed data."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        nlen, xlen = np.frombuffer(f.read(4), dtype="<u2")
        start = info.header_offset + 30 + int(nlen) + int(xlen)
        mid = start + info.compress_size // 2
        f.seek(mid)
        b = f.read(8)
        f.seek(mid)
        f.write(bytes(x ^ 0x5A for x in b))


@pytest.mark.parametrize("verify", ["auto", "lazy"])
def test_damaged_small_member_is_not_prefilled(tmp_path, mount, verify):
    src = tmp_path / "damaged.npz"
    np.savez_compressed(src, good=SMALL["b"], bad=SMALL["b"][::-1].copy())
    _damage_member(src, "bad.npy")
    mnt = mount(src, f"verify={verify}")

    def body():
        assert read_through(mnt / "good.npy") == npy_bytes(SMALL["b"])
        try:
            fd = os.open(mnt / "bad.npy", os.O_RDONLY)
        except OSError as e:
            assert e.errno == errno.EIO, e
            return "open"
        try:
            with pytest.raises(OSError) as ei:
                while os.read(fd, 1 << 16):
                    pass
            assert ei.value.errno == errno.EIO, ei.value
        finally:
            os.close(fd)
        return "read"

    guarded(body)
    assert stats(mnt)["prefilled"] == 1


def test_remote_member_is_not_prefilled(tmp_path, remote, remote_mount):
    src = tmp_path / "small.npz"
    np.savez_compressed(src, **SMALL)
    ng = remote.nginx()
    ng.put("small.npz", src)
    mnt = remote_mount(ng.url("small.npz"))

    def body():
        with fuse_requests(mnt) as sent:
            assert read_through(mnt / "b.npy") == npy_bytes(SMALL["b"])
        return sent

    sent = guarded(body)
    assert sent["FUSE_READ"] >= 1, sent
    assert stats(mnt)["prefilled"] == 0
