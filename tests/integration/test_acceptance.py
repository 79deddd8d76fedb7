"""Acceptance: what a new user tried from the README, the man page and
issues 9 and 11, where npyfs did not do what they say (local sources only).

- `-o max_read=SIZE` takes a size as every SIZE does (`64K`), not only a
  bare number of bytes: the kernel takes bytes, so npyfs passes them on.
- A size given as `1GB` is refused with the option named (`-o
  index_max=1GB`), as every other bad value is, for mount and for index.
- A mount point reached through a symlink (or written `DIR/.`): `npyfs
  stats` and `npyfs unmount` find the mount, a second `npyfs mount` there is
  refused as already mounted instead of stacking a second mount, and a dead
  daemon's mount is cleaned up through the link.
- A busy mount held by a process's working directory says so (not "files
  open"), with the fix that applies.
- Another user's mount: unmount and stats say whose it is (unmount quoted
  fusermount3's "entry ... not found in /etc/mtab").
- `ls --json` always prints one JSON array: `[]` for a directory without
  archives (exit 0) and when no source could be read (exit 1), so
  `npyfs.ls()` of such a directory returns [].
- Bash completion: `verify=` offers `auto` (the default) too, a file name
  with a space stays one word, a mount point with a space is quoted, and
  the SELinux `context=` options libfuse takes are offered.
- The uninstall target leaves none of the bytecode Python wrote for the
  installed module.
- The Python helper's warning at a lazy detach names what held the mount,
  without npyfs unmount's advice to try again or to detach (already done).
- `npyfs stats` rounds the ETA of a running pass up: "0 s" only when
  nothing is left.
- README and man page say what a read error through a memory map is
  (SIGBUS, which numpy cannot catch), that `-o verify=strict` keeps damaged
  members from being mapped, and where the daemon's log is.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import (cleanup_background, guarded, in_child, mounted_fuse, npy_bytes,
                      pids_for_mountpoint, read_all, run)

ROOT = Path(__file__).resolve().parents[2]
ARR = np.arange(60000, dtype="<f8").reshape(20000, 3)
SMALL = np.arange(7, dtype=">i2")


@pytest.fixture
def data_npz(tmp_path):
    p = tmp_path / "a.npz"
    np.savez_compressed(p, u=ARR, v=SMALL)
    return p


def _err(r):
    return r.stderr.decode(errors="replace").strip()


def _mount_count(mnt):
    target = os.path.realpath(str(mnt)).encode()
    n = 0
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            point = line.split(b" ")[1].replace(b"\\040", b" ")
            n += point == target
    return n


def _unmount_all(mnt):
    """Every mount stacked on mnt (a test that failed may have made two)."""
    for _ in range(4):
        if not mounted_fuse(mnt):
            return
        cleanup_background(mnt)
        if mounted_fuse(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True,
                           timeout=15)


# ------------------------------------------------------ options ---------

def test_max_read_takes_a_size_suffix(data_npz, mount):
    """README, Options: max_read=SIZE; SIZE takes a K suffix. npyfs passed
    "max_read=64K" to the kernel as it came, and the mount failed with
    "fuse: mount failed: Invalid argument"."""
    mnt = mount(data_npz, "max_read=64K")
    with open("/proc/self/mounts") as f:
        opts = [ln.split()[3] for ln in f if ln.split()[1] == str(mnt)]
    assert opts and "max_read=65536" in opts[-1].split(","), opts
    assert guarded(read_all, mnt / "u.npy", timeout=60) == npy_bytes(ARR)


@pytest.mark.parametrize("cmd,opts,named", [
    ("mount", "cache_size=64M,index_max=1GB", "-o index_max=1GB"),
    ("mount", "readahead=1mb", "-o readahead=1mb"),
    ("index", "spacing=1MB", "-o spacing=1MB"),
])
def test_ambiguous_size_names_its_option(npyfs_bin, data_npz, tmp_path, cmd, opts, named):
    """README: on any error mount prints one line naming the file or the
    option; a size like 1GB is refused as ambiguous. The line named only
    the value ("ambiguous size 1GB"), not which option it was given to."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    args = [npyfs_bin, cmd, "-o", opts, data_npz] + ([mnt] if cmd == "mount" else [])
    r = run(args, timeout=30)
    try:
        err = _err(r)
        assert r.returncode == 1, err
        assert len(err.splitlines()) == 1 and named in err, err
        assert "ambiguous" in err and "iB" in err, err
    finally:
        _unmount_all(mnt)
    assert not mounted_fuse(mnt)


