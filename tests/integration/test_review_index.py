"""Saved indexes and index memory after the review of issue 9.

- A `.npy.gz` rewritten in place (same inode, same size, mtime put back to
  the nanosecond) is read as its new content on the next mount, never
  through the index saved for the old one: the key holds the last gzip
  trailer, a gzip index is saved and loaded only with its chunk checksums,
  and a file whose checksums differ from the member's own is stale.
- A loaded index file truncated or overwritten while the mount serves reads
  from it: reads stay exact and the daemon lives (the loader used to map the
  file, and a truncated mapping is SIGBUS).
- Sequential reads of a big, very compressible member under index=lazy keep
  the windows of its access points within -o index_mem (npyfs stats says
  so), the daemon's peak memory stays far below the member's size, and
  random reads stay exact.
"""

import os
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import guarded, npy_bytes, read_file, run

MiB = 1 << 20


def index_files(d):
    return sorted(Path(d).glob("*.dfx"))


def daemon_log(mount, mnt):
    return mount.mount_of(mnt).stderr()


def unmount(mount, mnt):
    problems = mount.mount_of(mnt).teardown()
    assert not problems, problems
    return mount.mount_of(mnt).stderr()


def pread_at(path, off, n):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


# ------------------------------------------- A: .npy.gz rewritten in place ---

