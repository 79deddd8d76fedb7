"""The command line: background mount/unmount, ls, --help/--version, errors,
and members npyfs cannot decode.

- `npyfs mount SOURCE MNT` (no -f) returns 0 promptly with stdout/stderr
  captured by pipes (a daemon that kept the pipes open would hang here), prints
  nothing, the mount is live when it returns, and `npyfs unmount MNT` removes
  it and the daemon exits. `-o ro` (a libfuse option) is accepted.
- `npyfs ls SOURCE` prints one row per member with its dtype and shape.
- `--help` and `--version` exit 0.
- Errors: a missing source, a directory as source, a file that is not an
  archive, a broken .npy.gz, a missing mount point, a bad option value:
  non-zero exit, one stderr line naming the file (for file errors), nothing
  mounted. `npyfs ls` of a missing file fails the same way.
- Relative SOURCE and MOUNTPOINT work in background and foreground mode.
- An encrypted member (`zip -e`) and a member with zip method 12 (bzip2,
  unsupported): listed by ls and in the mount; opening or reading them gives
  EOPNOTSUPP while the other members of the same archive read fine.
"""

import errno
import os
import re
import shutil
import subprocess
import time
import zipfile

import numpy as np
import pytest

from conftest import (assert_same_array, cleanup_background, guarded,
                      in_child, load, mounted_fuse, npy_bytes,
                      pids_for_mountpoint, read_all, run)

ARRS = {"alpha": np.arange(12, dtype="<f8").reshape(3, 4),
        "beta": np.array([True, False]),
        "gamma": np.zeros((2, 3, 5), dtype=">i2"),
        "sub/delta": np.array(7, dtype=np.uint32),
        "fort": np.asfortranarray(np.ones((2, 3), dtype="<f4"))}


@pytest.fixture
def small_npz(tmp_path):
    p = tmp_path / "small.npz"
    np.savez_compressed(p, **ARRS)
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("readme.txt", b"hello\n")
    return p


@pytest.fixture
def stored_npz(tmp_path):
    """Stored members only: the background-mode tests exercise the CLI, not
    the inflate path."""
    p = tmp_path / "stored.npz"
    np.savez(p, **ARRS)
    return p


