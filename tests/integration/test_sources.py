"""Directory sources and several sources in one mount ("Datasets", sources).

- A mixed folder mounted as one source: X.npz becomes directory X.npz/ with
  its members (stored and deflate, nested), Y.npy.gz becomes Y.npy, a plain
  .npy and a text file pass through byte for byte, an empty directory stays,
  nested directories keep their real mtimes. Exact listings, modes and owners
  of the sources (an archive's for its members), every array compared with numpy reading the original (np.load with
  mmap_mode='r' through the mount, and os.pread at random offsets).
- Symlinks: one to a file inside the tree is shown as that file (an .npz link
  as an archive directory); one leading out of the tree, one to a directory,
  a dangling one and a FIFO are not shown.
- Name clashes: Y.npy.gz next to a real Y.npy (file or directory) is shown
  under its own name with its raw bytes; two command-line sources with the
  same name are a mount error naming both.
- Several sources: `a.npz b.npy.gz dir/` give MNT/a.npz/, MNT/b.npy, MNT/dir/.
- A damaged archive in a tree: the mount succeeds, its directory is listed,
  looking inside it (or stat-ing a broken .npy.gz) gives EIO and the daemon
  logs a line naming it; the other archives read fine.
- Lazy open: a tree of 2,000 archives mounts, and listing every real
  directory (and stat-ing every archive directory) opens none of them: the
  daemon holds no archive fd and archives_opened is 0. One np.load then opens
  exactly one.
- 10,000 archives (100 dirs x 100 hard links) mount, list and read (the time
  is printed, not asserted).
- Lazily opened archives get their background indexer (all indexes saved),
  16 threads racing into one unopened archive and one .npy.gz open each once,
  and a passthrough file changed after the walk reads as EIO.
"""

import errno
import gzip
import json
import os
import random
import shutil
import stat
import time
import zipfile

import numpy as np
import pytest

from conftest import (assert_same_array, cleanup_background, guarded, in_child,
                      is_shown_like, is_synthesized_root, load, mounted_fuse, npy_bytes,
                      read_all, run)

A = np.arange(1000, dtype="<f8").reshape(10, 100)
B = np.array([[1, 2], [3, 4]], dtype=">i4", order="F")
C = (np.sin(np.arange(300_000) / 7.0) * 1e4).astype("<i4")  # > one chunk, deflate
D = np.array(["x", "yz"], dtype="<U2")
G = np.linspace(0, 1, 50_000).astype("<f4")
H = np.array(5, dtype=np.uint16)
P = np.arange(24, dtype="<i2").reshape(2, 3, 4)
X = np.arange(77, dtype="<u8")
K = np.arange(5, dtype="<i8")


def _gz(path, arr):
    path.write_bytes(gzip.compress(npy_bytes(arr)))


def _dir_entries(path):
    return sorted(os.listdir(path))


@pytest.fixture
def mixed(tmp_path):
    """A mixed folder; returns (root, outside file)."""
    root = tmp_path / "data"
    (root / "empty").mkdir(parents=True)
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "m.npy").mkdir()
    np.savez(root / "top.npz", a=A, b=B)                       # stored
    np.savez_compressed(root / "comp.npz", c=C, **{"sub/d": D})  # deflate, nested member
    _gz(root / "g.npy.gz", G)
    np.save(root / "plain.npy", P)
    (root / "notes.txt").write_bytes(b"hello\nworld\n")
    np.savez_compressed(root / "nested" / "deeper" / "inner.npz", x=X)
    _gz(root / "nested" / "h.npy.gz", H)
    # clashes: a real k.npy next to k.npy.gz, a real directory m.npy next to m.npy.gz
    np.save(root / "k.npy", K)
    _gz(root / "k.npy.gz", K * 2)
    _gz(root / "m.npy.gz", K * 3)
    # symlinks and special files
    outside = tmp_path / "outside.npy"
    np.save(outside, P)
    os.symlink("plain.npy", root / "link_in.npy")
    os.symlink("nested/deeper/inner.npz", root / "link_npz.npz")
    os.symlink(str(outside), root / "link_out.npy")
    os.symlink("../outside.npy", root / "nested" / "link_up.npy")
    os.symlink("nested", root / "link_dir")
    os.symlink("no_such_file", root / "dangling.npy")
    os.mkfifo(root / "fifo")
    # fixed mtimes for the real directories (after creating their content)
    for i, d in enumerate(["nested/deeper", "nested", "empty", "m.npy", "."]):
        os.utime(root / d, ns=(1_600_000_000_000_000_000 + i * 10**9,) * 2)
    return root, outside


