"""System integration and the errors a person meets first.

- /etc/fstab: a line of type fuse.npyfs, mounted with `mount -T FSTAB MNT`
  (util-linux reads an alternative fstab), goes through /sbin/mount.fuse3,
  which runs `npyfs SOURCE MNT -o OPTS` from the standard PATH (mount(8)
  drops the caller's). The test runs in a private mount namespace where a
  directory holding npyfs is bound over /usr/local/sbin, reads an array with
  numpy, runs `npyfs stats`, and unmounts with umount and npyfs unmount.
  Generic options (defaults -> rw, nofail, _netdev, noatime, relatime, x-*)
  and npyfs options (cache_size=64M) both work.
- The same call form run by hand, `npyfs SOURCE MNT -o rw,dev,suid`.
- `cmake --install BUILD --prefix DIR` puts bin/npyfs (runs --version) and
  share/man/man1/npyfs.1 (renders without warnings when groff is there).
- `npyfs --help`, the man page and README.md name the same -o options, and
  --help names every command and form.
- Each error: exit status 1, one stderr line naming the file (or the option)
  and the problem, nothing mounted: missing source, unreadable source (as
  nobody), a text file, a directory of nothing mountable..., mount point
  missing / not a directory / already mounted, no /dev/fuse (a tmpfs over
  /dev in a private namespace), no fusermount3 for a user (hidden in a
  private namespace), bad option values.
"""

import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import (cleanup_background, guarded, mounted_fuse, npy_bytes,
                      pids_for_mountpoint, read_all, run)

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
ARR = np.arange(60000, dtype="<f8").reshape(20000, 3)


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (private mount namespaces, setpriv)")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) missing")


@pytest.fixture
def data_npz(tmp_path):
    p = tmp_path / "a.npz"
    np.savez_compressed(p, u=ARR, v=np.arange(7, dtype=">i2"))
    return p


# --- fstab through mount.fuse3 -------------------------------------------------

def _fstab_setup(npyfs_bin, tmp_path):
    """(bindir holding npyfs for mount.fuse3 to find, mount point, fstab path)."""
    need_root()
    if not os.path.exists("/sbin/mount.fuse3"):
        pytest.skip("mount.fuse3 (package fuse3) missing")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "npyfs").symlink_to(npyfs_bin)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    return bindir, mnt, tmp_path / "fstab"


def _fstab_mount(npyfs_bin, tmp_path, src, opts):
    bindir, mnt, fstab = _fstab_setup(npyfs_bin, tmp_path)
    fstab.write_text(f"# npyfs test\n{src} {mnt} fuse.npyfs {opts} 0 0\n")
    check = tmp_path / "check.py"
    check.write_text(
        "import numpy as np, sys\n"
        "m = np.load(sys.argv[1] + '/u.npy', mmap_mode='r')\n"
        "want = np.load(sys.argv[2])['u']\n"
        "assert m.dtype == want.dtype and m.shape == want.shape\n"
        "assert np.array_equal(m, want)\n"
        "print('ARRAY OK')\n")
    script = f"""
set -e
mount --bind {bindir} /usr/local/sbin
mount -T {fstab} {mnt}
grep " {mnt} fuse.npyfs " /proc/self/mounts
{PYTHON} {check} {mnt} {src}
{npyfs_bin} stats {mnt} | grep "^bytes served"
umount {mnt}
echo UNMOUNTED
mount -T {fstab} {mnt}
{npyfs_bin} unmount {mnt}
echo DONE
"""
    try:
        r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                timeout=120)
    finally:
        for pid in pids_for_mountpoint(mnt):  # a daemon left in the namespace
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    out = r.stdout.decode(errors="replace")
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    return out


def test_fstab_mount(npyfs_bin, tmp_path, data_npz):
    out = _fstab_mount(npyfs_bin, tmp_path, data_npz, "ro,allow_other")
    line = next(ln for ln in out.splitlines() if "fuse.npyfs" in ln)
    assert " ro," in line and "allow_other" in line, line
    assert "ARRAY OK" in out and "UNMOUNTED" in out and "DONE" in out


def test_fstab_generic_and_npyfs_options(npyfs_bin, tmp_path, data_npz):
    """defaults makes mount(8) pass rw (ignored: always read-only); the
    options only mount(8) knows are dropped; npyfs options apply."""
    out = _fstab_mount(npyfs_bin, tmp_path, data_npz,
                       "defaults,nofail,_netdev,noatime,relatime,nodev,nosuid,"
                       "x-systemd.automount,cache_size=64M,index=lazy")
    line = next(ln for ln in out.splitlines() if "fuse.npyfs" in ln)
    assert line.split()[3].startswith("ro"), line
    assert "ARRAY OK" in out and "DONE" in out


