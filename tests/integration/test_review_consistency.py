"""Consistency under change and damage (issue 9): a reader never gets new
bytes from an archive rewritten in place, damage found later drops the
kernel's cached pages, and parked decoders are bounded mount-wide.

- An archive rewritten in place while it is read (the reader itself
  pwrites 0xFF into the part of the source whose output lands at 48 MiB,
  once it has read 24 MiB): every byte a reader receives equals the ORIGINAL
  content at its offset, or the read fails with EIO (SIGBUS through a memory
  map); it never gets a new byte. For a 96 MiB level-0 deflate member
  (index=lazy) read with os.pread, through a memory map, and by a
  sequential reader driven by the readahead workers (threads=2); for a
  stored member, a .npy.gz and a passthrough file of a directory source.
  Each both with a plain pwrite and with the source's mtime restored after
  it (the change then shows only in its ctime). Level 0 keeps every output
  byte at a known place in the source (stored deflate blocks).
- Damage found after a member's pages are in the kernel page cache (a
  CRC-32 mismatch at the member's end, or a change of the archive found
  through another member): the daemon drops those pages (FUSE inval_inode),
  so a re-read fails with EIO, and a memory map of them is SIGBUS, instead
  of being served from the page cache.
- Parked decoders: 200 deflate members open at once, each read partly by a
  sequential reader: `npyfs stats` shows no more parked decoders than the
  mount-wide bound, and every read is exact.

Another program writes the source here (the test's own copy): npyfs itself
never writes it.
"""

import errno
import gzip
import json
import mmap
import os
import shutil
import struct
import time
import zipfile

import numpy as np
import pytest

from conftest import guarded, in_child, npy_bytes, run
from robust_util import data_offset

MiB = 1 << 20
CHUNK = 128 << 10
SIZE = 96 * MiB      # output bytes of the big member
TRIGGER = 24 * MiB   # the reader changes the source once it has read this much
TARGET = 48 * MiB    # output offset whose source bytes it overwrites
PATCH = 4096         # bytes overwritten with 0xFF (inside one stored block)
STEP = 1 * MiB       # bytes per read


# ------------------------------------------------------------ sources ---

def stored_blocks(raw, start):
    """[(output offset, source offset, length)] of the deflate stream at
    raw[start:], which must be made of stored blocks only (level 0)."""
    pos, out, blocks = start, 0, []
    while True:
        hdr = raw[pos]
        assert (hdr >> 1) & 3 == 0, f"not a stored block at {pos}"
        ln, nln = struct.unpack_from("<HH", raw, pos + 1)
        assert ln ^ nln == 0xFFFF, f"bad stored block length at {pos}"
        blocks.append((out, pos + 5, ln))
        out += ln
        pos += 5 + ln
        if hdr & 1:
            return blocks


