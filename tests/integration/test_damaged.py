"""Damaged and padded sources: never a silent success with wrong bytes.

- .npy.gz followed by zero padding (tape-style, which gzip(1) ignores): served
  exactly.
- .npy.gz followed by non-gzip garbage: gzip(1) ignores it with a warning; we
  accept serving the exact bytes or a clean refusal (one line naming the file).
- Truncated .npy.gz (half the stream; or only the 8-byte trailer missing):
  either the mount is refused with one line naming the file, or the bytes
  before the damage are right and reading the damaged part fails with EIO.
- A truncated .npz (no end of central directory): refused, one line naming it.
- An .npz whose deflate data was overwritten in the middle: reading the whole
  member sequentially fails with EIO (a stream error or the CRC check at the
  end; bytes decoded before the damage was detectable may differ), and the
  archive's other member still reads correctly.
"""

import errno
import gzip
import os
import zipfile

import numpy as np
import pytest

from conftest import (cleanup_background, guarded, mounted_fuse, npy_bytes, read_all,
                      run)

ARR = (np.sin(np.arange(400_000) / 300.0) * 20000).astype(np.int32)
TRUTH = npy_bytes(ARR)
GZ = gzip.compress(TRUTH, mtime=0)


def _mount_or_refusal(npyfs_bin, src, mnt):
    """Background mount; returns True if mounted, False after checking the
    refusal is clean (non-zero, one stderr line naming the file, no mount)."""
    r = run([npyfs_bin, "mount", src, mnt], timeout=30)
    err = r.stderr.decode(errors="replace").strip()
    if r.returncode != 0:
        assert len(err.splitlines()) == 1 and src.name in err, err
        assert not mounted_fuse(mnt)
        return False
    assert mounted_fuse(mnt)
    return True


def _partial_read(path, chunk=1 << 16):
    """Read sequentially; returns (bytes read, OSError or None)."""
    out = bytearray()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            try:
                b = os.read(fd, chunk)
            except OSError as e:
                return bytes(out), e
            if not b:
                return bytes(out), None
            out += b
    finally:
        os.close(fd)


def test_zero_padded_gz(npyfs_bin, tmp_path):
    src = tmp_path / "zpad.npy.gz"
    src.write_bytes(GZ + b"\0" * 1000)
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        r = run([npyfs_bin, "mount", src, mnt], timeout=30)
        assert r.returncode == 0, r.stderr
        assert guarded(os.stat, mnt / "zpad.npy", timeout=15).st_size == len(TRUTH)
        assert guarded(read_all, mnt / "zpad.npy", timeout=60) == TRUTH
    finally:
        cleanup_background(mnt)


def test_trailing_garbage_gz(npyfs_bin, tmp_path):
    src = tmp_path / "garb.npy.gz"
    src.write_bytes(GZ + b"garbage!" * 10)
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        if _mount_or_refusal(npyfs_bin, src, mnt):
            assert guarded(os.stat, mnt / "garb.npy", timeout=15).st_size == len(TRUTH)
            assert guarded(read_all, mnt / "garb.npy", timeout=60) == TRUTH
    finally:
        cleanup_background(mnt)


@pytest.mark.parametrize("cut", ["half", "no_trailer"])
def test_truncated_gz(cut, npyfs_bin, tmp_path):
    src = tmp_path / f"{cut}.npy.gz"
    src.write_bytes(GZ[:len(GZ) // 2] if cut == "half" else GZ[:-8])
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        if not _mount_or_refusal(npyfs_bin, src, mnt):
            return
        got, err = guarded(_partial_read, mnt / f"{cut}.npy", timeout=60)
        assert err is not None, "whole damaged file read without an error"
        assert err.errno == errno.EIO, err
        assert got == TRUTH[:len(got)]
    finally:
        cleanup_background(mnt)


def test_truncated_npz(npyfs_bin, tmp_path):
    full = tmp_path / "full.npz"
    np.savez_compressed(full, a=ARR)
    src = tmp_path / "cut.npz"
    src.write_bytes(full.read_bytes()[:full.stat().st_size // 2])
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        r = run([npyfs_bin, "mount", src, mnt], timeout=30)
        assert r.returncode != 0
        err = r.stderr.decode(errors="replace").strip()
        assert len(err.splitlines()) == 1 and "cut.npz" in err, err
        assert not mounted_fuse(mnt)
    finally:
        cleanup_background(mnt)


def test_corrupt_deflate_member(tmp_path, mount):
    src = tmp_path / "corrupt.npz"
    np.savez_compressed(src, a=ARR, b=np.arange(10))
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("a.npy")
    lho = info.header_offset
    nlen = int.from_bytes(raw[lho + 26:lho + 28], "little")
    xlen = int.from_bytes(raw[lho + 28:lho + 30], "little")
    data = lho + 30 + nlen + xlen
    mid = data + info.compress_size // 2
    for k in range(mid, mid + 64):
        raw[k] ^= 0x55
    src.write_bytes(bytes(raw))
    # index=lazy: a background indexing pass would find the damage first and,
    # on a CRC mismatch, rightly refuse the whole member (test_index.py covers
    # that); verify=lazy: the default would check this small member before its
    # first read (test_review_async.py covers that); here the first reader
    # meets the damage itself.
    mnt = mount(src, "index=lazy", "verify=lazy")
    got, err = guarded(_partial_read, mnt / "a.npy", timeout=60)
    assert err is not None, "corrupt member read to the end without an error"
    assert err.errno == errno.EIO, err
    # Everything up to well before the damaged input is right.
    assert got[:100_000] == TRUTH[:100_000]
    assert guarded(read_all, mnt / "b.npy", timeout=30) == npy_bytes(np.arange(10))