# ---------------------------------------------- mount points ------------

def test_mount_point_through_a_symlink(npyfs_bin, data_npz, tmp_path):
    """mount follows a symlinked MOUNTPOINT (as mount(8) does); stats and
    unmount did not ("not a mount point", "not mounted"), and a second
    mount through the link stacked a second mount where README says
    "already mounted" is an error."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to("real")
    try:
        r = run([npyfs_bin, "mount", data_npz, link], timeout=60)
        assert r.returncode == 0, _err(r)
        assert mounted_fuse(real)
        st = run([npyfs_bin, "stats", "--json", link], timeout=30)
        assert st.returncode == 0, _err(st)
        assert json.loads(st.stdout)["archives_opened"] == 1
        again = run([npyfs_bin, "mount", data_npz, link], timeout=60)
        assert again.returncode == 1 and "already mounted" in _err(again), _err(again)
        assert _mount_count(real) == 1
        r = run([npyfs_bin, "unmount", f"{link}/."], timeout=60)
        assert r.returncode == 0, _err(r)
        assert not mounted_fuse(real)
    finally:
        _unmount_all(real)


def test_dead_mount_through_a_symlink(npyfs_bin, data_npz, tmp_path):
    """A mount whose daemon died, named through a symlink: stats says the
    daemon is gone, unmount cleans it up (nothing stats the dead mount)."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    p = subprocess.Popen([str(npyfs_bin), "mount", "-f", str(data_npz), str(real)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not mounted_fuse(real):
            assert p.poll() is None and time.monotonic() < deadline, "mount not live"
            time.sleep(0.05)
        p.kill()
        p.wait(timeout=15)
        st = run([npyfs_bin, "stats", link], timeout=30)
        assert st.returncode == 1 and "daemon of this mount is gone" in _err(st), _err(st)
        r = run([npyfs_bin, "unmount", f"{link}/"], timeout=60)
        assert r.returncode == 0 and "was gone" in _err(r), _err(r)
        assert not mounted_fuse(real)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _unmount_all(real)


def test_busy_by_working_directory_says_so(npyfs_bin, data_npz, mount):
    """A shell whose working directory is in the mount keeps it busy; the
    line said the process "has files open under it" and to close them."""
    mnt = mount(data_npz)
    holder = subprocess.Popen(["sleep", "60"], cwd=mnt)
    try:
        r = run([npyfs_bin, "unmount", mnt], timeout=60)
        err = _err(r)
        assert r.returncode == 1, err
        assert f"process {holder.pid} (sleep) has its working directory under it" in err, err
        assert "leave that directory and try again" in err and "unmount -z" in err, err
        assert mounted_fuse(mnt)
    finally:
        holder.kill()
        holder.wait()


def test_another_users_mount(npyfs_bin, data_npz, shared_dir):
    """A user other than root names root's mount (no allow_other): unmount
    said "unmount failed: fusermount3: entry for DIR not found in
    /etc/mtab", stats a bare "Permission denied"; both now say whose mount
    it is. The mount stays."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    binary = shared_dir / "npyfs"
    shutil.copy(npyfs_bin, binary)
    binary.chmod(0o755)
    mnt = shared_dir / "m"
    mnt.mkdir()
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        r = run([npyfs_bin, "mount", data_npz, mnt], timeout=60)
        assert r.returncode == 0, _err(r)
        r = run([*nobody, binary, "unmount", mnt], timeout=60)
        assert r.returncode == 1, _err(r)
        assert _err(r) == (f"npyfs: {mnt}: mounted by another user (uid 0): only that user "
                           "or root can unmount it"), _err(r)
        assert mounted_fuse(mnt)
        r = run([*nobody, binary, "stats", mnt], timeout=60)
        assert r.returncode == 1, _err(r)
        assert "mounted by another user (uid 0) without -o allow_other" in _err(r), _err(r)
        assert len(_err(r).splitlines()) == 1
    finally:
        _unmount_all(mnt)


# ------------------------------------------------------ npyfs ls --------

def test_ls_json_is_always_an_array(npyfs_bin, tmp_path):
    """README: ls --json prints one JSON array. With no archive to list it
    printed nothing at all, which json.loads cannot read (exit 0 for an
    empty directory), and npyfs.ls() of that directory raised."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no archives here\n")
    r = run([npyfs_bin, "ls", "--json", empty], timeout=30)
    assert r.returncode == 0, _err(r)
    assert json.loads(r.stdout) == []
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 cut short")
    r = run([npyfs_bin, "ls", "--json", bad], timeout=30)
    assert r.returncode == 1 and "truncated or not a zip" in _err(r), _err(r)
    assert json.loads(r.stdout) == []
    sys.path.insert(0, str(ROOT / "python"))
    try:
        import npyfs
        assert npyfs.ls(empty, npyfs_bin=npyfs_bin) == []
    finally:
        sys.path.remove(str(ROOT / "python"))


