"""Integrity: no silent wrong bytes, before or after indexing, lazy or strict.

The archive holds a deflate member (d.npy), a stored member (s.npy) and an
undamaged deflate member (ok.npy), each a few MiB (1 MiB for ok.npy); every
mount uses spacing=64K, so deflate members have many access points.

- Before indexing (a bit flipped in one member's payload):
  - default options: the background pass finds the damage and the member's
    reads fail with EIO; the bytes a read returns before failing are right;
  - verify=strict: opening the member fails with EIO at once (open() and
    np.load), and the other members read correctly.
- After indexing (`npyfs index` built each member's chunk CRC table, then a
  bit is flipped in place and the archive's mtime restored to the
  nanosecond, so the size/mtime check cannot see it), with index=lazy and
  verify lazy or strict: the chunk holding the damage fails with EIO, every
  chunk before it reads correctly, with os.pread and through a memory map
  (np.load(mmap_mode='r') in a child: the damaged chunk is SIGBUS there), and
  no read ever returns a wrong byte. A stored member fails on that chunk only.
- A full index directory is logged once per mount, not once per member.
"""

import errno
import json
import os
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import in_child, guarded, load, npy_bytes, read_all, run
from robust_util import data_offset, partial_read

CHUNK = 128 << 10
LOG_TIMEOUT = 120.0


def make_arrays():
    rng = np.random.default_rng(7)
    return {
        # a random walk in steps of 1/64: compresses ~3x, many deflate blocks
        "d": np.cumsum(rng.integers(-3, 4, 600_000)).astype(np.float64) / 64,
        "s": rng.integers(0, 1 << 30, 800_000).astype(np.int32),
        "ok": np.arange(150_000, dtype=np.int64) * 3,
    }


