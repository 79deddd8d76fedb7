"""`npyfs stats` names the kind of damage it found (issue 11.4): bad deflate
data at a compressed offset, a CRC-32 mismatch (of the member, or of one
chunk against its saved index), a size mismatch, compressed data that ends
early, or an archive changed since the mount; `--json` gives the kind and
its details. Each case is made for real and read through a real mount."""
import errno
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest

from conftest import guarded, npy_bytes, read_all, run


def _stats(npyfs_bin, mnt, *flags):
    r = guarded(run, [npyfs_bin, "stats", *flags, mnt], timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def _member(npyfs_bin, mnt, name):
    st = json.loads(_stats(npyfs_bin, mnt, "--json"))
    (m,) = [m for a in st["archives"] for m in a["members"] if m["name"] == name]
    return m


def _read_fails(path):
    with pytest.raises(OSError) as e:
        guarded(read_all, path, timeout=120)
    assert e.value.errno == errno.EIO, e.value


def _pread(path, n, off):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def _array(n=1 << 18):
    rng = np.random.default_rng(11)
    return np.cumsum(rng.integers(-3, 4, size=n)).astype(np.int64)


def _npz(path, arr):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.npy", npy_bytes(arr))
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("a.npy")
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    data = info.header_offset + 30 + name_len + extra_len
    return info, data


class _FlushedCompressor:
    """zipfile's compressor, but with a full flush at the middle of the
    data: the block after it starts on a byte boundary (at self.at in the
    deflate data), where a test can put an invalid block type."""

    def __init__(self):
        self.parts = []
        self.at = None

    def compress(self, data):
        self.parts.append(data)
        return b""

    def flush(self):
        data = b"".join(self.parts)
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        head = c.compress(data[:len(data) // 2]) + c.flush(zlib.Z_FULL_FLUSH)
        self.at = len(head)
        return head + c.compress(data[len(data) // 2:]) + c.flush()


def _npz_bad_block(path, arr, monkeypatch):
    comp = _FlushedCompressor()
    monkeypatch.setattr(zipfile, "_get_compressor", lambda *a, **k: comp)
    info, data = _npz(path, arr)
    monkeypatch.undo()
    raw = bytearray(path.read_bytes())
    # BFINAL 0, BTYPE 11: a block type that does not exist
    raw[data + comp.at] = 0x06
    path.write_bytes(bytes(raw))
    d = zlib.decompressobj(-15)
    with pytest.raises(zlib.error, match="invalid block type"):
        d.decompress(bytes(raw[data:data + info.compress_size]))
    return data + comp.at, data + info.compress_size


@pytest.mark.parametrize("verify", ["lazy", "auto"])
def test_bad_deflate_data_at_offset(verify, npyfs_bin, mount, tmp_path, monkeypatch):
    src = tmp_path / "bad.npz"
    at, end = _npz_bad_block(src, _array(), monkeypatch)
    mnt = mount(src, "index=lazy", f"verify={verify}")
    _read_fails(mnt / "a.npy")
    m = _member(npyfs_bin, mnt, "a.npy")
    d = m["damage"]
    assert d is not None and d["kind"] == "bad_data", m
    # the decoder stops where the bad bytes are (ISA-L reads a little ahead)
    assert at <= d["compressed_offset"] <= min(at + (64 << 10), end), (at, d)
    assert f"bad deflate data at compressed offset {d['compressed_offset']}" in d["text"]
    text = _stats(npyfs_bin, mnt)
    assert f"bad deflate data at compressed offset {d['compressed_offset']}" in text, text


def test_member_crc_mismatch(npyfs_bin, mount, tmp_path):
    src = tmp_path / "crc.npz"
    info, _ = _npz(src, _array())
    raw = bytearray(src.read_bytes())
    good = struct.pack("<I", info.CRC)
    wrong = struct.pack("<I", info.CRC ^ 0x00010000)
    # the CRC field of the local header and of the central directory
    assert raw[info.header_offset + 14:info.header_offset + 18] == good
    cd = raw.rindex(b"PK\x01\x02")
    assert raw[cd + 16:cd + 20] == good
    raw[info.header_offset + 14:info.header_offset + 18] = wrong
    raw[cd + 16:cd + 20] = wrong
    src.write_bytes(bytes(raw))
    mnt = mount(src, "index=lazy", "verify=lazy")
    _read_fails(mnt / "a.npy")
    d = _member(npyfs_bin, mnt, "a.npy")["damage"]
    assert d is not None and d["kind"] == "crc_mismatch", d
    assert "CRC-32 mismatch of the member" in d["text"]
    assert "CRC-32 mismatch of the member" in _stats(npyfs_bin, mnt)


def test_size_mismatch(npyfs_bin, mount, tmp_path):
    src = tmp_path / "size.npz"
    info, _ = _npz(src, _array())
    raw = bytearray(src.read_bytes())
    good = struct.pack("<I", info.file_size)
    short = struct.pack("<I", info.file_size - 8)
    # the uncompressed size in the local header and the central directory
    assert raw[info.header_offset + 22:info.header_offset + 26] == good
    cd = raw.rindex(b"PK\x01\x02")
    assert raw[cd + 24:cd + 28] == good
    raw[info.header_offset + 22:info.header_offset + 26] = short
    raw[cd + 24:cd + 28] = short
    src.write_bytes(bytes(raw))
    mnt = mount(src, "index=lazy", "verify=lazy")
    assert os.stat(mnt / "a.npy").st_size == info.file_size - 8
    _read_fails(mnt / "a.npy")
    d = _member(npyfs_bin, mnt, "a.npy")["damage"]
    assert d is not None and d["kind"] == "size_mismatch", d
    assert d["expected_size"] == info.file_size - 8, d
    assert d["decoded_size"] > d["expected_size"], d
    assert "size mismatch" in d["text"]
    assert "size mismatch" in _stats(npyfs_bin, mnt)


def test_truncated_stream(npyfs_bin, mount, tmp_path):
    """A .npy.gz whose deflate data lost bytes near its end (stored blocks,
    so nothing before the cut can look invalid; the trailer is kept, so it
    is sized from its header as usual): the decoder runs out of input."""
    import gzip
    arr = _array()
    truth = npy_bytes(arr)
    whole = gzip.compress(truth, compresslevel=0, mtime=0)
    raw = whole[:-8 - 3000] + whole[-8 - 2000:]  # 1000 bytes of the last block gone
    src = tmp_path / "cut.npy.gz"
    src.write_bytes(raw)
    mnt = mount(src, "index=lazy", "verify=lazy")
    assert os.stat(mnt / "cut.npy").st_size == len(truth)
    _read_fails(mnt / "cut.npy")
    d = _member(npyfs_bin, mnt, "cut.npy")["damage"]
    assert d is not None and d["kind"] == "truncated", d
    assert len(raw) - 8 - (64 << 10) <= d["compressed_offset"] <= len(raw), (len(raw), d)
    assert f"ends early (truncated archive?) at compressed offset {d['compressed_offset']}" in d["text"]


def test_archive_changed_since_mount(npyfs_bin, mount, tmp_path):
    src = tmp_path / "changed.npz"
    arr = _array()
    _npz(src, arr)
    mnt = mount(src, "index=lazy", "verify=lazy")
    head = guarded(_pread, mnt / "a.npy", 4096, 0)
    assert head == npy_bytes(arr)[:4096]
    st = os.stat(src)
    with open(src, "r+b") as f:  # written in place: same inode
        f.seek(st.st_size // 2)
        f.write(b"\0" * 16)
    _read_fails(mnt / "a.npy")
    d = _member(npyfs_bin, mnt, "a.npy")["damage"]
    assert d is not None and d["kind"] == "archive_changed", d
    assert "archive changed since mount" in _stats(npyfs_bin, mnt)


def test_undamaged_member_has_no_damage(npyfs_bin, mount, tmp_path):
    src = tmp_path / "ok.npz"
    arr = _array()
    _npz(src, arr)
    mnt = mount(src, "index=lazy")
    assert guarded(read_all, mnt / "a.npy") == npy_bytes(arr)
    assert _member(npyfs_bin, mnt, "a.npy")["damage"] is None
    row = [line for line in _stats(npyfs_bin, mnt).splitlines() if "a.npy" in line]
    assert len(row) == 1 and row[0].rstrip().endswith("ok, crc checked"), row
