"""Hostile inputs (issue "Robustness"): crafted zips, names, .npy headers and
gzip files. The rule for each: either a clean mount error (non-zero exit, one
stderr line naming the file, nothing mounted) or a mount where the reads that
touch the damage fail with EIO (EOPNOTSUPP for what npyfs does not support)
while every other byte read is exact. Never wrong bytes, never a crash (the
daemon is checked to still answer at the end of each test), never a hang
(every read runs under a timeout).

- zip structure: missing EOCD, central directory cut short or lying about
  its size/count/offset, local header offset past EOF or not at a local
  header, two directory entries sharing one local header (CRC-consistent:
  both serve the same exact bytes; inconsistent CRC: that entry ends in EIO),
  sizes that disagree with the stream (shorter, longer, a 1 TiB "bomb" claim
  for a tiny stream: no allocation, no hang, EIO past the real end), flipped
  bytes in a deflate stream (a full sequential read ends in EIO, and keeps
  doing so), a wrong CRC in the directory (deflate and stored: full read ends
  in EIO, then EIO from offset 0), encrypted members and unknown methods
  (EOPNOTSUPP, others fine), a zip inside a zip (byte-exact), 70,000 members
  in 700 directories (mount in < 20 s, lookups and reads work).
- names: the README "Names" rule, checked entry by entry on one hand-written
  zip ('..', '../x', 'a/../../x', '/etc/x', backslashes, NUL, '//', './',
  duplicates, file-vs-directory conflicts in both orders, raw non-UTF-8
  bytes); nothing resolves outside the mount and nothing is created outside.
- .npy headers that lie (overflowing, negative, non-integer dims, absurd
  header lengths, bad versions, object dtype, shape vs data mismatch): npz
  members are served byte-exact with the directory's size; as .npy.gz either
  a clean refusal or exact bytes with the true size.
- gzip: truncated at every 1/16 and inside the header and trailer, trailing
  garbage (with and without a gzip magic), trailing zeros, FHCRC good and
  bad, concatenated members with a damaged second member, flipped bytes, and
  a single member whose trailer CRC is wrong (or whose stream runs 3 bytes
  past the size the .npy header and ISIZE agree on): a full read must end
  in EIO.
"""

import errno
import gzip
import io
import os
import pickle
import random
import stat
import struct
import time
import zipfile
import zlib
from collections import Counter

import numpy as np
import pytest

from conftest import cleanup_background, guarded, npy_bytes, pids_for_mountpoint, read_all, run
from robust_util import (Ent, assert_alive, attempt_mount, build_zip, data_offset,
                         drop_caches, emit, open_errno, partial_read, pread_result,
                         raw_deflate)

T = Counter()

ARR = (np.sin(np.arange(200_000) / 300.0) * 20000).astype(np.int32)
TRUTH = npy_bytes(ARR)                       # ~800 KB, several 128 KiB chunks
OK = npy_bytes(np.arange(1000, dtype=np.int64))
CHUNK = 128 << 10


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    emit(request.config,
         f"[test_hostile] crafted files tried: {T['tried']} "
         f"(mounted {T['mounted']}, refused cleanly {T['refused']}); "
         f"damaged reads ending in EIO: {T['eio']}; byte-exact checks: {T['exact']}; "
         f"mismatches: {T['mismatch']}")


@pytest.fixture
def try_mount(npyfs_bin, tmp_path):
    """try_mount(src, *opts) -> mount point, or None after a clean refusal."""
    mnts = []

    def f(src, *opts):
        mnt = tmp_path / f"m{len(mnts)}"
        mnt.mkdir()
        mnts.append(mnt)
        T["tried"] += 1
        if attempt_mount(npyfs_bin, src, mnt, *opts):
            T["mounted"] += 1
            return mnt
        T["refused"] += 1
        return None
    yield f
    for m in mnts:
        cleanup_background(m)


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _exact(got, want, what=""):
    if got != want:
        T["mismatch"] += 1
        n = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                 min(len(got), len(want)))
        raise AssertionError(f"{what}: wrong bytes (len {len(got)} vs {len(want)}, "
                             f"first difference at {n})")
    T["exact"] += 1


def _prefix_then_eio(path, truth, what="", timeout=60):
    """Full sequential read: every byte read is truth's, and it ends in EIO."""
    got, err = guarded(partial_read, path, timeout=timeout)
    _exact(got, truth[:len(got)], f"{what} bytes before the error")
    assert err is not None, f"{what}: damaged member read to the end without an error " \
                            f"({len(got)} bytes)"
    assert err.errno == errno.EIO, f"{what}: {err!r}"
    T["eio"] += 1
    return got


