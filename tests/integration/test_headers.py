"""Hand-written .npy headers that numpy 1.24 accepts but np.save never writes
(docs/FORMATS.md section 1.3 "The header text" and section 1.4 "Padding"), plus object arrays.

Headers: 16-byte padding (pre-1.14 numpy, cnpy), no trailing newline, double
quotes with another key order and no trailing comma, fortran_order True on a
hand-built header, Python-2 'L' suffixes, and a descr given as a dtype name
('int32'). numpy reads every one of them (self-checked).

- In an npz (stored and deflated) the member is served byte-exact whatever its
  header says, and np.load(mmap_mode='r') through the mount works.
- As .npy.gz the daemon must parse the header to size the file. The common
  forms (pad16, no newline, double quotes, Fortran) must be served exactly.
  For the exotic ones ('L' suffixes, dtype names) docs/FORMATS.md section 1.3 allows a clean
  refusal: either the mount fails with one line naming the file, or the file
  is served with the exact size and bytes.
- Object arrays (pickled payload): an npz member is served byte-exact and
  np.load(allow_pickle=True) of the mounted file equals the original.
"""

import gzip
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from conftest import (assert_same_array, cleanup_background, guarded, in_child,
                      load, mounted_fuse, npy_bytes, read_all, run)

ARR = np.arange(12, dtype="<i4").reshape(3, 4)
FARR = np.asfortranarray(ARR)


def _npy(header, data, pad_to=64, newline=True):
    body = header.encode("latin1")
    total = 10 + len(body) + (1 if newline else 0)
    text = body + b" " * ((-total) % pad_to) + (b"\n" if newline else b"")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


STD = "{'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), }"
HEADERS = {
    # name: (npy bytes, expected array, exotic?)
    "pad16": (_npy(STD, ARR.tobytes(), pad_to=16), ARR, False),
    "no_newline": (_npy(STD, ARR.tobytes(), newline=False), ARR, False),
    "double_quotes": (_npy('{"shape": (3, 4), "fortran_order": False, "descr": "<i4"}',
                           ARR.tobytes()), ARR, False),
    "fortran": (_npy("{'descr': '<i4', 'fortran_order': True, 'shape': (3, 4), }",
                     FARR.tobytes(order="F")), FARR, False),
    "py2_L_suffix": (_npy("{'descr': '<i4', 'fortran_order': False, 'shape': (3L, 4L), }",
                          ARR.tobytes()), ARR, True),
    "descr_name": (_npy("{'descr': 'int32', 'fortran_order': False, 'shape': (3, 4), }",
                        ARR.tobytes()), ARR, True),
}


@pytest.mark.parametrize("name", list(HEADERS))
def test_self_check_numpy_reads_it(name):
    raw, want, _ = HEADERS[name]
    got = np.load(io.BytesIO(raw))
    assert_same_array(got, want, raw=False)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "deflated"])
def test_handwritten_headers_in_npz(method, tmp_path, mount):
    src = tmp_path / "hand.npz"
    with zipfile.ZipFile(src, "w", method) as zf:
        for name, (raw, _, _) in HEADERS.items():
            zf.writestr(f"{name}.npy", raw)
    mnt = mount(src)

    def body():
        assert sorted(os.listdir(mnt)) == sorted(f"{n}.npy" for n in HEADERS)
        for name, (raw, want, _) in HEADERS.items():
            p = mnt / f"{name}.npy"
            assert os.stat(p).st_size == len(raw), name
            assert read_all(p) == raw, name
            m = load(p)
            assert m.shape == want.shape and m.dtype == want.dtype, name
            assert np.array_equal(m, want), name
            assert m.flags.f_contiguous == want.flags.f_contiguous, name
            del m
    in_child(body, timeout=60)


@pytest.mark.parametrize("name", list(HEADERS))
def test_handwritten_header_npy_gz(name, npyfs_bin, tmp_path):
    raw, want, exotic = HEADERS[name]
    src = tmp_path / f"{name}.npy.gz"
    src.write_bytes(gzip.compress(raw))
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = run([npyfs_bin, "mount", src, mnt], timeout=30)
    try:
        err = r.stderr.decode(errors="replace").strip()
        if r.returncode != 0:
            assert exotic, f"common header form refused: {err}"
            assert len(err.splitlines()) == 1 and src.name in err, err
            assert not mounted_fuse(mnt)
            return
        assert mounted_fuse(mnt)
        p = mnt / f"{name}.npy"

        def body():
            assert os.stat(p).st_size == len(raw)
            assert read_all(p) == raw
            m = load(p)
            assert np.array_equal(m, want) and m.dtype == want.dtype
            assert m.flags.f_contiguous == want.flags.f_contiguous
            del m
        in_child(body, timeout=60)
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
    finally:
        cleanup_background(mnt)


OBJ = np.array([{"a": 1}, [1, 2, 3], "text", None, 3.5], dtype=object)


def _obj_npy():
    buf = io.BytesIO()
    np.save(buf, OBJ, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("method", ["savez", "savez_compressed"])
def test_object_array_member(method, tmp_path, mount):
    src = tmp_path / "obj.npz"
    getattr(np, method)(src, obj=OBJ, plain=ARR)
    with zipfile.ZipFile(src) as zf:
        raw = zf.read("obj.npy")
    assert raw == _obj_npy()  # self-check
    mnt = mount(src)

    def body():
        p = mnt / "obj.npy"
        assert os.stat(p).st_size == len(raw)
        assert read_all(p) == raw
        got = np.load(p, allow_pickle=True)
        assert got.dtype == object and got.shape == OBJ.shape
        assert pickle.dumps(list(got)) == pickle.dumps(list(OBJ))
        # numpy refuses to map object arrays: ValueError, not a crash/EIO.
        with pytest.raises(ValueError):
            np.load(p, mmap_mode="r", allow_pickle=True)
        assert read_all(mnt / "plain.npy") == npy_bytes(ARR)
    guarded(body, timeout=60)


def test_object_array_npy_gz(npyfs_bin, tmp_path):
    """A pickle payload gives no size in the header: refuse cleanly, or serve
    after a full pass with the exact size and bytes."""
    raw = _obj_npy()
    src = tmp_path / "obj.npy.gz"
    src.write_bytes(gzip.compress(raw))
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = run([npyfs_bin, "mount", src, mnt], timeout=30)
    try:
        err = r.stderr.decode(errors="replace").strip()
        if r.returncode != 0:
            assert len(err.splitlines()) == 1 and "obj.npy.gz" in err, err
            assert not mounted_fuse(mnt)
            return
        p = mnt / "obj.npy"
        assert guarded(os.stat, p, timeout=15).st_size == len(raw)
        assert guarded(read_all, p, timeout=30) == raw
        got = guarded(np.load, p, allow_pickle=True, timeout=30)
        assert pickle.dumps(list(got)) == pickle.dumps(list(OBJ))
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
    finally:
        cleanup_background(mnt)