def test_fstab_mount_error(npyfs_bin, tmp_path):
    """A broken fstab line: mount fails with npyfs's own line on stderr."""
    bindir, mnt, fstab = _fstab_setup(npyfs_bin, tmp_path)
    src = tmp_path / "missing.npz"
    fstab.write_text(f"{src} {mnt} fuse.npyfs ro,cache_size=12X 0 0\n"
                     f"{tmp_path / 'gone.npz'} {mnt} fuse.npyfs ro 0 0\n")
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount --bind {bindir} /usr/local/sbin && mount -T {fstab} {mnt}"], timeout=60)
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0
    assert "npyfs: bad value in -o cache_size=12X" in err, err
    fstab.write_text(f"{src} {mnt} fuse.npyfs ro 0 0\n")
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount --bind {bindir} /usr/local/sbin && mount -T {fstab} {mnt}"], timeout=60)
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0
    assert f"npyfs: {src}: No such file or directory" in err, err
    assert not mounted_fuse(mnt)


def test_mount_fuse3_call_form(npyfs_bin, tmp_path, data_npz):
    """`npyfs SOURCE MNT -o OPTS` by hand: mounts in the background, rw
    ignored, generic flags accepted, read-only."""
    mnt = tmp_path / "direct"
    mnt.mkdir()
    try:
        r = run([npyfs_bin, data_npz, mnt, "-o", "rw,dev,suid,noatime,cache_size=32M"],
                timeout=30)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        assert mounted_fuse(mnt)
        assert guarded(read_all, mnt / "u.npy", timeout=30) == npy_bytes(ARR)
        opts = next(ln.split()[3] for ln in open("/proc/self/mounts")
                    if ln.split()[1] == str(mnt))
        assert opts.split(",")[0] == "ro", opts
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
    finally:
        cleanup_background(mnt)


