"""Metadata without Python: xattrs on array files, `npyfs ls --json`, and
`npyfs stats` (the mount root's user.npyfs.stats).

- Every array file has user.npy.dtype (a type string, or a struct's descr), user.npy.shape
  (numpy's repr of the tuple), user.npy.fortran_order (True/False),
  user.npyfs.method and user.npyfs.stored_size; each is checked against numpy
  and zipfile. A member that is not .npy has only the user.npyfs.* two.
  getxattr(2) semantics: size 0 gives the length, a short buffer ERANGE, an
  unknown name ENODATA. `getfattr -d` (package attr) shows them.
- The mount root lists user.npyfs.stats; other directories have nothing.
- `ls --json` is one JSON document that Python's json parses; it matches
  numpy for every member, has nulls for non-arrays, the reason for an
  unsupported member, and names that are not UTF-8 come back exactly with
  os.fsencode() (surrogateescape).
- `npyfs stats MNT` and `--json`: counters move with reads, index coverage
  grows to complete, damage shows, the text stays under 64 KiB with a
  thousands-of-members archive, and the errors for a path that is not an
  npyfs mount.
"""

import ast
import ctypes
import ctypes.util
import errno
import gzip
import json
import os
import re
import shutil
import threading
import zipfile

import numpy as np
import pytest

from conftest import guarded, npy_bytes, read_all, run

ARRS = {
    "c2d": np.arange(3000, dtype="<f8").reshape(1000, 3),
    "scalar": np.array(7, dtype=np.uint32),
    "vec": np.arange(5, dtype=">i2"),
    "fort": np.asfortranarray(np.ones((2, 3), dtype="<f4")),
    "rec": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
    "flags": np.array([True, False, True]),
    "text": np.array(["ab", "cde"]),
    "empty": np.zeros((0, 4), dtype="<c16"),
    "sub/deep": np.arange(6, dtype="<i8").reshape(2, 3),
}
NPY_ATTRS = ["user.npy.dtype", "user.npy.shape", "user.npy.fortran_order"]
FS_ATTRS = ["user.npyfs.method", "user.npyfs.stored_size"]


def dtype_of(text):
    """The dtype a user.npy.dtype value names (README, Stats and xattrs): a
    type string as it is (<f8), a struct as the header's descr."""
    if text.startswith(("[", "(")):
        return np.lib.format.descr_to_dtype(ast.literal_eval(text))
    return np.dtype(text)


@pytest.fixture
def meta_npz(tmp_path):
    p = tmp_path / "meta.npz"
    np.savez_compressed(p, **ARRS)
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("notes.txt", b"not an array\n")
        zf.writestr(zipfile.ZipInfo("stored.npy"), npy_bytes(np.arange(4)))
    return p


def _infos(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: i for i in zf.infolist()}


def test_xattrs_of_array_files(meta_npz, mount):
    mnt = mount(meta_npz)
    infos = _infos(meta_npz)

    def body():
        for key, arr in ARRS.items():
            f = mnt / f"{key}.npy"
            names = os.listxattr(f)
            assert sorted(names) == sorted(NPY_ATTRS + FS_ATTRS), (key, names)
            dt = os.getxattr(f, "user.npy.dtype").decode()
            assert dtype_of(dt) == arr.dtype, (key, dt)
            assert os.getxattr(f, "user.npy.shape").decode() == repr(arr.shape), key
            fortran = arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous
            assert os.getxattr(f, "user.npy.fortran_order").decode() == str(fortran), key
            info = infos[f"{key}.npy"]
            assert os.getxattr(f, "user.npyfs.method") == b"deflate"
            assert os.getxattr(f, "user.npyfs.stored_size").decode() == str(info.compress_size)
        s = mnt / "stored.npy"
        assert os.getxattr(s, "user.npyfs.method") == b"stored"
        assert os.getxattr(s, "user.npy.shape") == b"(4,)"
    guarded(body, timeout=60)


