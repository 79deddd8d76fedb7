"""Defects from the code review (issue 9) in the tree, its attributes, its
sources and the text npyfs prints, each reproduced on a real mount.

- Archives of a directory source opened for the first time at the same
  time (8 .npz of 30,000 members, listed in parallel threads): the daemon
  survives and every member is found by lookup (their trees were sorted
  with a shared global before: SIGSEGV, or children sorted wrongly).
- allow_other on a directory source: every entry shows its source's owner,
  group and permission bits (an archive's for its members; r -> rx for the
  directories it is shown as), so with default_permissions user nobody
  cannot read a 0600 file in a 0700 directory, nor a 0640 root archive, and
  reads what the sources let it read. stat() through the mount agrees with
  the sources (as root), and the root of several sources is 0555, the
  mounting user's.
- A FIFO (or a device node) swapped in for a file of a directory source
  after the walk: opening it through the mount fails at once with EIO (the
  daemon never opens it), 20 such opens at once do not freeze the mount, and
  it unmounts; a FIFO named on the command line is refused with one clear
  line instead of hanging.
- Bytes from an archive never reach a terminal raw: `npyfs ls` escapes a
  member name and a descr holding ESC, BEL, CSI (0x9b and U+009B), tab and
  newline (its rows keep 7 columns and decode back to the exact bytes), ls
  --json writes the control characters as \\uXXXX and still gives the exact
  bytes back through json.loads + surrogateescape, and user.npy.dtype and the
  stats text carry no raw control byte either.
- Under scripts/test (NPYFS_TEST_TMP set), every mount point a pytest run
  makes (tmp_path, shared_dir) is under that directory, so scripts/test
  checks only its own mounts; without it, pytest's defaults.
"""

import ast
import errno
import gzip
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import threading

import numpy as np
import pytest

from conftest import Mounter, guarded, npy_bytes, read_all, run

# --------------------------------------------------------------- helpers ---


def _empty_members_zip(names):
    """Bytes of a zip whose members (names: bytes) are all empty and stored:
    small on disk however many members it has (no zip64: < 65535)."""
    assert len(names) < 0xFFFF
    out = bytearray()
    offsets = []
    for n in names:
        offsets.append(len(out))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21,
                           0, 0, 0, len(n), 0) + n
    cd = len(out)
    for n, off in zip(names, offsets):
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x0314, 20, 0, 0,
                           0, 0x21, 0, 0, 0, len(n), 0, 0, 0, 0,
                           0o100644 << 16, off) + n
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(names), len(names),
                       len(out) - cd, cd, 0)
    return bytes(out)


def _daemon_alive(mount, mnt):
    m = mount.mount_of(mnt)
    assert m.proc.poll() is None, (
        f"daemon exited with {m.proc.returncode}\n{m.stderr()}")
    guarded(os.stat, mnt, timeout=30)


# ----------------------------------------- 1. concurrent first opens ---

N_ARCHIVES = 8
N_MEMBERS = 30_000


def test_parallel_first_listings_of_big_archives(tmp_path, mount):
    """8 archives of 30,000 members each, never opened, listed at once from
    8 threads: each listing is complete, the daemon is alive, and lookups of
    real members (and of names that are not there) are answered right, so
    every archive's children were sorted with its own tree."""
    src = tmp_path / "tree"
    src.mkdir()
    rng = random.Random(9)
    want = {}
    for k in range(N_ARCHIVES):
        names = [f"m{i:05d}_{rng.randrange(10 ** 6):06d}.npy"
                 for i in range(N_MEMBERS)]
        rng.shuffle(names)  # central directory order != name order
        (src / f"a{k}.npz").write_bytes(
            _empty_members_zip([n.encode() for n in names]))
        want[f"a{k}.npz"] = names
    mnt = mount(src)
    barrier = threading.Barrier(N_ARCHIVES)
    got, errors = {}, []

    def lister(name):
        try:
            barrier.wait()
            got[name] = os.listdir(mnt / name)
        except BaseException as e:  # reported below
            errors.append((name, e))

    def listings():
        ts = [threading.Thread(target=lister, args=(n,)) for n in want]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    guarded(listings, timeout=240)
    assert not errors, errors
    _daemon_alive(mount, mnt)
    for name, names in want.items():
        assert sorted(got[name]) == sorted(names), name

    def lookups():
        for name, names in want.items():
            for n in rng.sample(names, 400):
                st = os.stat(mnt / name / n)
                assert st.st_size == 0, (name, n)
            with pytest.raises(FileNotFoundError):
                os.stat(mnt / name / "m99999_x.npy")
    guarded(lookups, timeout=240)
    _daemon_alive(mount, mnt)