def _wait_gone(mnt, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids_for_mountpoint(mnt):
            return True
        time.sleep(0.1)
    return False


def test_background_mount_and_unmount(npyfs_bin, stored_npz, tmp_path):
    mnt = tmp_path / "bg"
    mnt.mkdir()
    try:
        t0 = time.monotonic()
        r = run([npyfs_bin, "mount", stored_npz, mnt], timeout=30)
        elapsed = time.monotonic() - t0
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        assert r.stdout == b"" and r.stderr == b"", (r.stdout, r.stderr)
        assert elapsed < 20
        # Live as soon as the command returned: no polling here.
        assert mounted_fuse(mnt)
        assert guarded(os.path.ismount, mnt, timeout=15)
        got = guarded(read_all, mnt / "alpha.npy", timeout=30)
        assert got == npy_bytes(ARRS["alpha"])
        u = run([npyfs_bin, "unmount", mnt], timeout=30)
        assert u.returncode == 0, u.stderr.decode(errors="replace")
        assert not mounted_fuse(mnt)
        assert not os.path.ismount(mnt)
        assert _wait_gone(mnt), "daemon still running after npyfs unmount"
    finally:
        cleanup_background(mnt)


def test_background_mount_with_libfuse_ro(npyfs_bin, stored_npz, tmp_path):
    mnt = tmp_path / "bgro"
    mnt.mkdir()
    try:
        r = run([npyfs_bin, "mount", "-o", "ro", stored_npz, mnt], timeout=30)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        assert mounted_fuse(mnt)

        def body():
            m = load(mnt / "gamma.npy")
            assert_same_array(m, ARRS["gamma"])
            del m
            try:
                open(mnt / "gamma.npy", "r+b")
            except OSError as e:
                assert e.errno == errno.EROFS
            else:
                raise AssertionError("opened for writing")
        in_child(body, timeout=30)
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
        assert not mounted_fuse(mnt)
    finally:
        cleanup_background(mnt)


def test_unmount_not_mounted_fails(npyfs_bin, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    r = run([npyfs_bin, "unmount", d], timeout=30)
    assert r.returncode != 0


def test_help_and_version(npyfs_bin):
    h = run([npyfs_bin, "--help"], timeout=10)
    assert h.returncode == 0
    text = (h.stdout + h.stderr).decode(errors="replace")
    for word in ("mount", "unmount", "ls"):
        assert word in text, word
    v = run([npyfs_bin, "--version"], timeout=10)
    assert v.returncode == 0
    assert re.search(r"\d+\.\d+", (v.stdout + v.stderr).decode(errors="replace"))


def _shape_forms(shape):
    dims = [str(x) for x in shape]
    forms = {str(tuple(shape)), "(" + ",".join(dims) + ")",
             "[" + ", ".join(dims) + "]", "[" + ",".join(dims) + "]",
             "x".join(dims), "×".join(dims)}
    if len(shape) == 0:
        forms |= {"()", "scalar", "0-d"}
    if len(shape) == 1:
        forms |= {f"({dims[0]})", dims[0]}
    return forms


def _dtype_forms(dt):
    return {dt.str, dt.name, repr(dt.str), dt.descr[0][1] if dt.names is None else "",
            str(dt)} - {""}


def _row(text, name):
    pat = re.compile(r"(^|\s)" + re.escape(name) + r"(\s|$)")
    rows = [ln for ln in text.splitlines() if pat.search(ln)]
    assert len(rows) == 1, f"expected one row for {name!r} in:\n{text}"
    return rows[0]


def test_ls_lists_members(npyfs_bin, small_npz):
    r = run([npyfs_bin, "ls", small_npz], timeout=30)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    for key, arr in ARRS.items():
        row = _row(text, f"{key}.npy")
        assert any(f in row for f in _dtype_forms(arr.dtype)), (key, row)
        assert any(f in row for f in _shape_forms(arr.shape)), (key, row)
        tokens = set(row.split())
        fortran_marks = {"F", "fortran", "Fortran", "FORTRAN"}
        if arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous:
            assert tokens & fortran_marks, (key, row)
        else:
            assert not tokens & fortran_marks, (key, row)
    _row(text, "readme.txt")


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "deflated"])
def test_ls_sizes_and_method(method, npyfs_bin, tmp_path):
    """Uncompressed and stored sizes are exact byte counts; the method column
    names the method."""
    src = tmp_path / "m.npz"
    with zipfile.ZipFile(src, "w", method) as zf:
        for key, arr in ARRS.items():
            zf.writestr(f"{key}.npy", npy_bytes(arr))
    r = run([npyfs_bin, "ls", src], timeout=30)
    assert r.returncode == 0
    text = r.stdout.decode()
    method_re = r"stor|(^|\s)0(\s|$)" if method == zipfile.ZIP_STORED else r"deflat|(^|\s)8(\s|$)"
    with zipfile.ZipFile(src) as zf:
        for info in zf.infolist():
            row = _row(text, info.filename)
            tokens = row.split()
            assert str(info.file_size) in tokens, row
            assert str(info.compress_size) in tokens, row
            assert re.search(method_re, row, re.I), row


def test_ls_npy_gz(npyfs_bin, tmp_path):
    import gzip
    p = tmp_path / "one.npy.gz"
    arr = np.zeros((4, 5), dtype="<c8", order="F")
    with gzip.open(p, "wb") as f:
        np.save(f, arr)
    r = run([npyfs_bin, "ls", p], timeout=30)
    assert r.returncode == 0, r.stderr
    row = _row(r.stdout.decode(), "one.npy")
    assert any(f in row for f in _dtype_forms(arr.dtype)), row
    assert any(f in row for f in _shape_forms(arr.shape)), row


def _expect_mount_error(npyfs_bin, src, mnt, name_in_msg, extra=()):
    r = run([npyfs_bin, "mount", *extra, src, mnt], timeout=30)
    try:
        assert r.returncode != 0
        err = r.stderr.decode(errors="replace").strip()
        assert r.stdout == b""
        if name_in_msg is not None:
            assert len(err.splitlines()) == 1, err
            assert name_in_msg in err, err
        assert not mounted_fuse(mnt)
    finally:
        cleanup_background(mnt)
    return r