def gz(data):
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def same_size_rewrite(old_b, hl, tail=32768):
    """(gzip of old_b, new content, its gzip of exactly the same length):
    the new content has every data byte (past the .npy header of hl bytes)
    flipped in its top bit, and its last `tail` bytes replaced by zeros with
    random bytes sprinkled in until the compressed length matches."""
    want = len(gz(old_b))
    arr = np.frombuffer(old_b, dtype=np.uint8).copy()
    arr[hl:] ^= 0x80
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    head = c.compress(arr[:-tail].tobytes())

    def length(t):
        cc = c.copy()
        return len(head) + len(cc.compress(t.tobytes())) + len(cc.flush())

    for seed in range(100):
        r = np.random.default_rng(seed)
        t = np.zeros(tail, dtype=np.uint8)
        n = length(t)
        while n < want:
            k = max(1, (want - n) // 3)  # about a byte of output per random byte
            t[r.integers(0, tail, k)] = r.integers(1, 256, k, dtype=np.uint8)
            n = length(t)
        if n == want:
            arr[-tail:] = t
            new_b = arr.tobytes()
            z = gz(new_b)
            assert len(z) == want
            return gz(old_b), new_b, z
    raise AssertionError("no same-size variant found")


def rewrite_in_place(path, data):
    """New bytes into the same inode, then the old mtime back (to the ns)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate(len(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_dev, after.st_size, after.st_mtime_ns) == \
        (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("pad", [False, True], ids=["plain", "zero-padded"])
def test_gzip_rewritten_in_place_reads_new_content(npyfs_bin, mount, tmp_path, pad):
    """Same gzip header, same length, same ISIZE, other content. The
    zero-padded form has no trailer at its end (the key cannot tell the two
    apart) and is sized by a full pass at open, which builds its chunk
    checksums: the saved file's checksums differ from them, so it is
    stale."""
    rng = np.random.default_rng(7)
    old = (np.cumsum(rng.standard_normal(1_500_000)) / 8).round(2)  # 12 MB, many points
    old_b = npy_bytes(old)
    zold, new_b, znew = same_size_rewrite(old_b, len(old_b) - old.nbytes)
    assert len(new_b) == len(old_b) and new_b != old_b and len(znew) == len(zold)
    if pad:
        zold, znew = zold + bytes(64), znew + bytes(64)
    src = tmp_path / "x.npy.gz"
    src.write_bytes(zold)
    idx = tmp_path / "idx"

    # verify=lazy: no full pass at open, so only reads build the index
    mnt = mount(src, f"index_dir={idx}", "index=lazy", "verify=lazy")
    assert read_file(mnt / "x.npy") == old_b
    first_log = unmount(mount, mnt)

    rewrite_in_place(src, znew)
    mnt = mount(src, f"index_dir={idx}", "index=lazy", "verify=lazy", name="again")
    got = read_file(mnt / "x.npy")
    assert len(got) == len(new_b)
    assert got == new_b
    # random reads too, which would start from the old access points
    rng = np.random.default_rng(1)
    for off in rng.integers(0, len(new_b) - 4096, 40):
        assert guarded(pread_at, mnt / "x.npy", int(off), 4096) == new_b[off:off + 4096]
    log = unmount(mount, mnt)
    assert "index loaded from" not in log, log
    # without checksums (no full pass) a .npy.gz index is not saved at all;
    # the padded one has them, and its file is refused as stale
    assert ("index saved to" in first_log) == pad, first_log
    if pad:
        assert "is stale" in log, log


# ------------------------------------- C: the index file changes under us ---

def make_member(path, n=3_000_000, seed=0):
    rng = np.random.default_rng(seed)
    big = (np.cumsum(rng.standard_normal(n)) / 16).round(2)
    np.savez_compressed(path, big=big)
    return npy_bytes(big)


@pytest.mark.parametrize("change", ["truncated", "garbage"])
def test_index_file_changed_while_mounted(npyfs_bin, mount, tmp_path, change):
    src = tmp_path / "data.npz"
    want = make_member(src)
    idx = tmp_path / "idx"
    # 64K spacing: a file over 1 MiB (one the old loader mapped)
    r = run([npyfs_bin, "index", "-o", f"index_dir={idx},spacing=64K", src], timeout=300)
    assert r.returncode == 0, r.stderr
    files = index_files(idx)
    assert len(files) == 1 and files[0].stat().st_size > MiB
    dfx = files[0]

    mnt = mount(src, f"index_dir={idx}", "spacing=64K", "index=lazy", "cache_size=1M",
                "threads=0")
    f = mnt / "big.npy"
    size = len(want)
    assert guarded(pread_at, f, size - 100, 100) == want[-100:]
    assert "index loaded from" in daemon_log(mount, mnt)

    # change the file in place: the daemon holds this inode open
    with open(dfx, "r+b") as h:
        if change == "truncated":
            h.truncate(4096)
        else:
            h.seek(4096)
            h.write(np.random.default_rng(3).integers(0, 256, dfx.stat().st_size - 4096,
                                                        dtype=np.uint8).tobytes())
    # fresh offsets every time: each misses the page cache and the chunk cache
    rng = np.random.default_rng(2)
    offsets = sorted(set(int(o) for o in rng.integers(0, size - 8192, 60)))
    for off in offsets:
        got = guarded(pread_at, f, off, 8192)
        assert got == want[off:off + 8192], off
    assert read_file(f) == want
    log = unmount(mount, mnt)  # fails on a daemon that died (SIGBUS)
    assert "index loaded from" in log


# --------------------------------------------------- E: bounded windows ---

PATTERN_SEED = 11


def compressible_npy_gz(path, n_bytes):
    """A .npy.gz of n_bytes of uint8 that compresses ~20x, written in
    pieces with deflate blocks of a few KiB (memLevel 2): an access point
    can be recorded every spacing. Returns (header, pattern) so that any
    byte can be recomputed."""
    rng = np.random.default_rng(PATTERN_SEED)
    # 1 MiB of 64-byte lines, each one of 16 random lines
    lines = rng.integers(32, 127, (16, 64), dtype=np.uint8)
    pattern = lines[rng.integers(0, 16, MiB // 64)].tobytes()
    header = npy_bytes(np.zeros(n_bytes, dtype=np.uint8))[:-n_bytes]
    z = zlib.compressobj(1, zlib.DEFLATED, 31, 2)
    with open(path, "wb") as f:
        f.write(z.compress(header))
        for i in range(n_bytes // MiB):
            # each MiB rotated by a different amount
            k = (i * 7919) % MiB
            f.write(z.compress(pattern[k:] + pattern[:k]))
        f.write(z.flush())
    return header, pattern


def expected(header, pattern, off, n):
    """Bytes [off, off + n) of the .npy that compressible_npy_gz wrote."""
    out = bytearray()
    hl = len(header)
    while n > 0:
        if off < hl:
            take = min(n, hl - off)
            out += header[off:off + take]
        else:
            d = off - hl
            i, r = divmod(d, MiB)
            k = (i * 7919) % MiB
            take = min(n, MiB - r)
            block = pattern[k:] + pattern[:k]
            out += block[r:r + take]
        off += take
        n -= take
    return bytes(out)


def vm_hwm(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def window_stats(mnt):
    text = os.getxattr(mnt, "user.npyfs.stats").decode()
    m = re.search(r"index windows in memory: (\d+) bytes \(limit (\d+)\)", text)
    assert m, text
    return int(m.group(1)), int(m.group(2))


def test_lazy_sequential_windows_bounded(npyfs_bin, mount, tmp_path, monkeypatch):
    # a sanitizer build keeps freed memory in quarantine (256 MB by default):
    # keep it small so peak memory shows what the daemon holds
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") +
                       ":quarantine_size_mb=8:thread_local_quarantine_size_kb=256")
    n_bytes = 384 * MiB
    src = tmp_path / "big.npy.gz"
    header, pattern = compressible_npy_gz(src, n_bytes)
    assert src.stat().st_size < n_bytes // 8  # very compressible
    limit = 2 * MiB
    idx = tmp_path / "idx"
    mnt = mount(src, f"index_dir={idx}", "index=lazy", "spacing=64K", f"index_mem={limit}",
                "cache_size=16M")
    pid = mount.mount_of(mnt).proc.pid
    f = mnt / "big.npy"
    size = len(header) + n_bytes
    assert f.stat().st_size == size
    assert window_stats(mnt) == (0, limit)

    # at 64K spacing, windows kept raw for every point would take 192 MiB
    # (half the member); the budget holds them to 2 MiB
    def sequential():
        fd = os.open(f, os.O_RDONLY)
        most, off, early = 0, 0, None
        try:
            while True:
                if early is None and off >= n_bytes // 8:
                    early = vm_hwm(pid)  # the cache is full by now
                b = os.read(fd, 4 * MiB)
                if not b:
                    break
                if off % (32 * MiB) < 4 * MiB:  # spot checks on the way
                    head = b[:4096]
                    assert head == expected(header, pattern, off, len(head)), off
                off += len(b)
                most = max(most, window_stats(mnt)[0])
        finally:
            os.close(fd)
        return off, most, early

    done, most, early = guarded(sequential, timeout=600)
    assert done == size
    used, lim = window_stats(mnt)
    assert lim == limit
    assert 0 < used <= limit and most <= limit, (used, most)
    hwm = vm_hwm(pid)
    # The same pass used to keep 192 MiB of windows (half the member),
    # growing with every MiB read. Now the peak stops growing once the cache
    # is full: the last 7/8 of the member add next to nothing (a sanitizer
    # build's shadow memory included), and the peak is well below half the
    # member (cache 16 MiB + windows 2 MiB + decoders + the binary).
    assert hwm - early < n_bytes // 8, (early, hwm)
    assert hwm < n_bytes // 2, hwm

    rng = np.random.default_rng(5)
    for off in rng.integers(0, size - 65536, 60):
        n = int(rng.integers(1, 65536))
        got = guarded(pread_at, f, int(off), n)
        assert got == expected(header, pattern, int(off), n), off
    assert window_stats(mnt)[0] <= limit
    unmount(mount, mnt)