# ------------------------------------------------ 2. source permissions ---

NOBODY = 65534

# Run as nobody: for each path, what stat, listdir and a full read give.
_PROBE = r"""
import hashlib, json, os, sys
out = {}
for p in sys.argv[1:]:
    r = {}
    try:
        st = os.stat(p)
        r["stat"] = [st.st_mode, st.st_uid, st.st_gid]
    except OSError as e:
        r["stat"] = e.errno
    try:
        if os.path.isdir(p):
            r["list"] = sorted(os.listdir(p))
        else:
            with open(p, "rb") as f:
                r["read"] = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        r["err"] = e.errno
    out[p] = r
print(json.dumps(out))
"""


def _as_nobody(paths, timeout=60):
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
           "/usr/bin/python3", "-c", _PROBE] + [str(p) for p in paths]
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return json.loads(r.stdout)


def _sha(b):
    import hashlib
    return hashlib.sha256(b).hexdigest()


def _perm(mode):
    return stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID)


def _rx(perm):
    return perm | ((perm & 0o444) >> 2)


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (files of several owners, a second user)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) missing")


def _perm_tree(base):
    """A directory source with entries of several modes and owners."""
    src = base / "src"
    src.mkdir()
    src.chmod(0o755)
    (src / "priv").mkdir()
    (src / "priv").chmod(0o700)
    (src / "priv" / "secret.txt").write_bytes(b"the secret\n")
    (src / "priv" / "secret.txt").chmod(0o600)
    (src / "pub.txt").write_bytes(b"public\n")
    (src / "pub.txt").chmod(0o644)
    (src / "mine.txt").write_bytes(b"nobody's own\n")       # 0600, owned by nobody
    os.chown(src / "mine.txt", NOBODY, NOBODY)
    (src / "mine.txt").chmod(0o600)
    (src / "suid.txt").write_bytes(b"#!/bin/true\n")        # set-user-ID is dropped
    (src / "suid.txt").chmod(0o4755)
    np.savez(src / "closed.npz", x=np.arange(5), **{"sub/y": np.arange(3)})
    (src / "closed.npz").chmod(0o640)                       # root:root
    os.chown(src / "closed.npz", 0, 0)
    np.savez(src / "open.npz", x=np.arange(7), **{"sub/y": np.arange(4)})
    (src / "open.npz").chmod(0o644)
    os.chown(src / "open.npz", 0, 0)
    np.savez(src / "grp.npz", x=np.arange(2))                # group nogroup: ---
    (src / "grp.npz").chmod(0o604)
    os.chown(src / "grp.npz", 0, NOBODY)
    (src / "g.npy.gz").write_bytes(gzip.compress(npy_bytes(np.arange(9))))
    (src / "g.npy.gz").chmod(0o640)
    os.chown(src / "g.npy.gz", NOBODY, 0)
    return src


