"""Use npyfs from Python: mount NumPy archives for the length of a with-block.

    import numpy as np
    import npyfs

    with npyfs.mounted("run.npz") as d:          # d: a pathlib.Path
        a = np.load(d / "x.npy", mmap_mode="r")  # maps; reads only what is used
        print(a[123456])

    rows = npyfs.ls("run.npz")                   # the rows of `npyfs ls --json`
    dt = np.dtype(rows[0]["dtype"])

mounted() mounts into a new private temporary directory and always unmounts
when the block ends, also on an exception or Ctrl-C. If something still uses
the mount then (an array mapped from it, an open file), the mount is detached
lazily with a warning: the data stays readable until the last user lets go,
and the daemon exits then. The npyfs program is the npyfs_bin argument, else
$NPYFS_BIN, else the npyfs found on PATH.

Pure Python, standard library only; installed with npyfs by `cmake --install`
(see README, "Python"). Linux only, like npyfs.
"""

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

__all__ = ["mounted", "ls", "NpyfsError", "find_npyfs"]

# Seconds before an npyfs command is given up on (a mount returns once it
# answers; an unmount never waits for the daemon).
TIMEOUT = 120


class NpyfsError(RuntimeError):
    """npyfs failed; the message is npyfs's own line (it names the problem)."""


def find_npyfs(npyfs_bin=None):
    """The npyfs program to run: npyfs_bin, else $NPYFS_BIN, else npyfs on
    PATH. Raises NpyfsError if there is none."""
    path = npyfs_bin or os.environ.get("NPYFS_BIN") or shutil.which("npyfs")
    if not path:
        raise NpyfsError("npyfs not found: install it (cmake --install), put it on PATH, "
                         "or give npyfs_bin= or $NPYFS_BIN")
    path = os.fspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise NpyfsError(f"npyfs not found: {path} is not an executable file")
    return path


def _run(cmd):
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise NpyfsError(f"{' '.join(cmd[:2])} did not finish within {TIMEOUT} s") from e


def _option_list(options):
    """{"cache_size": "64M", "allow_other": True} -> "cache_size=64M,allow_other"."""
    out = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            out.append(key)
        else:
            out.append(f"{key}={value}")
    return ",".join(out)


def _is_mounted(mnt):
    """Is an npyfs mount on mnt? Reads the mount table; never touches mnt."""
    target = os.fsencode(os.path.realpath(os.path.dirname(mnt)) + "/" + os.path.basename(mnt))
    try:
        with open("/proc/self/mounts", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return True
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 2 and fields[2] == b"fuse.npyfs":
            point = fields[1]
            for esc, raw in ((b"\\040", b" "), (b"\\011", b"\t"), (b"\\012", b"\n"),
                             (b"\\134", b"\\")):
                point = point.replace(esc, raw)
            if point == target:
                return True
    return False


def _unmount(binary, mnt):
    """Unmount mnt; lazily, with a warning, if something still uses it."""
    r = _run([binary, "unmount", str(mnt)])
    if r.returncode == 0 or not _is_mounted(mnt):
        return
    lazy = _run([binary, "unmount", "--lazy", str(mnt)])
    if lazy.returncode != 0 and _is_mounted(mnt):
        raise NpyfsError((lazy.stderr or r.stderr).strip() or f"cannot unmount {mnt}")
    # npyfs's line without its mount point and its advice (to try again, or
    # to detach lazily: done here already)
    why = r.stderr.strip().removeprefix("npyfs: ").removeprefix(f"{mnt}: ")
    why = why.split("; ", 1)[0] or "busy"
    warnings.warn(f"npyfs: the mount of {mnt} was still in use when the with-block ended "
                  f"({why}); it was detached lazily: what is still open stays readable, and "
                  "the daemon exits when the last of it is closed", RuntimeWarning,
                  stacklevel=4)


@contextlib.contextmanager
def mounted(*sources, npyfs_bin=None, **options):
    """Mount the sources (archives or directories, as `npyfs mount` takes
    them) into a private temporary directory; yield it as a pathlib.Path;
    unmount when the block ends, whatever ends it.

    Keyword arguments are -o options: mounted("a.npz", cache_size="64M",
    index="lazy", allow_other=True) runs npyfs mount -o
    cache_size=64M,index=lazy,allow_other. Raises NpyfsError with npyfs's
    message if the mount fails, and TypeError without a source.
    """
    if not sources:
        raise TypeError("mounted() needs at least one source")
    binary = find_npyfs(npyfs_bin)
    opts = _option_list(options)
    base = Path(tempfile.mkdtemp(prefix="npyfs-"))
    mnt = base / "mnt"
    try:
        mnt.mkdir()
        cmd = [binary, "mount"] + (["-o", opts] if opts else [])
        cmd += ["--"] + [os.fspath(s) for s in sources] + [str(mnt)]
        r = _run(cmd)
        if r.returncode != 0:
            raise NpyfsError(r.stderr.strip() or f"npyfs mount exited with {r.returncode}")
        yield mnt
    finally:
        # also after a Ctrl-C that landed while npyfs mount was running
        try:
            if _is_mounted(mnt):
                _unmount(binary, mnt)
        finally:
            with contextlib.suppress(OSError):
                mnt.rmdir()
            with contextlib.suppress(OSError):
                base.rmdir()


def ls(*paths, npyfs_bin=None):
    """The members of the archives (and of every archive below a directory)
    as `npyfs ls --json` gives them: a list of dicts with archive, name,
    dtype (np.dtype(row["dtype"]) works; None for a member that is not an
    array), descr, shape, fortran_order, size, stored_size, method and
    unsupported. Raises NpyfsError if any path cannot be listed."""
    if not paths:
        raise TypeError("ls() needs at least one path")
    r = _run([find_npyfs(npyfs_bin), "ls", "--json", "--"] + [os.fspath(p) for p in paths])
    if r.returncode != 0:
        raise NpyfsError(r.stderr.strip() or f"npyfs ls exited with {r.returncode}")
    return json.loads(r.stdout)
