"""Tree layout, attributes, and zip archives from writers other than np.savez.

- Members 'top.npy', 'a/b.npy', 'a/c/d.npy' become MNT/top.npy, directory
  MNT/a/ with b.npy and directory MNT/a/c/ with d.npy; os.listdir of each
  level is exact; non-.npy members ('notes.txt', a binary blob) are served
  byte-exact.
- Files are S_ISREG 0444 with nlink 1, directories S_ISDIR 0555 with
  nlink >= 2, all owned by the mounting user, st_mtime equals the archive's
  mtime (set to 2001-09-09, not the members' 1980 timestamps).
- Members written by Python's zipfile at deflate levels 0..9 and stored, in
  an archive with a comment; archives from Info-ZIP `zip -0` / `zip -9`, and
  `zip` writing to a pipe; np.savez / np.savez_compressed written into an
  unseekable pipe (data descriptors, flag bit 3); an archive with more than
  65535 members (zip64 end of central directory record and locator).
- Names with spaces and non-ASCII characters (UTF-8 flag), `zip -r` archives
  with explicit directory entries, an empty archive (EOCD only), duplicate
  member names (the last wins, as in np.load), and hostile names ('..',
  absolute, empty components) that must not produce '.'/'..' entries.
"""

import errno
import os
import stat
import subprocess
import zipfile

import numpy as np
import pytest

from conftest import (assert_same_array, guarded, in_child, is_shown_like,
                      load, npy_bytes, read_all, run)

MTIME = 1_000_000_000  # 2001-09-09T01:46:40Z
TOP = np.arange(1000, dtype=np.float64)
B = np.arange(60, dtype=np.int32).reshape(6, 10)
D = np.array([[1 + 2j, 3 - 4j]], dtype=np.complex64)
NOTES = b"free text, not an array\nline 2\n"
BLOB = bytes(np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8))