def _good_pair(method=8):
    """a.npy (the subject) and ok.npy (the bystander)."""
    return [Ent("a.npy", TRUTH, method=method), Ent("ok.npy", OK, method=8)]


def _bystander(mnt):
    _exact(guarded(read_all, mnt / "ok.npy", timeout=30), OK, "ok.npy")


# =============================================================== zip ===

@pytest.mark.parametrize("how", ["stripped", "sig_flipped", "comment_len_past_eof",
                                 "lfh_only"])
def test_eocd_missing(how, tmp_path, try_mount):
    raw = build_zip(_good_pair())
    if how == "stripped":
        raw = raw[:-22]
    elif how == "sig_flipped":
        raw = raw[:-22] + b"PK\x05\x07" + raw[-18:]
    elif how == "comment_len_past_eof":
        raw = raw[:-2] + struct.pack("<H", 500)
    else:
        raw = raw[:data_offset(raw, 0) + 100]
    src = _write(tmp_path, f"{how}.npz", raw)
    mnt = try_mount(src)
    if how == "comment_len_past_eof" and mnt is not None:
        # The record itself is intact; a lenient reader may take it. Then
        # everything must be exact.
        _exact(guarded(read_all, mnt / "a.npy", timeout=30), TRUTH, "a.npy")
        _bystander(mnt)
        assert_alive(mnt)
        return
    assert mnt is None, "archive without a valid EOCD was mounted"


def _cd_bounds(raw):
    cd_size, cd_off = struct.unpack_from("<II", raw, len(raw) - 22 + 12)
    return cd_off, cd_size


@pytest.mark.parametrize("how", ["count_high", "count_low", "cd_size_short",
                                 "cd_size_long", "cd_cut", "cd_off_past_eof",
                                 "cd_off_inside_data"])