def build(path):
    """Write the archive; returns (arrays, {name: (payload offset, payload
    length)}) with name 'd', 's' or 'ok'."""
    arrays = make_arrays()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("d.npy", npy_bytes(arrays["d"]), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("s.npy", npy_bytes(arrays["s"]), compress_type=zipfile.ZIP_STORED)
        zf.writestr("ok.npy", npy_bytes(arrays["ok"]), compress_type=zipfile.ZIP_DEFLATED)
    raw = Path(path).read_bytes()
    where = {}
    with zipfile.ZipFile(path) as zf:
        for name in arrays:
            info = zf.getinfo(f"{name}.npy")
            where[name] = (data_offset(raw, info.header_offset), info.compress_size)
    return arrays, where


def flip_in_place(path, at, bit=0x10):
    """Flip one bit of the archive without letting its size or mtime show it."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ bit]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(path)
    assert (st2.st_size, st2.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def daemon_log(mount, mnt):
    return mount.mount_of(mnt).stderr()


def wait_for_log(mount, mnt, pattern, timeout=LOG_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, daemon_log(mount, mnt)):
            return
        time.sleep(0.1)
    pytest.fail(f"no {pattern!r} in the daemon log after {timeout:.0f} s:\n"
                + daemon_log(mount, mnt))


def open_errno(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return e.errno
    os.close(fd)
    return None


def chunk_results(path, size):
    """pread every CHUNK-sized piece in order: ("ok", bytes) or ("err", errno)."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in range(0, size, CHUNK):
            try:
                out.append(("ok", os.pread(fd, CHUNK, off)))
            except OSError as e:
                out.append(("err", e.errno))
    finally:
        os.close(fd)
    return out


def check_ok_member(mnt, arrays):
    def compare():
        for name in ("ok",):
            got = load(mnt / f"{name}.npy")
            assert np.array_equal(got, arrays[name])
        return True
    assert in_child(compare)
    assert guarded(read_all, mnt / "ok.npy") == npy_bytes(arrays["ok"])


OTHER = {"d": "s", "s": "d"}
DAMAGE_LOG = {"d": r"member 'd\.npy' is damaged",
              "s": r"member 's\.npy' is damaged: CRC-32 mismatch of the member"}


@pytest.fixture
def archive(tmp_path):
    src = tmp_path / "data.npz"
    arrays, where = build(src)
    return src, arrays, where


# ------------------------------------------------------ before indexing ---

@pytest.mark.parametrize("kind", ["d", "s"])
def test_damage_before_indexing_default(kind, mount, tmp_path, archive):
    src, arrays, where = archive
    off, length = where[kind]
    data = bytearray(src.read_bytes())
    data[off + length // 2] ^= 0x04
    src.write_bytes(bytes(data))
    truth = npy_bytes(arrays[kind])

    mnt = mount(src, f"index_dir={tmp_path / 'idx'}", "spacing=64K")
    wait_for_log(mount, mnt, DAMAGE_LOG[kind])  # the background pass found it
    got, err = guarded(partial_read, mnt / f"{kind}.npy")
    assert err is not None and err.errno == errno.EIO, (len(got), err)
    assert got == truth[:len(got)], "wrong bytes served before the EIO"
    assert guarded(read_all, mnt / f"{OTHER[kind]}.npy") == npy_bytes(arrays[OTHER[kind]])
    check_ok_member(mnt, arrays)


@pytest.mark.parametrize("kind", ["d", "s"])
@pytest.mark.parametrize("index", ["lazy", "background"])
def test_damage_before_indexing_strict(kind, index, mount, tmp_path, archive):
    src, arrays, where = archive
    off, length = where[kind]
    data = bytearray(src.read_bytes())
    data[off + length // 2] ^= 0x04
    src.write_bytes(bytes(data))

    mnt = mount(src, f"index_dir={tmp_path / 'idx'}", "spacing=64K", f"index={index}",
                "verify=strict")
    assert guarded(open_errno, mnt / f"{kind}.npy") == errno.EIO

    def np_open():
        try:
            load(mnt / f"{kind}.npy")
        except OSError as e:
            return e.errno
        return None
    assert in_child(np_open) == errno.EIO
    assert guarded(open_errno, mnt / f"{kind}.npy") == errno.EIO  # and stays so
    assert guarded(read_all, mnt / f"{OTHER[kind]}.npy") == npy_bytes(arrays[OTHER[kind]])
    check_ok_member(mnt, arrays)
    assert len(re.findall(DAMAGE_LOG[kind], daemon_log(mount, mnt))) == 1


@pytest.mark.parametrize("cache", ["32M", "128K"])
def test_damage_found_by_a_sequential_read_is_logged_once(cache, mount, tmp_path, archive):
    """verify=lazy, index=lazy: the damage is found by the decode of a
    sequential read, or by a readahead worker ahead of it (the default
    cache; 128K leaves no room for readahead). Either way the daemon logs
    exactly one line for the member, naming what stats names, and the
    reads end in EIO."""
    src, arrays, where = archive
    off, length = where["d"]
    data = bytearray(src.read_bytes())
    for k in range(16):
        data[off + length // 2 + k] ^= 0x5A
    src.write_bytes(bytes(data))
    mnt = mount(src, f"index_dir={tmp_path / 'idx'}", "index=lazy", "verify=lazy",
                f"cache_size={cache}")
    # (verify=lazy serves what decodes before the damage is found: no
    # check of the bytes here; test_damage_before_indexing covers that)
    got, err = guarded(partial_read, mnt / "d.npy")
    assert err is not None and err.errno == errno.EIO, (len(got), err)
    # a second pass is refused from the same place and logs nothing more
    got2, err2 = guarded(partial_read, mnt / "d.npy")
    assert err2 is not None and err2.errno == errno.EIO
    wait_for_log(mount, mnt, r"member 'd\.npy' is damaged: ")
    time.sleep(0.5)
    lines = [ln for ln in daemon_log(mount, mnt).splitlines() if "'d.npy'" in ln]
    assert len(lines) == 1, lines
    assert any(kind in lines[0] for kind in ("bad deflate data", "CRC-32 mismatch",
                                             "size mismatch", "ends early")), lines
    assert "(found by a read" in lines[0], lines
    # the kernel was told to drop the member's pages: one file, however often
    def dropped():
        return json.loads(os.getxattr(mnt, "user.npyfs.stats.json"))["pages_dropped"]
    deadline = time.monotonic() + 30
    while guarded(dropped) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert guarded(dropped) == 1


def test_strict_undamaged(mount, tmp_path, archive):
    """verify=strict with no saved index: every first open runs the pass; the
    tables are saved, and a later mount loads them instead."""
    src, arrays, _ = archive
    idx = tmp_path / "idx"
    mnt = mount(src, f"index_dir={idx}", "spacing=64K", "index=lazy", "verify=strict")
    for name, arr in arrays.items():
        assert guarded(read_all, mnt / f"{name}.npy") == npy_bytes(arr)
    # the pass answers the open once its table exists, and saves after that
    deadline = time.monotonic() + 60
    while daemon_log(mount, mnt).count("index saved to") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon_log(mount, mnt).count("index saved to") == 3
    mnt = mount(src, f"index_dir={idx}", "spacing=64K", "index=lazy", "verify=strict",
                name="again")
    for name, arr in arrays.items():
        assert guarded(read_all, mnt / f"{name}.npy") == npy_bytes(arr)
    log = daemon_log(mount, mnt)
    assert log.count("index loaded from") == 3 and "saved" not in log, log


# ------------------------------------------------------- after indexing ---

@pytest.mark.parametrize("kind", ["d", "s"])
@pytest.mark.parametrize("verify", ["lazy", "strict"])
def test_damage_after_indexing(kind, verify, npyfs_bin, mount, tmp_path, archive):
    src, arrays, where = archive
    idx = tmp_path / "idx"
    r = run([npyfs_bin, "index", "-o", f"index_dir={idx}", "-o", "spacing=64K", src],
            timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list(idx.glob("*.dfx"))) == 3  # d, s and ok: each bigger than a chunk

    truth = npy_bytes(arrays[kind])
    off, length = where[kind]
    flip_in_place(src, off + length // 2, bit=0x01)

    strict = ["verify=strict"] if verify == "strict" else []  # lazy: the default
    mnt = mount(src, f"index_dir={idx}", "spacing=64K", "index=lazy", *strict)
    path = mnt / f"{kind}.npy"
    results = guarded(chunk_results, path, len(truth))
    bad = [i for i, (how, _) in enumerate(results) if how == "err"]
    for i, (how, val) in enumerate(results):
        if how == "ok":
            assert val == truth[i * CHUNK:(i + 1) * CHUNK], f"wrong bytes in chunk {i}"
        else:
            assert val == errno.EIO, (i, val)
    assert bad, "the damaged chunk read without an error"
    first = bad[0]
    if kind == "s":
        # stored: the flipped byte's chunk, and only it
        assert bad == [(length // 2) // CHUNK], bad
    else:
        # deflate: nothing before the damage fails; from the damage on, EIO
        assert first >= 2, f"chunk {first} failed, long before the damage"
        assert first <= (len(truth) // CHUNK), first
    # the thread that found the mismatch marks the chunk bad before it logs
    # the line: a reader can get its EIO first
    wait_for_log(mount, mnt, f"member '{kind}.npy' is damaged")
    # stats show the damage, from the first bad chunk (stored members too,
    # whose other chunks stay readable)
    stats = json.loads(os.getxattr(mnt, "user.npyfs.stats.json"))
    (member,) = [m for a in stats["archives"] for m in a["members"]
                 if m["name"] == f"{kind}.npy"]
    assert member["damage"] is not None, member
    assert member["damage"]["from"] <= first * CHUNK, member
    # reads fail by whole chunks: "from" is where they start failing, a
    # chunk's start; and a stored member's damage does not spread
    assert member["damage"]["from"] % CHUNK == 0, member
    if kind == "s":
        assert "reads of that chunk fail" in member["damage"]["text"], member
    # and say what it was: a chunk that does not match its saved checksum
    # (a flipped bit in deflate data may also break the stream itself)
    kinds = {"chunk_crc_mismatch"} if kind == "s" else {"chunk_crc_mismatch", "bad_data",
                                                          "size_mismatch", "crc_mismatch"}
    assert member["damage"]["kind"] in kinds, member
    if member["damage"]["kind"] == "chunk_crc_mismatch":
        k = member["damage"]["chunk"]
        assert f"CRC-32 mismatch of chunk {k}" in member["damage"]["text"], member
        assert k == (first if kind == "d" else (length // 2) // CHUNK), (k, first)

    # a sequential read never returns a wrong byte either
    got, err = guarded(partial_read, path)
    assert err is not None and err.errno == errno.EIO
    assert got == truth[:len(got)]
    assert len(got) <= first * CHUNK + CHUNK

    # through a memory map: the chunks before the damage are right ...
    hdr = len(truth) - arrays[kind].nbytes
    good = (first * CHUNK - hdr) // arrays[kind].itemsize

    def mapped_prefix():
        a = load(path)
        return bool(np.array_equal(a[:good], arrays[kind][:good]))
    assert in_child(mapped_prefix)

    # ... and touching the damaged chunk is SIGBUS, never a wrong value
    at = min(((first * CHUNK - hdr) // arrays[kind].itemsize) + 1, arrays[kind].size - 1)

    def mapped_damage():
        a = load(path)
        return a[at].item() == arrays[kind][at].item() and "same"

    with pytest.raises(pytest.fail.Exception, match="SIGBUS"):
        in_child(mapped_damage)
    check_ok_member(mnt, arrays)


def test_gzip_damage_after_indexing(npyfs_bin, mount, tmp_path):
    """The same for a .npy.gz: its index file carries the table too."""
    import gzip
    arr = make_arrays()["d"]
    truth = npy_bytes(arr)
    src = tmp_path / "g.npy.gz"
    src.write_bytes(gzip.compress(truth, mtime=0))
    idx = tmp_path / "idx"
    r = run([npyfs_bin, "index", "-o", f"index_dir={idx}", "-o", "spacing=64K", src],
            timeout=300)
    assert r.returncode == 0, r.stderr
    flip_in_place(src, src.stat().st_size // 2, bit=0x01)
    mnt = mount(src, f"index_dir={idx}", "spacing=64K", "index=lazy")
    results = guarded(chunk_results, mnt / "g.npy", len(truth))
    bad = [i for i, (how, _) in enumerate(results) if how == "err"]
    assert bad and bad[0] >= 2, bad
    for i, (how, val) in enumerate(results):
        if how == "ok":
            assert val == truth[i * CHUNK:(i + 1) * CHUNK], f"wrong bytes in chunk {i}"
    assert "index loaded from" in daemon_log(mount, mnt)


# ------------------------------------------------------------- logging ---

def test_full_index_dir_logged_once(mount, tmp_path, archive):
    src, arrays, _ = archive
    full = tmp_path / "full"
    full.mkdir(mode=0o700)
    r = run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs", str(full)], timeout=30)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: " + r.stderr.decode().strip())
    try:
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:  # leave no room for any index
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        mnt = mount(src, f"index_dir={full}", "spacing=64K", "index=lazy", "verify=strict")
        for name, arr in arrays.items():  # each first open runs a pass and tries to save
            assert guarded(read_all, mnt / f"{name}.npy") == npy_bytes(arr)
        mount.mount_of(mnt).teardown()
        log = daemon_log(mount, mnt)
        assert log.count("cannot save index") == 1, log
        assert "index saved to" not in log
    finally:
        run(["umount", "-l", str(full)], timeout=30)