def patch_place(blocks, target):
    """(source offset, length) of up to PATCH bytes at output target, all
    inside one stored block's data."""
    for out, src, ln in blocks:
        if out <= target < out + ln:
            n = min(PATCH, out + ln - target)
            return src + (target - out), n
    raise AssertionError("target past the end of the stream")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The truth (the .npy bytes, or the raw bytes of the passthrough file)
    and, per kind, a pristine source file and where the TARGET output bytes
    lie in it."""
    d = tmp_path_factory.mktemp("pristine")
    rng = np.random.default_rng(9)
    # never 0xFF, so an overwritten byte always differs from the truth
    arr = rng.integers(0, 255, SIZE - 128, dtype=np.uint8)
    truth = npy_bytes(arr)
    assert len(truth) == SIZE
    out = {"truth": truth}

    z = d / "deflate.npz"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=0) as zf:
        zf.writestr("big.npy", truth)
    raw = z.read_bytes()
    with zipfile.ZipFile(z) as zf:
        start = data_offset(raw, zf.getinfo("big.npy").header_offset)
    out["deflate"] = (z, "big.npy", patch_place(stored_blocks(raw, start), TARGET))

    s = d / "stored.npz"
    with zipfile.ZipFile(s, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("big.npy", truth)
    raw = s.read_bytes()
    with zipfile.ZipFile(s) as zf:
        start = data_offset(raw, zf.getinfo("big.npy").header_offset)
    out["stored"] = (s, "big.npy", (start + TARGET, PATCH))

    g = d / "big.npy.gz"
    g.write_bytes(gzip.compress(truth, compresslevel=0, mtime=0))
    raw = g.read_bytes()
    assert raw[3] == 0  # no optional header fields: the stream starts at byte 10
    out["gzip"] = (g, "big.npy", patch_place(stored_blocks(raw, 10), TARGET))

    p = d / "plain"
    p.mkdir()
    (p / "blob.bin").write_bytes(truth)
    out["plain"] = (p, "blob.bin", (TARGET, PATCH))
    del raw
    return out


def fresh_source(pristine, kind, tmp_path):
    """A copy of the pristine source of kind: (mount source, file to change,
    name in the mount, (offset, length) to overwrite)."""
    src, name, where = pristine[kind]
    if src.is_dir():
        dst = tmp_path / "tree"
        shutil.copytree(src, dst)
        return dst, dst / name, name, where
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    return dst, dst, name, where


def overwrite(path, where, restore_mtime):
    """Overwrite the source in place, as another program would. With
    restore_mtime the size and mtime look untouched afterwards."""
    at, n = where
    st = os.stat(path)
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.pwrite(fd, b"\xff" * n, at) == n
    finally:
        os.close(fd)
    if restore_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# ------------------------------------------------------------ readers ---

def first_diff(got, want):
    a = np.frombuffer(got, np.uint8)
    b = np.frombuffer(want, np.uint8)
    return int(np.flatnonzero(a != b)[0])


def pread_reader(path, truth, change):
    """pread STEP bytes at a time; change() once TRIGGER bytes were read.
    Returns ("mismatch", offset), ("error", offset, errno) or ("done", size)."""
    fd = os.open(path, os.O_RDONLY)
    changed = False
    off = 0
    try:
        while off < len(truth):
            if not changed and off >= TRIGGER:
                change()
                changed = True
            try:
                b = os.pread(fd, STEP, off)
            except OSError as e:
                return ("error", off, e.errno)
            if not b:
                return ("short", off)
            if b != truth[off:off + len(b)]:
                return ("mismatch", off + first_diff(b, truth[off:off + len(b)]))
            off += len(b)
        return ("done", off)
    finally:
        os.close(fd)


def read_reader(path, truth, change):
    """The same with read(): a plain sequential reader."""
    fd = os.open(path, os.O_RDONLY)
    changed = False
    off = 0
    try:
        while off < len(truth):
            if not changed and off >= TRIGGER:
                change()
                changed = True
            try:
                b = os.read(fd, STEP)
            except OSError as e:
                return ("error", off, e.errno)
            if not b:
                return ("short", off)
            if b != truth[off:off + len(b)]:
                return ("mismatch", off + first_diff(b, truth[off:off + len(b)]))
            off += len(b)
        return ("done", off)
    finally:
        os.close(fd)


def mmap_reader(path, truth, change):
    """Through a memory map (run in a child: an error is SIGBUS)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    changed = False
    try:
        for off in range(0, len(truth), STEP):
            if not changed and off >= TRIGGER:
                change()
                changed = True
            b = mm[off:off + STEP]
            if b != truth[off:off + len(b)]:
                return ("mismatch", off + first_diff(b, truth[off:off + len(b)]))
        return ("done", len(truth))
    finally:
        mm.close()


# ------------------------------------------------------------- change ---

# Before the fix every mtime-restored case served new bytes, and so did a
# plain pwrite under readahead workers (threads=2: a worker's run of many
# chunks was checked only at its ends). A plain pwrite under a lone reader was
# caught, by a check before each read, which left a window between that check
# and the read (and a stored read's splice).
CASES = [
    # (kind, reader, options)
    ("deflate", "pread", ["threads=0"]),
    ("deflate", "mmap", ["threads=0"]),
    ("deflate", "read", ["threads=2"]),
    ("deflate", "pread", ["threads=2"]),
    ("stored", "pread", []),
    ("stored", "mmap", []),
    ("gzip", "pread", ["threads=2"]),
    ("gzip", "mmap", ["threads=0"]),
    ("plain", "pread", []),
    ("plain", "mmap", []),
]


@pytest.mark.parametrize("restore_mtime", [False, True], ids=["pwrite", "mtime-restored"])
@pytest.mark.parametrize("kind,reader,opts", CASES,
                         ids=[f"{k}-{r}-{'-'.join(o) or 'default'}" for k, r, o in CASES])
