"""Issue 11, items 2 and 7: what the indexer is doing, and index files kept tidy.

- `npyfs stats` shows a running pass's progress per member (bytes, %, rate,
  ETA) and an overall indexing line (members indexed of those known, bytes to
  go, archives of a directory source not opened yet), in text and JSON.
- The index directory: a fallback without HOME, a message naming the fix when
  it is unusable, a size cap (`index_max`) pruning the least recently used
  files (a load bumps the mtime; never a file the process holds open or has
  just written), `npyfs index --prune` for files whose archive is gone or
  changed, an index of another spacing used as it is, and "already indexed"
  when `npyfs index` has nothing to do.

Every mount and `npyfs index` run passes its own index_dir.
"""

import contextlib
import ctypes
import gzip
import json
import mmap
import os
import pwd
import pty
import re
import select
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_same_array, in_child, load, npy_bytes, run

ROOT = Path(__file__).resolve().parents[2]
STATS_JSON = "user.npyfs.stats.json"
STATS_TEXT = "user.npyfs.stats"
POLL_TIMEOUT = 120.0


# ---------------------------------------------------------------- helpers ---

def walk(n, seed):
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.standard_normal(n)) / 16).round(2)


def make_npz(path, n=400_000, seed=0, name="x"):
    """An .npz with one deflate member bigger than a chunk (an index file)."""
    arr = walk(n, seed)
    np.savez_compressed(path, **{name: arr})
    return arr