def test_central_directory_cut_short(how, tmp_path, try_mount):
    """A directory that lies about itself: refused, or mounted with every
    visible member either exact or failing with EIO."""
    ents = _good_pair() + [Ent("c.npy", OK[::-1], method=0)]
    raw = bytearray(build_zip(ents))
    eocd = len(raw) - 22
    cd_off, cd_size = _cd_bounds(raw)
    if how == "count_high":
        struct.pack_into("<HH", raw, eocd + 8, 5, 5)
    elif how == "count_low":
        struct.pack_into("<HH", raw, eocd + 8, 1, 1)
    elif how == "cd_size_short":
        struct.pack_into("<I", raw, eocd + 12, cd_size // 2)
    elif how == "cd_size_long":
        struct.pack_into("<I", raw, eocd + 12, cd_size + 10_000)
    elif how == "cd_cut":   # drop the second half of the directory
        cut = cd_off + cd_size // 2
        raw = raw[:cut] + raw[eocd:]
    elif how == "cd_off_past_eof":
        struct.pack_into("<I", raw, eocd + 16, len(raw) + 1000)
    else:
        struct.pack_into("<I", raw, eocd + 16, 40)
    src = _write(tmp_path, f"{how}.npz", bytes(raw))
    mnt = try_mount(src)
    if mnt is None:
        return
    truth = {"a.npy": TRUTH, "ok.npy": OK, "c.npy": OK[::-1]}
    names = guarded(os.listdir, mnt, timeout=15)
    assert set(names) <= set(truth), names
    for n in names:
        got, err = guarded(partial_read, mnt / n, timeout=30)
        _exact(got, truth[n][:len(got)], n)
        if err is None:
            assert got == truth[n]
        else:
            assert err.errno == errno.EIO, (n, err)
    assert_alive(mnt)


@pytest.mark.parametrize("how", ["past_eof", "far_past_eof", "not_a_header",
                                 "header_cut_by_eof"])
def test_local_header_offset_bad(how, tmp_path, try_mount):
    ents = _good_pair()
    raw = build_zip(ents)
    if how == "past_eof":
        ents[0].lho = len(raw) + 100
    elif how == "far_past_eof":
        ents[0].lho = 0xFFFFFFFE
    elif how == "not_a_header":
        ents[0].lho = data_offset(raw, 0) + 50
    else:
        ents[0].lho = len(raw) - 40   # inside the central directory / EOCD
    raw = build_zip(ents)
    if how == "header_cut_by_eof":
        ents[0].lho = len(raw) - 10
        raw = build_zip(ents)
    src = _write(tmp_path, f"{how}.npz", raw)
    mnt = try_mount(src)
    if mnt is None:
        return
    e = open_errno(mnt / "a.npy") if "a.npy" in guarded(os.listdir, mnt, timeout=15) else None
    if e is None and "a.npy" in os.listdir(mnt):
        # Open worked: reading must fail (the member's data is not there).
        got, err = guarded(partial_read, mnt / "a.npy", timeout=30)
        _exact(got, TRUTH[:len(got)], "a.npy")
        assert err is not None and err.errno == errno.EIO, err
        T["eio"] += 1
    elif e is not None:
        assert e == errno.EIO, f"open/read of a member with a bad local header: {os.strerror(e)}"
        T["eio"] += 1
    _bystander(mnt)
    assert_alive(mnt)


@pytest.mark.parametrize("method", [0, 8], ids=["stored", "deflate"])
def test_overlapping_local_headers(method, tmp_path, try_mount):
    """Two directory entries pointing at one local header. With consistent
    CRC and sizes both serve the same exact bytes (a legitimate dedup); a
    third one with a wrong CRC ends in EIO; the rest is unaffected."""
    ents = [Ent("a.npy", TRUTH, method=method),
            Ent("b.npy", TRUTH, method=method, same_as=0),
            Ent("c.npy", TRUTH, method=method, same_as=0, crc=zlib.crc32(TRUTH) ^ 0x1),
            Ent("ok.npy", OK, method=8)]
    src = _write(tmp_path, "overlap.npz", build_zip(ents))
    mnt = try_mount(src)
    assert mnt is not None, "a CRC-consistent shared local header was refused"
    for n in ("a.npy", "b.npy"):
        assert guarded(os.stat, mnt / n, timeout=15).st_size == len(TRUTH)
        _exact(guarded(read_all, mnt / n, timeout=30), TRUTH, n)
    _prefix_then_eio(mnt / "c.npy", TRUTH, "c.npy (shared header, wrong CRC)")
    _bystander(mnt)
    assert_alive(mnt)


@pytest.mark.parametrize("case", ["deflate_usize_short", "deflate_usize_short_crc_of_prefix",
                                  "deflate_usize_long", "stored_usize_short",
                                  "stored_usize_long", "deflate_csize_past_eof",
                                  "deflate_csize_short"])
def test_sizes_disagree(case, tmp_path, try_mount):
    method = 0 if case.startswith("stored") else 8
    e = Ent("a.npy", TRUTH, method=method)
    if "usize_short" in case:
        e.usize = len(TRUTH) - 1000
        if "prefix" in case:
            e.crc = zlib.crc32(TRUTH[:e.usize])
    elif "usize_long" in case:
        e.usize = len(TRUTH) + 1000
    elif case == "deflate_csize_short":
        e.csize = len(e.payload) // 2
    ents = [e, Ent("ok.npy", OK, method=8)]
    raw = build_zip(ents)
    if case == "deflate_csize_past_eof":
        e.csize = len(raw) * 4
        raw = build_zip(ents)
    src = _write(tmp_path, f"{case}.npz", raw)
    mnt = try_mount(src)
    if mnt is None:
        return
    st = guarded(os.stat, mnt / "a.npy", timeout=15)
    assert st.st_size == e.usize, (st.st_size, e.usize)
    truth = TRUTH[:e.usize]
    _prefix_then_eio(mnt / "a.npy", truth, case)
    if case == "stored_usize_long":
        # The 1000 bytes past the stored data are the next local header: they
        # must never be served as member content.
        r = guarded(pread_result, mnt / "a.npy", 4096, len(TRUTH) - 1000, timeout=15)
        assert r[0] == "err" and r[1] == errno.EIO, r[:1] + (r[1][-1100:] if r[0] == "ok" else r[1],)
    _bystander(mnt)
    assert_alive(mnt)


@pytest.mark.parametrize("method", [8, 0], ids=["deflate", "stored"])
def test_zip_bomb_size_claim(method, tmp_path, try_mount):
    """usize = 1 TiB for an 800 KB stream: st_size is the claim, but reads
    past the real end fail with EIO quickly and the daemon does not grow."""
    claim = 1 << 40
    ents = [Ent("a.npy", TRUTH, method=method, usize=claim), Ent("ok.npy", OK, method=8)]
    src = _write(tmp_path, "bomb.npz", build_zip(ents))
    mnt = try_mount(src)
    if mnt is None:
        return
    assert guarded(os.stat, mnt / "a.npy", timeout=15).st_size == claim
    # The first chunk is whole real data: exact (or EIO, if npyfs refuses the
    # member outright; never wrong bytes).
    r = guarded(pread_result, mnt / "a.npy", 4096, 0, timeout=15)
    if r[0] == "ok":
        _exact(r[1], TRUTH[:4096], "first page")
    else:
        assert r[1] == errno.EIO, os.strerror(r[1])
    for off in (len(TRUTH) + 10, 1 << 30, 1 << 39, claim - 4096, claim - 1):
        t0 = time.monotonic()
        r = guarded(pread_result, mnt / "a.npy", 1 << 20, off, timeout=30)
        assert r[0] == "err" and r[1] == errno.EIO, \
            f"read at {off} past the real end: {r[0]} {len(r[1]) if r[0] == 'ok' else os.strerror(r[1])}"
        T["eio"] += 1
        assert time.monotonic() - t0 < 20
    pids = pids_for_mountpoint(mnt)
    assert pids
    with open(f"/proc/{pids[0]}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    assert hwm < 300 * 1024, f"daemon peak RSS {hwm} KiB after reading a bomb claim"
    _bystander(mnt)
    assert_alive(mnt)


def _deflate_member_span(raw, name):
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        info = zf.getinfo(name)
    start = data_offset(raw, info.header_offset)
    return start, info.compress_size


@pytest.mark.parametrize("where", [0.05, 0.3, 0.6, 0.95, "last_bytes"])
def test_flipped_deflate_bytes(where, tmp_path, try_mount):
    raw = bytearray(build_zip(_good_pair()))
    start, csize = _deflate_member_span(bytes(raw), "a.npy")
    pos = start + (csize - 8 if where == "last_bytes" else int(csize * where))
    for k in range(pos, pos + 8):
        raw[k] ^= 0xA5
    src = _write(tmp_path, "flip.npz", bytes(raw))
    mnt = try_mount(src)
    if mnt is None:
        return
    _flip_checks(mnt / "a.npy", f"flip at {where}")
    _bystander(mnt)
    assert_alive(mnt)


def _flip_checks(q, what):
    """Before the CRC can be checked, bytes from a flip that still decodes
    may be served (README "Damage"), so the first pass only has to END in
    EIO. Once the damage is known, nothing wrong may come out: a second pass
    (page cache dropped) gives exact bytes and then EIO."""
    got, err = guarded(partial_read, q, timeout=60)
    assert err is not None, f"{what}: damaged member read to the end without an error"
    assert err.errno == errno.EIO, err
    assert len(got) <= len(TRUTH)
    T["eio"] += 1
    drop_caches()
    got2, err2 = guarded(partial_read, q, timeout=60)
    _exact(got2, TRUTH[:len(got2)], f"{what}: second pass, after the damage was found")
    assert err2 is not None and err2.errno == errno.EIO, err2


@pytest.mark.parametrize("method", [8, 0], ids=["deflate", "stored"])
def test_crc_mismatch(method, tmp_path, try_mount):
    """Valid data, wrong CRC-32 in the directory: a full pass ends in EIO and
    afterwards the member fails from offset 0 (README "Damage")."""
    ents = [Ent("a.npy", TRUTH, method=method, crc=zlib.crc32(TRUTH) ^ 0x80000000),
            Ent("ok.npy", OK, method=8)]
    src = _write(tmp_path, "crc.npz", build_zip(ents))
    mnt = try_mount(src)
    if mnt is None:
        return
    _prefix_then_eio(mnt / "a.npy", TRUTH, "wrong CRC")
    drop_caches()
    r = guarded(pread_result, mnt / "a.npy", 4096, 0, timeout=15)
    assert r[0] == "err" and r[1] == errno.EIO, \
        "after a failed CRC check, reads from offset 0 must fail with EIO"
    _bystander(mnt)
    assert_alive(mnt)


@pytest.mark.parametrize("case", ["flag_deflate", "flag_stored", "strong_flag",
                                  "aes_method99"])
def test_encrypted_members(case, tmp_path, try_mount):
    if case == "flag_deflate":
        e = Ent("a.npy", TRUTH, method=8, flags=0x1)
    elif case == "flag_stored":
        e = Ent("a.npy", TRUTH, method=0, flags=0x1)
    elif case == "strong_flag":
        e = Ent("a.npy", TRUTH, method=8, flags=0x41)
    else:
        e = Ent("a.npy", TRUTH, method=99, flags=0x1, payload=os.urandom(2000))
    src = _write(tmp_path, f"{case}.npz", build_zip([e, Ent("ok.npy", OK, method=8)]))
    mnt = try_mount(src)
    assert mnt is not None, "an archive with an encrypted member must still mount"
    assert "a.npy" in guarded(os.listdir, mnt, timeout=15)
    assert guarded(open_errno, mnt / "a.npy", timeout=15) == errno.EOPNOTSUPP
    _bystander(mnt)
    assert_alive(mnt)


@pytest.mark.parametrize("m", [1, 6, 9, 12, 14, 93, 95, 98, 99, 255, 65535])
def test_unknown_methods(m, tmp_path, try_mount):
    e = Ent("a.npy", TRUTH, method=m, payload=raw_deflate(TRUTH))
    src = _write(tmp_path, f"m{m}.npz", build_zip([e, Ent("ok.npy", OK, method=8)]))
    mnt = try_mount(src)
    assert mnt is not None, f"an archive with a method-{m} member must still mount"
    assert "a.npy" in guarded(os.listdir, mnt, timeout=15)
    assert guarded(open_errno, mnt / "a.npy", timeout=15) == errno.EOPNOTSUPP
    _bystander(mnt)
    assert_alive(mnt)


def test_zip_inside_zip(tmp_path, mount):
    inner = tmp_path / "inner.npz"
    np.savez_compressed(inner, x=ARR, y=np.arange(10))
    ib = inner.read_bytes()
    outer = tmp_path / "outer.npz"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("inner_stored.npz", ib, compress_type=zipfile.ZIP_STORED)
        zf.writestr("inner_deflated.npz", ib, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("looks_like.npy", ib, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("ok.npy", OK)
    T["tried"] += 1
    mnt = mount(outer)
    for n in ("inner_stored.npz", "inner_deflated.npz", "looks_like.npy"):
        assert guarded(os.stat, mnt / n, timeout=15).st_size == len(ib)
        _exact(guarded(read_all, mnt / n, timeout=30), ib, n)

    def load_inner():
        with np.load(mnt / "inner_deflated.npz") as z:
            return np.array_equal(z["x"], ARR) and np.array_equal(z["y"], np.arange(10))
    assert guarded(load_inner, timeout=30)
    _bystander(mnt)


def test_70000_members_in_directories(tmp_path, mount):
    n = 70_000
    p = tmp_path / "many.npz"
    hdr = npy_bytes(np.array([0], dtype="<i8"))[:-8]
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"d{i % 700}/m{i}.npy", hdr + np.int64(i).tobytes())
        zf.writestr("big.npy", TRUTH, compress_type=zipfile.ZIP_DEFLATED)
    T["tried"] += 1
    t0 = time.monotonic()
    mnt = mount(p)
    took = time.monotonic() - t0
    assert took < 20, f"mounting 70,000 members took {took:.1f} s"

    def body():
        assert len(os.listdir(mnt)) == 701
        assert len(os.listdir(mnt / "d3")) == 100
        rnd = random.Random(4)
        for i in [0, 65535, 65536, n - 1] + rnd.sample(range(n), 300):
            q = mnt / f"d{i % 700}" / f"m{i}.npy"
            assert os.stat(q).st_size == len(hdr) + 8
        for i in rnd.sample(range(n), 30):
            assert read_all(mnt / f"d{i % 700}" / f"m{i}.npy") == hdr + np.int64(i).tobytes()
        assert not os.path.exists(mnt / "d0" / "m1.npy")   # m1 lives in d1
        return read_all(mnt / "big.npy")
    t1 = time.monotonic()
    _exact(guarded(body, timeout=60), TRUTH, "big.npy")
    assert time.monotonic() - t1 < 30


# ============================================================= names ===

# (zip name, expected path in the mount or None if skipped). Each member has
# distinct content, b"member-<index>".
NAMES = [
    (b"..", None),
    (b"../x.npy", None),
    (b"a/../../x.npy", None),
    (b"x/..", None),
    (b"..\\x.npy", b"..\\x.npy"),          # one component, not '..'
    (b"/etc/x.npy", b"etc/x.npy"),
    (b"a\\b.npy", b"a\\b.npy"),
    (b"n\x00ul.npy", None),
    (b"a//b.npy", b"a/b.npy"),
    (b"./c.npy", b"c.npy"),
    (b"sub/./y.npy", b"sub/y.npy"),
    (b"dup.npy", None),                    # overridden by the later one
    (b"dup.npy", b"dup.npy"),
    (b"f", b"f"),
    (b"f/b.npy", None),                    # runs through the file f
    (b"g/b.npy", b"g/b.npy"),
    (b"g", None),                          # g is already a directory
    (b"h/", b"h"),                          # directory entry
    (b"h", None),
    (b"\xff\xfe.npy", b"\xff\xfe.npy"),    # not UTF-8: raw bytes
    (b"lat\xe9/\xe9.npy", b"lat\xe9/\xe9.npy"),
    (b".../z.npy", b".../z.npy"),
    (b"", None),
    (b"/", None),
    (b"ok.npy", b"ok.npy"),
]


def test_member_names(tmp_path, npyfs_bin, try_mount):
    ents = []
    for i, (name, _) in enumerate(NAMES):
        data = b"" if name.endswith(b"/") else b"member-%d" % i
        ents.append(Ent(name, data, method=8 if i % 2 else 0))
    box = tmp_path / "box"
    box.mkdir()
    src = _write(box, "names.npz", build_zip(ents))
    before_box = sorted(os.listdir(box))
    before_tmp = sorted(os.listdir(tmp_path) + ["m0"])
    assert not os.path.exists("/etc/x.npy")
    mnt = try_mount(src)
    assert mnt is not None, "hostile names must be skipped, not refuse the archive"
    root = os.fsencode(str(mnt))
    want_files = {}
    want_dirs = set()
    for i, (name, path) in enumerate(NAMES):
        if path is None:
            continue
        if name.endswith(b"/"):
            want_dirs.add(path)
        else:
            want_files[path] = b"member-%d" % i
        parts = path.split(b"/")
        for k in range(1, len(parts)):
            want_dirs.add(b"/".join(parts[:k]))

    def walk():
        files, dirs = {}, set()
        for d, dn, fn in os.walk(root):
            for n in dn + fn:
                full = os.path.join(d, n)
                assert n not in (b"", b".", b".."), full
                real = os.path.realpath(full)
                assert real.startswith(root + b"/"), f"{full!r} resolves outside the mount"
                st = os.lstat(full)
                assert stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode), full
            for n in dn:
                dirs.add(os.path.relpath(os.path.join(d, n), root))
            for n in fn:
                with open(os.path.join(d, n), "rb") as f:
                    files[os.path.relpath(os.path.join(d, n), root)] = f.read()
        return files, dirs
    files, dirs = guarded(walk, timeout=60)
    assert dirs == want_dirs, (sorted(dirs ^ want_dirs))
    assert set(files) == set(want_files), sorted(set(files) ^ set(want_files))
    for k, v in want_files.items():
        _exact(files[k], v, repr(k))
    # Lookups of skipped names fail; nothing escaped next to the mount.
    for bad in (b"x.npy", b"n", b"f/b.npy", b"nul.npy"):
        assert not os.path.exists(os.path.join(root, bad)), bad
    assert sorted(os.listdir(box)) == before_box
    assert sorted(os.listdir(tmp_path)) == before_tmp
    assert not os.path.exists("/etc/x.npy")
    # `npyfs ls` still lists every member, skipped ones included.
    r = run([npyfs_bin, "ls", src], timeout=30)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.split(b"\n") if ln.strip()]
    assert len(rows) >= len(NAMES) - 1, rows   # the NUL one may print oddly
    assert_alive(mnt)


# ==================================================== lying .npy headers ===

def _npy(text, data=b"", version=(1, 0), hlen=None):
    t = text.encode("latin1")
    pad = 64 - (len(t) + 11) % 64
    t = t + b" " * pad + b"\n"
    if version[0] == 1:
        h = struct.pack("<H", len(t) if hlen is None else hlen)
    else:
        h = struct.pack("<I", len(t) if hlen is None else hlen)
    return b"\x93NUMPY" + bytes(version) + h + t + data


def _obj_npy():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, [2, 3], "s"], dtype=object), allow_pickle=True)
    return buf.getvalue()


