"""Read-only semantics: private mappings, refused writes, untouched sources.

- np.load(mmap_mode='c') maps the file MAP_PRIVATE: writes to the array stay
  in this process; a new open of the file (and a new 'r' mapping) still sees
  the original bytes, and the source archive's sha256/size/mtime are
  unchanged.
- np.load(mmap_mode='r+') raises OSError (EROFS); so do open(path, 'r+b'),
  'wb', 'ab', and os.open with O_WRONLY, O_RDWR, O_TRUNC.
- Creating a file, mkdir, unlink, rmdir, rename, symlink, link, chmod,
  truncate and utime in the mount fail with EROFS (EACCES/EPERM accepted
  where the kernel checks first; ENOSYS is not accepted).
- A second open and read returns the same bytes as the first (keep_cache).
"""

import errno
import gzip
import mmap
import os
import zipfile

import numpy as np
import pytest

from conftest import (MUTATE_ERRNOS, OPEN_WRITE_ERRNOS, assert_same_array,
                      fingerprint, guarded, in_child, is_shown_like, load, npy_bytes,
                      read_all)

A = np.arange(3 * 70_000, dtype=np.float64).reshape(3, 70_000) / 7.0
B = np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))


@pytest.fixture(params=["npz_stored", "npz_deflated", "npy_gz"])
def source(request, tmp_path):
    """(source path, {member name in the mount: original array})."""
    kind = request.param
    d = tmp_path / "src"
    d.mkdir()
    if kind == "npz_stored":
        p = d / "s.npz"
        np.savez(p, a=A, sub=B)
        with zipfile.ZipFile(p, "a") as zf:  # a member in a directory too
            zf.writestr("dir/b.npy", npy_bytes(B))
        return p, {"a.npy": A, "sub.npy": B, "dir/b.npy": B}
    if kind == "npz_deflated":
        p = d / "c.npz"
        np.savez_compressed(p, a=A, sub=B)
        return p, {"a.npy": A, "sub.npy": B}
    p = d / "a.npy.gz"
    with gzip.open(p, "wb") as f:
        np.save(f, A)
    return p, {"a.npy": A}


def _mmap_copy_on_write(path, arr):
    truth = npy_bytes(arr)
    m = load(path, "c")
    try:
        assert isinstance(m, np.memmap)
        assert_same_array(m, arr)
        m[...] = -1
        m.flat[0] = 12345
        assert m.flat[0] == 12345 and (m.size < 2 or m.flat[1] == -1)
        # A new open sees the original bytes, so does a new read-only mapping.
        assert read_all(path) == truth
        r = load(path, "r")
        try:
            assert_same_array(r, arr)
        finally:
            del r
        m.flush()  # a no-op for ACCESS_COPY; must not write through
        assert read_all(path) == truth
    finally:
        del m
    assert read_all(path) == truth


def test_mmap_copy_on_write_stays_private(source, mount):
    src, members = source
    fp = fingerprint(src)
    mnt = mount(src)
    for name, arr in members.items():
        in_child(_mmap_copy_on_write, mnt / name, arr, timeout=120)
    assert fingerprint(src) == fp


def test_raw_mmap_private_and_shared(source, mount):
    """mmap.mmap directly: ACCESS_READ (MAP_SHARED, needs the page cache, not
    direct_io) and ACCESS_COPY both map and read the true bytes."""
    src, members = source
    mnt = mount(src)
    name, arr = next(iter(members.items()))
    truth = npy_bytes(arr)

    def body():
        with open(mnt / name, "rb") as f:
            for access in (mmap.ACCESS_READ, mmap.ACCESS_COPY):
                mm = mmap.mmap(f.fileno(), 0, access=access)
                try:
                    assert len(mm) == len(truth)
                    assert mm[:] == truth
                finally:
                    mm.close()
    in_child(body, timeout=60)