# ------------------------------------------------------ completion ------

def _complete(*words, cwd=None):
    """(COMPREPLY, the compopt calls) of _npyfs for the words typed so far,
    from completions/npyfs.bash in a plain bash; compopt is recorded, since
    outside a real completion it cannot run."""
    script = (f"source {ROOT / 'completions' / 'npyfs.bash'}\n"
              "exec 3>&2\n"
              "compopt() { printf 'compopt %s\\n' \"$*\" >&3; }\n"
              "COMP_WORDS=(\"$@\"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
              "_npyfs\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = run(["bash", "--norc", "-c", script, "bash", "npyfs", *words], timeout=30, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return ([ln for ln in r.stdout.decode().splitlines() if ln],
            r.stderr.decode().splitlines())


def test_bash_completion_values_and_spaces(npyfs_bin, tmp_path, data_npz):
    if shutil.which("bash") is None:
        pytest.skip("bash missing")
    # every verify mode, the default included
    assert _complete("mount", "-o", "verify=")[0] == ["verify=auto", "verify=lazy",
                                                     "verify=strict"]
    assert _complete("mount", "-o", "ro,verify=a")[0] == ["ro,verify=auto"]
    # libfuse's SELinux options, listed in --help, are offered too
    h = run([npyfs_bin, "mount", "--help"], timeout=10).stdout.decode()
    for opt in ("context=", "fscontext=", "defcontext=", "rootcontext="):
        assert opt in h
        assert opt in _complete("mount", "-o", "")[0], opt
    # a file name with a space is one word, which readline quotes
    d = tmp_path / "dir with space"
    d.mkdir()
    shutil.copy(data_npz, d / "run 1.npz")
    words, opts = _complete("ls", "dir w", cwd=tmp_path)
    assert words == ["dir with space"], words
    assert "compopt -o filenames" in opts, opts
    words, _ = _complete("mount", "dir with space/r", cwd=tmp_path)
    assert words == ["dir with space/run 1.npz"], words
    # a mount point with a space comes back quoted, as one word
    mnt = tmp_path / "mnt sp"
    mnt.mkdir()
    try:
        r = run([npyfs_bin, "mount", data_npz, mnt], timeout=60)
        assert r.returncode == 0, _err(r)
        words, _ = _complete("unmount", str(mnt)[:-2])
        assert str(mnt).replace(" ", "\\ ") in words, words
        assert str(mnt) not in words, words
    finally:
        _unmount_all(mnt)


# ------------------------------------------------------ install ---------