@pytest.fixture
def tree_npz(tmp_path):
    p = tmp_path / "tree.npz"
    np.savez_compressed(p, top=TOP, **{"a/b": B, "a/c/d": D})
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("notes.txt", NOTES)
        zf.writestr("blob.bin", BLOB, compress_type=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(p) as zf:  # self-check: names as intended
        assert sorted(zf.namelist()) == ["a/b.npy", "a/c/d.npy", "blob.bin",
                                         "notes.txt", "top.npy"]
    os.utime(p, (MTIME, MTIME))
    return p


def test_tree_listing(tree_npz, mount):
    mnt = mount(tree_npz)

    def body():
        assert sorted(os.listdir(mnt)) == ["a", "blob.bin", "notes.txt", "top.npy"]
        assert sorted(os.listdir(mnt / "a")) == ["b.npy", "c"]
        assert os.listdir(mnt / "a" / "c") == ["d.npy"]
        # scandir file types agree with stat.
        kinds = {e.name: e.is_dir() for e in os.scandir(mnt)}
        assert kinds == {"a": True, "blob.bin": False, "notes.txt": False, "top.npy": False}
        walked = sorted(os.path.relpath(os.path.join(r, f), mnt)
                        for r, _, fs in os.walk(mnt) for f in fs)
        assert walked == ["a/b.npy", "a/c/d.npy", "blob.bin", "notes.txt", "top.npy"]
    guarded(body, timeout=60)


def test_tree_contents(tree_npz, mount):
    mnt = mount(tree_npz)

    def body():
        for rel, arr in (("top.npy", TOP), ("a/b.npy", B), ("a/c/d.npy", D)):
            assert read_all(mnt / rel) == npy_bytes(arr)
            m = load(mnt / rel)
            assert_same_array(m, arr)
            del m
        assert read_all(mnt / "notes.txt") == NOTES
        assert os.stat(mnt / "notes.txt").st_size == len(NOTES)
        assert read_all(mnt / "blob.bin") == BLOB
        assert os.stat(mnt / "blob.bin").st_size == len(BLOB)
    in_child(body, timeout=60)


def test_file_attributes(tree_npz, mount):
    mnt = mount(tree_npz)

    def body():
        for rel in ("top.npy", "a/b.npy", "a/c/d.npy", "notes.txt", "blob.bin"):
            st = os.stat(mnt / rel)
            assert is_shown_like(st, tree_npz), (rel, oct(st.st_mode))
            assert st.st_nlink == 1, rel
            assert st.st_uid == os.getuid() and st.st_gid == os.getgid(), rel
            assert int(st.st_mtime) == MTIME, (rel, st.st_mtime)
            # lstat agrees (no symlinks), and fstat on an open fd too.
            assert os.lstat(mnt / rel).st_mode == st.st_mode
            with open(mnt / rel, "rb") as f:
                fst = os.fstat(f.fileno())
                assert fst.st_size == st.st_size and fst.st_mode == st.st_mode
    guarded(body, timeout=60)


def test_directory_attributes(tree_npz, mount):
    mnt = mount(tree_npz)

    def body():
        for rel in (".", "a", "a/c"):
            st = os.stat(mnt / rel)
            assert is_shown_like(st, tree_npz), (rel, oct(st.st_mode))
            assert st.st_nlink >= 2, rel
            assert st.st_uid == os.getuid() and st.st_gid == os.getgid(), rel
    guarded(body, timeout=60)


def test_directory_mtime(tree_npz, mount):
    """Directories carry the archive's mtime too (not 1980, not 'now')."""
    mnt = mount(tree_npz)

    def body():
        for rel in (".", "a", "a/c"):
            assert int(os.stat(mnt / rel).st_mtime) == MTIME, rel
    guarded(body, timeout=60)


# --- zipfile at every deflate level, stored, plus an archive comment --------

LEVEL_ARR = {lvl: (np.sin(np.arange(50_000) / (lvl + 3.0)) * 1000).astype(np.float32)
             for lvl in range(10)}


@pytest.fixture(scope="module")
def levels_mount(npyfs_bin, tmp_path_factory):
    from conftest import Mounter
    d = tmp_path_factory.mktemp("levels")
    p = d / "levels.npz"
    with zipfile.ZipFile(p, "w") as zf:
        for lvl, arr in LEVEL_ARR.items():
            zf.writestr(f"deflate{lvl}.npy", npy_bytes(arr),
                        compress_type=zipfile.ZIP_DEFLATED, compresslevel=lvl)
        zf.writestr("stored.npy", npy_bytes(LEVEL_ARR[0]), compress_type=zipfile.ZIP_STORED)
        zf.comment = b"archive comment: the EOCD is not the last 22 bytes"
    m = Mounter(npyfs_bin, d / "mounts", watchdog=None)
    try:
        yield m(p)
    finally:
        problems = m.teardown_all()
        if problems:
            pytest.fail("\n".join(problems))


@pytest.mark.parametrize("member", [f"deflate{i}" for i in range(10)] + ["stored"])
def test_zipfile_levels(member, levels_mount):
    arr = LEVEL_ARR[0] if member == "stored" else LEVEL_ARR[int(member[-1])]
    p = levels_mount / f"{member}.npy"

    def body():
        assert os.stat(p).st_size == len(npy_bytes(arr))
        assert read_all(p) == npy_bytes(arr)
        m = load(p)
        assert_same_array(m, arr)
        del m
    in_child(body, timeout=60)


# --- Info-ZIP zip ----------------------------------------------------------

ZIP_ARRS = {"x": np.arange(100_000, dtype="<u2").reshape(1000, 100),
            "y": np.linspace(0, 1, 33_333),
            "z": np.array(["ab", "cd"], dtype="S2")}


def _write_npys(d):
    for k, v in ZIP_ARRS.items():
        (d / f"{k}.npy").write_bytes(npy_bytes(v))


@pytest.mark.parametrize("how", ["zip0", "zip9", "zip_to_pipe", "zip_fz"])
def test_infozip(how, tmp_path, mount):
    d = tmp_path / "in"
    d.mkdir()
    _write_npys(d)
    out = tmp_path / "iz.npz"
    files = [f"{k}.npy" for k in ZIP_ARRS]
    if how == "zip_to_pipe":
        # zip writes to stdout (a pipe: unseekable -> data descriptors).
        with open(out, "wb") as f:
            zp = subprocess.Popen(["zip", "-q", "-9", "-", *files], cwd=d,
                                  stdout=subprocess.PIPE)
            cat = subprocess.run(["cat"], stdin=zp.stdout, stdout=f, timeout=60)
            zp.stdout.close()
            assert zp.wait(timeout=60) == 0 and cat.returncode == 0
    else:
        flag = {"zip0": ["-0"], "zip9": ["-9"], "zip_fz": ["-fz", "-6"]}[how]
        r = run(["zip", "-q", *flag, out, *files], cwd=d)
        assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(files)
        if how == "zip_to_pipe":
            assert all(i.flag_bits & 0x08 for i in zf.infolist())
    mnt = mount(out)

    def body():
        assert sorted(os.listdir(mnt)) == sorted(files)
        for k, v in ZIP_ARRS.items():
            assert read_all(mnt / f"{k}.npy") == npy_bytes(v)
            m = load(mnt / f"{k}.npy")
            assert_same_array(m, v)
            del m
    in_child(body, timeout=60)


# --- np.savez into an unseekable pipe --------------------------------------

@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_savez_to_pipe(compressed, tmp_path, mount):
    out = tmp_path / "piped.npz"
    with open(out, "wb") as f:
        cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=f)
        try:
            assert not cat.stdin.seekable()
            (np.savez_compressed if compressed else np.savez)(cat.stdin, **ZIP_ARRS)
        finally:
            cat.stdin.close()
            assert cat.wait(timeout=60) == 0
    with zipfile.ZipFile(out) as zf:  # self-check: descriptors were used
        assert all(i.flag_bits & 0x08 for i in zf.infolist())
        raw = out.read_bytes()
        assert raw.count(b"PK\x07\x08") == len(ZIP_ARRS)
    mnt = mount(out)

    def body():
        assert sorted(os.listdir(mnt)) == sorted(f"{k}.npy" for k in ZIP_ARRS)
        for k, v in ZIP_ARRS.items():
            p = mnt / f"{k}.npy"
            assert os.stat(p).st_size == len(npy_bytes(v))
            assert read_all(p) == npy_bytes(v)
            m = load(p)
            assert_same_array(m, v)
            del m
    in_child(body, timeout=60)