def make_big_zip(path, nbytes, seed=1):
    """One float64 member of about nbytes, deflated at level 1 (quick to
    write), the .npy bytes exactly as numpy saves them."""
    arr = walk(nbytes // 8, seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("x.npy", npy_bytes(arr))
    return arr


def index_files(d):
    return sorted(Path(d).glob("*.dfx"))


def npyfs_index(npyfs_bin, *args, **kw):
    return run([npyfs_bin, "index", *map(str, args)], timeout=300, **kw)


def stats_json(mnt):
    return json.loads(os.getxattr(mnt, STATS_JSON))


def stats_text(mnt):
    return os.getxattr(mnt, STATS_TEXT).decode()


def poll(fn, what, timeout=POLL_TIMEOUT):
    """fn() until it returns something true; fail with what after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def wait_log(mount, mnt, pattern):
    """The daemon's log once pattern is in it."""
    def found():
        log = mount.mount_of(mnt).stderr()
        return log if re.search(pattern, log) else None
    return poll(found, f"{pattern!r} in the daemon's log")


def on_tty(cmd, timeout=120):
    """Run cmd with stderr on a pseudo-terminal: (exit status, what it wrote)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
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
    finally:
        os.close(master)
    try:
        return p.wait(timeout=60), out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail(f"{cmd} did not finish")


def human(n):
    """The size as npyfs prints it (indexer.c human())."""
    units, u, v = ["B", "KiB", "MiB", "GiB", "TiB"], 0, float(n)
    while v >= 1024 and u < 4:
        v /= 1024
        u += 1
    return f"{v:.1f} {units[u]}" if u else f"{v:.0f} B"


def set_age(path, secs):
    t = time.time() - secs
    os.utime(path, (t, t), follow_symlinks=False)


def file_spacing(path):
    """The spacing recorded in an index file's header."""
    with open(path, "rb") as f:
        h = f.read(32)
    assert h[:8] == b"NPYFSIDX"
    return struct.unpack_from("<Q", h, 24)[0]


def one_index_file(d):
    files = index_files(d)
    assert len(files) == 1, files
    return files[0]


def read_member(mnt, name, want):
    def body():
        assert_same_array(load(mnt / name), want)
        return True
    assert in_child(body, timeout=300)


# ------------------------------------------- item 2: stats shows indexing ---

@contextlib.contextmanager
def pinned(path, length):
    """The first length bytes of path read into the page cache and locked
    there (mlock of a shared read-only mapping) while the block runs."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    for f in (libc.mlock, libc.munmap):
        f.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    try:
        if libc.mlock(addr, length) != 0:  # faults every page in, and keeps it
            raise OSError(ctypes.get_errno(), "mlock")
        yield
    finally:
        libc.munmap(addr, length)  # unlocks too


def test_stats_shows_a_running_pass(npyfs_bin, mount, tmp_path):
    """A full pass held in the middle (its archive is read through another
    npyfs mount whose daemon is stopped, with only the archive's first
    mebibytes in the page cache): stats, answered by other handler threads
    meanwhile, shows how far it is; once it ends, the member is indexed."""
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    arr = make_big_zip(src_dir / "big.bin", 48 << 20)  # a plain file: passed through
    outer = mount(src_dir, f"index_dir={tmp_path / 'idx_a'}", "index=lazy", name="outer")
    via = outer / "big.bin"
    size = via.stat().st_size
    # the zip's start and end in the kernel's cache of the outer mount's
    # file (opened with keep_cache): the inner mount's pass reads them
    # without the outer daemon, then waits for it. The start stays pinned
    # there (mlock), so memory reclaim cannot evict it meanwhile.
    fd = os.open(via, os.O_RDONLY)
    try:
        assert len(os.pread(fd, 1 << 20, size - (1 << 20))) > 0
    finally:
        os.close(fd)
    with pinned(via, 4 << 20):
        held_pass_in_stats(mount, outer, via, tmp_path, arr)


def held_pass_in_stats(mount, outer, via, tmp_path, arr):
    inner = mount(via, f"index_dir={tmp_path / 'idx_b'}", "index=lazy", "verify=strict",
                  name="inner")
    before = stats_json(inner)
    assert before["indexing"]["members"] == 1
    assert before["indexing"]["members_indexed"] == 0
    assert before["indexing"]["passes_running"] == 0
    member = before["archives"][0]["members"][0]
    assert member["pass"] is None
    total = member["size"]
    assert before["indexing"]["bytes_to_go"] == total

    outer_proc = mount.mount_of(outer).proc
    outer_proc.send_signal(signal.SIGSTOP)
    opener = None
    try:
        # verify=strict: the first open runs the full pass in its handler thread
        opener = subprocess.Popen(
            [sys.executable, "-c", f"open({str(inner / 'x.npy')!r}, 'rb').close()"])

        def held():
            s = stats_json(inner)
            p = s["archives"][0]["members"][0]["pass"]
            if p and p["done"] > 0:
                # still where the cached bytes ran out: the pass waits
                time.sleep(0.3)
                s2 = stats_json(inner)
                p2 = s2["archives"][0]["members"][0]["pass"]
                if p2 and p2["done"] == p["done"]:
                    return s2
            return None
        s = poll(held, "the pass to start and wait for the outer mount")
        p = s["archives"][0]["members"][0]["pass"]
        assert 0 < p["done"] < total, p
        assert p["size"] == total
        assert p["rate"] > 0
        assert p["eta_seconds"] is None or p["eta_seconds"] >= 0
        ix = s["indexing"]
        assert ix["passes_running"] == 1
        assert ix["members_indexed"] == 0 and ix["members"] == 1
        assert ix["bytes_to_go"] == total - p["done"]
        assert ix["background"] is False  # index=lazy
        text = stats_text(inner)
        assert re.search(r"^indexing +0 of 1 members indexed in 1 opened archive, "
                         r"[0-9.]+ MiB to go, 1 pass running \(index=lazy: no background "
                         r"pass\)$", text, re.M), text
        row = re.search(r"^  x\.npy .* pass ([0-9.]+)% +ok$", text, re.M)
        assert row, text
        assert 0 < float(row.group(1)) < 100
        line = re.search(r"^    indexing pass: ([0-9.]+) MiB of ([0-9.]+) MiB checked "
                         r"\(([0-9.]+)%\), [0-9.]+ (?:B|KiB|MiB|GiB)/s, ETA (?:\d+ s|unknown)$",
                         text, re.M)
        assert line, text
        assert abs(float(line.group(2)) - total / 2**20) < 0.1
        assert opener.poll() is None  # the open still waits for its pass
    finally:
        outer_proc.send_signal(signal.SIGCONT)
        if opener is not None:
            try:
                assert opener.wait(timeout=300) == 0
            except subprocess.TimeoutExpired:
                opener.kill()
                raise

    def done():
        s = stats_json(inner)
        return s if s["indexing"]["members_indexed"] == 1 else None
    s = poll(done, "the member to be indexed")
    assert s["indexing"]["bytes_to_go"] == 0 and s["indexing"]["passes_running"] == 0
    m = s["archives"][0]["members"][0]
    assert m["pass"] is None and m["crc_checked"] is True
    text = stats_text(inner)
    assert re.search(r"^indexing +1 of 1 members indexed in 1 opened archive, 0 B to go",
                     text, re.M), text
    assert "indexing pass:" not in text and " pass " not in text.split("MEMBER")[1]
    read_member(inner, "x.npy", arr)


def test_stats_counts_unopened_archives(npyfs_bin, mount, tmp_path):
    """A directory source's archives that nothing opened yet are counted as
    not opened (with their size on disk), never as indexed; opening one
    counts its members; one that cannot be opened is said so."""
    d = tmp_path / "runs"
    (d / "sub").mkdir(parents=True)
    a = make_npz(d / "a.npz", seed=1)
    make_npz(d / "sub" / "b.npz", seed=2)
    (d / "c.npy.gz").write_bytes(gzip.compress(npy_bytes(walk(300_000, 3)), compresslevel=1))
    (d / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip" + b"\0" * 100)
    on_disk = sum((d / p).stat().st_size
                  for p in ("a.npz", "sub/b.npz", "c.npy.gz", "bad.npz"))
    mnt = mount(d, f"index_dir={tmp_path / 'idx'}", "index=lazy")

    s = stats_json(mnt)["indexing"]
    assert s == {"background": False, "members": 0, "members_indexed": 0,
                 "members_damaged": 0, "passes_running": 0, "bytes_to_go": 0,
                 "archives_opened": 0, "archives_not_opened": 4,
                 "archives_not_opened_bytes": on_disk, "archives_failed": 0}, s
    text = stats_text(mnt)
    assert re.search(r"^indexing +0 of 0 members indexed in 0 opened archives, 0 B to go",
                     text, re.M), text
    assert re.search(r"^  not opened yet +4 archives \([0-9.]+ [KM]iB on disk; their members "
                     r"are not counted above\)$", text, re.M), text

    # opening a.npz (listing it) counts its member, still not indexed
    assert sorted(os.listdir(mnt / "a.npz")) == ["x.npy"]
    s = stats_json(mnt)["indexing"]
    assert (s["archives_opened"], s["archives_not_opened"]) == (1, 3)
    assert s["archives_not_opened_bytes"] == on_disk - (d / "a.npz").stat().st_size
    assert (s["members"], s["members_indexed"]) == (1, 0)
    assert s["bytes_to_go"] == len(npy_bytes(a))  # the member's uncompressed size

    # a broken one: cannot be opened
    with pytest.raises(OSError):
        os.listdir(mnt / "bad.npz")
    s = stats_json(mnt)["indexing"]
    assert (s["archives_opened"], s["archives_not_opened"], s["archives_failed"]) == (1, 2, 1)
    assert re.search(r"^  cannot be opened +1 archive$", stats_text(mnt), re.M)


def test_stats_background_pass_completes(npyfs_bin, mount, tmp_path):
    """With index=background every member of the opened archives ends up
    indexed; the overall line says so, and the JSON's keys agree."""
    src = tmp_path / "a.npz"
    rng = np.random.default_rng(5)
    arrays = {"p": walk(300_000, 1), "q": rng.integers(0, 50, 400_000).astype(np.int32)}
    np.savez_compressed(src, **arrays)
    mnt = mount(src, f"index_dir={tmp_path / 'idx'}")

    def all_done():
        s = stats_json(mnt)
        return s if s["indexing"]["members_indexed"] == 2 else None
    s = poll(all_done, "the background pass to index both members")
    ix = s["indexing"]
    assert ix["background"] is True and ix["members"] == 2
    assert ix["bytes_to_go"] == 0 and ix["archives_not_opened"] == 0
    assert [m["pass"] for m in s["archives"][0]["members"]] == [None, None]
    assert re.search(r"^indexing +2 of 2 members indexed in 1 opened archive, 0 B to go$",
                     stats_text(mnt), re.M)


@pytest.mark.parametrize("reading", ["its member", "another member"])
def test_background_pass_waits_while_reads_decode(npyfs_bin, mount, tmp_path, reading):
    """A background pass stands still while reads decode a member for the
    first time: its own (the same work) or another (the first pass every
    user takes gets the cores), and stats says so; once the reads stop it
    goes on, and every member ends up indexed and saved."""
    d = tmp_path / "src"
    d.mkdir()
    arrays = {name: walk((48 << 20) // 8, seed) for name, seed in (("a", 11), ("b", 12))}
    with zipfile.ZipFile(d / "ab.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, arr in arrays.items():  # a first: the pass starts with it
            z.writestr(f"{name}.npy", npy_bytes(arr))
    name = "a" if reading == "its member" else "b"
    want = npy_bytes(arrays[name])
    # a directory source: the archive, and its pass, start at the open below.
    # threads=0: only these reads decode; verify=lazy: the open does not
    # wait for a full pass (the member is below verify_max)
    mnt = mount(d, f"index_dir={tmp_path / 'idx'}", "index=background", "verify=lazy",
                "threads=0")
    step = 1 << 20
    got = bytearray()
    passes, texts = [], []
    fd = os.open(mnt / "ab.npz" / f"{name}.npy", os.O_RDONLY)
    try:
        for off in range(0, len(want), step):
            got += os.pread(fd, step, off)
            s = stats_json(mnt)
            passes.append(s["archives"][0]["members"][0]["pass"])  # a's
            texts.append(stats_text(mnt))
    finally:
        os.close(fd)
    assert bytes(got) == want
    waiting = [p for p in passes if p and p["waiting_for_reads"]]
    assert waiting, passes
    assert all(p["done"] < p["size"] for p in waiting), waiting
    assert any(re.search(r"^    indexing pass: .* checked \([0-9.]+%\), .*/s, ETA .* \(waiting "
                         r"while reads decode a member for the first time\)$", t, re.M)
               for t in texts), texts[-1]

    def indexed():
        s = stats_json(mnt)
        return s if s["indexing"]["members_indexed"] == 2 else None
    poll(indexed, "the pass to go on once the reads stopped, and index both members")
    # the table counts a member as indexed; its file is finished just after
    poll(lambda: len(index_files(tmp_path / "idx")) == 2, "the members' index files")
    poll(lambda: stats_json(mnt)["indexing"]["passes_running"] == 0, "the pass to end")


def test_background_pass_waits_during_one_long_decode(npyfs_bin, mount, tmp_path):
    """One read far into a member with no index is one long decode: the
    background pass stands still while it runs, not only once it is over."""
    d = tmp_path / "src"
    d.mkdir()
    arr = walk((96 << 20) // 8, 31)
    with zipfile.ZipFile(d / "a.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("a.npy", npy_bytes(arr))
    want = npy_bytes(arr)
    mnt = mount(d, f"index_dir={tmp_path / 'idx'}", "index=background", "verify=lazy",
                "threads=0")
    passes, reading = [], threading.Event()

    def watch():
        while reading.is_set():
            p = stats_json(mnt)["archives"][0]["members"][0]["pass"]
            if reading.is_set():  # taken while the read was still on
                passes.append(p)

    fd = os.open(mnt / "a.npz" / "a.npy", os.O_RDONLY)
    try:
        off = len(want) * 9 // 10 // 4096 * 4096
        reading.set()
        t = threading.Thread(target=watch)
        t.start()
        try:
            got = os.pread(fd, 4096, off)
        finally:
            reading.clear()
            t.join()
    finally:
        os.close(fd)
    assert got == want[off:off + 4096]
    assert any(p and p["waiting_for_reads"] for p in passes), passes


def test_waiting_pass_goes_on_for_an_open(npyfs_bin, mount, tmp_path):
    """A background pass that stands still for reads goes on at once when an
    open waits for it (verify=auto, a member below verify_max), without
    waiting for the reads to stop."""
    d = tmp_path / "src"
    d.mkdir()
    small, big = walk((16 << 20) // 8, 21), walk((128 << 20) // 8, 22)
    with zipfile.ZipFile(d / "ab.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("a.npy", npy_bytes(small))  # first: the pass starts with it
        z.writestr("b.npy", npy_bytes(big))
    # b is above verify_max (served at once), a below it (its open waits)
    mnt = mount(d, f"index_dir={tmp_path / 'idx'}", "index=background", "verify=auto",
                "verify_max=32M", "threads=0")
    want = npy_bytes(big)
    reader = {"left": True, "got": bytearray()}

    def read_b():  # a first pass over b: its reads keep extending its index
        fd = os.open(mnt / "ab.npz" / "b.npy", os.O_RDONLY)
        try:
            for off in range(0, len(want), 1 << 20):
                reader["got"] += os.pread(fd, 1 << 20, off)
                time.sleep(0.002)
        finally:
            os.close(fd)
            reader["left"] = False

    t = threading.Thread(target=read_b)
    t.start()
    try:
        def a_waits():
            archives = stats_json(mnt)["archives"]  # empty until b's open opens it
            return archives and (archives[0]["members"][0]["pass"] or {}).get(
                "waiting_for_reads")
        poll(a_waits, "a's pass to wait for the reads of b")
        with open(mnt / "ab.npz" / "a.npy", "rb") as f:  # waits for a's pass
            still_reading = reader["left"]
            assert f.read() == npy_bytes(small)
    finally:
        t.join(timeout=POLL_TIMEOUT)
    assert not t.is_alive()
    assert bytes(reader["got"]) == want
    assert still_reading, "a's open waited for b's reads to stop"


# ------------------------------------------ item 7: the index directory ---

def test_no_home_and_no_usable_home_names_the_fix(npyfs_bin, tmp_path, shared_dir):
    """Without HOME or XDG_CACHE_HOME, a user whose password entry has no
    usable home (nobody: /nonexistent) gets no default directory: npyfs
    index says so, naming -o index_dir=, and exits 1; with index_dir it
    works."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    try:
        home = pwd.getpwuid(65534).pw_dir
    except KeyError:
        home = None
    if home and os.path.isdir(home):
        pytest.skip(f"uid 65534 has a home directory here ({home}): the case needs none")
    src = shared_dir / "a.npz"
    make_npz(src)
    src.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME")}

    def as_nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    r = subprocess.run([str(npyfs_bin), "index", str(src)], env=env, preexec_fn=as_nobody,
                       capture_output=True, timeout=120, cwd="/")
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"npyfs: {src}: no index directory: HOME and XDG_CACHE_HOME are "
                          "not set and uid 65534 has no usable home directory"), err
    assert "give -o index_dir=DIR" in err
    idx = shared_dir / "idx"
    idx.mkdir(mode=0o700)
    os.chown(idx, 65534, 65534)
    r = subprocess.run([str(npyfs_bin), "index", "-o", f"index_dir={idx}", str(src)], env=env,
                       preexec_fn=as_nobody, capture_output=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    assert len(index_files(idx)) == 1


def test_unusable_dir_message_suggests_index_dir(npyfs_bin, mount, tmp_path):
    src = tmp_path / "a.npz"
    arr = make_npz(src)
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={afile}", src)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err == (f"npyfs: {src}: index directory {afile}: Not a directory (give "
                   "-o index_dir=DIR for another one)\n"), err
    mnt = mount(src, f"index_dir={afile}", "index=lazy")
    read_member(mnt, "x.npy", arr)
    problems = mount.mount_of(mnt).teardown()
    assert not problems, problems
    log = mount.mount_of(mnt).stderr()
    assert re.search(rf"index directory {re.escape(str(afile))} is not usable \(Not a "
                     r"directory\); indexes will not be saved or loaded: give "
                     r"-o index_dir=DIR", log), log


def test_refused_dir_says_which_check(npyfs_bin, tmp_path):
    """An index directory refused for its owner or its mode says which."""
    src = tmp_path / "a.npz"
    make_npz(src)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={open_dir}", src)
    err = r.stderr.decode()
    assert r.returncode == 1 and "writable by group or others (mode 0777; chmod go-w it)" in err, err
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, -1)
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={theirs}", src)
    err = r.stderr.decode()
    assert r.returncode == 1 and f"owned by uid 65534, not by you (uid {os.geteuid()})" in err, err


def test_index_max_prunes_least_recently_used(npyfs_bin, mount, tmp_path):
    """A save that finds the directory over index_max removes the least
    recently used files; a load (here by another process, a mount) bumps a
    file's mtime, so it stays."""
    idx = tmp_path / "idx"
    srcs, arrays = [], []
    for i in range(4):
        srcs.append(tmp_path / f"a{i}.npz")
        arrays.append(make_npz(srcs[-1], seed=10 + i))
    files = []
    for i in range(3):
        r = npyfs_index(npyfs_bin, "-o", f"index_dir={idx},index_max=0", srcs[i])
        assert r.returncode == 0, r.stderr
        files.append(next(f for f in index_files(idx) if f not in files))
    for i, f in enumerate(files):
        set_age(f, (3 - i) * 86400)  # a0's the oldest
    size = max(f.stat().st_size for f in files)

    # a0's file loaded by a mount: its mtime is now
    mnt = mount(srcs[0], f"index_dir={idx}", "index=lazy")
    read_member(mnt, "x.npy", arrays[0])
    assert files[0].stat().st_mtime > time.time() - 600
    assert "index loaded from" in mount.mount_of(mnt).stderr()

    # a3 indexed with a cap of 2.5 files: 4 files are over it, so the least
    # recently used go until 2.25 are left: a1's and a2's
    cap = size * 5 // 2
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={idx},index_max={cap}", srcs[3])
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    left = index_files(idx)
    assert files[0] in left and files[1] not in left and files[2] not in left, left
    assert len(left) == 2
    # the mount still reads through the file it holds open
    read_member(mnt, "x.npy", arrays[0])


def test_daemon_never_prunes_its_open_or_new_files(npyfs_bin, mount, tmp_path):
    """In a mount, a save over the cap removes other files, but never one
    the daemon has loaded (open) or the one it has just written; it logs
    what it removed."""
    idx = tmp_path / "idx"
    a, b, old = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "old.npz"
    arr_a, arr_b = make_npz(a, seed=1), make_npz(b, seed=2)
    make_npz(old, seed=3)
    for s in (a, old):
        assert npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", s).returncode == 0
    fa = [f for f in index_files(idx)]
    assert len(fa) == 2
    for f in fa:
        set_age(f, 86400)
    # a's file is loaded (and held open) by the first read; then b's strict
    # open builds and saves b's file with the cap far too small for both
    mnt = mount([a, b], f"index_dir={idx}", "index=lazy", "verify=strict", "index_max=1K")
    read_member(mnt, "a.npz/x.npy", arr_a)
    names_before = set(index_files(idx))
    read_member(mnt, "b.npz/x.npy", arr_b)
    # the open waits for b's pass, not for its file: wait for the save
    log = wait_log(mount, mnt, r"b\.npz: member 'x\.npy': index saved to")
    left = set(index_files(idx))
    new = left - names_before
    assert len(new) == 1, (left, names_before)
    loaded = re.search(r"member 'x\.npy': index loaded from (\S+)", log).group(1)
    assert Path(loaded) in left  # open in the daemon: kept
    assert len(left) == 2        # old.npz's went
    assert re.search(r"index directory \S+: removed 1 least recently used index file "
                     r"\(\d+ bytes\) to stay within index_max", log), log


def test_prune_removes_files_of_gone_and_changed_archives(npyfs_bin, tmp_path):
    idx = tmp_path / "idx"
    gone, changed, kept = (tmp_path / f"{n}.npz" for n in ("gone", "changed", "kept"))
    for i, s in enumerate((gone, changed, kept)):
        make_npz(s, seed=20 + i)
    by_src = {}
    for s in (gone, changed, kept):
        before = set(index_files(idx))
        assert npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", s).returncode == 0
        (f,) = set(index_files(idx)) - before
        by_src[s] = f
    sizes = {s: f.stat().st_size for s, f in by_src.items()}
    # an old format's file (version 3, valid checksum), something not ours
    # named like an index file, and a symlink named like one
    data = bytearray(by_src[kept].read_bytes())
    data[8:12] = struct.pack("<I", 3)
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    old_format = idx / ("0" * 24 + ".dfx")
    old_format.write_bytes(bytes(data))
    old_format.chmod(0o600)
    foreign = idx / ("1" * 24 + ".dfx")
    foreign.write_bytes(b"my own notes")
    # damaged files of ours: a flipped byte (the checksum fails), the magic alone
    flipped = bytearray(by_src[kept].read_bytes())
    flipped[len(flipped) // 2] ^= 0x40
    damaged = idx / ("3" * 24 + ".dfx")
    damaged.write_bytes(bytes(flipped))
    stub = idx / ("4" * 24 + ".dfx")
    stub.write_bytes(b"NPYFSIDX")
    target = tmp_path / "outside.dfx"
    target.write_bytes(bytes(data))
    link = idx / ("2" * 24 + ".dfx")
    link.symlink_to(target)

    gone.unlink()
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))

    r = npyfs_index(npyfs_bin, "--prune", "-o", f"index_dir={idx}")
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, err
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 6, out
    for f in (damaged, stub):
        assert f"removed {f} (" in out and "damaged (cut short" in out, out
    assert (f"removed {by_src[gone]} (" in out and
            f"its archive {gone} no longer exists (member 'x.npy')" in out), out
    assert (f"removed {by_src[changed]} (" in out and
            f"{changed} is no longer the archive it was built for: replaced or modified "
            "since (member 'x.npy')" in out), out
    assert (f"removed {old_format} (" in out and
            "index file format version 3, from an older npyfs (this one reads version 4)"
            in out), out
    freed = sizes[gone] + sizes[changed] + len(data) + len(flipped) + 8
    assert lines[-1] == (f"npyfs: index directory {idx}: removed 5 files, {human(freed)} "
                         f"freed; 1 index file kept ({human(sizes[kept])})"), lines[-1]
    assert sorted(index_files(idx)) == sorted([by_src[kept], foreign, link])
    assert foreign.read_bytes() == b"my own notes" and target.exists() and link.is_symlink()

    # nothing more to do: says so, exit 0
    r = npyfs_index(npyfs_bin, "--prune", "-o", f"index_dir={idx}")
    assert r.returncode == 0
    assert r.stdout.decode() == (f"npyfs: index directory {idx}: removed 0 files, 0 B freed; "
                                 f"1 index file kept ({human(sizes[kept])})\n")
    # with SOURCEs: prune, then index them
    r = npyfs_index(npyfs_bin, "--prune", "-o", f"index_dir={idx}", changed)
    assert r.returncode == 0, r.stderr
    assert len(index_files(idx)) == 4  # kept, changed's new one, foreign, link
    # the size cap applies too
    r = npyfs_index(npyfs_bin, "--prune", "-o", f"index_dir={idx},index_max=1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().count("least recently used") == 2
    assert "to keep the directory within index_max=1 B" in r.stdout.decode()
    assert sorted(index_files(idx)) == sorted([foreign, link])


def test_prune_errors(npyfs_bin, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = npyfs_index(npyfs_bin, "--prune", "-o", f"index_dir={afile}")
    assert r.returncode == 1 and r.stdout == b""
    assert r.stderr.decode() == (f"npyfs: index directory {afile}: Not a directory (give "
                                 "-o index_dir=DIR for another one)\n")
    r = npyfs_index(npyfs_bin)
    assert r.returncode == 1
    assert b"index needs at least one SOURCE (or --prune)" in r.stderr


def test_other_spacing_is_used_as_it_is(npyfs_bin, mount, tmp_path):
    """A file built with spacing=64K serves a mount that would build its
    files at the default 256K (said at debug level) and is not replaced;
    npyfs index keeps it
    ("already indexed") unless asked for another spacing, which rebuilds
    it."""
    src = tmp_path / "a.npz"
    arr = make_npz(src, n=600_000)
    idx = tmp_path / "idx"
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={idx},spacing=64K", src)
    assert r.returncode == 0, r.stderr
    f = one_index_file(idx)
    assert file_spacing(f) == 64 << 10
    ino = f.stat().st_ino

    mnt = mount(src, f"index_dir={idx}", "index=lazy")
    read_member(mnt, "x.npy", arr)
    problems = mount.mount_of(mnt).teardown()
    assert not problems, problems
    log = mount.mount_of(mnt).stderr()
    assert "index loaded from" in log, log
    assert ("the saved index was built with spacing 64K, this mount's is 256K: used as it "
            "is") in log, log
    assert "rebuilding" not in log and "index saved to" not in log, log
    assert one_index_file(idx).stat().st_ino == ino

    rc, out = on_tty([npyfs_bin, "index", "-o", f"index_dir={idx}", src])
    assert rc == 0 and f"npyfs: {src}: already indexed (1 member)" in out, out
    assert one_index_file(idx).stat().st_ino == ino
    rc, out = on_tty([npyfs_bin, "index", "-o", f"index_dir={idx},spacing=1M", src])
    assert rc == 0 and "already indexed" not in out and "/s" in out, out
    assert file_spacing(one_index_file(idx)) == 1 << 20


def test_reindex_says_already_indexed(npyfs_bin, tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    a = d / "a.npz"
    np.savez_compressed(a, p=walk(300_000, 1), q=walk(200_000, 2))
    make_npz(d / "b.npz", seed=3)
    idx = tmp_path / "idx"
    rc, out = on_tty([npyfs_bin, "index", "-o", f"index_dir={idx}", d])
    assert rc == 0, out
    assert "already indexed" not in out and re.search(r"[KMG]iB/s", out), out
    before = {f: f.stat().st_ino for f in index_files(idx)}
    assert len(before) == 3
    rc, out = on_tty([npyfs_bin, "index", "-o", f"index_dir={idx}", d])
    assert rc == 0, out
    lines = [ln.split("\x1b[K")[-1] for ln in out.replace("\r\n", "\n").split("\n") if ln]
    assert lines == [f"npyfs: {a}: already indexed (2 members)",
                     f"npyfs: {d / 'b.npz'}: already indexed (1 member)"], out
    assert "/s" not in out
    assert {f: f.stat().st_ino for f in index_files(idx)} == before
    # not a terminal: quiet, as before
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", d)
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b""
    # one member more to do: the rate is of the work done, and the rest is said
    for f in index_files(idx):
        if f.stat().st_size > 0 and b"q.npy" in f.read_bytes()[:200]:
            f.unlink()
    rc, out = on_tty([npyfs_bin, "index", "-o", f"index_dir={idx}", a])
    assert rc == 0 and "; 1 of 2 members were already indexed" in out, out


# --------------------------------------------------- options and their docs ---

def test_index_max_option_everywhere(npyfs_bin, tmp_path):
    h = run([npyfs_bin, "--help"], timeout=10).stdout.decode()
    assert re.search(r"^  index_max=SIZE ", h, re.M), h
    man = (ROOT / "docs" / "npyfs.1").read_text()
    assert re.search(r"^\.BI index_max= SIZE$", man, re.M)
    assert "npyfs index \\-\\-prune" in man
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^\| `index_max=SIZE` \| 4G \|", readme, re.M)
    assert "npyfs index --prune" in readme
    ih = run([npyfs_bin, "index", "--help"], timeout=10)
    assert ih.returncode == 0
    assert "--prune" in ih.stdout.decode() and "-o index_max=SIZE" in ih.stdout.decode()
    comp = (ROOT / "completions" / "npyfs.bash").read_text()
    mount_opts = re.search(r'_npyfs_mount_opts="([^"]*)"', comp).group(1).split()
    index_opts = re.search(r'_npyfs_index_opts="([^"]*)"', comp).group(1).split()
    assert "index_max=" in mount_opts and "index_max=" in index_opts
    assert "--prune" in comp

    src = tmp_path / "a.npz"
    make_npz(src)
    for bad, want in (("index_max=abc", "npyfs: bad value in -o index_max=abc: expected a "
                       "size such as 4G (0: no cap) (see npyfs --help)\n"),
                      ("index_max=4GB", "npyfs: bad value in -o index_max=4GB: ambiguous "
                       "size 4GB: write 4G or 4GiB (sizes are powers of 1024)\n")):
        r = npyfs_index(npyfs_bin, "-o", f"index_dir={tmp_path / 'idx'},{bad}", src)
        assert r.returncode == 1 and r.stderr.decode() == want, r.stderr
        r = run([npyfs_bin, "mount", "-o", bad, src, tmp_path], timeout=30)
        assert r.returncode == 1 and r.stderr.decode() == want, r.stderr
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={tmp_path / 'idx'},index_max=1G", src)
    assert r.returncode == 0, r.stderr


def test_already_indexed_with_small_members(npyfs_bin, tmp_path):
    """A member within one chunk gets no index file (it is checked on each
    run): it does not keep an archive from being "already indexed"; an
    archive of small members only says that none needs a file."""
    src = tmp_path / "mixed.npz"
    big = walk(400_000, 3)
    np.savez_compressed(src, big=big, small=np.arange(100), tiny=np.zeros(3))
    idx = tmp_path / "idx"
    rc, out = on_tty([npyfs_bin, "index", "-o", f"index_dir={idx}", src])
    assert rc == 0 and "already indexed" not in out, out
    assert len(index_files(idx)) == 1
    rc, out = on_tty([npyfs_bin, "index", "-o", f"index_dir={idx}", src])
    assert rc == 0 and f"npyfs: {src}: already indexed (3 members)" in out, out

    only_small = tmp_path / "small.npz"
    np.savez_compressed(only_small, a=np.arange(10), b=np.ones(5))
    for _ in range(2):
        rc, out = on_tty([npyfs_bin, "index", "-o", f"index_dir={idx}", only_small])
        assert rc == 0, out
        assert f"npyfs: {only_small}: 2 members checked; none needs an index file" in out, out
    assert len(index_files(idx)) == 1


def test_prune_creates_no_directory(npyfs_bin, tmp_path):
    """npyfs index --prune of an index directory that does not exist says
    so and creates nothing; given SOURCEs too, they are indexed into it."""
    idx = tmp_path / "never" / "made"
    r = run([npyfs_bin, "index", "--prune", "-o", f"index_dir={idx}"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"index directory {idx} does not exist: nothing to prune" in r.stdout.decode()
    assert not (tmp_path / "never").exists()
    src = tmp_path / "a.npz"
    make_npz(src)
    r = run([npyfs_bin, "index", "--prune", "-o", f"index_dir={idx}", src], timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(index_files(idx)) == 1


def test_save_never_replaces_what_npyfs_did_not_write(npyfs_bin, tmp_path):
    """At the name a member's index file would get: a FIFO, or a symlink to a
    file outside. `npyfs index` fails for that member and says why; the
    entry stays as it was (the symlink's target untouched); nothing is
    written in its place. And a directory it creates is 0700 whatever the
    umask."""
    src = tmp_path / "a.npz"
    make_npz(src)
    probe = tmp_path / "probe"
    assert npyfs_index(npyfs_bin, "-o", f"index_dir={probe}", src).returncode == 0
    (name,) = [f.name for f in index_files(probe)]
    for kind in ("fifo", "symlink"):
        idx = tmp_path / f"idx-{kind}"
        idx.mkdir(mode=0o700)
        entry = idx / name
        outside = tmp_path / f"outside-{kind}"
        outside.write_bytes(b"not an index")
        if kind == "fifo":
            os.mkfifo(entry)
        else:
            entry.symlink_to(outside)
        r = npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", src)
        assert r.returncode == 1, r.stderr
        assert "something npyfs did not write is there" in r.stderr.decode(), r.stderr
        st = os.lstat(entry)
        assert (stat.S_ISFIFO(st.st_mode) if kind == "fifo" else stat.S_ISLNK(st.st_mode))
        assert outside.read_bytes() == b"not an index"
        assert [f.name for f in idx.iterdir()] == [name]  # no temporary file left
    old = os.umask(0o222)
    try:
        r = npyfs_index(npyfs_bin, "-o", f"index_dir={tmp_path / 'u' / 'v'}", src)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "u").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "u" / "v").st_mode) == 0o700
