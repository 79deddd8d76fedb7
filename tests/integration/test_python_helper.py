"""The Python helper (python/npyfs.py), used the way a numpy user would.

- `with npyfs.mounted(src) as d`: d is a pathlib.Path of a live npyfs mount
  in a new temporary directory; np.load(d / "x.npy", mmap_mode="r") maps
  the array and equals numpy reading the archive; after the block nothing
  is mounted and the directory is gone, also after an exception and a
  KeyboardInterrupt raised in the block (both propagate unchanged).
- An array still mapped when the block ends: the block returns, a
  RuntimeWarning says the mount was detached lazily, the mount is gone from
  the mount table, the mapping still reads right, and the daemon exits once
  it is dropped.
- Keyword arguments become -o options (cache_size reaches the daemon; a bad
  value raises NpyfsError with npyfs's message; nothing is left); several
  sources; the program from npyfs_bin=, $NPYFS_BIN or PATH, and a clear
  error when there is none.
- npyfs.ls(path) returns the ls --json rows; np.dtype(row["dtype"]) works.
- Installed by `cmake --install` into PREFIX/lib/python3.X/dist-packages,
  which /usr/bin/python3 has on its path for /usr/local; a script run with
  the installed module and the installed npyfs on PATH mounts and reads.

Each test points tempfile at its own tmp_path, so every mount point the
helper makes is under pytest's basetemp (and scripts/test's private
directory), and checks that no mount is left there.
"""

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import in_child, mounted_fuse, pids_for_mountpoint, run

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import npyfs  # noqa: E402  (the module from the source tree)

X = np.arange(200000, dtype="<f8").reshape(50000, 4)
Y = np.asfortranarray(np.arange(60, dtype=">i4").reshape(6, 10))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture
def env(npyfs_bin, tmp_path, monkeypatch):
    """NPYFS_BIN names the binary under test; temporary directories (so the
    helper's mount points) go under tmp_path. Fails if a mount is left."""
    monkeypatch.setenv("NPYFS_BIN", str(npyfs_bin))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp
    left = [ln.split()[1] for ln in open("/proc/self/mounts") if str(tmp) in ln.split()[1]]
    for m in left:
        subprocess.run(["fusermount3", "-u", "-z", m.replace("\\040", " ")],
                       capture_output=True, timeout=30)
    assert not left, f"mounts left behind: {left}"


@pytest.fixture
def run_npz(tmp_path):
    p = tmp_path / "run.npz"
    np.savez_compressed(p, x=X, y=Y)
    return p