def test_call_form_relative_source_without_dot(npyfs_bin, tmp_path, data_npz):
    """`npyfs runs MNT -o ro` from the directory holding `runs` (a directory
    of archives, a name with no '.' or '/'): the call form, not an unknown
    command."""
    src = tmp_path / "runs"
    src.mkdir()
    shutil.copy(data_npz, src / "d.npz")
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        r = run([npyfs_bin, "runs", "m", "-o", "ro"], timeout=30, cwd=tmp_path)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        assert guarded(read_all, mnt / "d.npz" / "u.npy", timeout=30) == npy_bytes(ARR)
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
    finally:
        cleanup_background(mnt)
    r = run([npyfs_bin, "nothere", "m", "-o", "ro"], timeout=10, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == b"npyfs: unknown command 'nothere' (see npyfs --help)\n", r.stderr


def test_double_dash_ends_the_flags(npyfs_bin, tmp_path, data_npz):
    """`npyfs mount -- -d.npz MNT`, `npyfs ls -- -d.npz`: after --, a name
    that starts with '-' is a SOURCE; without it, an unknown flag."""
    shutil.copy(data_npz, tmp_path / "-d.npz")
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = run([npyfs_bin, "ls", "--", "-d.npz"], timeout=30, cwd=tmp_path)
    assert r.returncode == 0 and b"u.npy" in r.stdout, r.stderr
    r = run([npyfs_bin, "mount", "-d.npz", "m"], timeout=30, cwd=tmp_path)
    assert r.returncode == 1 and b"unknown mount flag -d.npz" in r.stderr, r.stderr
    try:
        r = run([npyfs_bin, "mount", "--", "-d.npz", "m"], timeout=30, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert sorted(guarded(os.listdir, mnt, timeout=15)) == ["u.npy", "v.npy"]
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
    finally:
        cleanup_background(mnt)


def test_unknown_command_is_not_a_mount(npyfs_bin, tmp_path):
    r = run([npyfs_bin, "frobnicate", tmp_path], timeout=10)
    assert r.returncode == 1
    assert b"unknown command 'frobnicate'" in r.stderr


# --- install, man page, --help ---------------------------------------------------

def _build_dir(npyfs_bin):
    d = Path(npyfs_bin).resolve().parent
    if not (d / "CMakeCache.txt").exists() or shutil.which("cmake") is None:
        pytest.skip(f"{d} is not a CMake build directory")
    return d


def test_cmake_install(npyfs_bin, tmp_path):
    build = _build_dir(npyfs_bin)
    prefix = tmp_path / "prefix"
    r = run(["cmake", "--install", build, "--prefix", prefix], timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    binary = prefix / "bin" / "npyfs"
    page = prefix / "share" / "man" / "man1" / "npyfs.1"
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert page.is_file()
    v = run([binary, "--version"], timeout=10)
    assert v.returncode == 0 and re.match(rb"npyfs \d+\.\d+", v.stdout), v.stdout
    assert page.read_bytes() == (ROOT / "docs" / "npyfs.1").read_bytes()


def test_man_page_renders(tmp_path):
    page = ROOT / "docs" / "npyfs.1"
    text = page.read_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "SOURCES",
                    "FILES", "FSTAB", "EXAMPLES", "EXIT STATUS", "SEE ALSO"):
        assert re.search(rf"^\.SH \"?{section}\"?$", text, re.M), section
    assert text.startswith(".\\\"") or text.startswith(".TH")
    if shutil.which("groff") is None:
        pytest.skip("groff missing: syntax sanity check only")
    r = run(["groff", "-man", "-Tutf8", "-ww", page], timeout=30)
    assert r.returncode == 0
    assert r.stderr == b"", r.stderr.decode(errors="replace")
    out = re.sub(r".\x08", "", r.stdout.decode(errors="replace"))
    assert "npyfs stats" in out and "fuse.npyfs" in out


def _help_options(text):
    return set(re.findall(r"^\s+(?:-o )?([a-z_]+)=[A-Z]+", text, re.M))


def test_options_documented_in_one_table(npyfs_bin):
    """--help, the man page and the README name the same -o options."""
    h = run([npyfs_bin, "--help"], timeout=10)
    assert h.returncode == 0
    help_text = h.stdout.decode()
    in_help = _help_options(help_text)
    man = (ROOT / "docs" / "npyfs.1").read_text()
    in_man = set(re.findall(r"^\.BI ([a-z_]+)= ", man, re.M))
    readme = (ROOT / "README.md").read_text()
    in_readme = set(re.findall(r"^\| `([a-z_]+)=", readme, re.M))
    want = {"cache_size", "spacing", "threads", "readahead", "index_dir", "index", "verify"}
    assert want <= in_help, in_help
    assert in_help == in_man, (in_help ^ in_man)
    assert in_help == in_readme, (in_help ^ in_readme)
    for word in ("mount", "unmount", "ls [--json]", "index", "stats", "--version",
                 "fuse.npyfs", "mount.fuse3", "getfattr", "allow_other"):
        assert word in help_text, word


# --- errors ------------------------------------------------------------------------

def _expect_error(cmd, mnt, *patterns):
    r = run(cmd, timeout=60)
    try:
        err = r.stderr.decode(errors="replace").strip()
        assert r.returncode == 1, (r.returncode, err)
        assert r.stdout == b""
        assert err, "no message"
        first = err.splitlines()[0]
        assert first.startswith("npyfs: "), err
        for p in patterns:
            assert p in first, (p, err)
        if mnt is not None:
            assert not mounted_fuse(mnt)
    finally:
        if mnt is not None:
            cleanup_background(mnt)
    return err


def test_error_missing_source(npyfs_bin, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    src = tmp_path / "nothere.npz"
    err = _expect_error([npyfs_bin, "mount", src, mnt], mnt, str(src), "No such file")
    assert len(err.splitlines()) == 1


def test_error_unreadable_source(npyfs_bin, shared_dir, data_npz):
    need_root()
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing")
    src = shared_dir / "locked.npz"
    shutil.copy(data_npz, src)
    src.chmod(0)
    mnt = shared_dir / "m"
    mnt.mkdir()
    binary = shared_dir / "npyfs"
    shutil.copy(npyfs_bin, binary)
    binary.chmod(0o755)
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    err = _expect_error([*as_nobody, binary, "mount", src, mnt], mnt, str(src),
                        "Permission denied")
    assert len(err.splitlines()) == 1
    err = _expect_error([*as_nobody, binary, "ls", src], None, str(src), "Permission denied")
    assert len(err.splitlines()) == 1


def test_error_not_an_archive(npyfs_bin, tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("just some text\n" * 50)
    mnt = tmp_path / "m"
    mnt.mkdir()
    err = _expect_error([npyfs_bin, "mount", src, mnt], mnt, str(src), "not a zip")
    assert len(err.splitlines()) == 1
    err = _expect_error([npyfs_bin, "ls", src], None, str(src), "not a zip")
    assert len(err.splitlines()) == 1


def test_plain_npy_source(npyfs_bin, tmp_path):
    """A plain .npy named as the source is refused (README, Sources: a file
    SOURCE must be an archive; a directory holding it passes it through),
    with one line naming it, and nothing mounted."""
    src = tmp_path / "plain.npy"
    np.save(src, ARR)
    mnt = tmp_path / "m"
    mnt.mkdir()
    err = _expect_error([npyfs_bin, "mount", src, mnt], mnt, str(src), "a plain .npy file",
                        "already mappable")
    assert len(err.splitlines()) == 1


def test_error_mountpoint_missing(npyfs_bin, tmp_path, data_npz):
    mnt = tmp_path / "nodir"
    err = _expect_error([npyfs_bin, "mount", data_npz, mnt], mnt, str(mnt), "does not exist")
    assert len(err.splitlines()) == 1


def test_error_mountpoint_not_a_directory(npyfs_bin, tmp_path, data_npz):
    mnt = tmp_path / "afile"
    mnt.write_text("x")
    err = _expect_error([npyfs_bin, "mount", data_npz, mnt], mnt, str(mnt), "not a directory")
    assert len(err.splitlines()) == 1


def test_error_already_mounted(npyfs_bin, data_npz, mount):
    mnt = mount(data_npz)
    r = run([npyfs_bin, "mount", data_npz, mnt], timeout=30)
    err = r.stderr.decode(errors="replace").strip()
    assert r.returncode == 1, err
    assert len(err.splitlines()) == 1 and str(mnt) in err and "already mounted" in err, err
    # The first mount is untouched.
    assert guarded(read_all, mnt / "v.npy", timeout=30) == npy_bytes(np.arange(7, dtype=">i2"))


def test_error_no_dev_fuse(npyfs_bin, shared_dir, data_npz):
    need_root()
    mnt = shared_dir / "m"
    mnt.mkdir()
    script = f"mount -t tmpfs none /dev && exec {npyfs_bin} mount {data_npz} {mnt}"
    err = _expect_error(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                        mnt, "/dev/fuse is missing", "fuse module")
    assert len(err.splitlines()) == 1


def test_error_no_fusermount3(npyfs_bin, shared_dir, data_npz):
    """A user other than root needs fusermount3: hide it (a private
    namespace binds /dev/null over it) and run as nobody."""
    need_root()
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing")
    fm = shutil.which("fusermount3") or "/usr/bin/fusermount3"
    src = shared_dir / "a.npz"
    shutil.copy(data_npz, src)
    src.chmod(0o644)
    binary = shared_dir / "npyfs"
    shutil.copy(npyfs_bin, binary)
    binary.chmod(0o755)
    mnt = shared_dir / "m"
    mnt.mkdir()
    hide = " && ".join(f"mount --bind /dev/null {p}"
                       for p in sorted({os.path.realpath(fm), "/usr/bin/fusermount3"})
                       if os.path.exists(p))
    script = (f"{hide} && exec setpriv --reuid=nobody --regid=nogroup --clear-groups "
              f"env PATH=/usr/bin:/bin {binary} mount {src} {mnt}")
    err = _expect_error(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                        mnt, "fusermount3 not found", "fuse3")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("opt,expect", [
    ("cache_size=12X", "expected a size"),
    ("cache_size=", "expected a size"),
    ("threads=-1", "number of threads"),
    ("threads=1000", "number of threads"),
    ("spacing=1", "at least 64K"),
    ("readahead=2G", "at most 1G"),
    ("index=foo", "background or lazy"),
    ("verify=sometimes", "lazy or strict"),
    ("index_dir=", "expected a directory"),
    ("rw", "read-only"),
])
def test_error_bad_option_value(npyfs_bin, tmp_path, data_npz, opt, expect):
    mnt = tmp_path / "m"
    mnt.mkdir()
    err = _expect_error([npyfs_bin, "mount", "-o", opt, data_npz, mnt], mnt, expect)
    if "=" in opt:
        assert opt in err.splitlines()[0], err


def test_error_bad_libfuse_option(npyfs_bin, tmp_path, data_npz):
    mnt = tmp_path / "m"
    mnt.mkdir()
    err = _expect_error([npyfs_bin, "mount", "-o", "no_such_option", data_npz, mnt], mnt,
                        "unknown option -o no_such_option")
    assert len(err.splitlines()) == 1


def test_max_read_and_long_index_dir(tmp_path, mount):
    """-o max_read= reaches libfuse and init agrees with it (libfuse refuses
    INIT otherwise); an index_dir path longer than 255 bytes is taken."""
    src = tmp_path / "a.npz"
    np.savez_compressed(src, a=ARR)
    deep = tmp_path / ("d" * 200) / ("e" * 200)
    mnt = mount(src, "max_read=65536", f"index_dir={deep}", "index=background")

    def body():
        with open(mnt / "a.npy", "rb") as f:
            got = f.read()
        assert got == npy_bytes(ARR)
        for _ in range(200):            # the background pass saves into deep
            if deep.is_dir() and any(deep.iterdir()):
                break
            time.sleep(0.05)
        assert any(deep.iterdir())
    guarded(body, timeout=60)
