"""Review issue 9, items 1-3: slow or hostile work never holds the mount.

1. A .npy.gz that must be sized by a full pass (here: several gzip members of
   zeros) is sized off the request threads, within a budget (-o max_ratio=,
   default 100), and the pass stops at unmount. Requests that wait for it (or
   for any unit being opened) hold no thread: the rest of the mount answers,
   and a waiter killed meanwhile is answered at once (EINTR).
2. A version-1 .npy header with HEADER_LEN below 2 inside a .npy.gz: sized by
   the full pass, not refused.
3. verify=auto (the default): a member up to verify_max is checked in full
   before its first read is answered, so a damaged one is never served; a
   bigger one is served at once and shown as unverified in `npyfs stats`.

The big gzip files are made of one member of 1 GiB of zeros (about 1 MB of
gzip) repeated, so a few MB of file stand for GiBs of output. No assertion
here is about time: "quickly" always means "before the slow thing finished".
"""

import errno
import gzip
import json
import os
import re
import signal
import subprocess
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import (UNMOUNT_TIMEOUT, guarded, mounted_fuse, npy_bytes, read_all, run,
                      cleanup_background)

GIB = 1 << 30
PY = "/usr/bin/python3"


# ------------------------------------------------------------------ helpers ---

@pytest.fixture(scope="module")
def zero_member():
    """One gzip member whose output is 1 GiB of zeros (about 1 MB), made in
    pieces so the test never holds 1 GiB."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    block = bytes(16 << 20)
    parts = [z.compress(block) for _ in range(GIB // len(block))]
    parts.append(z.flush())
    return b"".join(parts)


def zeros_gz(path, zero_member, gib):
    """A gzip file of gib members, each 1 GiB of zeros: sized only by a full
    pass (ISIZE of the last member is 2^30 mod 2^32 = 2^30, never the total,
    and the content is not a .npy)."""
    with open(path, "wb") as f:
        for _ in range(gib):
            f.write(zero_member)
    return path


def walk(nbytes, seed=0):
    """Floats that deflate about 4x, like real data."""
    rng = np.random.default_rng(seed)
    return np.round(np.cumsum(rng.normal(size=nbytes // 8)) * 1e-2, 3)


def daemon_log(mount, mnt):
    return mount.mount_of(mnt).stderr()


def wait_for_log(mount, mnt, pattern, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, daemon_log(mount, mnt)):
            return
        time.sleep(0.05)
    pytest.fail(f"no {pattern!r} in the daemon log after {timeout:.0f} s:\n"
                + daemon_log(mount, mnt))


def stats_json(npyfs_bin, mnt):
    r = run([npyfs_bin, "stats", "--json", mnt], timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def stats_text(npyfs_bin, mnt):
    r = run([npyfs_bin, "stats", mnt], timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def in_fuse_request(pid):
    """Is process (or "self/task/TID") pid asleep waiting for a FUSE answer?"""
    try:
        return "request_wait_answer" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def wait_blocked(procs, timeout=30.0):
    """Wait until every child is waiting on the daemon (best effort: the
    symbol name is the kernel's; if it never shows, go on after timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(in_fuse_request(p.pid) or p.poll() is not None for p in procs):
            return
        time.sleep(0.02)


def child(code, *args):
    """A python child running code with sys.argv[1:] = args."""
    return subprocess.Popen([PY, "-c", code, *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def kill_and_reap(procs, timeout=60.0):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("a killed child stayed blocked on the mount: its request "
                        "was never answered")


def member_span(path, name):
    """(data offset, compressed size) of a zip member."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        h = f.read(30)
    n, m = int.from_bytes(h[26:28], "little"), int.from_bytes(h[28:30], "little")
    return info.header_offset + 30 + n + m, info.compress_size


def small_tree(d):
    """Ordinary neighbours: an .npy.gz, an .npz and a passthrough file."""
    d.mkdir(exist_ok=True)
    arr = np.arange(50_000, dtype=np.int64)
    (d / "small.npy.gz").write_bytes(_gz(npy_bytes(arr)))
    np.savez_compressed(d / "pair.npz", x=arr[:1000], y=arr[::-1].copy())
    (d / "notes.txt").write_bytes(b"plain bytes\n" * 100)
    return arr


def _gz(data):
    return gzip.compress(data, mtime=0)


# ----------------------------------------------- 1: sizing off the handlers ---

def test_sizing_holds_nothing_else(tmp_path, mount, zero_member):
    """While the stat of a .npy.gz sized by a full pass (4 GiB of zeros in 4
    gzip members, 4 MB) is in progress, the other entries of the same
    directory answer stats and reads: they all finish before it. With
    max_ratio=0 the big one is then sized exactly."""
    src = tmp_path / "src"
    arr = small_tree(src)
    zeros_gz(src / "big.npy.gz", zero_member, 4)
    mnt = mount(src, "max_ratio=0")

    done = {}

    def big_stat():
        done["tid"] = threading.get_native_id()
        st = os.stat(mnt / "big.npy")
        done["big"] = time.monotonic()
        return st.st_size

    t = threading.Thread(target=lambda: done.setdefault("size", big_stat()), daemon=True)
    t.start()
    deadline = time.monotonic() + 30  # until its request is with the daemon
    while time.monotonic() < deadline and not (
            "tid" in done and in_fuse_request(f"self/task/{done['tid']}")):
        time.sleep(0.01)

    def others():
        assert os.stat(mnt / "small.npy").st_size == len(npy_bytes(arr))
        assert read_all(mnt / "small.npy") == npy_bytes(arr)
        got = np.load(mnt / "pair.npz" / "y.npy")
        assert np.array_equal(got, arr[::-1])
        assert read_all(mnt / "notes.txt") == b"plain bytes\n" * 100
        assert sorted(os.listdir(mnt)) == ["big.npy", "notes.txt", "pair.npz", "small.npy"]
        done["others"] = time.monotonic()

    guarded(others, timeout=120)
    t.join(300)
    assert not t.is_alive(), "the stat of the big file never finished"
    assert done["others"] < done["big"], "the other entries waited for the sizing"
    assert done["size"] == 4 * GIB

    def tail():
        fd = os.open(mnt / "big.npy", os.O_RDONLY)
        try:
            return os.pread(fd, 1 << 20, 4 * GIB - (1 << 20)), os.pread(fd, 10, 4 * GIB)
        finally:
            os.close(fd)
    last, past = guarded(tail, timeout=120)
    assert last == bytes(1 << 20) and past == b""


def test_default_max_ratio_refuses_in_directory(tmp_path, mount, zero_member):
    """2 GiB of output from a 2 MB file is more than 100x: the file is listed,
    but stat and open fail with EIO, with one log line naming max_ratio; its
    neighbours are unaffected."""
    src = tmp_path / "src"
    arr = small_tree(src)
    zeros_gz(src / "bomb.npy.gz", zero_member, 2)
    mnt = mount(src)
    assert "bomb.npy" in guarded(os.listdir, mnt, timeout=30)
    for _ in range(2):  # the refusal is remembered, and logged once
        with pytest.raises(OSError) as e:
            guarded(os.stat, mnt / "bomb.npy", timeout=120)
        assert e.value.errno == errno.EIO
        with pytest.raises(OSError) as e:
            guarded(os.open, mnt / "bomb.npy", os.O_RDONLY, timeout=120)
        assert e.value.errno == errno.EIO
    assert guarded(read_all, mnt / "small.npy", timeout=30) == npy_bytes(arr)
    lines = [ln for ln in daemon_log(mount, mnt).splitlines() if "bomb.npy.gz" in ln]
    assert len(lines) == 1, lines
    assert "max_ratio" in lines[0] and "refused" in lines[0], lines


def test_max_ratio_on_the_command_line(npyfs_bin, tmp_path, mount, zero_member):
    """An archive named on the command line is sized before the mount
    answers, with the same budget: over it, a mount error naming max_ratio;
    with max_ratio=0 it mounts with its exact size."""
    src = zeros_gz(tmp_path / "bomb.npy.gz", zero_member, 2)
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        r = run([npyfs_bin, "mount", src, mnt], timeout=120)
        err = r.stderr.decode(errors="replace").strip()
        assert r.returncode == 1, err
        assert len(err.splitlines()) == 1 and "bomb.npy.gz" in err, err
        assert "max_ratio" in err and "100" in err, err
        assert not mounted_fuse(mnt)
    finally:
        cleanup_background(mnt)
    big = mount(src, "max_ratio=0")
    assert guarded(os.stat, big / "bomb.npy", timeout=60).st_size == 2 * GIB


def test_unmount_during_sizing(npyfs_bin, tmp_path, mount, zero_member):
    """A stat waiting for a 20 GiB sizing pass is killed: it is answered at
    once (the pass goes on), so the mount is not busy; the unmount then
    returns, and the daemon stops the pass and exits cleanly, without ever
    finishing it (no index of it is saved)."""
    src = tmp_path / "src"
    small_tree(src)
    zeros_gz(src / "huge.npy.gz", zero_member, 20)
    mnt = mount(src, "max_ratio=0")
    waiter = child("import os, sys; os.stat(sys.argv[1])", mnt / "huge.npy")
    wait_blocked([waiter])
    kill_and_reap([waiter])
    # Answered before the sizing ended: the archive is not open yet.
    opened = [a["path"] for a in stats_json(npyfs_bin, mnt)["archives"]]
    assert not any(p.endswith("huge.npy.gz") for p in opened), opened
    m = mount.mount_of(mnt)
    r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True,
                       timeout=UNMOUNT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert m.proc.wait(timeout=UNMOUNT_TIMEOUT) == 0
    assert "huge.npy" not in m.stderr(), m.stderr()


def test_waiting_requests_hold_no_thread(npyfs_bin, tmp_path, mount, zero_member):
    """20 listings of a unit whose open is slow (a gzip file named .npz: the
    open sizes it by a full pass before finding it is no zip), each from its
    own process, wait without holding the daemon's threads (libfuse has 16):
    a lookup and read of another entry answers while all 20 still wait.
    (Lookups in one directory reach the daemon one at a time, so parallel
    requests on a unit are listings, stats and opens.) Killed, they are
    answered at once."""
    src = tmp_path / "src"
    arr = small_tree(src)
    zeros_gz(src / "slow.npz", zero_member, 20)
    mnt = mount(src, "max_ratio=0")
    waiters = [child("import os, sys; os.listdir(sys.argv[1])", mnt / "slow.npz")
               for _ in range(20)]
    try:
        wait_blocked(waiters)
        assert guarded(read_all, mnt / "small.npy", timeout=120) == npy_bytes(arr)
        assert guarded(os.stat, mnt / "pair.npz" / "x.npy", timeout=60).st_size > 0
        still = [p.poll() is None for p in waiters]
        assert all(still), "the slow unit was opened before the other entry answered"
    finally:
        kill_and_reap(waiters)


# --------------------------------------------- 2: short v1 header in .npy.gz ---

@pytest.mark.parametrize("header_len", [0, 1])
def test_v1_header_len_below_2(tmp_path, mount, header_len):
    """b'\\x93NUMPY\\x01\\x00' and a HEADER_LEN of 0 or 1: no header npyfs can
    size from, so the full pass sizes it; the file mounts with the exact size
    of its bytes and reads back exactly."""
    raw = b"\x93NUMPY\x01\x00" + header_len.to_bytes(2, "little") + b"x" * header_len
    raw += np.random.default_rng(header_len).integers(0, 256, 60_000, dtype=np.uint8).tobytes()
    src = tmp_path / "short.npy.gz"
    src.write_bytes(_gz(raw))
    mnt = mount(src)
    assert guarded(os.listdir, mnt, timeout=30) == ["short.npy"]
    assert guarded(os.stat, mnt / "short.npy", timeout=30).st_size == len(raw)
    assert guarded(read_all, mnt / "short.npy", timeout=30) == raw


# ---------------------------------------------------- 3: verify=auto default ---

@pytest.fixture(scope="module")
def damage_master(tmp_path_factory):
    """An .npz with a deflate member of 16 MB (a) and a small one (b)."""
    src = tmp_path_factory.mktemp("verify_master") / "data.npz"
    a, b = walk(16 << 20, seed=3), np.arange(100, dtype=np.int16)
    np.savez_compressed(src, a=a, b=b)
    return src, npy_bytes(a), npy_bytes(b)


def flipped_copy(master, dst, where):
    """A copy of master with one byte of member a's deflate data flipped at
    fraction where of it, with the original's mtime."""
    data = bytearray(master.read_bytes())
    start, csize = member_span(master, "a.npy")
    data[start + int(csize * where)] ^= 0x20
    dst.write_bytes(bytes(data))
    st = master.stat()
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return dst


@pytest.mark.parametrize("where", [0.15, 0.4, 0.5, 0.65, 0.9])
def test_default_never_serves_a_damaged_small_member(tmp_path, mount, damage_master, where):
    """A reader already waiting when the mount appears (fresh index
    directory: nothing saved) opens the damaged member at once: it gets EIO
    at open or on its first read, and never a byte, because the member's full
    pass runs before its first read is answered. The other member reads
    fine."""
    master, truth_a, truth_b = damage_master
    src = flipped_copy(master, tmp_path / "data.npz", where)
    mnt = tmp_path / "mounts" / "m"  # where mount(..., name="m") mounts

    def reader():
        got = []
        try:
            fd = os.open(mnt / "a.npy", os.O_RDONLY)
        except OSError as e:
            return e.errno, got
        try:
            for off in (0, len(truth_a) // 2, len(truth_a) - 4096):
                try:
                    got.append((off, os.pread(fd, 4096, off)))
                except OSError as e:
                    return e.errno, got
            return None, got
        finally:
            os.close(fd)

    def early():
        while not mounted_fuse(mnt):
            time.sleep(0.001)
        return reader()

    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", early()), daemon=True)
    t.start()
    assert mount(src, f"index_dir={tmp_path / 'idx'}", name="m") == mnt
    t.join(120)
    assert not t.is_alive(), "the reader hung"
    err, got = result["r"]
    for off, b in got:  # never wrong bytes
        assert b == truth_a[off:off + len(b)], f"wrong bytes at {off}"
    assert got == [] and err == errno.EIO, (err, [off for off, _ in got])
    assert guarded(read_all, mnt / "b.npy", timeout=30) == truth_b
    assert "a.npy" in daemon_log(mount, mnt)


def test_verified_member_reads_from_the_cache(npyfs_bin, tmp_path, mount, damage_master):
    """The check before the first read decodes the member once and fills the
    chunk cache on the way: the reads that follow are hits, not a second
    decode. (The member must fit a quarter of the cache: 16 MB against the
    default 32M's 8M does not, so the cache is made bigger.)"""
    master, truth_a, _ = damage_master
    mnt = mount(master, f"index_dir={tmp_path / 'idx'}", "index=lazy", "cache_size=128M")
    assert guarded(read_all, mnt / "a.npy", timeout=60) == truth_a
    st = stats_json(npyfs_bin, mnt)
    assert st["cache"]["misses"] == 0 and st["cache"]["hits"] > 0, st["cache"]
    (arch,) = st["archives"]
    a = {m["name"]: m for m in arch["members"]}["a.npy"]
    assert a["crc_checked"] is True and a["unverified"] is False


def test_member_above_verify_max_is_unverified(npyfs_bin, tmp_path, mount, damage_master):
    """A member above verify_max is served at once, shown as unverified in
    stats (and counted) and logged once; once the background pass has
    checked it, it no longer is."""
    master, truth_a, truth_b = damage_master
    mnt = mount(master, "verify_max=1M", "index=lazy", f"index_dir={tmp_path / 'i1'}")
    for _ in range(2):
        assert guarded(read_all, mnt / "a.npy", timeout=60) == truth_a
    assert guarded(read_all, mnt / "b.npy", timeout=30) == truth_b
    st = stats_json(npyfs_bin, mnt)
    members = {m["name"]: m for m in st["archives"][0]["members"]}
    assert members["a.npy"]["unverified"] is True
    assert members["b.npy"]["unverified"] is False and members["b.npy"]["crc_checked"]
    assert st["unverified_members"] == 1
    text = stats_text(npyfs_bin, mnt)
    row = next(ln for ln in text.splitlines() if ln.split()[:1] == ["a.npy"])
    assert "unverified" in row, text
    assert re.search(r"^unverified members\s+1\b", text, re.M), text
    log = daemon_log(mount, mnt)
    assert log.count("served before its full check") == 1, log

    mnt2 = mount(master, "verify_max=1M", f"index_dir={tmp_path / 'i2'}")
    wait_for_log(mount, mnt2, r"member 'a.npy': index saved to")
    st = stats_json(npyfs_bin, mnt2)
    members = {m["name"]: m for m in st["archives"][0]["members"]}
    assert members["a.npy"]["unverified"] is False and members["a.npy"]["crc_checked"]
    assert st["unverified_members"] == 0


def test_verify_lazy_serves_at_once(npyfs_bin, tmp_path, mount, damage_master):
    """verify=lazy keeps the old behaviour: the damaged member opens, its
    first bytes are served before any check, a full read ends in EIO; stats
    calls it unverified until then."""
    master, truth_a, _ = damage_master
    src = flipped_copy(master, tmp_path / "data.npz", 0.5)
    mnt = mount(src, "verify=lazy", "index=lazy", f"index_dir={tmp_path / 'idx'}")

    def head():
        fd = os.open(mnt / "a.npy", os.O_RDONLY)
        try:
            return os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
    assert guarded(head, timeout=60) == truth_a[:4096]
    members = {m["name"]: m for m in stats_json(npyfs_bin, mnt)["archives"][0]["members"]}
    assert members["a.npy"]["unverified"] is True
    with pytest.raises(OSError) as e:
        guarded(read_all, mnt / "a.npy", timeout=60)
    assert e.value.errno == errno.EIO


@pytest.mark.parametrize("opt, words", [
    ("max_ratio=lots", ["max_ratio=lots", "whole number"]),
    ("max_ratio=-1", ["max_ratio=-1"]),
    ("verify_max=big", ["verify_max=big", "size"]),
    ("verify=sometimes", ["auto", "lazy", "strict"]),
])
def test_bad_option_values(npyfs_bin, tmp_path, damage_master, opt, words):
    master = damage_master[0]
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        r = run([npyfs_bin, "mount", "-o", opt, master, mnt], timeout=30)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 1, err
        for w in words:
            assert w in err.splitlines()[0], err
        assert not mounted_fuse(mnt)
    finally:
        cleanup_background(mnt)


def test_ls_keeps_max_ratio(npyfs_bin, tmp_path, zero_member):
    """npyfs ls sizes a .npy.gz within the same budget as mount: over it,
    one line naming max_ratio and exit 1 (not minutes of decoding); with
    -o max_ratio=0 it lists the member with its exact size."""
    src = zeros_gz(tmp_path / "bomb.npy.gz", zero_member, 2)
    r = run([npyfs_bin, "ls", src], timeout=120)
    err = r.stderr.decode(errors="replace").strip()
    assert r.returncode == 1, err
    assert "bomb.npy.gz" in err and "max_ratio" in err and "100" in err, err
    r = run([npyfs_bin, "ls", "--json", "-o", "max_ratio=0", src], timeout=300)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["size"] == 2 * GIB, row
