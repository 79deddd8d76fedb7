"""Persisted indexes: `npyfs index`, index_dir, index=background|lazy.

Reuse is proven through the daemon's log (stderr in -f mode): the line
"index loaded from PATH" is printed when a saved index is used, "index saved
to PATH" when one is written, and "index PATH is damaged|is stale ...;
rebuilding" when a file is refused. Every mount here passes index_dir, so
nothing is written to the user's cache.
"""

import os
import pty
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_same_array, in_child, load, run

BIG = 3_000_000  # float64 elements: 24 MB, many access points at 1M spacing
SAVE_TIMEOUT = 120.0


def make_archive(path, seed=0, n=BIG):
    rng = np.random.default_rng(seed)
    arrays = {
        "big": (np.cumsum(rng.standard_normal(n)) / 16).round(2),
        "ints": rng.integers(0, 1000, n // 2).astype(np.int32),
        "small": np.arange(100, dtype=np.int16),
    }
    np.savez_compressed(path, **arrays)
    return arrays


def index_files(d):
    return sorted(p for p in Path(d).glob("*.dfx"))


def npyfs_index(npyfs_bin, *args):
    return run([npyfs_bin, "index", *args], timeout=300)


def check_arrays(mnt, arrays):
    def compare():
        for name, want in arrays.items():
            got = load(mnt / f"{name}.npy")
            assert_same_array(got, want)
        return True
    assert in_child(compare, timeout=300)


def read_last(mnt, name):
    def last():
        a = load(mnt / f"{name}.npy")
        return a[-1].item()
    return in_child(last, timeout=120)


def daemon_log(mount, mnt):
    return mount.mount_of(mnt).stderr()


def wait_for_log(mount, mnt, pattern, count=1, timeout=SAVE_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(re.findall(pattern, daemon_log(mount, mnt))) >= count:
            return
        time.sleep(0.1)
    pytest.fail(f"no {pattern!r} x{count} in the daemon log after {timeout:.0f} s:\n"
                + daemon_log(mount, mnt))


def unmount(mount, mnt):
    problems = mount.mount_of(mnt).teardown()
    assert not problems, problems
    return daemon_log(mount, mnt)


@pytest.fixture(scope="module")
def archive_master(tmp_path_factory):
    src = tmp_path_factory.mktemp("index_master") / "data.npz"
    return src, make_archive(src)


@pytest.fixture
def archive(tmp_path, archive_master):
    """A private copy per test: a new inode, so a key of its own."""
    src = tmp_path / "data.npz"
    shutil.copyfile(archive_master[0], src)
    return src, archive_master[1]


def test_index_then_mount_reuses(npyfs_bin, mount, tmp_path, archive):
    src, arrays = archive
    idx = tmp_path / "idx"
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", src)
    assert r.returncode == 0, r.stderr
    # not a terminal: quiet
    assert r.stdout == b"" and r.stderr == b""
    files = index_files(idx)
    assert len(files) == 2  # big and ints; small needs no index
    assert (idx.stat().st_mode & 0o777) == 0o700
    assert all((f.stat().st_mode & 0o777) == 0o600 for f in files)

    # a second run reuses the files (and leaves them alone: loading one only
    # sets its mtime, for the size cap's least-recently-used order)
    before = {f: (f.stat().st_ino, f.read_bytes()) for f in files}
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", src)
    assert r.returncode == 0 and r.stderr == b""
    assert {f: (f.stat().st_ino, f.read_bytes()) for f in index_files(idx)} == before

    mnt = mount(src, f"index_dir={idx}", "index=lazy")
    assert read_last(mnt, "big") == arrays["big"][-1]
    log = daemon_log(mount, mnt)
    assert log.count("index loaded from") == 1, log
    assert "member 'big.npy'" in log
    check_arrays(mnt, arrays)
    log = unmount(mount, mnt)
    assert log.count("index loaded from") == 2, log
    assert "saved" not in log and "rebuilding" not in log


def test_background_then_remount(npyfs_bin, mount, tmp_path, archive):
    src, arrays = archive
    idx = tmp_path / "idx"
    mnt = mount(src, f"index_dir={idx}")
    wait_for_log(mount, mnt, r"index saved to", count=2)
    check_arrays(mnt, arrays)
    log = unmount(mount, mnt)
    assert len(index_files(idx)) == 2
    # the mount takes up the files it saved without a second line for them
    assert log.count("index saved to") == 2 and "index loaded from" not in log, log

    mnt = mount(src, f"index_dir={idx}", "index=lazy", name="again")
    check_arrays(mnt, arrays)
    log = unmount(mount, mnt)
    assert log.count("index loaded from") == 2, log
    assert "saved" not in log


def test_lazy_saves_at_unmount(npyfs_bin, mount, tmp_path, archive):
    src, arrays = archive
    idx = tmp_path / "idx"
    mnt = mount(src, f"index_dir={idx}", "index=lazy")
    check_arrays(mnt, arrays)  # reads every member to its end
    log = unmount(mount, mnt)
    assert log.count("index saved to") == 2, log
    mnt = mount(src, f"index_dir={idx}", "index=lazy", name="again")
    assert read_last(mnt, "big") == arrays["big"][-1]
    assert "index loaded from" in daemon_log(mount, mnt)


def flip(path):
    data = bytearray(path.read_bytes())
    for at in (len(data) // 3, len(data) // 2, len(data) - 10):
        data[at] ^= 0x40
    path.write_bytes(bytes(data))


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage", ["flipped", "truncated", "foreign", "empty"])
def test_bad_index_file_is_rebuilt(npyfs_bin, mount, tmp_path, archive, damage):
    src, arrays = archive
    idx = tmp_path / "idx"
    assert npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", src).returncode == 0
    files = index_files(idx)
    if damage == "flipped":
        for f in files:
            flip(f)
    elif damage == "truncated":
        for f in files:
            truncate(f)
    elif damage == "empty":
        for f in files:
            f.write_bytes(b"")
    else:
        # another archive with the same member names: its files copied over ours
        other = tmp_path / "other" / "data.npz"
        other.parent.mkdir()
        make_archive(other, seed=1)
        oidx = tmp_path / "oidx"
        assert npyfs_index(npyfs_bin, "-o", f"index_dir={oidx}", other).returncode == 0
        ofiles = index_files(oidx)
        assert len(ofiles) == len(files) == 2
        # big with big, ints with ints: match by size class
        for mine, theirs in zip(sorted(files, key=lambda p: p.stat().st_size),
                                sorted(ofiles, key=lambda p: p.stat().st_size)):
            mine.write_bytes(theirs.read_bytes())

    mnt = mount(src, f"index_dir={idx}")
    wait_for_log(mount, mnt, r"index saved to", count=2)
    log = daemon_log(mount, mnt)
    want = "is stale" if damage == "foreign" else "is damaged"
    assert log.count(want) == 2, log
    assert log.count("rebuilding") == 2
    check_arrays(mnt, arrays)
    unmount(mount, mnt)

    # the rebuilt files are good
    mnt = mount(src, f"index_dir={idx}", "index=lazy", name="again")
    check_arrays(mnt, arrays)
    log = unmount(mount, mnt)
    assert log.count("index loaded from") == 2, log


def test_unusable_index_dir(npyfs_bin, mount, tmp_path, archive):
    src, arrays = archive
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    for bad in (afile / "sub", afile):
        mnt = mount(src, f"index_dir={bad}", name=f"m{bad.name}")
        check_arrays(mnt, arrays)
        log = unmount(mount, mnt)
        assert log.count("is not usable") == 1, log
        assert "index loaded from" not in log and "index saved to" not in log
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={afile}", src)
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and str(afile) in lines[0], lines
    # writable by others: refused too
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    mnt = mount(src, f"index_dir={shared}", name="shared")
    check_arrays(mnt, arrays)
    log = unmount(mount, mnt)
    assert "is not usable" in log and index_files(shared) == []


def test_touch_invalidates(npyfs_bin, mount, tmp_path, archive):
    src, arrays = archive
    idx = tmp_path / "idx"
    assert npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", src).returncode == 0
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # one nanosecond
    mnt = mount(src, f"index_dir={idx}", "index=lazy", "verify=lazy")
    check_arrays(mnt, arrays)
    log = unmount(mount, mnt)
    assert "index loaded from" not in log, log
    assert log.count("index saved to") == 2
    assert len(index_files(idx)) == 4  # the old files are not reused


def test_index_damaged_archive(npyfs_bin, mount, tmp_path, archive):
    src, arrays = archive
    data = bytearray(src.read_bytes())
    big_at = data.find(b"big.npy")
    data[big_at + 2_000_000] ^= 0x10  # inside big.npy's deflate data
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    idx = tmp_path / "idx"
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", bad)
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "big.npy" in lines[0] and "damaged" in lines[0], lines
    assert len(index_files(idx)) == 1  # ints.npy is fine

    mnt = mount(bad, f"index_dir={tmp_path / 'idx2'}", "verify=lazy")
    wait_for_log(mount, mnt, r"index saved to", count=1)
    wait_for_log(mount, mnt, r"big.npy' is damaged", count=1)

    def read_big():
        fd = os.open(mnt / "big.npy", os.O_RDONLY)
        try:
            os.pread(fd, 4096, 0)
            return "ok"
        except OSError as e:
            return e.errno
        finally:
            os.close(fd)
    import errno
    assert in_child(read_big) == errno.EIO
    assert_same_array(in_child(lambda: np.array(load(mnt / "ints.npy"))), arrays["ints"])
    log = unmount(mount, mnt)
    assert log.count("is damaged") == 1, log


def test_index_cli_errors_and_progress(npyfs_bin, tmp_path, archive):
    src, _ = archive
    idx = tmp_path / "idx"
    r = npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", tmp_path / "missing.npz", src)
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "missing.npz" in lines[0]
    assert len(index_files(idx)) == 2  # the good source was still indexed
    r = npyfs_index(npyfs_bin)
    assert r.returncode == 1 and b"SOURCE" in r.stderr
    r = npyfs_index(npyfs_bin, "-o", "allow_other", src)
    assert r.returncode == 1

    # on a terminal: a progress line rewritten in place
    master, slave = pty.openpty()
    p = subprocess.Popen([str(npyfs_bin), "index", "-o", f"index_dir={tmp_path / 'idx3'}",
                          str(src)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=slave)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 120
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
    assert p.wait(timeout=60) == 0
    assert b"\r" in out and b"indexed" in out and b"MiB" in out, out


def test_full_index_dir(npyfs_bin, mount, tmp_path, archive):
    """An index directory with no space left: saving fails cleanly (no temp
    files left behind), the failure is logged, and reads stay correct."""
    src, arrays = archive
    full = tmp_path / "full"
    full.mkdir(mode=0o700)
    r = run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", str(full)],
            timeout=30)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: " + r.stderr.decode().strip())
    try:
        mnt = mount(src, f"index_dir={full}")
        wait_for_log(mount, mnt, r"cannot save index to .*No space left on device")
        check_arrays(mnt, arrays)
        log = unmount(mount, mnt)
        assert "index saved to" not in log, log
        assert list(full.iterdir()) == [], "a failed save left files behind"
    finally:
        run(["umount", "-l", str(full)], timeout=30)


def stats_json(npyfs_bin, mnt):
    import json
    r = run([npyfs_bin, "stats", "--json", mnt], timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_saved_windows_read_into_memory(npyfs_bin, mount, tmp_path, archive):
    """A loaded index file's windows are read into memory (within half of
    index_mem, shown by `npyfs stats`), so random reads start from them
    without reading the file: with the file zeroed in place after they
    were read, every read is exact and decodes no more than a read whose
    windows all work (about half a spacing and a chunk); a fetched window
    would no longer check, its point would be dropped, and reads would
    decode from far before their offset."""
    src, arrays = archive
    idx = tmp_path / "idx"
    assert npyfs_index(npyfs_bin, "-o", f"index_dir={idx}", src).returncode == 0
    mnt = mount(src, f"index_dir={idx}", "index_mem=8M")
    want = arrays["big"]
    hdr = os.path.getsize(mnt / "big.npy") - want.nbytes  # opens it: the index loads
    deadline, held, last = time.monotonic() + 60, 0, -1
    while time.monotonic() < deadline:  # until the job is done: no change for 0.5 s
        held = stats_json(npyfs_bin, mnt)["index_windows"]["bytes"]
        if held and held == last:
            break
        last = held
        time.sleep(0.5)
    assert 0 < held <= 4 << 20, held
    for f in index_files(idx):
        size = f.stat().st_size
        with open(f, "r+b") as fh:
            fh.write(bytes(size))
    before = stats_json(npyfs_bin, mnt)
    rng = np.random.default_rng(7)
    n = 12
    # from the end back: no read can go on from where the one before stopped
    offsets = sorted(rng.choice(want.nbytes // 4096, n, replace=False) * 4096 + hdr,
                     reverse=True)
    expect = want.view(np.uint8)

    def reads():
        fd = os.open(mnt / "big.npy", os.O_RDONLY)
        try:
            for off in offsets:
                got = os.pread(fd, 64, int(off))
                assert got == expect[off - hdr:off - hdr + 64].tobytes(), off
        finally:
            os.close(fd)
        return True
    assert in_child(reads, timeout=120)
    after = stats_json(npyfs_bin, mnt)
    assert after["read_errors"] == before["read_errors"]
    per_read = (after["bytes_decompressed"] - before["bytes_decompressed"]) / n
    # spacing 256K: about 128K, and the chunks the kernel asked for (some
    # 400K here); without the windows, megabytes from the member's start
    assert per_read <= 1 << 20, per_read
    assert after["index_windows"]["bytes"] == held