def test_rewritten_in_place_never_mixes(kind, reader, opts, restore_mtime, pristine, mount,
                                        tmp_path):
    truth = pristine["truth"]
    src, victim, name, where = fresh_source(pristine, kind, tmp_path)
    # cache_size bounds how far the readahead workers run ahead of the reader
    # (a quarter of it, 16 MiB): short of TARGET when the reader changes the
    # source, so the overwritten bytes are decoded after the change
    mnt = mount(src, "index=lazy", "cache_size=64M", f"index_dir={tmp_path / 'idx'}", *opts)
    path = mnt / name

    def change():
        overwrite(victim, where, restore_mtime)

    if reader == "mmap":
        try:
            res = in_child(mmap_reader, path, truth, change, timeout=300)
        except pytest.fail.Exception as e:
            assert "SIGBUS" in str(e), e
            res = ("sigbus",)
    else:
        fn = pread_reader if reader == "pread" else read_reader
        res = guarded(fn, path, truth, change, timeout=300)
    assert res[0] != "mismatch", f"new bytes served at offset {res[1]} without an error"
    assert res[0] != "short", res
    # the source changed well ahead of every decode or read: it is noticed
    # before the reader gets there
    assert res[0] in ("error", "sigbus"), res
    if res[0] == "error":
        assert res[2] == errno.EIO, res
        assert res[1] <= TARGET, res
    log = mount.mount_of(mnt).stderr()
    assert "changed" in log, log


# ------------------------------------------------------- cached pages ---

DROP_DEADLINE = 20.0  # seconds for the notifier to have the pages dropped


def stats(mnt):
    return json.loads(os.getxattr(mnt, "user.npyfs.stats.json"))