def test_allow_other_shows_source_permissions(as_root, tmp_path, shared_dir, npyfs_bin):
    """As root, mount a directory source with -o allow_other and read it as
    nobody: the kernel's permission checks say what the sources' modes say."""
    src = _perm_tree(tmp_path)
    mounter = Mounter(npyfs_bin, shared_dir / "mounts")
    (shared_dir / "mounts").mkdir()
    (shared_dir / "mounts").chmod(0o755)
    try:
        mnt = mounter(src, "allow_other")

        def attrs(p):
            st = os.stat(p)
            return stat.S_IFMT(st.st_mode), _perm(st.st_mode), st.st_uid, st.st_gid

        def like(p, want_st, perm=None, fmt=None):
            got = guarded(attrs, p, timeout=30)
            want = (fmt or stat.S_IFMT(want_st.st_mode),
                    _perm(want_st.st_mode) if perm is None else perm,
                    want_st.st_uid, want_st.st_gid)
            assert got == want, (p, [oct(x) for x in got], [oct(x) for x in want])

        # stat through the mount, as root, against the sources
        like(mnt, os.stat(src))
        like(mnt / "priv", os.stat(src / "priv"))
        like(mnt / "priv" / "secret.txt", os.stat(src / "priv" / "secret.txt"))
        like(mnt / "pub.txt", os.stat(src / "pub.txt"))
        like(mnt / "mine.txt", os.stat(src / "mine.txt"))
        like(mnt / "suid.txt", os.stat(src / "suid.txt"))
        assert stat.S_IMODE(os.stat(mnt / "suid.txt").st_mode) == 0o755
        like(mnt / "g.npy", os.stat(src / "g.npy.gz"))
        for name in ("closed.npz", "open.npz", "grp.npz"):
            ast = os.stat(src / name)
            like(mnt / name, ast, perm=_rx(_perm(ast.st_mode)), fmt=stat.S_IFDIR)
            like(mnt / name / "x.npy", ast, fmt=stat.S_IFREG)
            if name != "grp.npz":
                like(mnt / name / "sub", ast, perm=_rx(_perm(ast.st_mode)), fmt=stat.S_IFDIR)
                like(mnt / name / "sub" / "y.npy", ast, fmt=stat.S_IFREG)
        assert stat.S_IMODE(os.stat(mnt / "closed.npz").st_mode) == 0o750
        assert stat.S_IMODE(os.stat(mnt / "open.npz").st_mode) == 0o755
        assert stat.S_IMODE(os.stat(mnt / "grp.npz").st_mode) == 0o705

        # the same as nobody: what a second user may see and read
        paths = [mnt, mnt / "priv", mnt / "priv" / "secret.txt", mnt / "pub.txt",
                 mnt / "mine.txt", mnt / "closed.npz", mnt / "closed.npz" / "x.npy",
                 mnt / "open.npz", mnt / "open.npz" / "x.npy",
                 mnt / "open.npz" / "sub" / "y.npy", mnt / "grp.npz",
                 mnt / "grp.npz" / "x.npy", mnt / "g.npy"]
        got = guarded(_as_nobody, paths, timeout=120)
        r = {os.path.relpath(p, mnt): v for p, v in got.items()}
        assert r["priv"]["err"] == errno.EACCES, r["priv"]
        assert r["priv/secret.txt"]["stat"] == errno.EACCES, r["priv/secret.txt"]
        assert r["priv/secret.txt"]["err"] == errno.EACCES, r["priv/secret.txt"]
        assert r["pub.txt"]["read"] == _sha(b"public\n"), r["pub.txt"]
        assert r["mine.txt"]["read"] == _sha(b"nobody's own\n"), r["mine.txt"]
        assert r["closed.npz"]["err"] == errno.EACCES, r["closed.npz"]
        assert r["closed.npz/x.npy"]["err"] == errno.EACCES, r["closed.npz/x.npy"]
        assert r["open.npz"]["list"] == ["sub", "x.npy"], r["open.npz"]
        assert r["open.npz/x.npy"]["read"] == _sha(npy_bytes(np.arange(7))), r["open.npz/x.npy"]
        assert r["open.npz/sub/y.npy"]["read"] == _sha(npy_bytes(np.arange(4)))
        # grp.npz: 0604 root:nogroup, and nobody's group is nogroup (---):
        # nothing, although "other" could read; the kernel's rules, as on disk
        assert r["grp.npz"]["err"] == errno.EACCES, r["grp.npz"]
        assert r["grp.npz/x.npy"]["err"] == errno.EACCES, r["grp.npz/x.npy"]
        assert r["g.npy"]["read"] == _sha(npy_bytes(np.arange(9))), r["g.npy"]
        assert r["."]["list"] == sorted(os.listdir(mnt)), r["."]
    finally:
        problems = mounter.teardown_all()
    assert not problems, problems