def test_uninstall_removes_python_bytecode(npyfs_bin, tmp_path):
    """README, Install: the uninstall target removes what install put in
    place; importing the installed module (as root, or any user owning the
    prefix) writes __pycache__/npyfs.cpython-3X.pyc beside it, which was
    left behind."""
    build = Path(npyfs_bin).resolve().parent
    if not (build / "CMakeCache.txt").exists() or shutil.which("cmake") is None:
        pytest.skip(f"{build} is not a CMake build directory")
    prefix = tmp_path / "prefix"
    r = run(["cmake", "--install", build, "--prefix", prefix], timeout=120)
    assert r.returncode == 0, _err(r)
    (module,) = prefix.glob("lib/python3*/dist-packages/npyfs.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(module.parent)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    for flags in ([], ["-O"]):
        r = run([python, *flags, "-c", "import npyfs; print(npyfs.__file__)"], timeout=60,
                env=env)
        assert r.returncode == 0 and str(module) in r.stdout.decode(), _err(r)
    assert len(list(module.parent.glob("__pycache__/npyfs.*.pyc"))) == 2
    r = run(["cmake", "--build", build, "--target", "uninstall"], timeout=120)
    assert r.returncode == 0, r.stdout.decode() + _err(r)
    left = [p for p in prefix.rglob("*") if not p.is_dir()]
    assert left == [], left


# ------------------------------------------------------ python helper ---

def test_helper_warning_has_no_cli_advice(npyfs_bin, tmp_path, monkeypatch, data_npz):
    """The RuntimeWarning of a lazy detach quoted npyfs unmount's whole line,
    "...; close them and try again, or detach it lazily with npyfs unmount
    -z DIR", right before saying it was detached lazily."""
    sys.path.insert(0, str(ROOT / "python"))
    import npyfs
    sys.path.remove(str(ROOT / "python"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("NPYFS_BIN", str(npyfs_bin))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    def body():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with npyfs.mounted(data_npz) as d:
                a = np.load(d / "u.npy", mmap_mode="r")
            same = np.array_equal(a, ARR)
            del a
        return str(d), same, [str(w.message) for w in caught
                              if w.category is RuntimeWarning]

    d, same, msgs = in_child(body, timeout=120)
    assert same and len(msgs) == 1, msgs
    msg = msgs[0]
    assert "detached lazily" in msg and "has files open under it" in msg, msg
    assert "try again" not in msg and "unmount -z" not in msg, msg
    assert f"({d}:" not in msg, msg      # the mount point is said once
    deadline = time.monotonic() + 15
    while pids_for_mountpoint(d) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pids_for_mountpoint(d)
    assert not mounted_fuse(d)


# ------------------------------------------------------ stats -----------

def test_stats_eta_rounds_up(npyfs_bin, tmp_path, mount):
    """The ETA of a running pass was the seconds to go rounded down: "ETA 0
    s" for the whole last second, while most of a fast pass was still to go.
    Every sample of a running pass must give ceil(bytes to go / rate)."""
    src = tmp_path / "big.npz"
    rng = np.random.default_rng(7)
    a = rng.integers(0, 40, size=40_000_000, dtype=np.int32)
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("a.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, a)
    del a
    mnt = mount(src, "verify=lazy", "index=background")
    samples = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = run([npyfs_bin, "stats", "--json", mnt], timeout=30)
        assert r.returncode == 0, _err(r)
        st = json.loads(r.stdout)
        members = [m for ar in st["archives"] for m in ar["members"]]
        p = members[0]["pass"]
        if p is not None and p["rate"] > 0 and p["done"] < p["size"]:
            samples.append(p)
        if st["indexing"]["members_indexed"] == 1:
            break
    if not samples:
        pytest.skip("the pass ended before stats saw it running")
    for p in samples:
        assert p["eta_seconds"] == math.ceil((p["size"] - p["done"]) / p["rate"]), p
        assert p["eta_seconds"] >= 1, p


# ------------------------------------------------------ docs ------------

def _man_text():
    if shutil.which("groff") is None:
        pytest.skip("groff missing")
    r = run(["groff", "-man", "-Tutf8", "-P", "-cbou", ROOT / "docs" / "npyfs.1"], timeout=30,
            env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0, _err(r)
    return re.sub(r"[\u2010\u2212]", "-", re.sub(r"\s+", " ", r.stdout.decode()))


def test_docs_say_what_a_mapped_read_error_is():
    """Issue 11, point 4: README and man page explain that a read error
    through a memory map arrives as SIGBUS (numpy cannot turn it into an
    exception), how to find the daemon's log (journalctl -t npyfs, or -f),
    and that -o verify=strict is the way to never map a damaged member."""
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())
    man = _man_text()
    for text in (readme, man):
        assert "SIGBUS" in text and "numpy cannot turn it into an exception" in text
        assert "journalctl -t npyfs" in text
        assert re.search(r"never map a damaged member, mount with \W*-o verify=strict", text)