def _expect_errno(allowed, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        assert e.errno in allowed, \
            f"{fn.__name__}{args}: errno {e.errno} ({errno.errorcode.get(e.errno)}), " \
            f"expected one of {sorted(errno.errorcode[x] for x in allowed)}"
        return e.errno
    raise AssertionError(f"{fn.__name__}{args} succeeded on a read-only mount")


def test_mmap_r_plus_raises(source, mount):
    src, members = source
    fp = fingerprint(src)
    mnt = mount(src)
    for name in members:
        guarded(_expect_errno, OPEN_WRITE_ERRNOS, load, mnt / name, "r+", timeout=60)
    assert fingerprint(src) == fp


def _open_py(path, mode):
    with open(path, mode):
        pass


def _os_open(path, flags):
    os.close(os.open(path, flags))


@pytest.mark.parametrize("how", ["r+b", "wb", "ab", "O_WRONLY", "O_RDWR",
                                 "O_WRONLY|O_TRUNC"])
def test_open_for_write_is_erofs(how, source, mount):
    src, members = source
    fp = fingerprint(src)
    mnt = mount(src)
    for name, arr in members.items():
        p = mnt / name
        if how.startswith("O_"):
            flags = 0
            for part in how.split("|"):
                flags |= getattr(os, part)
            guarded(_expect_errno, OPEN_WRITE_ERRNOS, _os_open, p, flags, timeout=30)
        else:
            guarded(_expect_errno, OPEN_WRITE_ERRNOS, _open_py, p, how, timeout=30)
        # Nothing changed: size and content.
        assert guarded(read_all, p, timeout=60) == npy_bytes(arr)
    assert fingerprint(src) == fp


def test_namespace_changes_refused(source, mount):
    """The operations the spec names: create, mkdir, unlink, rename."""
    src, members = source
    fp = fingerprint(src)
    mnt = mount(src)
    name = next(iter(members))
    f = mnt / name

    def body():
        _expect_errno(MUTATE_ERRNOS, _open_py, mnt / "new.npy", "wb")
        _expect_errno(MUTATE_ERRNOS, _open_py, mnt / "new.npy", "xb")
        _expect_errno(MUTATE_ERRNOS, _os_open, mnt / "new2", os.O_CREAT | os.O_RDONLY)
        _expect_errno(MUTATE_ERRNOS, os.mkdir, mnt / "newdir")
        _expect_errno(MUTATE_ERRNOS, os.unlink, f)
        _expect_errno(MUTATE_ERRNOS, os.rename, f, mnt / "renamed.npy")
        assert not os.path.exists(mnt / "new.npy")
        assert not os.path.exists(mnt / "new2")
        assert not os.path.exists(mnt / "newdir")
        assert not os.path.exists(mnt / "renamed.npy")
        assert os.path.exists(f)
        assert read_all(f) == npy_bytes(members[name])
    guarded(body, timeout=60)
    assert fingerprint(src) == fp


def test_other_changes_refused(source, mount):
    """Beyond the spec's list: attribute changes, links, truncation, rmdir.
    A read-only mount (MS_RDONLY) answers all of these with EROFS in the VFS;
    a daemon without the handler would leak ENOSYS, which we do not accept."""
    src, members = source
    fp = fingerprint(src)
    mnt = mount(src)
    name = next(iter(members))
    f = mnt / name

    def body():
        _expect_errno(MUTATE_ERRNOS, os.symlink, "target", mnt / "link")
        # link(2) from outside would be EXDEV (another filesystem): link inside.
        _expect_errno(MUTATE_ERRNOS, os.link, f, mnt / "hard")
        _expect_errno(MUTATE_ERRNOS, os.chmod, f, 0o644)
        _expect_errno(MUTATE_ERRNOS, os.utime, f, (0, 0))
        _expect_errno(MUTATE_ERRNOS, os.truncate, f, 0)
        # O_TRUNC with O_RDONLY: undefined by POSIX, Linux truncates: refuse.
        _expect_errno(MUTATE_ERRNOS, _os_open, f, os.O_RDONLY | os.O_TRUNC)
        if "dir/b.npy" in members:
            # ENOTEMPTY is also a true answer for this non-empty directory.
            _expect_errno(MUTATE_ERRNOS | {errno.ENOTEMPTY}, os.rmdir, mnt / "dir")
        st = os.stat(f)
        assert is_shown_like(st, src), oct(st.st_mode)
        assert st.st_size == len(npy_bytes(members[name]))
        assert read_all(f) == npy_bytes(members[name])
    guarded(body, timeout=60)
    assert fingerprint(src) == fp


def test_missing_names_enoent(source, mount):
    src, _ = source
    mnt = mount(src)

    def body():
        for p in (mnt / "nope.npy", mnt / "a.npy" / "x", mnt / "dir" / "nope"):
            try:
                os.stat(p)
            except OSError as e:
                assert e.errno in (errno.ENOENT, errno.ENOTDIR), (p, e.errno)
            else:
                raise AssertionError(f"{p} exists")
    guarded(body, timeout=30)


def test_second_open_same_bytes(source, mount):
    """keep_cache sanity: reading again (new open, partial and full) after the
    first read, and after an mmap, returns the same bytes."""
    src, members = source
    mnt = mount(src)

    def body():
        for name, arr in members.items():
            truth = npy_bytes(arr)
            p = mnt / name
            first = read_all(p)
            second = read_all(p)
            assert first == truth and second == truth
            with open(p, "rb") as f:
                f.seek(len(truth) // 3)
                assert f.read(5000) == truth[len(truth) // 3:len(truth) // 3 + 5000]
            m = load(p, "r")
            assert_same_array(m, arr)
            del m
            assert read_all(p) == truth
    in_child(body, timeout=120)