# --- more than 65535 members: zip64 EOCD ------------------------------------

def test_zip64_many_members(tmp_path, mount):
    n = 70_000
    p = tmp_path / "many.npz"
    template = npy_bytes(np.array([0], dtype="<i8"))
    hdr = template[:-8]
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"m{i}.npy", hdr + np.int64(i).tobytes())
    raw = p.read_bytes()
    assert b"PK\x06\x06" in raw[-200:] and b"PK\x06\x07" in raw[-200:]  # self-check
    del raw
    mnt = mount(p)

    def body():
        names = os.listdir(mnt)
        assert len(names) == n
        assert set(names) == {f"m{i}.npy" for i in range(n)}
        for i in [0, 1, 65534, 65535, 65536, n - 1] + list(range(100, n, 6997)):
            q = mnt / f"m{i}.npy"
            assert read_all(q) == hdr + np.int64(i).tobytes(), i
            m = load(q)
            assert m.shape == (1,) and m[0] == i
            del m
    in_child(body, timeout=180)


def test_stat_of_every_listed_entry(tree_npz, mount):
    """readdir and lookup agree: every listed name stats with the right type."""
    mnt = mount(tree_npz)

    def body():
        for root, dirs, files in os.walk(mnt):
            for n in dirs:
                assert stat.S_ISDIR(os.stat(os.path.join(root, n)).st_mode)
            for n in files:
                assert stat.S_ISREG(os.stat(os.path.join(root, n)).st_mode)
    guarded(body, timeout=60)


# --- names: spaces, non-ASCII (UTF-8 flag), explicit directory entries -------