def _set_acl(path, entries):
    """Write path's access ACL (tag, perm, id) as the kernel keeps it in
    system.posix_acl_access; skip where the file system has no ACLs."""
    value = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", value)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip(f"no POSIX ACLs on {path}'s file system")
        raise


def test_acl_denial_carries_over(as_root, tmp_path, shared_dir, npyfs_bin):
    """A 0644 file, a 0644 .npz and a 0755 directory whose ACLs deny nobody
    (a named-user entry with no permission): through an allow_other mount
    nobody can read none of them, as on disk (the bits for group and others
    are narrowed to what the ACL gives the least of them), and a file
    without an ACL beside them still reads."""
    u = 0xFFFFFFFF
    deny = [(0x01, 6, u), (0x02, 0, NOBODY), (0x04, 4, u), (0x10, 4, u), (0x20, 4, u)]
    src = tmp_path / "src"
    src.mkdir()
    src.chmod(0o755)
    (src / "open.txt").write_bytes(b"for all\n")
    (src / "open.txt").chmod(0o644)
    (src / "denied.txt").write_bytes(b"not for nobody\n")
    (src / "denied.txt").chmod(0o644)
    _set_acl(src / "denied.txt", deny)
    np.savez(src / "denied.npz", x=np.arange(5))
    (src / "denied.npz").chmod(0o644)
    _set_acl(src / "denied.npz", deny)
    (src / "dir").mkdir()
    (src / "dir").chmod(0o755)
    (src / "dir" / "in.txt").write_bytes(b"inside\n")
    (src / "dir" / "in.txt").chmod(0o644)
    _set_acl(src / "dir", [(0x01, 7, u), (0x02, 0, NOBODY), (0x04, 5, u), (0x10, 5, u),
                           (0x20, 5, u)])
    disk = _as_nobody([src / "denied.txt", src / "dir" / "in.txt"])
    assert disk[str(src / "denied.txt")]["err"] == errno.EACCES, disk  # as on disk
    mounter = Mounter(npyfs_bin, shared_dir / "mounts")
    (shared_dir / "mounts").mkdir()
    (shared_dir / "mounts").chmod(0o755)
    try:
        mnt = mounter(src, "allow_other")
        paths = [mnt / "open.txt", mnt / "denied.txt", mnt / "denied.npz",
                 mnt / "denied.npz" / "x.npy", mnt / "dir", mnt / "dir" / "in.txt"]
        got = guarded(_as_nobody, paths, timeout=120)
        r = {os.path.relpath(p, mnt): v for p, v in got.items()}
        assert r["open.txt"]["read"] == _sha(b"for all\n"), r["open.txt"]
        assert r["denied.txt"]["err"] == errno.EACCES, r["denied.txt"]
        assert r["denied.npz"]["err"] == errno.EACCES, r["denied.npz"]
        assert r["denied.npz/x.npy"]["err"] == errno.EACCES, r["denied.npz/x.npy"]
        assert r["dir"]["err"] == errno.EACCES, r["dir"]
        assert r["dir/in.txt"]["stat"] == errno.EACCES, r["dir/in.txt"]
        # the owner keeps its bits: root reads everything
        assert guarded(read_all, mnt / "denied.txt", timeout=30) == b"not for nobody\n"
        assert stat.S_IMODE(os.stat(mnt / "denied.txt").st_mode) == 0o600
    finally:
        problems = mounter.teardown_all()
    assert not problems, problems


