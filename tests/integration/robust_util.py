"""Helpers for the robustness suites (test_hostile, test_faults, test_stress).

- ``Ent`` / ``build_zip``: write a zip by hand with struct, so every field can
  lie (CRC, sizes, local header offset, flags, method, raw-byte names).
- ``attempt_mount``: background ``npyfs mount``; returns True when mounted, or
  checks the refusal is clean (non-zero exit, exactly one stderr line naming
  the source, nothing mounted) and returns False.
- ``assert_alive``: the daemon behind a mount still answers (stat of the root
  within a timeout) and its process still exists.
- ``partial_read``: sequential read that returns (bytes, OSError or None).
- ``pread_result``: one pread as ("ok", bytes) or ("err", errno).
- ``tally``: counters printed in the terminal summary (through the terminal
  reporter, so they show without -s).
"""

import errno
import os
import struct
import time
import zlib
from collections import Counter

from conftest import (cleanup_background, guarded, mounted_fuse,
                      pids_for_mountpoint, run)

# ------------------------------------------------------------ zip writer ---

ZIP64_LIMIT = 0xFFFFFFFF


def raw_deflate(data, level=6):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


class Ent:
    """One member of a hand-written zip.

    name: bytes (written verbatim; no encoding flag unless flags says so).
    data: the uncompressed content (used for the default CRC and usize).
    method: the method number written in both headers.
    payload: the stored bytes (default: data for method 0, raw deflate of
    data for method 8, data otherwise).
    crc/csize/usize: override the values in the central directory (and local
    header). lho: override the local header offset in the central directory.
    same_as: index of an earlier Ent whose local header this CD entry points
    at (no new local header is written).
    """

    def __init__(self, name, data=b"", method=0, payload=None, crc=None,
                 csize=None, usize=None, flags=0, lho=None, same_as=None,
                 lfh_name=None):
        self.name = name if isinstance(name, bytes) else name.encode()
        self.data = data
        self.method = method
        if payload is None:
            payload = raw_deflate(data) if method == 8 else data
        self.payload = payload
        self.crc = zlib.crc32(data) if crc is None else crc
        self.csize = len(payload) if csize is None else csize
        self.usize = len(data) if usize is None else usize
        self.flags = flags
        self.lho = lho
        self.same_as = same_as
        self.lfh_name = self.name if lfh_name is None else lfh_name


def _z64_extra(usize, csize, lho):
    """ZIP64 extra field with the values whose 32-bit slot is 0xFFFFFFFF."""
    vals = []
    if usize >= ZIP64_LIMIT:
        vals.append(usize)
    if csize >= ZIP64_LIMIT:
        vals.append(csize)
    if lho is not None and lho >= ZIP64_LIMIT:
        vals.append(lho)
    if not vals:
        return b""
    body = b"".join(struct.pack("<Q", v) for v in vals)
    return struct.pack("<HH", 1, len(body)) + body


def _c32(v):
    return ZIP64_LIMIT if v >= ZIP64_LIMIT else v


def build_zip(ents, comment=b""):
    """Bytes of a zip holding ents (central directory in the given order)."""
    out = bytearray()
    lhos = []
    for e in ents:
        if e.same_as is not None:
            lhos.append(lhos[e.same_as])
            continue
        lhos.append(len(out))
        extra = _z64_extra(e.usize, e.csize, None)
        ver = 45 if extra else 20
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, ver, e.flags, e.method,
                           0, 0x21, e.crc, _c32(e.csize), _c32(e.usize),
                           len(e.lfh_name), len(extra))
        out += e.lfh_name + extra + e.payload
    cd_off = len(out)
    for e, lho in zip(ents, lhos):
        if e.lho is not None:
            lho = e.lho
        extra = _z64_extra(e.usize, e.csize, lho)
        ver = 45 if extra else 20
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x0300 | ver, ver,
                           e.flags, e.method, 0, 0x21, e.crc, _c32(e.csize),
                           _c32(e.usize), len(e.name), len(extra), 0, 0, 0,
                           0o100644 << 16, _c32(lho))
        out += e.name + extra
    cd_size = len(out) - cd_off
    n = len(ents)
    if n >= 0xFFFF or cd_off >= ZIP64_LIMIT:
        z64 = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n,
                           cd_size, cd_off)
        out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF),
                       min(n, 0xFFFF), cd_size, _c32(cd_off), len(comment))
    out += comment
    return bytes(out)


