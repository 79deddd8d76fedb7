"""What a new user trips over (issue 11): each CLI behaviour with its exact
exit status and a message that names the problem and the fix.

1. `npyfs unmount` unmounts npyfs and nothing else: a tmpfs (idle or busy,
   in a private mount namespace) is refused and stays mounted; a busy npyfs
   mount is refused (exit 1, naming the process that holds it and the -z
   fix) and keeps serving; -z/--lazy detaches it and says so, the open file
   still reads right and the daemon exits when it is closed; a mount whose
   daemon was killed is cleaned up (idle: unmounted; busy: detached lazily)
   and said so, and `npyfs mount` on it first says it is dead.
3. `ls --json` dtype: a value np.dtype() accepts after json.loads, equal to
   the dtype np.load gives, for simple, structured (padding, titles, nested,
   subarray fields) and odd dtypes; the header's text as descr. The
   user.npy.dtype xattr: a type string without quotes, a struct as its descr.
5. Common mistakes: a plain .npy source (already mappable), a truncated .npz
   (no end record; an end record pointing past the end) with the sizes, an
   unknown -o option (with the nearest known one), sizes (cache_size=0, 1GB,
   1GiB, a bare number of bytes, readahead below 4K), mount options given to
   `npyfs index`, `npyfs CMD --help`, a non-empty mount point (a warning,
   the mount goes on), /dev/fuse without read or write permission for a user
   (a private namespace with a device node of our own mode).
6. `npyfs ls` takes several sources and directories: one table with an
   ARCHIVE column (TSV when piped, aligned on a terminal), JSON rows with
   "archive"; one source alone keeps the old columns; a bad source is one
   stderr line and exit 1 while the others are listed.
8. Install footprint: scripts/install-deps installs no test tools unless
   --test (scripts/test passes it, scripts/demo does not); a build without
   libzip configures and reports the zip unit test as skipped.
9. --version names ISA-L and the index format version; the README's
   np.memmap example uses public numpy only and works through a mount (the
   man page's matches it); a relative source shows as an absolute path in
   /proc/mounts and stats; bash completion offers commands and every option;
   `cmake --install` then the uninstall target leaves no file behind.
"""

import ast
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import (cleanup_background, guarded, in_child, load, mounted_fuse, npy_bytes,
                      pids_for_mountpoint, read_all, run)

ROOT = Path(__file__).resolve().parents[2]
ARR = np.arange(60000, dtype="<f8").reshape(20000, 3)
SMALL = np.arange(7, dtype=">i2")


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (private mount namespaces, setpriv)")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) missing")


@pytest.fixture
def data_npz(tmp_path):
    p = tmp_path / "a.npz"
    np.savez_compressed(p, u=ARR, v=SMALL)
    return p


def _one_line(r):
    err = r.stderr.decode(errors="replace").strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("npyfs: "), err
    return err


def _wait_exit(proc, timeout=15):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon did not exit")


def _start_fg(npyfs_bin, src, mnt):
    """npyfs mount -f by hand (for a daemon the test kills), live on return."""
    p = subprocess.Popen([str(npyfs_bin), "mount", "-f", str(src), str(mnt)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not mounted_fuse(mnt):
        if p.poll() is not None:
            pytest.fail(f"mount failed: {p.stderr.read()}")
        if time.monotonic() > deadline:
            p.kill()
            pytest.fail("mount not live after 20 s")
        time.sleep(0.05)
    return p


# ------------------------------------------------- 1. npyfs unmount -----

@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_unmount_refuses_other_filesystems(npyfs_bin, tmp_path, busy):
    """A tmpfs of our own, in a private mount namespace (nothing outside it
    is ever touched): refused with its type named, and still mounted."""
    need_root()
    d = tmp_path / "t"
    d.mkdir()
    hold = f"exec 3<{d}/f; " if busy else ""
    script = (f"mount -t tmpfs npyfs-test-tmpfs {d} && echo x > {d}/f && {hold}"
              f"{npyfs_bin} unmount {d}; echo rc=$?; "
              f"grep -c ' {d} tmpfs ' /proc/self/mounts")
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], timeout=60)
    out = r.stdout.decode()
    err = r.stderr.decode(errors="replace").strip()
    assert "rc=1" in out, (out, err)
    assert out.strip().splitlines()[-1] == "1", f"the tmpfs was unmounted: {out}"
    assert len(err.splitlines()) == 1, err
    assert "not an npyfs mount (it is tmpfs)" in err, err
    assert str(d.name) in err


def test_unmount_busy_is_refused(npyfs_bin, data_npz, mount):
    mnt = mount(data_npz)
    fd = guarded(os.open, mnt / "v.npy", os.O_RDONLY, timeout=15)
    try:
        r = run([npyfs_bin, "unmount", mnt], timeout=60)
        assert r.returncode == 1, r.stderr
        err = _one_line(r)
        assert "target is busy" in err, err
        assert f"process {os.getpid()} (" in err, err   # the process that holds it
        assert f"npyfs unmount -z {mnt}" in err, err     # the fix
        assert mounted_fuse(mnt)
        assert guarded(os.pread, fd, 1 << 16, 0, timeout=15) == npy_bytes(SMALL)
        assert guarded(read_all, mnt / "u.npy", timeout=60) == npy_bytes(ARR)
    finally:
        os.close(fd)
    r = run([npyfs_bin, "unmount", mnt], timeout=60)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert not mounted_fuse(mnt)
    assert _wait_exit(mount.mount_of(mnt).proc) == 0