def test_missing_source(npyfs_bin, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    _expect_mount_error(npyfs_bin, tmp_path / "does_not_exist.npz", mnt, "does_not_exist.npz")
    # Foreground mode fails the same way, promptly.
    _expect_mount_error(npyfs_bin, tmp_path / "does_not_exist.npz", mnt,
                        "does_not_exist.npz", extra=("-f",))


def test_trailing_slash_on_archive(npyfs_bin, small_npz, tmp_path):
    """A slash after an archive's name asks for a directory: refused with
    ENOTDIR's words, as ls(1) and `npyfs ls` refuse it; a directory with
    a slash after it mounts."""
    src = tmp_path / "d" / "a.npz"
    src.parent.mkdir()
    shutil.copy(small_npz, src)
    mnt = tmp_path / "m"
    mnt.mkdir()
    for given in (f"{src}/", f"{src}//"):
        _expect_mount_error(npyfs_bin, given, mnt, f"{given}: Not a directory")
        r = run([npyfs_bin, "ls", given], timeout=30)
        assert r.returncode == 1 and b"Not a directory" in r.stderr, r.stderr
    r = run([npyfs_bin, "mount", f"{src.parent}/", mnt], timeout=30)
    try:
        assert r.returncode == 0, r.stderr
        assert guarded(os.listdir, mnt, timeout=30) == ["a.npz"]
    finally:
        cleanup_background(mnt)


def test_not_an_archive(npyfs_bin, tmp_path):
    src = tmp_path / "junk.npz"
    src.write_bytes(b"this is not a zip file\n" * 100)
    mnt = tmp_path / "m"
    mnt.mkdir()
    _expect_mount_error(npyfs_bin, src, mnt, "junk.npz")


def test_broken_npy_gz(npyfs_bin, tmp_path):
    src = tmp_path / "broken.npy.gz"
    src.write_bytes(os.urandom(4096))
    mnt = tmp_path / "m"
    mnt.mkdir()
    _expect_mount_error(npyfs_bin, src, mnt, "broken.npy.gz")


def test_gz_of_non_npy(npyfs_bin, tmp_path):
    """A valid gzip whose content is not .npy: the header cannot give the size.
    Either refusing it (non-zero exit, one line naming the file, nothing
    mounted) or serving it after a full pass (exact size and bytes) is fine;
    anything else (wrong size, EIO, a hang) is not."""
    import gzip
    content = b"not an npy file at all\n" * 10
    src = tmp_path / "text.npy.gz"
    src.write_bytes(gzip.compress(content))
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = run([npyfs_bin, "mount", src, mnt], timeout=30)
    try:
        err = r.stderr.decode(errors="replace").strip()
        if r.returncode != 0:
            assert len(err.splitlines()) == 1 and "text.npy.gz" in err, err
            assert not mounted_fuse(mnt)
            return
        assert err == ""
        assert mounted_fuse(mnt)
        assert guarded(os.listdir, mnt, timeout=15) == ["text.npy"]
        assert guarded(os.stat, mnt / "text.npy", timeout=15).st_size == len(content)
        assert guarded(read_all, mnt / "text.npy", timeout=30) == content
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
    finally:
        cleanup_background(mnt)


def test_missing_mountpoint(npyfs_bin, small_npz, tmp_path):
    _expect_mount_error(npyfs_bin, small_npz, tmp_path / "no_such_dir", None)


def test_bad_option_value(npyfs_bin, small_npz, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    _expect_mount_error(npyfs_bin, small_npz, mnt, None, extra=("-o", "cache_size=banana"))
    _expect_mount_error(npyfs_bin, small_npz, mnt, None, extra=("-o", "spacing=-1"))


def test_size_suffixes_accepted(small_npz, mount):
    mnt = mount(small_npz, "cache_size=1G", "spacing=64K")
    assert guarded(read_all, mnt / "beta.npy", timeout=30) == npy_bytes(ARRS["beta"])


# --- members npyfs cannot decode --------------------------------------------

def _patch_method(path, name, method):
    """Set the method of member `name` in both its local and central header."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
        lho = info.header_offset
        cd = zf.start_dir
    assert raw[lho:lho + 4] == b"PK\x03\x04"
    raw[lho + 8:lho + 10] = method.to_bytes(2, "little")
    pos, patched = cd, 0
    while raw[pos:pos + 4] == b"PK\x01\x02":
        nlen = int.from_bytes(raw[pos + 28:pos + 30], "little")
        xlen = int.from_bytes(raw[pos + 30:pos + 32], "little")
        clen = int.from_bytes(raw[pos + 32:pos + 34], "little")
        if raw[pos + 46:pos + 46 + nlen] == name.encode():
            raw[pos + 10:pos + 12] = method.to_bytes(2, "little")
            patched += 1
        pos += 46 + nlen + xlen + clen
    assert patched == 1
    path.write_bytes(bytes(raw))


def _unsupported_archive(tmp_path, kind):
    d = tmp_path / "in"
    d.mkdir()
    ok = np.arange(1000, dtype=np.int64)
    bad = np.ones((10, 10))
    src = tmp_path / f"{kind}.npz"
    if kind == "encrypted":
        (d / "ok.npy").write_bytes(npy_bytes(ok))
        (d / "secret.npy").write_bytes(npy_bytes(bad))
        assert run(["zip", "-q", src, "ok.npy"], cwd=d).returncode == 0
        assert run(["zip", "-q", "-e", "-P", "pw", src, "secret.npy"], cwd=d).returncode == 0
        with zipfile.ZipFile(src) as zf:  # self-check
            assert zf.getinfo("secret.npy").flag_bits & 0x1
            assert not zf.getinfo("ok.npy").flag_bits & 0x1
        return src, "secret.npy", ok
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("ok.npy", npy_bytes(ok), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("weird.npy", npy_bytes(bad), compress_type=zipfile.ZIP_STORED)
    _patch_method(src, "weird.npy", 12)
    with zipfile.ZipFile(src) as zf:  # self-check
        assert zf.getinfo("weird.npy").compress_type == 12
    return src, "weird.npy", ok


def _read_member(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("kind", ["encrypted", "method12"])
def test_unsupported_member(kind, npyfs_bin, tmp_path, mount):
    src, bad_name, ok = _unsupported_archive(tmp_path, kind)
    r = run([npyfs_bin, "ls", src], timeout=30)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    _row(text, "ok.npy")
    row = _row(text, bad_name)
    if kind == "method12":
        assert re.search(r"bzip2|(^|\D)12(\D|$)", row, re.I), row
    mnt = mount(src)

    def body():
        assert sorted(os.listdir(mnt)) == sorted(["ok.npy", bad_name])
        try:
            _read_member(mnt / bad_name)
        except OSError as e:
            assert e.errno == errno.EOPNOTSUPP, (e.errno, errno.errorcode.get(e.errno))
        else:
            raise AssertionError(f"{bad_name} read without error")
        try:
            load(mnt / bad_name)
        except OSError as e:
            assert e.errno == errno.EOPNOTSUPP
        else:
            raise AssertionError("np.load succeeded")
        assert read_all(mnt / "ok.npy") == npy_bytes(ok)
        m = load(mnt / "ok.npy")
        assert_same_array(m, ok)
        del m
    in_child(body, timeout=60)


def test_source_is_a_directory(npyfs_bin, tmp_path):
    src = tmp_path / "adir.npz"
    src.mkdir()
    mnt = tmp_path / "m"
    mnt.mkdir()
    _expect_mount_error(npyfs_bin, src, mnt, "adir.npz")


def test_ls_missing_source(npyfs_bin, tmp_path):
    r = run([npyfs_bin, "ls", tmp_path / "gone.npz"], timeout=30)
    assert r.returncode != 0
    err = r.stderr.decode(errors="replace").strip()
    assert len(err.splitlines()) == 1 and "gone.npz" in err, err


@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_relative_paths(foreground, npyfs_bin, stored_npz, tmp_path):
    """SOURCE and MOUNTPOINT relative to the caller's cwd: a daemon that
    chdir()s to / when it detaches must resolve them first."""
    mnt = tmp_path / "rel_m"
    mnt.mkdir()
    cmd = [npyfs_bin, "mount"] + (["-f"] if foreground else []) + \
          [os.path.relpath(stored_npz, tmp_path), "./rel_m"]
    proc = None
    try:
        if foreground:
            proc = subprocess.Popen([str(c) for c in cmd], cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 20
            while not mounted_fuse(mnt):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "mount not live after 20 s"
                time.sleep(0.05)
        else:
            r = run(cmd, timeout=30, cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            assert mounted_fuse(mnt)
        got = guarded(read_all, mnt / "alpha.npy", timeout=30)
        assert got == npy_bytes(ARRS["alpha"])
        u = run([npyfs_bin, "unmount", "rel_m"], timeout=30, cwd=tmp_path)
        assert u.returncode == 0, u.stderr
        assert not mounted_fuse(mnt)
        if proc is not None:
            assert proc.wait(timeout=15) == 0
    finally:
        cleanup_background(mnt)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=15)