def data_offset(raw, lho):
    """Offset of a member's data given its local header offset."""
    nlen, xlen = struct.unpack_from("<HH", raw, lho + 26)
    return lho + 30 + nlen + xlen


# -------------------------------------------------------------- mounting ---

def attempt_mount(npyfs_bin, src, mnt, *opts, timeout=30):
    """Background mount. True if mounted; False after checking the refusal is
    clean: non-zero exit, exactly one stderr line that names the source, and
    nothing left mounted."""
    cmd = [npyfs_bin, "mount"]
    if opts:
        cmd += ["-o", ",".join(opts)]
    cmd += [src, mnt]
    r = run(cmd, timeout=timeout)
    err = r.stderr.decode(errors="replace").strip()
    if r.returncode != 0:
        assert len(err.splitlines()) == 1, f"refusal must be one line: {err!r}"
        assert os.path.basename(str(src)) in err, f"refusal must name the file: {err!r}"
        assert not mounted_fuse(mnt), "refused, yet something is mounted"
        return False
    assert mounted_fuse(mnt), f"mount exited 0 but nothing is mounted: {err!r}"
    return True


def assert_alive(mnt, timeout=15.0):
    """The daemon still answers and was not replaced by a dead connection."""
    assert mounted_fuse(mnt), "mount disappeared (daemon crashed?)"
    try:
        guarded(os.stat, mnt, timeout=timeout)
        guarded(os.listdir, mnt, timeout=timeout)
    except OSError as e:  # ENOTCONN: daemon died
        raise AssertionError(f"mount root no longer answers: {e!r} (daemon crashed?)")
    assert pids_for_mountpoint(mnt), "daemon process is gone"


def assert_alive_pid(mnt, proc, timeout=15.0):
    """Same for a foreground daemon we hold a Popen of."""
    assert proc.poll() is None, f"daemon exited with {proc.returncode} (crash?)"
    assert mounted_fuse(mnt)
    try:
        guarded(os.stat, mnt, timeout=timeout)
    except OSError as e:
        raise AssertionError(f"mount root no longer answers: {e!r}")


def unmount_bg(mnt):
    """Unmount a background mount and make sure its daemon exited cleanly
    (it must not have crashed: a dead daemon leaves the mount answering
    ENOTCONN, which assert_alive catches first)."""
    pids = pids_for_mountpoint(mnt)
    cleanup_background(mnt)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_exists(p) for p in pids):
        time.sleep(0.05)


def _exists(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ reads ---

def partial_read(path, chunk=1 << 16):
    """Read sequentially; returns (bytes read, OSError or None)."""
    out = bytearray()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return b"", e
    try:
        while True:
            try:
                b = os.read(fd, chunk)
            except OSError as e:
                return bytes(out), e
            if not b:
                return bytes(out), None
            out += b
    finally:
        os.close(fd)


def pread_result(path, length, offset):
    """("ok", bytes) or ("err", errno) for one pread on a fresh fd."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return ("err", e.errno)
    try:
        return ("ok", os.pread(fd, length, offset))
    except OSError as e:
        return ("err", e.errno)
    finally:
        os.close(fd)


def open_errno(path):
    """None if open+read(1) works, else the errno."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return e.errno
    try:
        os.read(fd, 1)
        return None
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def drop_caches():
    """Drop the kernel page cache so reads reach the daemon (root only)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def drop_file_cache(path):
    """Drop the page cache of one file (works on FUSE files too)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ tally ---

tally = Counter()


def emit(config, line):
    """Write a line to the terminal whatever the capture mode."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if tr is None:
        print(line)
        return
    if capman is not None:
        with capman.global_and_fixture_disabled():
            tr.ensure_newline()
            tr.write_line(line)
    else:
        tr.ensure_newline()
        tr.write_line(line)


EIO = errno.EIO
EOPNOTSUPP = errno.EOPNOTSUPP