@pytest.mark.parametrize("flag", ["-z", "--lazy"])
def test_unmount_lazy(npyfs_bin, data_npz, mount, flag):
    mnt = mount(data_npz)
    fd = guarded(os.open, mnt / "u.npy", os.O_RDONLY, timeout=15)
    try:
        r = run([npyfs_bin, "unmount", flag, mnt], timeout=60)
        assert r.returncode == 0, r.stderr
        err = _one_line(r)
        assert "detached it lazily" in err and "busy" in err, err
        assert f"process {os.getpid()} (" in err, err
        assert not mounted_fuse(mnt)
        # what was open stays readable, served by the daemon until closed
        want = npy_bytes(ARR)
        assert guarded(os.pread, fd, len(want), 0, timeout=60) == want
        assert mount.mount_of(mnt).proc.poll() is None
    finally:
        os.close(fd)
    assert _wait_exit(mount.mount_of(mnt).proc) == 0


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_unmount_dead_daemon(npyfs_bin, data_npz, tmp_path, busy):
    mnt = tmp_path / "m"
    mnt.mkdir()
    p = _start_fg(npyfs_bin, data_npz, mnt)
    fd = None
    try:
        if busy:
            fd = guarded(os.open, mnt / "v.npy", os.O_RDONLY, timeout=15)
        p.kill()
        p.wait(timeout=15)
        assert mounted_fuse(mnt), "self-check: a killed daemon leaves its mount"
        # mounting there again says what happened and what to run
        r = run([npyfs_bin, "mount", data_npz, mnt], timeout=60)
        assert r.returncode == 1
        err = _one_line(r)
        assert f"the previous npyfs mount there is dead: run npyfs unmount {mnt}" in err, err
        r = run([npyfs_bin, "unmount", mnt], timeout=60)
        assert r.returncode == 0, r.stderr
        err = _one_line(r)
        assert "the daemon of this mount was gone" in err, err
        if busy:
            assert "detached it lazily" in err, err
        else:
            assert "unmounted it" in err, err
        assert not mounted_fuse(mnt)
        assert guarded(os.listdir, mnt, timeout=10) == []
    finally:
        if fd is not None:
            try:
                os.close(fd)   # the fd goes; its FLUSH to the dead daemon fails
            except OSError:
                pass
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        cleanup_background(mnt)


