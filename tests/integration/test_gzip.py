""".npy.gz sources from every producer we can run (docs/FORMATS.md section 3, "gzip files").

Producers: the `gzip` command (-k keeps the name and mtime in the header,
-n drops them), Python's gzip module (level 9 default, and level 1), pigz
(plain and -i) when installed, a hand-built header with FEXTRA, FNAME,
FCOMMENT and FHCRC, and multi-member files made by gzipping pieces of the
.npy separately and concatenating them (split in the data, split inside the
12-byte prefix and the header, an empty member in between, many members).

For each: NAME.npy.gz mounts as MNT/NAME.npy, st_size is exact on the first
stat (before any read), a full read and random preads (including ranges
across member boundaries and the end of file) equal the decompressed bytes,
and np.load(mmap_mode='r') equals the original array.
"""

import gzip
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

from conftest import (assert_same_array, guarded, in_child, is_shown_like, load,
                      npy_bytes, read_all, run)


def _array():
    # ~1.6 MB so the stream spans more than one default 1 MiB access point.
    t = np.arange(400_000)
    return (np.sin(t / 300.0) * 20000).astype(np.int32)


ARR = _array()
TRUTH = npy_bytes(ARR)


def _gz(data, level=6, mtime=0):
    return gzip.compress(data, compresslevel=level, mtime=mtime)


def _crafted_header(data):
    """gzip member with FEXTRA (a BGZF-like 'BC' subfield), FNAME, FCOMMENT
    and FHCRC set, then raw deflate, CRC32 and ISIZE."""
    flg = 0x04 | 0x08 | 0x10 | 0x02
    extra = b"BC" + struct.pack("<HH", 2, 0) + b"XY" + struct.pack("<H", 3) + b"abc"
    hdr = b"\x1f\x8b\x08" + bytes([flg]) + struct.pack("<I", 1_000_000_000) + b"\x00\xff"
    hdr += struct.pack("<H", len(extra)) + extra
    hdr += b"original.npy\x00" + b"a comment\x00"
    hdr += struct.pack("<H", zlib.crc32(hdr) & 0xFFFF)
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = co.compress(data) + co.flush()
    return hdr + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def _multi(parts):
    return b"".join(_gz(p) for p in parts)


def _split(data, cuts):
    cuts = [0] + list(cuts) + [len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:])]


MID = len(TRUTH) // 2
VARIANTS = {
    # name: (builder(dir, name) -> path of NAME.npy.gz, member boundaries in the output)
    "py_gzip_level9": None,
    "py_gzip_level1": None,
    "gzip_cmd_k": None,
    "gzip_cmd_n": None,
    "pigz": None,
    "pigz_i": None,
    "crafted_header_fields": None,
    "multi_split_data": [MID],
    "multi_split_prefix": [5, 11],          # inside magic and inside HEADER_LEN
    "multi_split_header": [40, 127, 128],   # inside the dict, at the data offset
    "multi_empty_member": [MID, MID],       # an empty gzip member in between
    "multi_many": list(range(65536, len(TRUTH), 65536)),
}


def _build(d, variant):
    npy = d / f"{variant}.npy"
    gz = d / f"{variant}.npy.gz"
    if variant == "py_gzip_level9":
        with gzip.open(gz, "wb") as f:
            np.save(f, ARR)
    elif variant == "py_gzip_level1":
        with gzip.open(gz, "wb", compresslevel=1) as f:
            np.save(f, ARR)
    elif variant in ("gzip_cmd_k", "gzip_cmd_n", "pigz", "pigz_i"):
        tool = "pigz" if variant.startswith("pigz") else "gzip"
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
        npy.write_bytes(TRUTH)
        if variant == "gzip_cmd_k":
            r = run(["gzip", "-k", npy])
            assert r.returncode == 0, r.stderr
        else:
            flags = {"gzip_cmd_n": ["gzip", "-n", "-c"], "pigz": ["pigz", "-c"],
                     "pigz_i": ["pigz", "-i", "-c"]}[variant]
            with open(gz, "wb") as out:
                r = subprocess.run(flags + [str(npy)], stdout=out,
                                   stderr=subprocess.PIPE, timeout=60)
            assert r.returncode == 0, r.stderr
        npy.unlink()
    elif variant == "crafted_header_fields":
        gz.write_bytes(_crafted_header(TRUTH))
    else:
        gz.write_bytes(_multi(_split(TRUTH, VARIANTS[variant])))
    # Self-check: this is a valid gzip file of exactly the .npy bytes.
    assert gzip.decompress(gz.read_bytes()) == TRUTH
    return gz


def _ranges(boundaries, size, rng, n=60):
    out = []
    for b in boundaries:
        for delta in (-1, 0, 1):
            for length in (1, 2, 4096, 70000):
                off = b + delta - (length // 2 if length > 2 else 0)
                if 0 <= off < size:
                    out.append((off, length))
    out += [(size - 1, 1), (size - 10, 100), (size, 10), (0, 12), (0, 200)]
    for _ in range(n):
        off = int(rng.integers(0, size))
        out.append((off, int(rng.integers(1, 300_000))))
    return out


def _check(path, boundaries, src):
    st = os.stat(path)  # first operation: size must already be exact
    assert is_shown_like(st, src), oct(st.st_mode)
    assert st.st_size == len(TRUTH)
    rng = np.random.default_rng(7)
    fd = os.open(path, os.O_RDONLY)
    try:
        for off, length in _ranges(boundaries, len(TRUTH), rng):
            got = os.pread(fd, length, off)
            assert got == TRUTH[off:off + length], (off, length, len(got))
    finally:
        os.close(fd)
    assert read_all(path) == TRUTH
    m = load(path, "r")
    try:
        assert_same_array(m, ARR)
    finally:
        del m


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_npy_gz_producer(variant, tmp_path, mount):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    gz = _build(src_dir, variant)
    mnt = mount(gz)
    assert guarded(os.listdir, mnt, timeout=30) == [f"{variant}.npy"]
    boundaries = [c for c in (VARIANTS[variant] or []) if 0 < c < len(TRUTH)]
    in_child(_check, mnt / f"{variant}.npy", boundaries, gz, timeout=180)


def test_multi_member_isize_is_last_member_only(tmp_path, mount):
    """ISIZE of a multi-member file is the last member's size: st_size must
    still be the total (the header tells the size, not the trailer)."""
    gz = tmp_path / "two.npy.gz"
    parts = _split(TRUTH, [len(TRUTH) - 1000])
    gz.write_bytes(_multi(parts))
    assert struct.unpack("<I", gz.read_bytes()[-4:])[0] == 1000  # self-check
    mnt = mount(gz)
    st = guarded(os.stat, mnt / "two.npy", timeout=30)
    assert st.st_size == len(TRUTH)
    assert guarded(read_all, mnt / "two.npy", timeout=120) == TRUTH


def test_mtime_of_gz_source(tmp_path, mount):
    gz = tmp_path / "when.npy.gz"
    gz.write_bytes(_gz(TRUTH))
    os.utime(gz, (1_000_000_000, 1_000_000_000))
    mnt = mount(gz)
    st = guarded(os.stat, mnt / "when.npy", timeout=30)
    assert int(st.st_mtime) == 1_000_000_000
    assert st.st_uid == os.getuid() and st.st_gid == os.getgid()
    assert st.st_nlink == 1