ROOT_NAMES = ["comp.npz", "empty", "g.npy", "k.npy", "k.npy.gz", "link_in.npy",
              "link_npz.npz", "m.npy", "m.npy.gz", "nested", "notes.txt", "plain.npy",
              "top.npz"]


def _check_pread(path, want, rng, n=20):
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(n):
            off = rng.randrange(0, len(want))
            ln = rng.randrange(1, 70_000)
            assert os.pread(fd, ln, off) == want[off:off + ln], (path, off, ln)
    finally:
        os.close(fd)


def test_tree_listing_and_modes(mixed, mount):
    root, _ = mixed
    mnt = mount(root)

    def body():
        assert _dir_entries(mnt) == ROOT_NAMES
        assert _dir_entries(mnt / "empty") == []
        assert _dir_entries(mnt / "nested") == ["deeper", "h.npy"]   # link_up leads out
        assert _dir_entries(mnt / "nested" / "deeper") == ["inner.npz"]
        assert _dir_entries(mnt / "top.npz") == ["a.npy", "b.npy"]
        assert _dir_entries(mnt / "comp.npz") == ["c.npy", "sub"]
        assert _dir_entries(mnt / "comp.npz" / "sub") == ["d.npy"]
        assert _dir_entries(mnt / "nested" / "deeper" / "inner.npz") == ["x.npy"]
        assert _dir_entries(mnt / "link_npz.npz") == ["x.npy"]
        assert _dir_entries(mnt / "m.npy") == []
        dirs = [".", "empty", "nested", "nested/deeper", "m.npy", "top.npz", "comp.npz",
                "comp.npz/sub", "nested/deeper/inner.npz", "link_npz.npz"]
        files = ["g.npy", "k.npy", "k.npy.gz", "m.npy.gz", "link_in.npy", "notes.txt",
                 "plain.npy", "top.npz/a.npy", "top.npz/b.npy", "comp.npz/c.npy",
                 "comp.npz/sub/d.npy", "nested/h.npy", "nested/deeper/inner.npz/x.npy"]
        def source_of(rel):  # an archive's entries: the archive
            parts = rel.split("/")
            for i, p in enumerate(parts):
                if p.endswith(".npz"):
                    return root.joinpath(*parts[:i + 1])
            if not os.path.lexists(root / rel):
                return root / (rel + ".gz")
            return root / rel
        for d in dirs:
            st = os.stat(mnt / d)
            assert stat.S_ISDIR(st.st_mode), d
            assert is_shown_like(st, source_of(d)), (d, oct(st.st_mode))
        for f in files:
            st = os.lstat(mnt / f)
            assert stat.S_ISREG(st.st_mode), f
            assert is_shown_like(st, source_of(f)), (f, oct(st.st_mode))
        # real directories keep their mtimes; archives carry their file's
        for d in ["nested/deeper", "nested", "empty", "m.npy", "."]:
            assert os.stat(mnt / d).st_mtime_ns == os.stat(root / d).st_mtime_ns, d
        assert int(os.stat(mnt / "top.npz").st_mtime) == int(os.stat(root / "top.npz").st_mtime)
        assert int(os.stat(mnt / "top.npz/a.npy").st_mtime) == \
            int(os.stat(root / "top.npz").st_mtime)
        for gone in ["link_out.npy", "link_dir", "dangling.npy", "fifo", "g.npy.gz",
                     "nested/link_up.npy", "nested/h.npy.gz"]:
            assert not os.path.lexists(mnt / gone), gone
        with pytest.raises(OSError) as e:
            open(mnt / "notes.txt", "r+b")
        assert e.value.errno == errno.EROFS
    guarded(body, timeout=120)