def test_names_with_spaces_and_unicode(tmp_path, mount):
    arrs = {"with space": np.arange(3), "ünïcödé": np.arange(4.0),
            "日本/データ": np.ones(2)}
    p = tmp_path / "names.npz"
    np.savez(p, **arrs)
    with zipfile.ZipFile(p) as zf:  # self-check: zipfile set the UTF-8 flag
        assert zf.getinfo("ünïcödé.npy").flag_bits & 0x800
    mnt = mount(p)

    def body():
        assert sorted(os.listdir(mnt)) == sorted(["with space.npy", "ünïcödé.npy", "日本"])
        assert os.listdir(mnt / "日本") == ["データ.npy"]
        for k, v in arrs.items():
            assert read_all(mnt / f"{k}.npy") == npy_bytes(v), k
    guarded(body, timeout=60)


def test_infozip_recursive_with_directory_entries(tmp_path, mount):
    """`zip -r` stores explicit 'd/' and 'd/e/' entries next to the files:
    they must show as directories (not files, not duplicates)."""
    d = tmp_path / "in"
    (d / "d" / "e").mkdir(parents=True)
    (d / "d" / "one.npy").write_bytes(npy_bytes(B))
    (d / "d" / "e" / "two.npy").write_bytes(npy_bytes(D))
    (d / "top.npy").write_bytes(npy_bytes(TOP))
    out = tmp_path / "rec.npz"
    r = run(["zip", "-q", "-r", out, "d", "top.npy"], cwd=d)
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(out) as zf:  # self-check: directory entries present
        assert {"d/", "d/e/"} <= set(zf.namelist())
    mnt = mount(out)

    def body():
        assert sorted(os.listdir(mnt)) == ["d", "top.npy"]
        assert sorted(os.listdir(mnt / "d")) == ["e", "one.npy"]
        assert os.listdir(mnt / "d" / "e") == ["two.npy"]
        assert is_shown_like(os.stat(mnt / "d"), out)
        assert is_shown_like(os.stat(mnt / "d" / "e"), out)
        assert read_all(mnt / "d" / "one.npy") == npy_bytes(B)
        assert read_all(mnt / "d" / "e" / "two.npy") == npy_bytes(D)
        assert read_all(mnt / "top.npy") == npy_bytes(TOP)
    guarded(body, timeout=60)


# --- awkward archives --------------------------------------------------------

def test_empty_archive(tmp_path, mount):
    """np.savez() with no arrays writes the 22-byte EOCD alone: an empty root."""
    p = tmp_path / "empty.npz"
    np.savez(p)
    assert p.stat().st_size == 22 and p.read_bytes()[:4] == b"PK\x05\x06"  # self-check
    mnt = mount(p)
    assert guarded(os.listdir, mnt, timeout=30) == []
    assert is_shown_like(guarded(os.stat, mnt, timeout=30), p)