def first_page_errno(path):
    """errno of a fresh read of the first page of path, or None if it reads."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.pread(fd, 4096, 0)
        return None
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def wait_pages_dropped(mnt, files):
    """The daemon drops the pages from a thread of its own, after the read
    that found the damage was answered; it counts each file once the kernel
    has dropped them (the call returns after that). Wait (bounded) for the
    count; what follows checks the outcome either way."""
    deadline = time.monotonic() + DROP_DEADLINE
    while stats(mnt).get("pages_dropped", 0) < files and time.monotonic() < deadline:
        time.sleep(0.05)


def mapped_first_page(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        return mm[:4096] and "read"
    finally:
        mm.close()


def sequential(path):
    """(bytes read, errno or None) of a full sequential read."""
    fd = os.open(path, os.O_RDONLY)
    parts = []
    try:
        while True:
            try:
                b = os.read(fd, STEP)
            except OSError as e:
                return b"".join(parts), e.errno
            if not b:
                return b"".join(parts), None
            parts.append(b)
    finally:
        os.close(fd)


def test_crc_mismatch_drops_cached_pages(mount, tmp_path):
    """A member whose CRC-32 mismatch shows only at its end (a flipped byte
    inside a stored deflate block decodes fine): a full read puts all but
    its end in the page cache, then fails. The whole member is condemned,
    so the pages cached before must go too: a re-read fails with EIO
    instead of handing out the (wrong) cached bytes."""
    rng = np.random.default_rng(3)
    truth = npy_bytes(rng.integers(0, 255, 8 * MiB - 128, dtype=np.uint8))
    src = tmp_path / "crc.npz"
    with zipfile.ZipFile(src, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=0) as zf:
        zf.writestr("m.npy", truth)
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        start = data_offset(bytes(raw), zf.getinfo("m.npy").header_offset)
    at, _ = patch_place(stored_blocks(raw, start), 2 * MiB)
    raw[at] ^= 0x01
    src.write_bytes(bytes(raw))

    # verify=lazy: the damage must be found after pages were served
    mnt = mount(src, "index=lazy", "verify=lazy", "threads=0", f"index_dir={tmp_path / 'idx'}")
    path = mnt / "m.npy"
    got, err = guarded(sequential, path)
    assert err == errno.EIO, (len(got), err)   # the CRC-32 at the end
    assert len(got) >= 4 * MiB                 # the start was served (and cached)
    wait_pages_dropped(mnt, 1)
    assert guarded(first_page_errno, path) == errno.EIO, "cached pages still served"
    with pytest.raises(pytest.fail.Exception, match="SIGBUS"):
        in_child(mapped_first_page, path)
    assert stats(mnt)["pages_dropped"] >= 1


@pytest.mark.parametrize("indexed", [False, True], ids=["no-index", "indexed"])
def test_changed_archive_drops_cached_pages(indexed, npyfs_bin, mount, tmp_path):
    """a.npy is read in full (its pages cached by the kernel); then b.npy's
    bytes are changed in place with the archive's mtime restored (the ctime
    still moves) and b.npy is read: the change is found, and a.npy's cached
    pages are dropped too, so its re-read fails with EIO. indexed: both
    members have chunk checksums from `npyfs index` (b's read would also
    find a mismatch)."""
    rng = np.random.default_rng(4)
    arrays = {k: np.cumsum(rng.integers(-3, 4, 500_000)).astype(np.float64) / 64
              for k in ("a", "b")}
    src = tmp_path / "two.npz"
    with zipfile.ZipFile(src, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, v in arrays.items():
            zf.writestr(f"{k}.npy", npy_bytes(v))
    raw = src.read_bytes()
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("b.npy")
        b_at = data_offset(raw, info.header_offset) + info.compress_size // 2
    idx = tmp_path / "idx"
    if indexed:
        r = run([npyfs_bin, "index", "-o", f"index_dir={idx}", src], timeout=300)
        assert r.returncode == 0, r.stderr
    # verify=lazy: pages must be served before the change is found
    mnt = mount(src, "index=lazy", "verify=lazy", f"index_dir={idx}")
    a = mnt / "a.npy"
    got, err = guarded(sequential, a)
    assert err is None and got == npy_bytes(arrays["a"])

    st = os.stat(src)
    with open(src, "r+b") as f:
        f.seek(b_at)
        old = f.read(1)
        f.seek(b_at)
        f.write(bytes([old[0] ^ 0x10]))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(src).st_mtime_ns == st.st_mtime_ns

    got, err = guarded(sequential, mnt / "b.npy")
    assert err == errno.EIO, (len(got), err)
    assert got == npy_bytes(arrays["b"])[:len(got)]
    wait_pages_dropped(mnt, 2)  # a.npy and b.npy
    assert guarded(first_page_errno, a) == errno.EIO, "a.npy's cached pages still served"
    with pytest.raises(pytest.fail.Exception, match="SIGBUS"):
        in_child(mapped_first_page, a)
    s = stats(mnt)
    assert s["pages_dropped"] >= 2
    assert all(arch["changed"] for arch in s["archives"])


# ---------------------------------------------------- parked decoders ---

def test_parked_decoders_bounded_mount_wide(npyfs_bin, mount, tmp_path):
    """200 deflate members open at once, each read partly by a sequential
    reader (each read parks its decoder): the mount holds no more parked
    decoders than its bound, the reads are exact, reading on after the
    oldest were dropped is exact too, and closing every file frees them all."""
    n, size = 200, 2 * MiB
    rng = np.random.default_rng(5)
    base = np.cumsum(rng.integers(-3, 4, size // 8)).astype(np.float64) / 64
    truths = {}
    src = tmp_path / "many.npz"
    with zipfile.ZipFile(src, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            t = npy_bytes(base + i)
            truths[f"m{i:03d}.npy"] = t
            zf.writestr(f"m{i:03d}.npy", t)
    mnt = mount(src, "index=lazy", f"index_dir={tmp_path / 'idx'}", "readahead=128K")

    def body():
        fds = {name: os.open(mnt / name, os.O_RDONLY) for name in truths}
        try:
            for name, fd in fds.items():
                for off in range(0, 3 * CHUNK, CHUNK):  # sequential, stops early
                    assert os.pread(fd, CHUNK, off) == truths[name][off:off + CHUNK], name
            s = stats(mnt)
            held = s["parked_decoders"]
            for name, fd in fds.items():  # on to the end: exact after the drops
                off = 3 * CHUNK
                while off < len(truths[name]):
                    b = os.pread(fd, STEP, off)
                    assert b == truths[name][off:off + len(b)], (name, off)
                    off += len(b)
            return held, s["parked_decoders_max"]
        finally:
            for fd in fds.values():
                os.close(fd)

    held, bound = guarded(body, timeout=600)
    assert bound == 64
    assert 0 < held <= bound, held
    # the last close frees a member's. The kernel sends RELEASE in the
    # background (close() does not wait for it), so the 200 of them may still
    # be on their way when close() has returned: wait for them, a while.
    deadline = time.monotonic() + 20
    while stats(mnt)["parked_decoders"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(mnt)["parked_decoders"] == 0
    text = run([npyfs_bin, "stats", mnt], timeout=30).stdout.decode()
    assert "parked decoders" in text, text