def test_tree_content(mixed, mount):
    root, _ = mixed
    mnt = mount(root)

    def body():
        rng = random.Random(5)
        with np.load(root / "top.npz") as z:
            want_top = {k: z[k] for k in z.files}
        with np.load(root / "comp.npz") as z:
            want_comp = {k: z[k] for k in z.files}
        cases = [("top.npz/a.npy", want_top["a"]), ("top.npz/b.npy", want_top["b"]),
                 ("comp.npz/c.npy", want_comp["c"]), ("comp.npz/sub/d.npy", want_comp["sub/d"]),
                 ("g.npy", G), ("nested/h.npy", H), ("plain.npy", P), ("link_in.npy", P),
                 ("k.npy", K), ("nested/deeper/inner.npz/x.npy", X),
                 ("link_npz.npz/x.npy", X)]
        for rel, want in cases:
            got = load(mnt / rel)
            assert_same_array(got, want)
            del got
            assert read_all(mnt / rel) == npy_bytes(want), rel
            _check_pread(mnt / rel, npy_bytes(want), rng)
        # passthrough: bytes unchanged, plain .npy also memory-maps
        assert read_all(mnt / "notes.txt") == b"hello\nworld\n"
        assert read_all(mnt / "plain.npy") == (root / "plain.npy").read_bytes()
        m = np.load(mnt / "plain.npy", mmap_mode="r")
        assert_same_array(m, np.load(root / "plain.npy", mmap_mode="r"))
        del m
        # clash rule: the .npy.gz keeps its own name and its raw bytes
        assert read_all(mnt / "k.npy.gz") == (root / "k.npy.gz").read_bytes()
        assert read_all(mnt / "m.npy.gz") == (root / "m.npy.gz").read_bytes()
        assert gzip.decompress(read_all(mnt / "k.npy.gz")) == npy_bytes(K * 2)
        assert os.stat(mnt / "notes.txt").st_size == 12
        assert os.stat(mnt / "g.npy").st_size == len(npy_bytes(G))
    in_child(body, timeout=120)


def test_several_sources(tmp_path, mount):
    a = tmp_path / "a.npz"
    np.savez_compressed(a, u=C, v=B)
    b = tmp_path / "b.npy.gz"
    _gz(b, G)
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    np.savez(d / "sub" / "e.npz", w=A)
    (d / "t.txt").write_bytes(b"t")
    mnt = mount([a, b, d])

    def body():
        assert _dir_entries(mnt) == ["a.npz", "b.npy", "dir"]
        assert _dir_entries(mnt / "a.npz") == ["u.npy", "v.npy"]
        assert _dir_entries(mnt / "dir") == ["sub", "t.txt"]
        assert _dir_entries(mnt / "dir" / "sub" / "e.npz") == ["w.npy"]
        assert_same_array(load(mnt / "a.npz" / "u.npy"), C)
        assert_same_array(load(mnt / "a.npz" / "v.npy"), B)
        assert_same_array(load(mnt / "b.npy"), G)
        assert_same_array(load(mnt / "dir" / "sub" / "e.npz" / "w.npy"), A)
        assert read_all(mnt / "dir" / "t.txt") == b"t"
        assert is_synthesized_root(os.stat(mnt))
        assert is_shown_like(os.stat(mnt / "a.npz"), a)
        assert is_shown_like(os.stat(mnt / "b.npy"), b)
        assert is_shown_like(os.stat(mnt / "dir"), d)
        assert os.stat(mnt / "dir").st_mtime_ns == os.stat(d).st_mtime_ns
    in_child(body, timeout=120)


def test_single_directory_of_one_archive(tmp_path, mount):
    """The example of the issue: MNT/2024-05/run17.npz/u.npy."""
    d = tmp_path / "runs"
    (d / "2024-05").mkdir(parents=True)
    np.savez_compressed(d / "2024-05" / "run17.npz", u=C)
    mnt = mount(d)

    def body():
        m = np.load(mnt / "2024-05" / "run17.npz" / "u.npy", mmap_mode="r")
        assert_same_array(m, C)
        del m
    in_child(body, timeout=60)


def _expect_error(npyfs_bin, args, mnt, names):
    r = run([npyfs_bin, "mount", *args, mnt], timeout=30)
    try:
        assert r.returncode == 1
        err = r.stderr.decode(errors="replace").strip()
        assert len(err.splitlines()) == 1, err
        for n in names:
            assert str(n) in err, err
        assert not mounted_fuse(mnt)
    finally:
        cleanup_background(mnt)
    return err


