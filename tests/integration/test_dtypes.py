"""The dtype/shape matrix of docs/FORMATS.md section 5 ("Edge cases"), through every
container.

Each case (bool, int8..uint64, float16/32/64, long double '<f16', clongdouble,
complex, big-endian, unicode, bytes, datetime64/timedelta64, aligned and
nested structured dtypes with titles and subarray fields, Fortran order, 0-d,
empty, a v3 header and a v2 header) is written

- into one np.savez archive holding every case (stored members),
- into one np.savez_compressed archive holding every case (deflate),
- into its own small np.savez_compressed archive,
- as NAME.npy.gz via Python's gzip module,

and read back through the mount: np.load(mmap_mode='r') equals the original
array (dtype, shape, order, values, bytes), a full os.read of the virtual file
equals the .npy bytes numpy writes (for npz: the zip member's bytes), and
st_size equals their length.
"""

import gzip
import os
import warnings
import zipfile

import numpy as np
import pytest

from conftest import (MAX_HEADER, assert_same_array, guarded, in_child,
                      is_shown_like, load, npy_bytes, read_all)


def _structured(n, dt, seed):
    """Fill every byte of a structured array deterministically, then
    overwrite the named fields so padding bytes are non-zero too."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
    return np.frombuffer(raw.tobytes(), dtype=dt).copy()


def make_cases():
    rng = np.random.default_rng(1234)
    c = {}
    t = np.arange(200_003, dtype=np.float64)
    f1 = np.sin(t / 500.0) * 1e3
    f1[[0, 17, 5000, -1]] = [np.nan, np.inf, -0.0, -np.inf]
    c["float64_1d"] = f1
    c["float64_2d"] = rng.standard_normal((300, 257))
    c["bool"] = rng.integers(0, 2, size=1001).astype(bool)
    for name in ("int8", "int16", "int32", "int64",
                 "uint8", "uint16", "uint32", "uint64"):
        info = np.iinfo(name)
        a = rng.integers(info.min, info.max, size=997, dtype=name, endpoint=True)
        a[:2] = [info.min, info.max]
        c[name] = a
    h = rng.standard_normal(513).astype(np.float16)
    h[:3] = [np.nan, np.inf, -np.inf]
    c["float16"] = h
    c["float32"] = rng.standard_normal((33, 7)).astype(np.float32)
    ld = np.array([1.5, -2.25, np.inf, np.nan, 1e-300, 3.0 ** 40], dtype=np.longdouble)
    c["longdouble"] = ld
    with np.errstate(invalid="ignore"):
        c["clongdouble"] = ld.astype(np.clongdouble) + 1j * ld[::-1].astype(np.clongdouble)
    c["complex64"] = (rng.standard_normal(100) + 1j * rng.standard_normal(100)).astype(np.complex64)
    c["complex128"] = rng.standard_normal((10, 10)) + 1j * rng.standard_normal((10, 10))
    c["be_i4"] = np.arange(-500, 500, dtype=">i4")
    c["be_f8"] = np.linspace(-1, 1, 777).astype(">f8")
    c["unicode_U7"] = np.array(["", "a", "héllo", "日本語", "abcdefg", "z\u00ff\u0100"],
                               dtype="<U7")
    c["bytes_S5"] = np.array([b"", b"ab\x00", b"abcde", b"\xff\xfe"], dtype="S5")
    c["datetime64_D"] = np.array(["2020-01-01", "NaT", "1969-12-31", "1980-01-01"], dtype="M8[D]")
    c["datetime64_ns"] = np.array(["2020-01-01T12:34:56.789012345", "NaT",
                                   "1970-01-01T00:00:00"], dtype="M8[ns]")
    c["timedelta64_ms"] = np.array([0, -1, 86_400_000, np.timedelta64("NaT")], dtype="m8[ms]")
    al = np.dtype([("a", "u1"), ("b", "<f8"), ("c", "<i2")], align=True)
    assert al.itemsize == 24  # padding after a and after c
    s = _structured(50, al, 1)
    s["b"] = np.linspace(0, 1, 50)
    c["struct_aligned"] = s
    nested = np.dtype([(("a title", "x"), "<i2"),
                       ("outer", [("y", ">f8", (2, 3)), ("z", "u1")]),
                       ("sub", "<i4", (3,))])
    n = np.zeros(7, dtype=nested)
    n["x"] = np.arange(7)
    n["outer"]["y"] = np.arange(7 * 6, dtype=float).reshape(7, 2, 3) / 3
    n["outer"]["z"] = 255
    n["sub"] = np.arange(21).reshape(7, 3)
    c["struct_nested"] = n
    c["fortran_3d"] = np.asfortranarray(np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7))
    c["fortran_2d_be"] = np.asfortranarray(np.arange(40 * 30, dtype=">i8").reshape(40, 30))
    c["zero_d"] = np.array(3.25)
    c["empty_0x3"] = np.zeros((0, 3))
    v3 = np.zeros(9, dtype=[("α", "<f4"), ("b", "<i2")])
    v3["α"] = np.arange(9) / 7
    v3["b"] = -np.arange(9)
    c["header_v3"] = v3
    v2dt = np.dtype([(f"field{i:04d}", "u1") for i in range(3000)])
    v2 = np.zeros(3, dtype=v2dt)
    v2.view(np.uint8)[:] = np.arange(3 * 3000) % 251
    c["header_v2"] = v2
    return c


CASES = make_cases()
CASE_IDS = list(CASES)
CONTAINERS = ["npz_all_stored", "npz_all_deflated", "npz_single", "npy_gz"]


def test_case_headers_are_what_we_think():
    """Self-check of the matrix: the v2/v3 cases really get those versions,
    the others stay v1.0."""
    for name, arr in CASES.items():
        b = npy_bytes(arr)
        want = {"header_v2": 2, "header_v3": 3}.get(name, 1)
        assert b[6] == want, (name, b[6])


@pytest.fixture(scope="session")
def dtype_sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("dtypes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.savez(d / "all_stored.npz", **CASES)
        np.savez_compressed(d / "all_deflated.npz", **CASES)
        for name, arr in CASES.items():
            np.savez_compressed(d / f"single_{name}.npz", **{name: arr})
            with gzip.open(d / f"{name}.npy.gz", "wb") as f:
                np.save(f, arr)
    return d


@pytest.fixture(scope="session")
def shared_mounts(session_mounter, dtype_sources):
    out = {}
    for kind, stem in (("npz_all_stored", "all_stored"), ("npz_all_deflated", "all_deflated")):
        src = dtype_sources / f"{stem}.npz"
        out[kind] = (src, session_mounter(src, name=stem))
    return out


def _truth(container, src, name, arr):
    """The bytes the virtual file must have, from the original source."""
    if container == "npy_gz":
        with open(src, "rb") as f:
            data = gzip.decompress(f.read())
    else:
        with zipfile.ZipFile(src) as zf:
            data = zf.read(name + ".npy")
    # Self-check: numpy wrote exactly what np.save to memory writes.
    assert data == npy_bytes(arr)
    return data


def _check(path, src, container, name, arr):
    truth = _truth(container, src, name, arr)
    st = os.stat(path)
    assert is_shown_like(st, src), oct(st.st_mode)
    assert st.st_size == len(truth)
    got = read_all(path)
    assert len(got) == len(truth)
    assert got == truth
    m = load(path, "r")
    try:
        assert isinstance(m, np.memmap)
        assert_same_array(m, arr)
        if container != "npy_gz":
            with np.load(src, allow_pickle=False, max_header_size=MAX_HEADER) as z:
                assert_same_array(m, z[name], raw=False)
    finally:
        del m


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("name", CASE_IDS)
def test_dtype_case(name, container, dtype_sources, shared_mounts, mount):
    arr = CASES[name]
    if container in shared_mounts:
        src, mnt = shared_mounts[container]
    elif container == "npz_single":
        src = dtype_sources / f"single_{name}.npz"
        mnt = mount(src)
    else:
        src = dtype_sources / f"{name}.npy.gz"
        mnt = mount(src)
    in_child(_check, mnt / f"{name}.npy", src, container, name, arr, timeout=120)


@pytest.mark.parametrize("container", ["npz_all_stored", "npz_all_deflated"])
def test_all_members_listed(container, shared_mounts):
    src, mnt = shared_mounts[container]
    names = guarded(os.listdir, mnt, timeout=30)
    assert sorted(names) == sorted(f"{n}.npy" for n in CASES)
    with zipfile.ZipFile(src) as zf:
        # Method really is what the container claims.
        want = zipfile.ZIP_STORED if container.endswith("stored") else zipfile.ZIP_DEFLATED
        assert {i.compress_type for i in zf.infolist()} == {want}


def test_gz_listing_is_single_npy(dtype_sources, mount):
    mnt = mount(dtype_sources / "bool.npy.gz")
    assert guarded(os.listdir, mnt, timeout=30) == ["bool.npy"]