def test_root_of_single_sources(tmp_path, mount):
    """A single archive's mount root is the archive shown as a directory
    (its owner, its mode r -> rx); a single .npy.gz's root is synthesized
    (0555, the mounting user's) and its file has the .npy.gz's mode."""
    z = tmp_path / "z.npz"
    np.savez(z, a=np.arange(3))
    z.chmod(0o640)
    g = tmp_path / "g.npy.gz"
    g.write_bytes(gzip.compress(npy_bytes(np.arange(4))))
    g.chmod(0o600)
    mz, mg = mount(z), mount(g)

    def body():
        st = os.stat(mz)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750, oct(st.st_mode)
        assert stat.S_IMODE(os.stat(mz / "a.npy").st_mode) == 0o640
        st = os.stat(mg)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555, oct(st.st_mode)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
        st = os.stat(mg / "g.npy")
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert (st.st_uid, st.st_gid) == (os.stat(g).st_uid, os.stat(g).st_gid)
    guarded(body, timeout=60)


# ------------------------------------------- 3. FIFOs swapped into a tree ---

def _unblock_fifos(paths):
    """Open each FIFO for writing without blocking: a daemon stuck opening
    one for reading (the defect) gets its partner and goes on."""
    for p in paths:
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def _expect_eio(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == errno.EIO, (fn.__name__, args, e.value)


def test_fifo_swapped_into_tree(tmp_path, mount):
    src = tmp_path / "tree"
    src.mkdir()
    (src / "f.txt").write_bytes(b"plain\n")
    (src / "x.npy.gz").write_bytes(gzip.compress(npy_bytes(np.arange(10))))
    np.savez(src / "y.npz", a=np.arange(3))
    (src / "ok.txt").write_bytes(b"still fine\n")
    many = [f"m{i:02d}.txt" for i in range(20)]
    for n in many:
        (src / n).write_bytes(b"m\n")
    mnt = mount(src)
    fifos = [src / n for n in ["f.txt", "x.npy.gz", "y.npz"] + many]
    for p in fifos:  # after the walk: each is a file in the tree, not yet opened
        p.unlink()
        os.mkfifo(p)
    try:
        # the single opens, each must fail promptly
        guarded(_expect_eio, read_all, mnt / "f.txt", timeout=30)
        guarded(_expect_eio, os.stat, mnt / "x.npy", timeout=30)   # lookup opens it
        guarded(_expect_eio, os.listdir, mnt / "y.npz", timeout=30)
        guarded(_expect_eio, os.stat, mnt / "y.npz" / "a.npy", timeout=30)

        # 20 at once: more than the daemon has handler threads
        errors = []
        barrier = threading.Barrier(len(many))

        def opener(n):
            try:
                barrier.wait()
                _expect_eio(read_all, mnt / n)
            except BaseException as e:  # reported below
                errors.append((n, e))

        def all_at_once():
            ts = [threading.Thread(target=opener, args=(n,), daemon=True) for n in many]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        guarded(all_at_once, timeout=60)
        assert not errors, errors
        assert guarded(read_all, mnt / "ok.txt", timeout=30) == b"still fine\n"
    finally:
        _unblock_fifos(fifos)


class _OpenWatch:
    """inotify IN_OPEN on a directory: which of its entries were opened (an
    O_PATH descriptor is not an open; opening a device node is, whatever
    it does)."""
    IN_OPEN = 0x20

    def __init__(self, d):
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(
                self.fd, str(d).encode(), self.IN_OPEN) < 0:
            pytest.skip("inotify not available")

    def opened(self):
        names = set()
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return names
            i = 0
            while i < len(buf):
                _, mask, _, ln = struct.unpack_from("iIII", buf, i)
                if mask & self.IN_OPEN:
                    names.add(buf[i + 16:i + 16 + ln].rstrip(b"\0").decode())
                i += 16 + ln

    def close(self):
        os.close(self.fd)


def test_device_swapped_into_tree(tmp_path, mount):
    """The same with a character device (/dev/null's numbers): refused
    with EIO without being opened (inotify sees no open of it)."""
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    src = tmp_path / "tree"
    src.mkdir()
    (src / "d.txt").write_bytes(b"file\n")
    (src / "g.npy.gz").write_bytes(gzip.compress(npy_bytes(np.arange(10))))
    (src / "ok.txt").write_bytes(b"ok\n")
    mnt = mount(src)
    for n in ("d.txt", "g.npy.gz"):
        (src / n).unlink()
        try:
            os.mknod(src / n, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("mknod refused here (no CAP_MKNOD)")
    watch = _OpenWatch(src)
    try:
        guarded(_expect_eio, read_all, mnt / "d.txt", timeout=30)
        guarded(_expect_eio, os.stat, mnt / "g.npy", timeout=30)
        assert guarded(read_all, mnt / "ok.txt", timeout=30) == b"ok\n"
        opened = watch.opened()
    finally:
        watch.close()
    assert "ok.txt" in opened, opened  # self-check: the watch sees the daemon's opens
    assert not opened & {"d.txt", "g.npy.gz"}, opened


def test_fifo_on_the_command_line_is_refused(tmp_path, npyfs_bin):
    fifo = tmp_path / "a.npz"
    os.mkfifo(fifo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        for cmd in (["mount", fifo, mnt], ["ls", fifo]):
            try:
                r = run([npyfs_bin] + cmd, timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"npyfs {cmd[0]} of a FIFO hung")
            err = r.stderr.decode(errors="replace")
            assert r.returncode == 1, (cmd, r.returncode, err)
            assert len(err.strip().splitlines()) == 1, err
            assert str(fifo) in err and "not a regular file" in err, err
    finally:
        _unblock_fifos([fifo])
        from conftest import cleanup_background
        cleanup_background(mnt)


# ------------------------------------------------ 4. escaping what we print ---

EVIL_NAME = b"ev\x1b]0;pwned\x07il\x9b31m\xc2\x9b2J\t\n\\x\x7f\xff.npy"
EVIL_FIELD = b"f\x1b[31m\x07\x9b\xc2\x9b\x7f"
EVIL_DESCR = b"[('" + EVIL_FIELD + b"', '<f8')]"


def _evil_npy():
    """A v1 .npy whose descr is a structured dtype with a field name full of
    raw control bytes (numpy reads it: v1 headers are latin-1)."""
    head = (b"{'descr': " + EVIL_DESCR +
            b", 'fortran_order': False, 'shape': (2,), }")
    pad = 64 - (10 + len(head) + 1) % 64
    head += b" " * pad + b"\n"
    return (b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head
            + np.arange(2, dtype="<f8").tobytes())


def _evil_npz(path):
    from robust_util import Ent, build_zip
    path.write_bytes(build_zip([Ent(EVIL_NAME, _evil_npy()),
                                Ent(b"plain.npy", npy_bytes(np.arange(3)))]))


def _unescape_text(b):
    """Inverse of the ls text escaping: \\\\ and \\xHH."""
    out, i = bytearray(), 0
    while i < len(b):
        if b[i:i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif b[i:i + 2] == b"\\x":
            out.append(int(b[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return bytes(out)


def _no_raw_controls(b, allowed=b"\t\n"):
    bad = sorted({c for c in b if (c < 0x20 and c not in allowed) or c >= 0x7f})
    assert not bad, [hex(c) for c in bad]


def test_ls_escapes_archive_bytes(tmp_path, npyfs_bin):
    src = tmp_path / "evil.npz"
    _evil_npz(src)
    with np.load(src) as z:  # self-check: numpy takes the crafted member
        names = z.files
    assert len(names) == 2
    r = run([npyfs_bin, "ls", src])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    _no_raw_controls(out)  # tabs and newlines only as the table's own
    rows = out.split(b"\n")
    assert rows[-1] == b"" and len(rows) == 4, rows
    for row in rows[:3]:
        assert len(row.split(b"\t")) == 7, row
    evil = rows[1].split(b"\t")
    assert _unescape_text(evil[0]) == EVIL_NAME, evil[0]
    assert _unescape_text(evil[1]) == EVIL_DESCR, evil[1]
    assert evil[2] == b"(2,)"

    r = run([npyfs_bin, "ls", "--json", src])
    assert r.returncode == 0, r.stderr
    _no_raw_controls(r.stdout, allowed=b"\n")
    got = json.loads(r.stdout)
    assert os.fsencode(got[0]["name"]) == EVIL_NAME
    assert os.fsencode(got[0]["descr"]) == EVIL_DESCR
    # dtype: what np.dtype takes, the field name decoded as numpy decodes v1
    assert np.dtype(got[0]["dtype"]) == np.lib.format.descr_to_dtype(
        ast.literal_eval(EVIL_DESCR.decode("latin-1")))
    assert got[0]["shape"] == [2]
    assert os.fsencode(got[1]["name"]) == b"plain.npy"


def test_xattr_and_stats_escape_archive_bytes(tmp_path, mount):
    import ast
    src = tmp_path / "evil.npz"
    _evil_npz(src)
    mnt = mount(src)
    shown = os.fsdecode(EVIL_NAME.replace(b"\x00", b""))
    f = mnt / shown

    def body():
        assert read_all(f) == _evil_npy()
        dt = os.getxattr(f, "user.npy.dtype")
        _no_raw_controls(dt, allowed=b"")
        # still a Python literal of the same descr (numpy reads v1 as latin-1)
        assert ast.literal_eval(dt.decode("ascii")) == \
            ast.literal_eval(EVIL_DESCR.decode("latin-1"))
        text = os.getxattr(mnt, "user.npyfs.stats")
        _no_raw_controls(text)
        assert b"ev\\x1b]0;pwned\\x07il" in text, text
        js = json.loads(os.getxattr(mnt, "user.npyfs.stats.json"))
        names = [os.fsencode(m["name"]) for a in js["archives"] for m in a["members"]]
        assert EVIL_NAME in names, names
    guarded(body, timeout=60)


# ------------------------------------------ 5. where the test mounts go ---

_INNER = """
import os
import numpy as np

def test_inner(mount, tmp_path, shared_dir):
    p = tmp_path / "a.npz"
    np.savez(p, x=np.arange(2))
    m = mount(p)
    assert os.path.ismount(m)
    with open(os.environ["INNER_OUT"], "w") as f:
        f.write(f"{m}\\n{shared_dir}\\n")
"""


def test_mounts_go_under_the_private_dir(tmp_path, npyfs_bin):
    """A pytest run started with NPYFS_TEST_TMP=DIR (as scripts/test does)
    makes its mount points and shared directories under DIR."""
    here = os.path.dirname(os.path.abspath(__file__))
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(_INNER)
    private = tmp_path / "private"
    private.mkdir()
    out = tmp_path / "out.txt"
    env = dict(os.environ, NPYFS_BIN=str(npyfs_bin), PYTHONPATH=here,
               NPYFS_TEST_TMP=str(private), INNER_OUT=str(out))
    env.pop("PYTEST_ADDOPTS", None)
    r = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "conftest",
                        "-p", "no:cacheprovider", "test_inner.py"],
                       cwd=inner, env=env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    mnt, shared = out.read_text().split()
    assert mnt.startswith(str(private) + "/"), mnt
    assert shared.startswith(str(private) + "/"), shared
    assert not any(m.startswith(str(private)) for m in _mount_points()), "left mounted"


def _mount_points():
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f]