def test_source_name_clash_is_an_error(npyfs_bin, tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    np.savez(tmp_path / "d1" / "x.npz", a=A)
    np.savez(tmp_path / "d2" / "x.npz", a=B)
    _gz(tmp_path / "d1" / "y.npy.gz", A)
    np.savez(tmp_path / "d2" / "y.npy", a=A)   # a zip called y.npy: its name is y.npy
    os.rename(tmp_path / "d2" / "y.npy.npz", tmp_path / "d2" / "y.npy")
    mnt = tmp_path / "m"
    mnt.mkdir()
    _expect_error(npyfs_bin, [tmp_path / "d1" / "x.npz", tmp_path / "d2" / "x.npz"], mnt,
                  ["d1/x.npz", "d2/x.npz"])
    # a gzip source shows as its member name (y.npy), which clashes too
    _expect_error(npyfs_bin, [tmp_path / "d1" / "y.npy.gz", tmp_path / "d2" / "y.npy"], mnt,
                  ["d1/y.npy.gz", "d2/y.npy"])
    # two directories with the same basename
    (tmp_path / "d1" / "same").mkdir()
    (tmp_path / "d2" / "same").mkdir()
    _expect_error(npyfs_bin, [tmp_path / "d1" / "same", tmp_path / "d2" / "same"], mnt,
                  ["d1/same", "d2/same"])


def test_bad_source_among_several(npyfs_bin, tmp_path):
    np.savez(tmp_path / "ok.npz", a=A)
    (tmp_path / "text.txt").write_bytes(b"not an archive")
    mnt = tmp_path / "m"
    mnt.mkdir()
    _expect_error(npyfs_bin, [tmp_path / "ok.npz", tmp_path / "text.txt"], mnt, ["text.txt"])
    _expect_error(npyfs_bin, [tmp_path / "ok.npz", tmp_path / "gone"], mnt, ["gone"])


def test_damaged_archive_in_tree(tmp_path, mount):
    d = tmp_path / "tree"
    d.mkdir()
    np.savez_compressed(d / "good.npz", a=C)
    raw = (tmp_path / "x.npz")
    np.savez(raw, a=A)
    (d / "bad.npz").write_bytes(raw.read_bytes()[:-30])     # no end of central directory
    (d / "junk.npz").write_bytes(b"this is not a zip at all")
    (d / "bad.npy.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    _gz(d / "good.npy.gz", G)
    mnt = mount(d)

    def body():
        assert _dir_entries(mnt) == ["bad.npy", "bad.npz", "good.npy", "good.npz", "junk.npz"]
        for rel in ["bad.npz", "junk.npz"]:
            assert is_shown_like(os.stat(mnt / rel), d / rel)
            with pytest.raises(OSError) as e:
                os.listdir(mnt / rel)
            assert e.value.errno == errno.EIO, rel
            with pytest.raises(OSError) as e:
                os.stat(mnt / rel / "a.npy")
            assert e.value.errno == errno.EIO, rel
        with pytest.raises(OSError) as e:
            os.stat(mnt / "bad.npy")
        assert e.value.errno == errno.EIO
        assert_same_array(load(mnt / "good.npz" / "a.npy"), C)
        assert_same_array(load(mnt / "good.npy"), G)
        # still EIO the second time (the failure is remembered)
        with pytest.raises(OSError) as e:
            os.listdir(mnt / "bad.npz")
        assert e.value.errno == errno.EIO
    in_child(body, timeout=60)
    err = mount.mount_of(mnt).stderr()
    for name in ["bad.npz", "junk.npz", "bad.npy.gz"]:
        lines = [ln for ln in err.splitlines() if name in ln and "cannot open" in ln]
        assert len(lines) == 1, (name, err)


def test_swapped_directory_does_not_lead_out(tmp_path, mount):
    """Files of a walked tree are opened beneath the source directory: a
    directory swapped for a symlink to the outside after the walk (before the
    first lookup) reads as EIO, never as the outside file's bytes."""
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    np.savez_compressed(d / "sub" / "r.npz", a=C)
    np.save(d / "sub" / "p.npy", A)
    _gz(d / "sub" / "g.npy.gz", G)
    (d / "inside").mkdir()
    np.save(d / "inside" / "t.npy", X)
    os.symlink(d / "inside" / "t.npy", d / "link.npy")     # inside: followed
    out = tmp_path / "outside"
    out.mkdir()
    np.savez_compressed(out / "r.npz", a=C + 99)
    np.save(out / "p.npy", A + 99)
    _gz(out / "g.npy.gz", G + 99)
    mnt = mount(d, "index=lazy")
    (d / "sub").rename(tmp_path / "sub.old")
    os.symlink(out, d / "sub")

    def body():
        for rel in ("sub/r.npz/a.npy", "sub/g.npy", "sub/p.npy"):
            with pytest.raises(OSError) as e:
                read_all(mnt / rel)
            assert e.value.errno == errno.EIO, rel
        assert_same_array(load(mnt / "link.npy"), X)
    in_child(body, timeout=60)
    err = mount.mount_of(mnt).stderr()
    assert "cannot open" in err and "leads out of the directory source" in err, err


def _archive_fds(pid, under):
    """Open fds of pid that name files under the directory `under`."""
    n = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith(str(under) + "/"):
            n += 1
    return n


def _archives_opened(mnt):
    """archives_opened from the root's stats xattr, or None if not there."""
    try:
        raw = os.getxattr(mnt, "user.npyfs.stats.json")
    except OSError:
        return None
    return json.loads(raw)["archives_opened"]


def _make_tree(base, one, ndirs, per_dir, link=True):
    for i in range(ndirs):
        d = base / f"d{i:03d}"
        d.mkdir(parents=True)
        for j in range(per_dir):
            (os.link if link else shutil.copyfile)(one, d / f"r{j:03d}.npz")


def test_lazy_open(tmp_path, mount):
    one = tmp_path / "one.npz"
    np.savez_compressed(one, u=X, v=K)
    base = tmp_path / "many"
    _make_tree(base, one, 20, 100, link=False)
    mnt = mount(base)
    pid = mount.mount_of(mnt).proc.pid

    def walk():
        dirs = _dir_entries(mnt)
        assert len(dirs) == 20
        count = 0
        for d in dirs:
            names = _dir_entries(mnt / d)
            assert len(names) == 100
            for n in names:
                st = os.stat(mnt / d / n)          # lookup + getattr: no open
                assert stat.S_ISDIR(st.st_mode)
                count += 1
        return count
    assert guarded(walk, timeout=120) == 2000
    assert _archive_fds(pid, base) == 0
    assert _archives_opened(mnt) in (None, 0)

    def one_load():
        assert_same_array(load(mnt / "d007" / "r042.npz" / "u.npy"), X)
        assert_same_array(load(mnt / "d007" / "r042.npz" / "v.npy"), K)
    in_child(one_load, timeout=60)
    assert _archive_fds(pid, base) == 1
    assert _archives_opened(mnt) in (None, 1)


def test_ten_thousand_archives(tmp_path, mount):
    one = tmp_path / "one.npz"
    np.savez(one, u=X)
    base = tmp_path / "big"
    t0 = time.monotonic()
    _make_tree(base, one, 100, 100)
    t1 = time.monotonic()
    mnt = mount(base)
    t2 = time.monotonic()
    print(f"\n10,000 archives: tree made in {t1 - t0:.2f} s, mounted in {t2 - t1:.2f} s")

    def body():
        assert len(os.listdir(mnt)) == 100
        assert len(os.listdir(mnt / "d099")) == 100
        assert os.listdir(mnt / "d050" / "r050.npz") == ["u.npy"]
        assert read_all(mnt / "d000" / "r000.npz" / "u.npy") == npy_bytes(X)
    guarded(body, timeout=120)


def test_background_index_in_tree(tmp_path, mount):
    """Archives opened lazily get their background indexer too (their passes
    run one at a time), and unmount joins them all."""
    d = tmp_path / "tree"
    (d / "s").mkdir(parents=True)
    for i in range(4):
        np.savez_compressed(d / "s" / f"r{i}.npz", c=C + i)
    idx = tmp_path / "idx"
    mnt = mount(d, "spacing=64K", f"index_dir={idx}", "index=background")

    def body():
        for i in range(4):
            assert os.listdir(mnt / "s" / f"r{i}.npz") == ["c.npy"]   # opens it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if idx.is_dir() and len(list(idx.glob("*.dfx"))) == 4:
                break
            time.sleep(0.2)
        assert len(list(idx.glob("*.dfx"))) == 4
        for i in range(4):
            assert_same_array(load(mnt / "s" / f"r{i}.npz" / "c.npy"), C + i)
    in_child(body, timeout=120)


def test_concurrent_first_lookups_open_once(tmp_path, mount):
    """Many threads looking into one unopened archive (and one .npy.gz) at
    once: each is opened exactly once, and every thread sees it."""
    import threading
    d = tmp_path / "tree"
    d.mkdir()
    np.savez_compressed(d / "one.npz", **{f"m{i}": X + i for i in range(8)})
    _gz(d / "g.npy.gz", G)
    mnt = mount(d)
    pid = mount.mount_of(mnt).proc.pid
    errors = []
    barrier = threading.Barrier(16)

    def worker(i):
        try:
            barrier.wait()
            assert os.stat(mnt / "one.npz" / f"m{i % 8}.npy").st_size == len(npy_bytes(X))
            assert os.stat(mnt / "g.npy").st_size == len(npy_bytes(G))
        except BaseException as e:  # reported below
            errors.append(e)

    def body():
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    guarded(body, timeout=60)
    assert not errors, errors
    assert _archive_fds(pid, d) == 2
    assert _archives_opened(mnt) in (None, 2)


def test_passthrough_file_changed_after_mount(tmp_path, mount):
    """A passthrough file shows its size from the walk; if it changes before
    (or after) it is opened, its reads fail with EIO rather than mislead."""
    d = tmp_path / "tree"
    d.mkdir()
    (d / "before.txt").write_bytes(b"a" * 100)
    (d / "after.txt").write_bytes(b"b" * (8 << 20))   # past the kernel's readahead
    mnt = mount(d)

    def body():
        assert os.stat(mnt / "before.txt").st_size == 100
        with open(d / "before.txt", "ab") as f:
            f.write(b"more")
        with open(mnt / "after.txt", "rb") as f:
            assert f.read(10) == b"b" * 10
            os.truncate(d / "after.txt", 50)
            with pytest.raises(OSError) as e:
                os.pread(f.fileno(), 10, 7 << 20)   # not in the page cache yet
            assert e.value.errno == errno.EIO
        fd = os.open(mnt / "before.txt", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                os.pread(fd, 10, 0)
            assert e.value.errno == errno.EIO
        finally:
            os.close(fd)
    guarded(body, timeout=60)


def test_index_a_directory(npyfs_bin, tmp_path, mount):
    """`npyfs index DIR` indexes every archive below DIR (one line for each
    that fails, exit 1); a later mount of DIR loads those indexes: members
    are fully indexed and checked on first open, before any read."""
    d = tmp_path / "runs"
    (d / "2024-05").mkdir(parents=True)
    np.savez_compressed(d / "2024-05" / "run1.npz", c=C, a=A)
    _gz(d / "2024-05" / "run2.npy.gz", C + 1)
    np.save(d / "plain.npy", C + 2)                       # not an archive: left alone
    (d / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    os.symlink(d / "2024-05" / "run1.npz", d / "link.npz")  # not followed
    idx = tmp_path / "idx"
    opts = ["-o", f"index_dir={idx},spacing=64K"]
    r = run([npyfs_bin, "index", *opts, d], timeout=120)
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1
    assert len(err) == 1 and "bad.npz" in err[0], err
    saved = sorted(p.name for p in idx.glob("*.dfx"))
    assert len(saved) == 2, saved                          # run1's c.npy, run2's npy
    (d / "bad.npz").unlink()
    r = run([npyfs_bin, "index", *opts, d], timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in idx.glob("*.dfx")) == saved  # valid files reused
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run([npyfs_bin, "index", *opts, empty], timeout=60)
    assert r.returncode == 0 and b"no .npz or .npy.gz" in r.stderr

    mnt = mount(d, "spacing=64K", f"index_dir={idx}", "index=lazy", "verify=strict")

    def body():
        for rel in ("2024-05/run1.npz/c.npy", "2024-05/run2.npy"):
            fd = os.open(mnt / rel, os.O_RDONLY)              # loads its saved index
            os.close(fd)
        stats = json.loads(os.getxattr(mnt, "user.npyfs.stats.json"))
        members = {(a["path"].rsplit("/", 1)[-1], m["name"]): m
                   for a in stats["archives"] for m in a["members"]}
        for key in (("run1.npz", "c.npy"), ("run2.npy.gz", "run2.npy")):
            m = members[key]
            assert m["index_complete"] and m["crc_checked"], m
        assert stats["bytes_decompressed"] == 0   # nothing decoded to get there
        assert_same_array(load(mnt / "2024-05" / "run1.npz" / "c.npy"), C)
        assert_same_array(load(mnt / "2024-05" / "run2.npy"), C + 1)
    in_child(body, timeout=120)