D64 = bytes(range(64))
HEADERS = {
    "overflow_shape": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", D64),
    "overflow_2_64": _npy("{'descr': '<u1', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", D64),
    "overflow_itemsize": _npy("{'descr': '|V4294967295', 'fortran_order': False, 'shape': (4294967297,), }", D64),
    "huge_exact_i64": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846975,), }", D64),
    "negative_dim": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", D64),
    "negative_pair": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-2, -4), }", D64),
    "float_dim": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1.5,), }", D64),
    "str_dim": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': ('8',), }", D64),
    "bool_dim": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (True,), }", D64),
    "hex_dim": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (0x8,), }", D64),
    "absurd_hlen_v1": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }", D64, hlen=0xFFFF),
    "absurd_hlen_v2": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }", D64, version=(2, 0), hlen=0xFFFFFFF0),
    "zero_hlen": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }", D64, hlen=0),
    "version_4": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }", D64, version=(4, 0)),
    "version_0": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }", D64, version=(0, 0)),
    "version_1_1": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }", D64, version=(1, 1)),
    "object": _obj_npy(),
    "object_claims_shape": _npy("{'descr': '|O', 'fortran_order': False, 'shape': (1000000,), }",
                                pickle.dumps([1, 2, 3])),
    "magic_only": b"\x93NUMPY",
    "unterminated_dict": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (8,", D64),
    "shape_smaller_than_data": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (10,), }",
                                    bytes(range(256)) * 40),
    "shape_larger_than_data": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (100000,), }",
                                   D64),
    "empty": b"",
}