def test_unmount_flags(npyfs_bin, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    r = run([npyfs_bin, "unmount", d], timeout=30)
    assert r.returncode == 1 and "not mounted" in _one_line(r)
    # a path that does not exist says so, as stats does
    for cmd in ("unmount", "stats"):
        r = run([npyfs_bin, cmd, tmp_path / "nowhere"], timeout=30)
        assert r.returncode == 1 and _one_line(r) == f"npyfs: {tmp_path / 'nowhere'}: no such directory"
    r = run([npyfs_bin, "unmount", "--frob", d], timeout=30)
    assert r.returncode == 1 and b"unknown unmount flag --frob" in r.stderr


# ------------------------------------------------ 3. dtype for programs ---

DTYPES = {
    "f8": np.dtype("<f8"),
    "be_i2": np.dtype(">i2"),
    "bool": np.dtype("?"),
    "c16": np.dtype("<c16"),
    "u4": np.dtype("<U4"),
    "s3": np.dtype("S3"),
    "dt": np.dtype("<M8[ns]"),
    "td": np.dtype("<m8[s]"),
    "void": np.dtype("V5"),
    "rec": np.dtype([("a", "<i4"), ("b", "<f8")]),
    "aligned": np.dtype([("a", "u1"), ("b", "<f8"), ("c", "<i2")], align=True),
    "titled": np.dtype([(("Title A", "a"), "<i4"), ("b", "<f4")]),
    "subarray": np.dtype([("a", "<f8", (2, 3)), ("b", "S2", (4,))]),
    "nested": np.dtype([("p", [("x", "<i2"), ("y", ">f4")]), ("q", "u1")]),
    "nested_aligned": np.dtype([("p", np.dtype([("x", "u1"), ("y", "<f8")], align=True)),
                                ("q", "u1")], align=True),
    "itemsize": np.dtype({"names": ["a", "b"], "formats": ["<i4", "<i4"],
                          "offsets": [0, 8], "itemsize": 16}),
    "utf8_name": np.dtype([("caf\u00e9", "<i4"), ("\u03b1\u03b2", "<f8")]),
}
SIMPLE = {"f8", "be_i2", "bool", "c16", "u4", "s3", "dt", "td", "void"}


@pytest.fixture
def dtype_npz(tmp_path):
    p = tmp_path / "dtypes.npz"
    np.savez(p, **{k: np.zeros(3, dtype=dt) for k, dt in DTYPES.items()},
             structsub=np.zeros(2, dtype=[("s", [("x", "<i2")], (2,))]))
    return p


def test_ls_json_dtype_is_what_np_dtype_takes(npyfs_bin, dtype_npz):
    r = run([npyfs_bin, "ls", "--json", dtype_npz], timeout=30)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    with np.load(dtype_npz) as z:
        for key, dt in DTYPES.items():
            row = rows[f"{key}.npy"]
            got = np.dtype(row["dtype"])   # no ast.literal_eval needed
            assert got == z[key].dtype, (key, row["dtype"], got, z[key].dtype)
            assert got.itemsize == z[key].dtype.itemsize, key
            # descr: the header's own text, a Python literal of the same dtype
            assert np.lib.format.descr_to_dtype(ast.literal_eval(row["descr"])) == dt, key
            if key in SIMPLE:
                assert row["dtype"] == dt.str, (key, row["dtype"])
            else:
                assert isinstance(row["dtype"], dict), (key, row["dtype"])
        # a subarray of a struct has no JSON form np.dtype takes: null, and
        # descr still says it
        row = rows["structsub.npy"]
        assert row["dtype"] is None
        assert np.lib.format.descr_to_dtype(ast.literal_eval(row["descr"])) == \
            z["structsub"].dtype
    assert rows["aligned.npy"]["dtype"]["itemsize"] == DTYPES["aligned"].itemsize
    assert rows["titled.npy"]["dtype"]["titles"] == ["Title A", None]


def test_ls_json_dtype_of_a_v3_header(npyfs_bin, tmp_path):
    """A version 3 header (UTF-8) with a field name outside latin-1."""
    import warnings
    dt = np.dtype([("\u6f22\u5b57", "<i4"), ("\U0001f600", "<f8")])
    src = tmp_path / "v3.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.savez(src, a=np.zeros(2, dtype=dt))
    with zipfile.ZipFile(src) as zf:
        assert zf.read("a.npy")[6] == 3   # self-check: numpy wrote version 3
    r = run([npyfs_bin, "ls", "--json", src], timeout=30)
    assert r.returncode == 0, r.stderr
    dtype_text = r.stdout.decode().split('"dtype": ')[1].split(', "descr"')[0]
    assert dtype_text.isascii(), dtype_text     # other characters as \uXXXX
    (row,) = json.loads(r.stdout)
    assert np.dtype(row["dtype"]) == dt


def test_xattr_dtype_forms(dtype_npz, mount):
    mnt = mount(dtype_npz)

    def body():
        assert os.getxattr(mnt / "f8.npy", "user.npy.dtype") == b"<f8"
        assert os.getxattr(mnt / "be_i2.npy", "user.npy.dtype") == b">i2"
        assert os.getxattr(mnt / "dt.npy", "user.npy.dtype") == b"<M8[ns]"
        for key in ("rec", "aligned", "nested"):
            text = os.getxattr(mnt / f"{key}.npy", "user.npy.dtype").decode()
            assert text.startswith("["), text
            assert np.lib.format.descr_to_dtype(ast.literal_eval(text)) == DTYPES[key]
    guarded(body, timeout=60)


# --------------------------------------------- 5. the common mistakes ---

def _expect(cmd, *patterns, rc=1, mnt=None, **kw):
    r = run(cmd, timeout=60, **kw)
    try:
        assert r.returncode == rc, (r.returncode, r.stderr)
        err = _one_line(r)
        for p in patterns:
            assert p in err, (p, err)
        if mnt is not None:
            assert not mounted_fuse(mnt)
        return err
    finally:
        if mnt is not None:
            cleanup_background(mnt)


def test_plain_npy_source(npyfs_bin, tmp_path):
    src = tmp_path / "plain.npy"
    np.save(src, ARR)
    mnt = tmp_path / "m"
    mnt.mkdir()
    for cmd in (["mount", src, mnt], ["ls", src]):
        _expect([npyfs_bin, *cmd], str(src), "a plain .npy file",
                "already mappable with np.load(path, mmap_mode='r')",
                "mount a directory holding it", mnt=mnt)


def test_truncated_npz_without_end_record(npyfs_bin, data_npz, tmp_path):
    raw = data_npz.read_bytes()
    src = tmp_path / "cut.npz"
    src.write_bytes(raw[:len(raw) * 2 // 3])
    size = src.stat().st_size
    mnt = tmp_path / "m"
    mnt.mkdir()
    for cmd in (["mount", src, mnt], ["ls", src], ["index", src]):
        _expect([npyfs_bin, *cmd], str(src), "truncated or not a zip",
                "no end of central directory record", f"(file of {size} bytes)", mnt=mnt)


def test_truncated_npz_end_record_past_the_end(npyfs_bin, data_npz, tmp_path):
    """The end record survives but the directory it points to does not:
    the file lost its middle (here: the directory moved past the end)."""
    raw = bytearray(data_npz.read_bytes())
    eocd = raw.rindex(b"PK\x05\x06")
    cd_size = int.from_bytes(raw[eocd + 12:eocd + 16], "little")
    offset = len(raw) + 1000
    raw[eocd + 16:eocd + 20] = offset.to_bytes(4, "little")
    src = tmp_path / "short.npz"
    src.write_bytes(bytes(raw))
    mnt = tmp_path / "m"
    mnt.mkdir()
    _expect([npyfs_bin, "mount", src, mnt], str(src), "truncated or not a zip",
            f"at bytes {offset} to {offset + cd_size}",
            f"past the end of the file ({len(raw)} bytes)", mnt=mnt)


def test_not_a_zip_stays_generic(npyfs_bin, tmp_path):
    src = tmp_path / "notes.npz"
    src.write_text("just text\n" * 50)
    _expect([npyfs_bin, "ls", src], str(src), "not a zip (.npz) or gzip (.npy.gz) file")


@pytest.mark.parametrize("opt,want", [
    ("cache_sise=64M", "unknown option -o cache_sise=64M (did you mean cache_size?)"),
    ("allow_others", "unknown option -o allow_others (did you mean allow_other?)"),
    ("spacnig=1M", "(did you mean spacing?)"),
    ("frobnicate", "unknown option -o frobnicate (npyfs mount --help lists the options)"),
    ("subtype=x", "unknown option -o subtype=x"),
    ("cache_size", "-o cache_size needs a value (cache_size=...;"),
])
def test_unknown_option(npyfs_bin, data_npz, tmp_path, opt, want):
    mnt = tmp_path / "m"
    mnt.mkdir()
    err = _expect([npyfs_bin, "mount", "-o", f"ro,{opt}", data_npz, mnt], want, mnt=mnt)
    assert str(data_npz) not in err     # the option is the problem, not the file
    # the mount.fuse3 form (an fstab line) says the same
    _expect([npyfs_bin, data_npz, mnt, "-o", f"defaults,{opt}"], want, mnt=mnt)


def test_libfuse_options_pass(npyfs_bin, data_npz, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        r = run([npyfs_bin, "mount", "-o", "ro,nodev,nosuid,noexec,noatime,allow_other,"
                 "max_read=131072", data_npz, mnt], timeout=60)
        assert r.returncode == 0 and r.stderr == b"", r.stderr
        opts = next(ln.split()[3] for ln in open("/proc/self/mounts")
                    if ln.split()[1] == str(mnt))
        assert "noexec" in opts and "noatime" in opts, opts
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
    finally:
        cleanup_background(mnt)


@pytest.mark.parametrize("opt,want", [
    ("cache_size=0", "give at least cache_size=128K"),
    ("cache_size=100", "give at least cache_size=128K"),
    ("cache_size=1GB", "ambiguous size 1GB: write 1G or 1GiB (sizes are powers of 1024)"),
    ("spacing=1MB", "ambiguous size 1MB: write 1M or 1MiB"),
    ("readahead=100", "expected 0 or a size from 4K"),
])
def test_size_mistakes(npyfs_bin, data_npz, tmp_path, opt, want):
    mnt = tmp_path / "m"
    mnt.mkdir()
    _expect([npyfs_bin, "mount", "-o", opt, data_npz, mnt], want, mnt=mnt)


@pytest.mark.parametrize("opt,capacity", [("cache_size=1GiB", 1 << 30),
                                          ("cache_size=3M", 3 << 20),
                                          ("cache_size=1048576", 1 << 20),   # bytes
                                          ("cache_size=128K", 128 << 10)])
def test_size_forms_accepted(npyfs_bin, data_npz, mount, opt, capacity):
    mnt = mount(data_npz, opt)
    r = guarded(run, [npyfs_bin, "stats", "--json", mnt], timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cache"]["capacity"] == capacity


@pytest.mark.parametrize("opt,want", [
    ("cache_size=64M", "-o cache_size=64M applies to a mount, not to npyfs index"),
    ("allow_other", "-o allow_other applies to a mount, not to npyfs index"),
    ("threads=2", "-o threads=2 applies to a mount"),
    ("spacng=1M", "unknown option -o spacng=1M (did you mean spacing?)"),
    ("bogus", "unknown option -o bogus (npyfs index takes -o index_dir=DIR, -o "
              "index_max=SIZE, -o spacing=SIZE, -o max_ratio=N, -o index_out=FILE and the "
              "remote sources' options (endpoint=, region=, ...))"),
])
def test_index_refuses_mount_options(npyfs_bin, data_npz, tmp_path, opt, want):
    idx = tmp_path / "idx"
    err = _expect([npyfs_bin, "index", "-o", f"index_dir={idx},{opt}", data_npz], want)
    assert ("-o max_ratio=N, -o index_out=FILE and the remote sources' options" in err
            or "did you mean" in err)
    assert not idx.exists() or not any(idx.iterdir())   # nothing was indexed


@pytest.mark.parametrize("cmd", ["mount", "unmount", "umount", "ls", "index", "stats"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_command_help(npyfs_bin, cmd, flag, tmp_path):
    r = run([npyfs_bin, cmd, flag], timeout=10)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    out = r.stdout.decode()
    name = "unmount" if cmd == "umount" else cmd
    assert out.startswith(f"usage: npyfs {name} "), out
    if cmd == "mount":
        for opt in ("cache_size=SIZE", "spacing=SIZE", "verify=MODE", "allow_other", "-f"):
            assert opt in out, opt
        assert "unmount" not in out.split("\n")[0]
    # after other arguments too, and nothing is done
    r = run([npyfs_bin, cmd, tmp_path / "x.npz", flag], timeout=10)
    assert r.returncode == 0 and r.stdout.decode() == out


def test_non_empty_mount_point_warns(npyfs_bin, data_npz, tmp_path):
    """Like mount(8) and fusermount3 of fuse 3: allowed, with a warning
    that what is there is hidden."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    (mnt / "mine.txt").write_text("kept\n")
    (mnt / "also").mkdir()
    try:
        r = run([npyfs_bin, "mount", data_npz, mnt], timeout=60)
        assert r.returncode == 0, r.stderr
        err = _one_line(r)
        assert f"warning: mount point {mnt} is not empty: its 2 entries stay hidden" in err, err
        assert mounted_fuse(mnt)
        assert sorted(guarded(os.listdir, mnt, timeout=15)) == ["u.npy", "v.npy"]
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
        assert (mnt / "mine.txt").read_text() == "kept\n"
    finally:
        cleanup_background(mnt)


def test_daemon_keeps_no_inherited_descriptor(npyfs_bin, data_npz, tmp_path):
    """A pipe the caller passes on (`npyfs mount ... 5>&1 | cat`): once the
    mount is up its reader sees end of file, since the daemon keeps none of
    the descriptors it was started with."""
    import select
    mnt = tmp_path / "m"
    mnt.mkdir()
    r, w = os.pipe()
    try:
        p = subprocess.Popen([npyfs_bin, "mount", data_npz, mnt], pass_fds=[w],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        os.close(w)
        w = -1
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        ready, _, _ = select.select([r], [], [], 10)
        assert ready and os.read(r, 1) == b"", "the daemon holds the caller's pipe"
        assert guarded(os.listdir, mnt, timeout=15)
        assert run([npyfs_bin, "unmount", mnt], timeout=30).returncode == 0
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        cleanup_background(mnt)


def test_failed_mount_on_non_empty_mount_point_says_one_line(npyfs_bin, tmp_path):
    """The warning about hidden entries is for a mount that is up: a mount
    that fails prints only why."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    (mnt / "mine.txt").write_text("kept\n")
    try:
        r = run([npyfs_bin, "mount", tmp_path / "missing.npz", mnt], timeout=60)
        assert r.returncode == 1
        err = _one_line(r)
        assert "No such file or directory" in err and "warning" not in err, err
        assert not mounted_fuse(mnt)
    finally:
        cleanup_background(mnt)


@pytest.mark.parametrize("mode,missing", [(0o600, "no read and write permission"),
                                          (0o604, "no write permission"),
                                          (0o602, "no read permission")])
def test_dev_fuse_permission(npyfs_bin, shared_dir, data_npz, mode, missing):
    """A user other than root without read or write on /dev/fuse: a private
    namespace puts a device node of our own mode there (the real one is
    never changed)."""
    need_root()
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing")
    src = shared_dir / "a.npz"
    shutil.copy(data_npz, src)
    src.chmod(0o644)
    binary = shared_dir / "npyfs"
    shutil.copy(npyfs_bin, binary)
    binary.chmod(0o755)
    mnt = shared_dir / "m"
    mnt.mkdir()
    script = (f"mount -t tmpfs none /dev && mknod -m {mode:o} /dev/fuse c 10 229 && "
              f"mknod -m 666 /dev/null c 1 3 && "
              f"exec setpriv --reuid=nobody --regid=nogroup --clear-groups "
              f"{binary} mount {src} {mnt}")
    err = _expect(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                  "/dev/fuse: " + missing, f"mode {mode:04o}",
                  "needs read and write permission", mnt=mnt)
    assert "uid " in err


@pytest.mark.parametrize("foreground", [False, True])
def test_allow_other_without_user_allow_other(npyfs_bin, shared_dir, data_npz, foreground):
    """A user other than root asking for allow_other where /etc/fuse.conf
    lacks user_allow_other: fusermount3's refusal arrives as one line of
    ours that names the fix, not as its own line plus "see above". A
    private namespace gives the user a /dev/fuse and an empty fuse.conf
    (the real ones are never changed)."""
    need_root()
    if shutil.which("setpriv") is None or shutil.which("fusermount3") is None:
        pytest.skip("setpriv or fusermount3 missing")
    src = shared_dir / "a.npz"
    shutil.copy(data_npz, src)
    src.chmod(0o644)
    binary = shared_dir / "npyfs"
    shutil.copy(npyfs_bin, binary)
    binary.chmod(0o755)
    conf = shared_dir / "fuse.conf"
    conf.write_text("# no user_allow_other\n")
    mnt = shared_dir / "m"
    mnt.mkdir()
    os.chown(mnt, 65534, -1)
    idx = shared_dir / "idx"
    idx.mkdir(mode=0o700)
    os.chown(idx, 65534, -1)
    fg = "-f " if foreground else ""
    script = (f"mount -t tmpfs none /dev && mknod -m 666 /dev/fuse c 10 229 && "
              f"mknod -m 666 /dev/null c 1 3 && mount --bind {conf} /etc/fuse.conf && "
              f"exec setpriv --reuid=nobody --regid=nogroup --clear-groups "
              f"{binary} mount {fg}-o allow_other,index_dir={shared_dir / 'idx'} {src} {mnt}")
    err = _expect(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                  str(mnt), "cannot mount", "user_allow_other",
                  "add the line user_allow_other to /etc/fuse.conf, or mount without allow_other",
                  mnt=mnt)
    assert "see the message above" not in err


# ------------------------------------------ 6. ls takes what mount takes ---

@pytest.fixture
def tree(tmp_path):
    """runs/ with archives at two depths, a .npy.gz, and files ls skips."""
    import gzip
    d = tmp_path / "runs"
    (d / "b" / "deep").mkdir(parents=True)
    np.savez(d / "a.npz", x=np.arange(3, dtype="<i4"))
    np.savez_compressed(d / "b" / "deep" / "c.npz", y=np.zeros((2, 2)), z=np.ones(1, "?"))
    with gzip.open(d / "b" / "g.npy.gz", "wb") as f:
        np.save(f, np.arange(4, dtype=">u2"))
    np.save(d / "plain.npy", np.arange(2))
    (d / "notes.txt").write_text("hi\n")
    return d


def _tsv(out):
    return [ln.split("\t") for ln in out.decode().splitlines()]


def test_ls_directory_and_several_sources(npyfs_bin, tree, data_npz):
    r = run([npyfs_bin, "ls", tree, data_npz], timeout=60)
    assert r.returncode == 0, r.stderr
    rows = _tsv(r.stdout)
    assert rows[0] == ["ARCHIVE", "NAME", "DTYPE", "SHAPE", "ORDER", "SIZE", "STORED",
                       "METHOD"]
    got = [(row[0], row[1], row[2]) for row in rows[1:]]
    assert all(len(row) == 8 for row in rows), rows
    assert got == [(f"{tree}/a.npz", "x.npy", "<i4"),
                   (f"{tree}/b/deep/c.npz", "y.npy", "<f8"),
                   (f"{tree}/b/deep/c.npz", "z.npy", "|b1"),
                   (f"{tree}/b/g.npy.gz", "g.npy", ">u2"),
                   (str(data_npz), "u.npy", "<f8"),
                   (str(data_npz), "v.npy", ">i2")], got
    j = run([npyfs_bin, "ls", "--json", tree, data_npz], timeout=60)
    assert j.returncode == 0, j.stderr
    rows = json.loads(j.stdout)
    assert [(row["archive"], row["name"]) for row in rows] == [g[:2] for g in got]
    assert [np.dtype(row["dtype"]) for row in rows] == [np.dtype(g[2]) for g in got]


def test_ls_one_source_keeps_its_columns(npyfs_bin, data_npz):
    r = run([npyfs_bin, "ls", data_npz], timeout=30)
    assert r.returncode == 0, r.stderr
    rows = _tsv(r.stdout)
    assert rows[0] == ["NAME", "DTYPE", "SHAPE", "ORDER", "SIZE", "STORED", "METHOD"]
    assert rows[1][:5] == ["u.npy", "<f8", "(20000, 3)", "C", str(len(npy_bytes(ARR)))]
    j = json.loads(run([npyfs_bin, "ls", "--json", data_npz], timeout=30).stdout)
    assert [row["archive"] for row in j] == [str(data_npz)] * 2


def test_ls_bad_source_among_good(npyfs_bin, tree, data_npz, tmp_path):
    missing = tmp_path / "gone.npz"
    r = run([npyfs_bin, "ls", data_npz, missing, tree], timeout=60)
    assert r.returncode == 1
    err = _one_line(r)
    assert str(missing) in err and "No such file" in err, err
    names = [row[1] for row in _tsv(r.stdout)[1:]]
    assert names == ["u.npy", "v.npy", "x.npy", "y.npy", "z.npy", "g.npy"], names
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run([npyfs_bin, "ls", empty], timeout=30)
    assert "no .npz or .npy.gz files in it" in _one_line(r)


def _on_terminal(cmd):
    """Run cmd with stdout on a pseudo-terminal; its output."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=slave,
                         stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                b = os.read(master, 4096)
            except OSError:
                break
            if not b:
                break
            out += b
        elif p.poll() is not None:
            break
    os.close(master)
    assert p.wait(timeout=30) == 0, p.stderr.read()
    return out.decode().replace("\r\n", "\n")


def test_ls_aligned_on_a_terminal(npyfs_bin, tree, data_npz):
    out = _on_terminal([npyfs_bin, "ls", tree, data_npz])
    lines = out.strip("\n").split("\n")
    assert "\t" not in out
    assert len(lines) == 7, lines
    head = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    assert head.split() == ["ARCHIVE", "NAME", "DTYPE", "SHAPE", "ORDER", "SIZE", "STORED",
                            "METHOD"]
    for ln in lines[1:]:
        # left-aligned text columns start under their titles
        for col in (0, 1, 2, 3, 4, 7):
            assert ln[starts[col] - 1:starts[col]] in ("", " ") and ln[starts[col]] != " ", \
                (col, ln)
    # the numbers are right-aligned: they end where their titles end
    size_end = starts[5] + len("SIZE")
    for ln in lines[1:]:
        assert ln[size_end - 1].isdigit() and ln[size_end] == " ", ln
    assert lines[5].split()[:2] == [str(data_npz), "u.npy"]


# -------------------------------------------------- 8. install footprint ---

def test_install_deps_sets():
    base = run([ROOT / "scripts" / "install-deps", "--print"], timeout=30)
    full = run([ROOT / "scripts" / "install-deps", "--print", "--test"], timeout=30)
    assert base.returncode == 0 and full.returncode == 0
    base, full = set(base.stdout.decode().split()), set(full.stdout.decode().split())
    for p in ("clang", "libclang-rt-14-dev", "libzip-dev", "python3-pytest"):
        assert p not in base and p in full, p
    for p in ("libfuse3-dev", "fuse3", "zlib1g-dev", "cmake", "python3-numpy"):
        assert p in base, p
    assert base < full
    # the README's first command installs the small set, the test command the rest
    demo = (ROOT / "scripts" / "demo").read_text()
    test = (ROOT / "scripts" / "test").read_text()
    assert re.search(r"^scripts/install-deps$", demo, re.M), "demo"
    assert re.search(r"^scripts/install-deps --test$", test, re.M), "test"


def test_build_without_libzip(tmp_path):
    """libzip missing (pkg-config sees only fuse3 and libcurl, both required):
    npyfs configures, and ctest reports the zip unit test skipped, saying why."""
    if shutil.which("cmake") is None or shutil.which("pkg-config") is None:
        pytest.skip("cmake or pkg-config missing")
    fuse_pc = run(["pkg-config", "--variable=pcfiledir", "fuse3"], timeout=30)
    if fuse_pc.returncode != 0:
        pytest.skip("fuse3.pc not found")
    pcdir = tmp_path / "pc"
    pcdir.mkdir()
    (pcdir / "fuse3.pc").symlink_to(Path(fuse_pc.stdout.decode().strip()) / "fuse3.pc")
    curl_pc = run(["pkg-config", "--variable=pcfiledir", "libcurl"], timeout=30)
    if curl_pc.returncode != 0:
        pytest.skip("libcurl.pc not found")
    (pcdir / "libcurl.pc").symlink_to(Path(curl_pc.stdout.decode().strip()) / "libcurl.pc")
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(pcdir), PKG_CONFIG_PATH="")
    build = tmp_path / "build"
    r = run(["cmake", "-S", ROOT, "-B", build], timeout=300, env=env)
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    assert "libzip not found: the zip unit test will be skipped" in out, out
    r = run(["ctest", "-R", "unit_zip", "--output-on-failure", "-V"], timeout=120, cwd=build)
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert "unit_zip skipped: libzip not found" in out, out
    assert re.search(r"unit_zip .*Skipped", out), out


# ------------------------------------------------------ 9. small things ---

def test_version_names_isal_and_index_format(npyfs_bin):
    r = run([npyfs_bin, "--version"], timeout=10)
    assert r.returncode == 0
    out = r.stdout.decode()
    m = re.search(r"#define DFX_STORE_VERSION (\d+)",
                  (ROOT / "format" / "dfx_store.h").read_text())
    assert f"index files: format version {m.group(1)}" in out, out
    cache = Path(npyfs_bin).resolve().parent / "CMakeCache.txt"
    isal = None
    if cache.exists():
        text = cache.read_text()
        isal = "ISAL_FOUND:INTERNAL=1" in text and "NPYFS_ISAL:STRING=OFF" not in text
    if isal is True:
        assert re.search(r"ISA-L \d+\.\d+\.\d+", out), out
    elif isal is False:
        assert "without ISA-L" in out, out


def _readme_memmap_example():
    text = (ROOT / "README.md").read_text()
    start = text.index("`np.memmap` works too")
    block = re.search(r"\n\n((?:    .*\n)+)", text[start:]).group(1)
    return "\n".join(ln[4:] for ln in block.splitlines())


def test_memmap_examples_public_numpy(tmp_path, mount):
    code = _readme_memmap_example()
    assert "np.lib.format" not in code and "._" not in code, code
    man = (ROOT / "docs" / "npyfs.1").read_text()
    man_code = man[man.index(".B np.memmap", man.index(".SH EXAMPLES")):]
    man_code = man_code[man_code.index(".nf") + 4:man_code.index(".fi")]
    assert man_code.replace("\\-", "-").strip() == code.strip()
    arr = np.asfortranarray(np.arange(60, dtype="<i8").reshape(6, 10))
    src = tmp_path / "f.npz"
    np.savez_compressed(src, x=arr)
    mnt = mount(src)

    def body():
        env = {"np": np}
        exec(code.replace("/mnt/arr/x.npy", str(mnt / "x.npy")), env)
        m = env["m"]
        assert isinstance(m, np.memmap)
        assert m.dtype == arr.dtype and m.shape == arr.shape and np.isfortran(m)
        assert np.array_equal(m, arr)
    in_child(body, timeout=60)


def test_relative_source_absolute_in_mounts_and_stats(npyfs_bin, data_npz, tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        rel = os.path.relpath(data_npz, sub)       # ../a.npz
        r = run([npyfs_bin, "mount", f"./{rel}", "../m"], timeout=60, cwd=sub)
        assert r.returncode == 0, r.stderr
        src = next(ln.split()[0] for ln in open("/proc/self/mounts")
                   if ln.split()[1] == str(mnt))
        want = f"{sub}/{rel}"                      # absolute; symlinks and .. kept
        assert src == want, (src, want)
        st = run([npyfs_bin, "stats", "--json", "../m"], timeout=60, cwd=sub)
        assert st.returncode == 0, st.stderr
        assert [a["path"] for a in json.loads(st.stdout)["archives"]] == [want]
        assert guarded(read_all, mnt / "v.npy", timeout=30) == npy_bytes(SMALL)
        assert run([npyfs_bin, "unmount", "../m"], timeout=30, cwd=sub).returncode == 0
    finally:
        cleanup_background(mnt)


def _complete(*words, cwd=None):
    """COMPREPLY of _npyfs for the words typed so far (the last one being
    completed), from completions/npyfs.bash sourced in a plain bash."""
    script = (f"source {ROOT / 'completions' / 'npyfs.bash'}\n"
              "COMP_WORDS=(\"$@\"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
              "_npyfs\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = run(["bash", "--norc", "-c", script, "bash", "npyfs", *words], timeout=30, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.decode().splitlines() if ln]


def test_bash_completion(npyfs_bin, tmp_path, data_npz, mount):
    if shutil.which("bash") is None:
        pytest.skip("bash missing")
    assert _complete("") == ["mount", "unmount", "ls", "index", "stats", "--help",
                             "--version"]
    assert _complete("un") == ["unmount"]
    assert _complete("mount", "-o", "cache_s") == ["cache_size="]
    assert _complete("mount", "-o", "ro,thr") == ["ro,threads="]
    assert _complete("mount", "-o", "index=") == ["index=background", "index=lazy"]
    assert _complete("mount", "-") == ["-f", "-d", "-o", "--help"]
    assert _complete("index", "-o", "") == ["index_dir=", "index_max=", "spacing=",
                                           "max_ratio=", "index_out=", "endpoint=", "region=",
                                           "s3_path_style", "s3_anonymous", "cacert=",
                                           "http_header=", "connections=", "timeout=",
                                           "retries=", "block=", "remote_cache="]
    assert _complete("ls", "-o", "s3_p") == ["s3_path_style"]
    assert _complete("mount", "-o", "s3_a") == ["s3_anonymous"]
    assert _complete("unmount", "-") == ["-z", "--lazy", "--help"]
    assert _complete("ls", "--j") == ["--json"]
    # every option --help names is offered after mount -o
    h = run([npyfs_bin, "--help"], timeout=10).stdout.decode()
    ours = set(re.findall(r"^\s+([a-z_]+)=[A-Z]+", h, re.M))
    offered = {w.rstrip("=") for w in _complete("mount", "-o", "")}
    assert ours <= offered, ours - offered
    # files for sources, live npyfs mounts for unmount and stats
    assert _complete("ls", "a.n", cwd=data_npz.parent) == ["a.npz"]
    mnt = mount(data_npz)
    assert str(mnt) in _complete("unmount", str(mnt)[:-1])
    assert _complete("stats", str(mnt)) == [str(mnt)]


def _install(npyfs_bin, prefix):
    build = Path(npyfs_bin).resolve().parent
    if not (build / "CMakeCache.txt").exists() or shutil.which("cmake") is None:
        pytest.skip(f"{build} is not a CMake build directory")
    r = run(["cmake", "--install", build, "--prefix", prefix], timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return build


def test_install_then_uninstall(npyfs_bin, tmp_path):
    prefix = tmp_path / "prefix"
    build = _install(npyfs_bin, prefix)
    files = sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if not p.is_dir())
    assert len(files) == 4 and files[0] == "bin/npyfs", files
    assert re.fullmatch(r"lib/python3\.\d+/dist-packages/npyfs\.py", files[1]), files
    assert files[2:] == ["share/bash-completion/completions/npyfs",
                         "share/man/man1/npyfs.1"], files
    manifest = (build / "install_manifest.txt").read_text().split()
    assert sorted(manifest) == sorted(str(prefix / f) for f in files)
    r = run(["cmake", "--build", build, "--target", "uninstall"], timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    left = [p for p in prefix.rglob("*") if not p.is_dir()]
    assert left == [], left