def test_duplicate_member_last_wins(tmp_path, mount):
    """zipfile only warns on duplicate names; np.load returns the last one, and
    so must the mount (docs/FORMATS.md section 2.5 "Member names" and section 5 "Edge cases")."""
    import warnings
    p = tmp_path / "dup.npz"
    first, last = np.arange(3), np.arange(7.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("d.npy", npy_bytes(first))
            zf.writestr("d.npy", npy_bytes(last), compress_type=zipfile.ZIP_DEFLATED)
    with np.load(p) as z:  # self-check: numpy's answer
        assert np.array_equal(z["d"], last)
    mnt = mount(p)
    assert guarded(os.listdir, mnt, timeout=30) == ["d.npy"]
    assert guarded(read_all, mnt / "d.npy", timeout=30) == npy_bytes(last)


def test_hostile_member_names(tmp_path, mount):
    """'..', absolute and empty path components: whatever npyfs does with them
    (skip or normalize), it never lists '.', '..' or '' as entries, every
    listed entry is a file or directory with the archive's mode, and the ordinary member
    next to them reads correctly."""
    p = tmp_path / "hostile.npz"
    np.savez(p, **{"../evil": np.arange(3), "/abs/x": np.arange(2), "a//b": np.arange(1),
                   "./c": np.arange(4), "ok": np.arange(5)})
    mnt = mount(p)

    def body():
        for root, dirs, files in os.walk(mnt):
            for n in dirs + files:
                assert n not in ("", ".", ".."), (root, n)
                assert "/" not in n
            for n in dirs:
                assert is_shown_like(os.stat(os.path.join(root, n)), p)
            for n in files:
                assert is_shown_like(os.stat(os.path.join(root, n)), p)
        assert "ok.npy" in os.listdir(mnt)
        assert read_all(mnt / "ok.npy") == npy_bytes(np.arange(5))
        # Nothing escaped next to the mount point.
        assert not (mnt.parent / "evil.npy").exists()
    guarded(body, timeout=60)


def test_names_that_reduce_to_nothing_or_a_dot_are_logged(tmp_path, mount):
    """Members named '.' and './' (nothing left once empty and '.' components
    are dropped; not directory entries) are skipped with a log line each,
    while '/' and '//' are directory entries of the root; 'a/./.' is
    the file 'a' (its trailing '.' components dropped), not an empty
    directory; a NUL in a skipped name is escaped in the log line."""
    p = tmp_path / "odd.npz"
    with zipfile.ZipFile(p, "w") as zf:
        for name in ("/", "//", ".", "./."):
            zf.writestr(name, b"gone")
        zf.writestr("a/./.", b"adot")
        zf.writestr("AAXAnul.npy", b"nul")
        zf.writestr("ok.npy", npy_bytes(np.arange(5)))
    raw = p.read_bytes().replace(b"AAXAnul.npy", b"AA\x00Anul.npy")
    p.write_bytes(raw)
    mnt = mount(p)
    assert sorted(guarded(os.listdir, mnt, timeout=30)) == ["a", "ok.npy"]
    assert guarded(read_all, mnt / "a", timeout=30) == b"adot"
    log = mount.mount_of(mnt).stderr()
    skipped = [ln for ln in log.splitlines() if "skipping member" in ln]
    assert len(skipped) == 3, log
    assert any("'AA\\x00Anul.npy'" in ln for ln in skipped), skipped


def _zip64_huge_member(path, data, usize=1 << 63):
    """A zip whose stored member a.npy claims, in its ZIP64 extra fields, an
    uncompressed size past INT64_MAX; b.npy beside it is ordinary."""
    import struct
    import zlib
    crc = zlib.crc32(data)
    name = b"a.npy"
    lx = struct.pack("<HHQQ", 1, 16, usize, len(data))
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF,
                        0xFFFFFFFF, len(name), len(lx)) + name + lx + data
    b_data = npy_bytes(np.arange(6))
    b_name = b"b.npy"
    b_off = len(local)
    b_local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, zlib.crc32(b_data),
                          len(b_data), len(b_data), len(b_name), 0) + b_name + b_data
    cx = struct.pack("<HHQQQ", 1, 24, usize, len(data), 0)
    cd = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF,
                     0xFFFFFFFF, len(name), len(cx), 0, 0, 0, 0o100644 << 16,
                     0xFFFFFFFF) + name + cx
    cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21,
                      zlib.crc32(b_data), len(b_data), len(b_data), len(b_name), 0, 0, 0, 0,
                      0o100644 << 16, b_off) + b_name
    body = local + b_local
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(cd), len(body), 0)
    path.write_bytes(body + cd + eocd)


def test_member_with_a_size_past_int64_max_is_unsupported(tmp_path, mount):
    """Listed (size 0: no off_t holds it), its open fails with EOPNOTSUPP and
    one log line names why; the member beside it reads."""
    p = tmp_path / "z64.npz"
    _zip64_huge_member(p, npy_bytes(np.arange(20)))
    mnt = mount(p)
    assert sorted(guarded(os.listdir, mnt, timeout=30)) == ["a.npy", "b.npy"]
    st = guarded(os.stat, mnt / "a.npy", timeout=30)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    with pytest.raises(OSError) as e:
        guarded(read_all, mnt / "a.npy", timeout=30)
    assert e.value.errno == errno.EOPNOTSUPP
    assert guarded(read_all, mnt / "b.npy", timeout=30) == npy_bytes(np.arange(6))
    log = mount.mount_of(mnt).stderr()
    assert "'a.npy' cannot be read: uncompressed size too large" in log, log