def test_xattrs_of_other_files_and_dirs(meta_npz, mount):
    mnt = mount(meta_npz)

    def body():
        t = mnt / "notes.txt"
        assert sorted(os.listxattr(t)) == sorted(FS_ATTRS)
        assert os.getxattr(t, "user.npyfs.method") == b"stored"
        for name in NPY_ATTRS:
            with pytest.raises(OSError) as e:
                os.getxattr(t, name)
            assert e.value.errno == errno.ENODATA
        with pytest.raises(OSError) as e:
            os.getxattr(mnt / "c2d.npy", "user.npy.nonsense")
        assert e.value.errno == errno.ENODATA
        assert os.listxattr(mnt / "sub") == []
        assert os.listxattr(mnt) == ["user.npyfs.stats"]
        assert b"bytes served" in os.getxattr(mnt, "user.npyfs.stats")
    guarded(body, timeout=60)


def test_xattr_size_query_and_erange(meta_npz, mount):
    """The raw getxattr(2) protocol: size 0 gives the length, too small a
    buffer ERANGE (os.getxattr hides both, so call libc)."""
    mnt = mount(meta_npz)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.getxattr.restype = ctypes.c_ssize_t
    libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    path = os.fsencode(mnt / "c2d.npy")

    def body():
        n = libc.getxattr(path, b"user.npy.shape", None, 0)
        assert n == len("(1000, 3)")
        buf = ctypes.create_string_buffer(n)
        assert libc.getxattr(path, b"user.npy.shape", buf, 3) == -1
        assert ctypes.get_errno() == errno.ERANGE
        assert libc.getxattr(path, b"user.npy.shape", buf, n) == n
        assert buf.raw == b"(1000, 3)"
        # The root's stats: the size query leaves room for counters that grow.
        root = os.fsencode(mnt)
        n = libc.getxattr(root, b"user.npyfs.stats", None, 0)
        assert 0 < n <= 65536
        big = ctypes.create_string_buffer(n)
        got = libc.getxattr(root, b"user.npyfs.stats", big, n)
        assert 0 < got <= n
    guarded(body, timeout=60)