def _wait_no_daemon(mnt, timeout=15):
    deadline = time.monotonic() + timeout
    while pids_for_mountpoint(mnt):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_mounted_reads_and_unmounts(env, run_npz):
    def body():
        with npyfs.mounted(run_npz) as d:
            assert isinstance(d, Path)
            assert mounted_fuse(d)
            assert str(d).startswith(str(env))
            assert sorted(os.listdir(d)) == ["x.npy", "y.npy"]
            a = np.load(d / "x.npy", mmap_mode="r")
            assert isinstance(a, np.memmap)
            assert np.array_equal(a, X)
            b = np.load(d / "y.npy", mmap_mode="r")
            assert np.isfortran(b) and np.array_equal(b, Y)
            del a, b
            gc.collect()
        return str(d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # a clean exit warns about nothing
        d = in_child(body, timeout=120)
    assert not mounted_fuse(d)
    assert not os.path.exists(d) and not os.path.exists(os.path.dirname(d))
    assert _wait_no_daemon(d)


@pytest.mark.parametrize("exc", [ValueError, KeyboardInterrupt])
def test_mounted_unmounts_on_exception(env, run_npz, exc):
    seen = {}
    with pytest.raises(exc, match="in the block"):
        with npyfs.mounted(run_npz) as d:
            seen["d"] = d
            assert mounted_fuse(d)
            with open(d / "y.npy", "rb") as f:
                assert f.read(6) == b"\x93NUMPY"
            raise exc("in the block")
    d = seen["d"]
    assert not mounted_fuse(d) and not d.exists()
    assert _wait_no_daemon(d)


def test_mapping_still_open_at_exit(env, run_npz):
    """The block ends while an array is still mapped: a warning, a lazy
    detach, the mapping keeps working, the daemon goes once it is dropped.
    In a child: a failed page-in would be SIGBUS."""
    def body():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with npyfs.mounted(run_npz) as d:
                a = np.load(d / "x.npy", mmap_mode="r")
                assert a[1, 2] == X[1, 2]
            gone = not mounted_fuse(d)
            alive = bool(pids_for_mountpoint(d))
            same = np.array_equal(a, X)          # still served after the detach
            del a
            gc.collect()
        msgs = [str(w.message) for w in caught if w.category is RuntimeWarning]
        return str(d), gone, alive, same, msgs
    d, gone, alive, same, msgs = in_child(body, timeout=120)
    assert gone, "still in the mount table after the block"
    assert alive, "the daemon should serve the open mapping until it is dropped"
    assert same
    assert len(msgs) == 1, msgs
    assert "detached lazily" in msgs[0] and "busy" in msgs[0], msgs[0]
    assert _wait_no_daemon(Path(d)), "daemon still running after the mapping was dropped"
    assert not os.path.exists(d)


def test_options_and_several_sources(env, run_npz, tmp_path, npyfs_bin):
    import gzip
    g = tmp_path / "g.npy.gz"
    with gzip.open(g, "wb") as f:
        np.save(f, Y)
    with npyfs.mounted(run_npz, g, cache_size="3M", index="lazy") as d:
        assert sorted(os.listdir(d)) == ["g.npy", "run.npz"]
        with open(d / "g.npy", "rb") as f:
            assert np.array_equal(np.load(f), Y)
        st = run([npyfs_bin, "stats", "--json", d], timeout=60)
        assert json.loads(st.stdout)["cache"]["capacity"] == 3 << 20
    assert not mounted_fuse(d)
    with pytest.raises(npyfs.NpyfsError, match="cache_size=banana"):
        with npyfs.mounted(run_npz, cache_size="banana"):
            pytest.fail("mounted with a bad option")
    with pytest.raises(npyfs.NpyfsError, match="did you mean cache_size"):
        with npyfs.mounted(run_npz, cache_sise="64M"):
            pytest.fail("mounted with an unknown option")
    with pytest.raises(npyfs.NpyfsError, match="No such file"):
        with npyfs.mounted(tmp_path / "missing.npz"):
            pytest.fail("mounted a missing file")
    with pytest.raises(TypeError):
        with npyfs.mounted():
            pass
    assert os.listdir(env) == []          # every temporary directory removed


def test_finding_the_program(env, run_npz, npyfs_bin, tmp_path, monkeypatch):
    # an argument wins over the environment
    monkeypatch.setenv("NPYFS_BIN", str(tmp_path / "nothing-here"))
    rows = npyfs.ls(run_npz, npyfs_bin=npyfs_bin)
    assert [r["name"] for r in rows] == ["x.npy", "y.npy"]
    with pytest.raises(npyfs.NpyfsError, match="not an executable file"):
        npyfs.ls(run_npz)
    # PATH, without NPYFS_BIN
    monkeypatch.delenv("NPYFS_BIN")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "npyfs").symlink_to(npyfs_bin)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with npyfs.mounted(run_npz) as d:
        assert sorted(os.listdir(d)) == ["x.npy", "y.npy"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(npyfs.NpyfsError, match="npyfs not found"):
        npyfs.mounted(run_npz).__enter__()


def test_ls_rows(env, run_npz, tmp_path):
    rows = npyfs.ls(run_npz)
    assert [r["name"] for r in rows] == ["x.npy", "y.npy"]
    assert [r["archive"] for r in rows] == [str(run_npz)] * 2
    assert np.dtype(rows[0]["dtype"]) == X.dtype and rows[0]["shape"] == list(X.shape)
    assert np.dtype(rows[1]["dtype"]) == Y.dtype and rows[1]["fortran_order"] is True
    rec = tmp_path / "rec.npz"
    dt = np.dtype([("a", "<i4"), ("b", "<f8", (2,))])
    np.savez(rec, r=np.zeros(3, dtype=dt))
    (row,) = npyfs.ls(rec)
    assert np.dtype(row["dtype"]) == dt
    with pytest.raises(npyfs.NpyfsError, match="gone.npz"):
        npyfs.ls(tmp_path / "gone.npz")


def test_relative_source_named_like_a_flag(env, run_npz, tmp_path, monkeypatch):
    """mounted("-run.npz") and ls("-run.npz") from its directory: a name
    that starts with '-' is a source, not a flag (they pass "--")."""
    import shutil
    shutil.copy(run_npz, tmp_path / "-run.npz")
    monkeypatch.chdir(tmp_path)
    assert [r["name"] for r in npyfs.ls("-run.npz")] == ["x.npy", "y.npy"]
    with npyfs.mounted("-run.npz") as d:
        assert np.array_equal(np.load(d / "x.npy"), X)


def test_installed_module(npyfs_bin, tmp_path, run_npz):
    """cmake --install puts npyfs.py where Debian's python3 looks for the
    prefix, and a script using it as a user would works."""
    build = Path(npyfs_bin).resolve().parent
    if not (build / "CMakeCache.txt").exists():
        pytest.skip(f"{build} is not a CMake build directory")
    r = run([PYTHON, "-c", "import sys; print(*sys.version_info[:2]); print(*sys.path)"],
            timeout=30)
    version, path = r.stdout.decode().splitlines()
    rel = "lib/python{}.{}/dist-packages".format(*version.split())
    assert f"/usr/local/{rel}" in path.split(), ("Debian's python3 searches the default "
                                                  "prefix there", path)
    prefix = tmp_path / "prefix"
    r = run(["cmake", "--install", build, "--prefix", prefix], timeout=120)
    assert r.returncode == 0, r.stderr
    site = prefix / rel
    assert (site / "npyfs.py").read_bytes() == (ROOT / "python" / "npyfs.py").read_bytes()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = tmp_path / "user.py"
    script.write_text(
        "import sys, numpy as np, npyfs\n"
        "with npyfs.mounted(sys.argv[1], cache_size='64M') as d:\n"
        "    a = np.load(d / 'x.npy', mmap_mode='r')\n"
        "    print(float(a[123, 1]), flush=True)\n"
        "    del a\n"
        "print('ROWS', len(npyfs.ls(sys.argv[1])))\n")
    env = {k: v for k, v in os.environ.items() if k != "NPYFS_BIN"}
    env.update(PYTHONPATH=str(site), PATH=f"{prefix / 'bin'}:{env.get('PATH', '')}",
               TMPDIR=str(tmp))
    r = run([PYTHON, script, run_npz], timeout=120, env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == [str(X[123, 1]), "ROWS", "2"]
    assert r.stderr == b""
    assert os.listdir(tmp) == []