def test_lying_headers_in_npz(tmp_path, mount):
    """npz members are bytes with the directory's size, whatever the header
    claims: each must stat and read byte-exact."""
    p = tmp_path / "hdr.npz"
    with zipfile.ZipFile(p, "w") as zf:
        for k, v in HEADERS.items():
            zf.writestr(f"s_{k}.npy", v, compress_type=zipfile.ZIP_STORED)
            zf.writestr(f"d_{k}.npy", v, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("ok.npy", OK)
    T["tried"] += 1
    mnt = mount(p)
    bad = []
    for k, v in HEADERS.items():
        for pre in ("s_", "d_"):
            q = mnt / f"{pre}{k}.npy"
            try:
                size = guarded(os.stat, q, timeout=15).st_size
                got = guarded(read_all, q, timeout=30)
            except OSError as e:
                bad.append(f"{q.name}: {e!r}")
                continue
            if size != len(v) or got != v:
                T["mismatch"] += 1
                bad.append(f"{q.name}: size {size}, read {len(got)} bytes, want {len(v)}"
                           f"{'' if got == v else ' (content differs)'}")
            else:
                T["exact"] += 1
    assert not bad, "\n".join(bad)
    _bystander(mnt)


@pytest.mark.parametrize("key", list(HEADERS))
def test_lying_headers_in_npy_gz(key, tmp_path, try_mount):
    v = HEADERS[key]
    src = _write(tmp_path, f"{key}.npy.gz", gzip.compress(v, mtime=0))
    mnt = try_mount(src)
    if mnt is None:
        return
    q = mnt / f"{key}.npy"
    assert guarded(os.listdir, mnt, timeout=15) == [q.name]
    size = guarded(os.stat, q, timeout=15).st_size
    got, err = guarded(partial_read, q, timeout=30)
    assert err is None, f"intact gzip of a lying header: {err!r} after {len(got)} bytes"
    assert size == len(v), f"st_size {size}, true size {len(v)}"
    _exact(got, v, key)
    assert_alive(mnt)


# ============================================================== gzip ===

GZ = gzip.compress(TRUTH, mtime=0)
_CUTS = sorted(set([len(GZ) * k // 16 for k in range(1, 16)]
                   + [1, 3, 9, 10, 12, len(GZ) - 8, len(GZ) - 7, len(GZ) - 4, len(GZ) - 1]))


@pytest.mark.parametrize("cut", _CUTS)
def test_truncated_gzip(cut, tmp_path, try_mount):
    src = _write(tmp_path, "t.npy.gz", GZ[:cut])
    mnt = try_mount(src)
    if mnt is None:
        return
    _prefix_then_eio(mnt / "t.npy", TRUTH, f"gzip cut at {cut}/{len(GZ)}")
    assert_alive(mnt)


GZ2 = gzip.compress(b"second member payload " * 100, mtime=0)
TRAILERS = {
    "zeros_1": b"\0",
    "zeros_7": b"\0" * 7,
    "zeros_4096": b"\0" * 4096,
    "text": b"this is not gzip\n" * 5,
    "one_magic_byte": b"\x1f",
    "magic_then_junk": b"\x1f\x8b" + b"junk" * 20,
    "magic_bad_method": b"\x1f\x8b\x07\x00" + b"\0" * 20,
    "header_only": GZ2[:10],
    "second_member_cut": GZ2[:len(GZ2) // 2],
}


@pytest.mark.parametrize("key", list(TRAILERS))
def test_gzip_trailing_bytes(key, tmp_path, try_mount):
    """Zeros are padding: exact. Other junk: refused, exact TRUTH, or exact
    up to the junk and then EIO (never the junk as data)."""
    src = _write(tmp_path, "g.npy.gz", GZ + TRAILERS[key])
    mnt = try_mount(src)
    if key.startswith("zeros"):
        assert mnt is not None, "zero padding after a gzip member must be accepted"
    if mnt is None:
        return
    q = mnt / "g.npy"
    size = guarded(os.stat, q, timeout=15).st_size
    got, err = guarded(partial_read, q, timeout=60)
    _exact(got, TRUTH[:len(got)], key)
    if err is None:
        assert got == TRUTH and size == len(TRUTH), (len(got), size)
    else:
        assert not key.startswith("zeros"), err
        assert err.errno == errno.EIO, err
        T["eio"] += 1
    assert_alive(mnt)


def _gzip_with_fhcrc(data, good=True):
    hdr = b"\x1f\x8b\x08" + bytes([0x02 | 0x08 | 0x10 | 0x04]) + b"\0\0\0\0\0\xff"
    hdr += struct.pack("<H", 6) + b"AB\x02\x00xy"          # FEXTRA
    hdr += b"name.npy\0" + b"a comment\0"                  # FNAME, FCOMMENT
    crc16 = zlib.crc32(hdr) & 0xFFFF
    hdr += struct.pack("<H", crc16 if good else crc16 ^ 0x5A5A)
    return hdr + raw_deflate(data) + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def test_gzip_fhcrc_good(tmp_path, try_mount):
    raw = _gzip_with_fhcrc(TRUTH, good=True)
    assert gzip.decompress(raw) == TRUTH  # self-check
    mnt = try_mount(_write(tmp_path, "h.npy.gz", raw))
    assert mnt is not None, "a valid gzip with FHCRC/FEXTRA/FNAME/FCOMMENT was refused"
    _exact(guarded(read_all, mnt / "h.npy", timeout=60), TRUTH, "FHCRC good")
    assert_alive(mnt)


def test_gzip_fhcrc_bad(tmp_path, try_mount):
    raw = _gzip_with_fhcrc(TRUTH, good=False)
    mnt = try_mount(_write(tmp_path, "h.npy.gz", raw))
    if mnt is None:
        return
    _prefix_then_eio(mnt / "h.npy", TRUTH, "bad FHCRC")
    assert_alive(mnt)


def test_gzip_fhcrc_bad_says_so(tmp_path, npyfs_bin):
    """A gzip file whose header CRC is wrong is named a damaged gzip, not
    "not a zip or gzip"."""
    src = _write(tmp_path, "h.npy.gz", _gzip_with_fhcrc(TRUTH, good=False))
    r = run([npyfs_bin, "ls", "--", src], timeout=60, text=True)
    assert r.returncode != 0
    assert "damaged gzip header: its header CRC (FHCRC) does not match" in r.stderr, r.stderr
    assert "not a zip" not in r.stderr, r.stderr


def _gz_member(data):
    return gzip.compress(data, mtime=0)


@pytest.mark.parametrize("damage", ["flip", "truncate", "crc", "isize", "bad_header",
                                    "missing_trailer"])
def test_gzip_concatenated_damaged_second(damage, tmp_path, try_mount):
    half = len(TRUTH) // 2
    m1, m2 = _gz_member(TRUTH[:half]), bytearray(_gz_member(TRUTH[half:]))
    if damage == "flip":
        mid = len(m2) // 2
        for k in range(mid, mid + 8):
            m2[k] ^= 0xA5
    elif damage == "truncate":
        m2 = m2[:len(m2) * 2 // 3]
    elif damage == "crc":
        m2[-8] ^= 0x01
    elif damage == "isize":
        m2[-4] ^= 0x01
    elif damage == "bad_header":
        m2[2] = 7
    else:
        m2 = m2[:-8]
    src = _write(tmp_path, "c.npy.gz", m1 + bytes(m2))
    mnt = try_mount(src)
    if mnt is None:
        return
    q = mnt / "c.npy"
    _prefix_then_eio(q, TRUTH, f"second member {damage}")
    assert_alive(mnt)


def test_gzip_flipped_bytes(tmp_path, try_mount):
    raw = bytearray(GZ)
    mid = len(raw) // 2
    for k in range(mid, mid + 8):
        raw[k] ^= 0xA5
    mnt = try_mount(_write(tmp_path, "f.npy.gz", bytes(raw)))
    if mnt is None:
        return
    _flip_checks(mnt / "f.npy", "flipped gzip")
    assert_alive(mnt)


@pytest.mark.parametrize("field", ["crc", "crc_and_extra_output"])
def test_gzip_single_member_bad_trailer(field, tmp_path, try_mount):
    """One member whose .npy header size equals ISIZE, so the mount trusts
    the header: a full read must still check the trailer's CRC-32 (and that
    the stream ends exactly at the size) and end in EIO."""
    if field == "crc":
        raw = bytearray(GZ)
        raw[-8] ^= 0x01
    else:
        # The deflate data decodes to TRUTH plus 3 extra bytes, with the
        # trailer (CRC, ISIZE) of TRUTH alone.
        raw = bytearray(GZ[:10] + raw_deflate(TRUTH + b"xyz") + GZ[-8:])
    mnt = try_mount(_write(tmp_path, "t.npy.gz", bytes(raw)))
    if mnt is None:
        return
    _prefix_then_eio(mnt / "t.npy", TRUTH, f"gzip trailer {field}")
    assert_alive(mnt)