def test_xattrs_first_use_from_many_threads(meta_npz, mount):
    """The header is parsed once and published with compare-exchange: racing
    first requests all get the same answer."""
    mnt = mount(meta_npz)
    results, errors = [], []

    def worker(key):
        try:
            results.append((key, os.getxattr(mnt / f"{key}.npy", "user.npy.shape")))
        except OSError as e:
            errors.append(e)

    def body():
        ts = [threading.Thread(target=worker, args=(k,)) for k in ARRS for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    guarded(body, timeout=60)
    assert not errors, errors
    for key, shape in results:
        assert shape.decode() == repr(ARRS[key].shape)


def test_xattrs_of_npy_gz(tmp_path, mount):
    arr = np.arange(12, dtype="<f8").reshape(3, 4)
    p = tmp_path / "one.npy.gz"
    with gzip.open(p, "wb") as f:
        np.save(f, arr)
    mnt = mount(p)

    def body():
        f = mnt / "one.npy"
        assert os.getxattr(f, "user.npyfs.method") == b"gzip"
        assert os.getxattr(f, "user.npy.shape") == b"(3, 4)"
        assert dtype_of(os.getxattr(f, "user.npy.dtype").decode()) == arr.dtype
        assert int(os.getxattr(f, "user.npyfs.stored_size")) == p.stat().st_size
    guarded(body, timeout=60)


@pytest.mark.skipif(shutil.which("getfattr") is None, reason="getfattr (package attr) missing")
def test_getfattr_dump(meta_npz, mount):
    """What the issue promises a new user: getfattr -d shows dtype, shape, order."""
    mnt = mount(meta_npz)
    r = guarded(run, ["getfattr", "-d", mnt / "fort.npy"], timeout=30)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert 'user.npy.dtype="<f4"' in out, out
    assert 'user.npy.shape="(2, 3)"' in out, out
    assert 'user.npy.fortran_order="True"' in out, out
    assert 'user.npyfs.method="deflate"' in out, out


# --- ls --json -----------------------------------------------------------------

def _ls_json(npyfs_bin, src):
    r = run([npyfs_bin, "ls", "--json", src], timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    return json.loads(r.stdout)


def test_ls_json_matches_numpy(npyfs_bin, meta_npz):
    rows = _ls_json(npyfs_bin, meta_npz)
    infos = _infos(meta_npz)
    by_name = {row["name"]: row for row in rows}
    assert sorted(by_name) == sorted(infos)
    for key, arr in ARRS.items():
        row = by_name[f"{key}.npy"]
        assert np.dtype(row["dtype"]) == arr.dtype
        assert row["shape"] == list(arr.shape)
        fortran = arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous
        assert row["fortran_order"] is fortran
        info = infos[f"{key}.npy"]
        assert row["size"] == info.file_size
        assert row["stored_size"] == info.compress_size
        assert row["method"] == "deflate"
        assert row["unsupported"] is None
    notes = by_name["notes.txt"]
    assert notes["dtype"] is None and notes["shape"] is None and notes["fortran_order"] is None
    assert notes["method"] == "stored" and notes["size"] == len(b"not an array\n")


def test_ls_json_escapes_names(npyfs_bin, tmp_path):
    """Quotes, backslashes, control bytes, UTF-8 and bytes that are not
    UTF-8: the JSON parses, and os.fsencode(name) gives the exact bytes."""
    src = tmp_path / "names.npz"
    names = ['q"uote.npy', "back\\slash.npy", "tab\there.npy", "caf\u00e9.npy", "xZZ.npy"]
    with zipfile.ZipFile(src, "w") as zf:
        for n in names:
            zf.writestr(n, npy_bytes(np.arange(3)))
    raw = src.read_bytes()
    assert raw.count(b"xZZ.npy") == 2
    src.write_bytes(raw.replace(b"xZZ.npy", b"x\xff\xfe.npy"))
    rows = _ls_json(npyfs_bin, src)
    got = sorted(os.fsencode(r["name"]) for r in rows)
    want = sorted([n.encode() for n in names[:4]] + [b"x\xff\xfe.npy"])
    assert got == want
    for r in rows:
        assert r["shape"] == [3]


def test_ls_json_unsupported_and_empty(npyfs_bin, tmp_path):
    from test_cli import _patch_method
    src = tmp_path / "odd.npz"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("ok.npy", npy_bytes(np.arange(3)))
        zf.writestr("weird.npy", npy_bytes(np.arange(3)))
    _patch_method(src, "weird.npy", 12)
    rows = {r["name"]: r for r in _ls_json(npyfs_bin, src)}
    assert rows["ok.npy"]["unsupported"] is None
    assert isinstance(rows["weird.npy"]["unsupported"], str) and rows["weird.npy"]["unsupported"]
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    assert _ls_json(npyfs_bin, empty) == []


def test_ls_json_npy_gz(npyfs_bin, tmp_path):
    arr = np.zeros((4, 5), dtype="<c8", order="F")
    p = tmp_path / "one.npy.gz"
    with gzip.open(p, "wb") as f:
        np.save(f, arr)
    (row,) = _ls_json(npyfs_bin, p)
    assert row["name"] == "one.npy" and row["method"] == "gzip"
    assert row["shape"] == [4, 5] and row["fortran_order"] is True
    assert np.dtype(row["dtype"]) == arr.dtype
    assert row["size"] == len(npy_bytes(arr)) and row["stored_size"] == p.stat().st_size


# --- stats ----------------------------------------------------------------------

def _stats(npyfs_bin, mnt, *flags):
    r = guarded(run, [npyfs_bin, "stats", *flags, mnt], timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def _big_member(tmp_path, name="big.npz", n=3 << 20):
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 16, size=n, dtype=np.uint8)  # compresses, but not to nothing
    p = tmp_path / name
    np.savez_compressed(p, big=arr, small=np.arange(10))
    return p, arr


def test_stats_counters_move(npyfs_bin, tmp_path, mount):
    src, arr = _big_member(tmp_path)
    mnt = mount(src, "index=lazy", "spacing=64K", "verify=lazy")
    before = json.loads(_stats(npyfs_bin, mnt, "--json"))
    data = guarded(read_all, mnt / "big.npy", timeout=60)
    assert data == npy_bytes(arr)
    after = json.loads(_stats(npyfs_bin, mnt, "--json"))
    size = len(data)
    assert after["bytes_served"] - before["bytes_served"] >= size
    assert after["reads"] > before["reads"]
    assert after["read_errors"] == 0
    assert after["bytes_decompressed"] >= size
    assert after["cache"]["misses"] > 0
    assert after["cache"]["capacity"] == 32 << 20  # the default cache_size
    (a,) = after["archives"]
    assert a["path"].endswith("big.npz")
    m = {x["name"]: x for x in a["members"]}
    assert m["big.npy"]["index_complete"] is True
    assert m["big.npy"]["indexed_bytes"] == size
    assert m["big.npy"]["index_points"] > 10
    assert m["big.npy"]["damage"] is None
    assert after["members_omitted"] == 0
    text = _stats(npyfs_bin, mnt)
    served = int(re.search(r"^bytes served\s+(\d+)", text, re.M).group(1))
    assert served >= size
    for label in ("reads", "read errors", "bytes decompressed", "cache hits",
                  "cache misses", "cache evictions", "archives opened"):
        assert re.search(rf"^{label}\s+\d+", text, re.M), (label, text)
    row = next(ln for ln in text.splitlines() if ln.split()[:1] == ["big.npy"])
    assert "100%" in row and "deflate" in row and str(size) in row.split()


def test_stats_partial_coverage(npyfs_bin, tmp_path, mount):
    src, arr = _big_member(tmp_path)
    mnt = mount(src, "index=lazy", "spacing=64K", "threads=0", "verify=lazy")

    def read_head():
        with open(mnt / "big.npy", "rb") as f:
            return f.read(1 << 20)
    assert guarded(read_head, timeout=60) == npy_bytes(arr)[:1 << 20]
    st = json.loads(_stats(npyfs_bin, mnt, "--json"))
    m = {x["name"]: x for x in st["archives"][0]["members"]}["big.npy"]
    assert m["index_complete"] is False
    assert 0 < m["indexed_bytes"] < m["size"]


def test_stats_shows_damage(npyfs_bin, tmp_path, mount):
    src, arr = _big_member(tmp_path)
    info = _infos(src)["big.npy"]
    raw = bytearray(src.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    mid = start + info.compress_size // 2
    for i in range(mid, mid + 64):
        raw[i] ^= 0x55
    src.write_bytes(bytes(raw))
    mnt = mount(src, "index=lazy")
    with pytest.raises(OSError) as e:
        guarded(read_all, mnt / "big.npy", timeout=60)
    assert e.value.errno == errno.EIO
    st = json.loads(_stats(npyfs_bin, mnt, "--json"))
    m = {x["name"]: x for x in st["archives"][0]["members"]}
    assert m["big.npy"]["damage"] is not None
    assert m["small.npy"]["damage"] is None
    assert "damaged" in _stats(npyfs_bin, mnt)


def test_stats_stays_under_64k(npyfs_bin, tmp_path, mount):
    src = tmp_path / "many.npz"
    with zipfile.ZipFile(src, "w") as zf:
        for i in range(3000):
            zf.writestr(f"{'m' * 60}_{i:05d}.npy", npy_bytes(np.arange(2)))
    mnt = mount(src)
    text = _stats(npyfs_bin, mnt)
    assert len(text.encode()) < 65536
    m = re.search(r"^(\d+) more members not listed", text, re.M)
    assert m, text[-300:]
    listed = sum(1 for ln in text.splitlines() if "_0" in ln and ".npy" in ln)
    assert listed + int(m.group(1)) == 3000
    st = json.loads(_stats(npyfs_bin, mnt, "--json"))
    assert st["members_omitted"] > 0
    assert len(st["archives"][0]["members"]) + st["members_omitted"] == 3000


def test_stats_errors(npyfs_bin, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for path, pattern in ((plain, "not a mount point"),
                          (tmp_path / "gone", "no such directory"),
                          ("/proc", "not an npyfs mount")):
        r = run([npyfs_bin, "stats", path], timeout=30)
        err = r.stderr.decode().strip()
        assert r.returncode == 1, err
        assert len(err.splitlines()) == 1 and pattern in err and str(path) in err, err
        assert r.stdout == b""
    r = run([npyfs_bin, "stats"], timeout=30)
    assert r.returncode == 1 and b"MOUNTPOINT" in r.stderr


def test_directory_source_xattrs_and_stats(npyfs_bin, tmp_path, mount):
    """A directory of archives: files inside an archive directory have the
    xattrs, the archive directory itself has none, and stats lists only the
    archives opened so far (they open lazily)."""
    d = tmp_path / "runs"
    (d / "2024-05").mkdir(parents=True)
    np.savez_compressed(d / "2024-05" / "run17.npz", u=ARRS["c2d"])
    np.savez_compressed(d / "2024-05" / "run18.npz", u=ARRS["vec"])
    with gzip.open(d / "g.npy.gz", "wb") as f:
        np.save(f, ARRS["fort"])
    np.save(d / "plain.npy", ARRS["rec"])
    mnt = mount(d)
    st = json.loads(_stats(npyfs_bin, mnt, "--json"))
    assert st["archives"] == []

    def body():
        f = mnt / "2024-05" / "run17.npz" / "u.npy"
        assert os.getxattr(f, "user.npy.shape") == b"(1000, 3)"
        assert os.listxattr(mnt / "2024-05" / "run17.npz") == []
        assert os.listxattr(mnt / "2024-05") == []
        g = mnt / "g.npy"
        assert os.getxattr(g, "user.npyfs.method") == b"gzip"
        assert os.getxattr(g, "user.npy.fortran_order") == b"True"
        p = mnt / "plain.npy"  # passed through: its own header, method plain
        assert dtype_of(os.getxattr(p, "user.npy.dtype").decode()) == ARRS["rec"].dtype
        assert os.getxattr(p, "user.npyfs.method") == b"plain"
        assert int(os.getxattr(p, "user.npyfs.stored_size")) == (d / "plain.npy").stat().st_size
    guarded(body, timeout=60)
    st = json.loads(_stats(npyfs_bin, mnt, "--json"))
    paths = sorted(os.path.basename(a["path"]) for a in st["archives"])
    assert paths == ["g.npy.gz", "run17.npz"], paths
    assert st["archives_opened"] >= 2
    text = _stats(npyfs_bin, mnt)
    assert "run17.npz" in text and "run18.npz" not in text


def test_stats_crc_checked_after_background_pass(npyfs_bin, tmp_path, mount):
    """The background indexing pass checks each member's CRC-32; stats says so."""
    import time
    src, arr = _big_member(tmp_path)
    mnt = mount(src)  # index=background
    deadline = time.monotonic() + 60
    while True:
        st = json.loads(_stats(npyfs_bin, mnt, "--json"))
        m = {x["name"]: x for x in st["archives"][0]["members"]}["big.npy"]
        # The pass publishes the CRC table first, then hands its points over.
        if (m["crc_checked"] and m["index_complete"]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert m["crc_checked"] is True and m["index_complete"] is True, m
    row = next(ln for ln in _stats(npyfs_bin, mnt).splitlines()
               if ln.split()[:1] == ["big.npy"])
    assert "crc checked" in row, row


def test_dtype_xattr_round_trips_non_ascii_field_names(tmp_path, mount):
    """A field named 'α' (numpy writes a version 3 header, UTF-8) and one
    named 'é' in a version 1 header (latin-1): user.npy.dtype, read back as
    the README says, gives the same dtype, and holds printable ASCII only."""
    import warnings
    v3 = np.zeros(3, dtype=[("α", "<i4"), ("b\u2603", "<f8")])
    v1 = np.zeros(2, dtype=[("é", "<i2")])
    p = tmp_path / "names.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Stored array in format 3.0"
        np.savez(p, v3=v3, v1=v1)
    with zipfile.ZipFile(p) as zf:  # self-check: the versions numpy chose
        assert zf.read("v3.npy")[6:8] == b"\x03\x00"
        assert zf.read("v1.npy")[6:8] == b"\x01\x00"
    mnt = mount(p)

    def body():
        for name, arr in (("v3", v3), ("v1", v1)):
            raw = os.getxattr(mnt / f"{name}.npy", "user.npy.dtype")
            assert all(0x20 <= c < 0x7f for c in raw), raw
            assert dtype_of(raw.decode()) == arr.dtype, (name, raw)
    guarded(body, timeout=60)
