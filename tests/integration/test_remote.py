"""Remote sources (issue 12): archives behind http://, https:// and s3:// URLs
behave like local ones, with real servers started by the tests on 127.0.0.1
(nginx for HTTP and HTTPS, s3rver for the S3 API; remote_servers.py).

What is shown here, each compared with numpy reading the original file:
- an .npz over HTTP: exact sizes, np.load(mmap_mode='r') and 'c', pread of
  random ranges, xattrs equal to a local mount's, ls --json equal to the
  local file's listing, stats with per-source counters;
- a .npy.gz over HTTPS with -o cacert (and refused without it);
- an s3:// object, and an s3:// prefix shown as a tree (keys split at '/',
  keys that are not archives left out, archives opened on first lookup);
- several sources mixing local files, HTTP and S3 in one mount;
- round trips: a mount of a zip costs its end (one request) and the look for
  URL.npyfsidx; with the index already local, one request; a .npy.gz its
  first bytes and its end in parallel;
- a cold random 4 KiB read with an index: one round trip, and the bytes
  fetched stay near the compressed span between the access point and the
  end of the chunk the read needs (the span is computed here from the index
  file and zlib, independently of npyfs);
- a sequential pass fetches the archive about once, in few requests.

Failure handling, secrets and shared indexes are in test_remote_faults.py
and test_remote_index.py.
"""

import bisect
import errno
import glob
import gzip
import json
import os
import random
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import guarded, in_child, load, npy_bytes, read_file, run
from remote_servers import clean_env, counting

BLOCK = 16 << 10  # the default -o block=


# ------------------------------------------------------------------ data ---

def _arrays():
    rng = np.random.default_rng(12)
    a = np.cumsum(rng.integers(-3, 4, 2_500_000)).astype(np.float64)  # 20 MB, compressible
    b = np.asfortranarray(rng.integers(-1000, 1000, (300, 200)).astype(np.int32))
    c = np.zeros(5000, dtype=[("x", "<f4"), ("y", "<i2"), ("name", "S6")])
    c["x"] = rng.random(5000)
    c["y"] = np.arange(5000)
    c["name"] = b"abc"
    return {"a": a, "b": b, "c": c}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The archives every test reads: run.npz (deflate), stored.npz (stored
    members), g.npy.gz, and the arrays they hold."""
    d = tmp_path_factory.mktemp("remote_data")
    arrs = _arrays()
    np.savez_compressed(d / "run.npz", **arrs)
    np.savez(d / "stored.npz", s=arrs["b"], t=np.arange(100_000, dtype=np.int64))
    g = (np.arange(400_000, dtype=np.float32) * 0.5).reshape(800, 500)
    with gzip.open(d / "g.npy.gz", "wb", compresslevel=6) as f:
        np.save(f, g)
    return {"dir": d, "arrays": arrs, "g": g,
            "stored": {"s": arrs["b"], "t": np.arange(100_000, dtype=np.int64)}}


@pytest.fixture(scope="module")
def web(remote_module, data):
    """One nginx (HTTP and HTTPS) serving the data files, for the tests that
    only read."""
    ng = remote_module.nginx()
    for name in ("run.npz", "stored.npz", "g.npy.gz"):
        ng.put(name, data["dir"] / name)
    return ng


@pytest.fixture(scope="module")
def s3(remote_module, data):
    """One s3rver with the data under prefix runs/ (and keys around it)."""
    s = remote_module.s3rver()
    d = data["dir"]
    s.put("runs/run.npz", d / "run.npz")
    s.put("runs/2024/g.npy.gz", d / "g.npy.gz")
    s.put("runs/2024/odd name+1%é.npz", d / "stored.npz")
    s.put("runs/notes.txt", b"not an archive")
    s.put("runs/plain.npy", npy_bytes(np.arange(3)))
    s.put("other/run.npz", d / "run.npz")
    return s


def s3_env(s3):
    return s3.env()


# ------------------------------------------------------------ checking ---

def check_array(path, want, pread_checks=8, seed=1):
    """The file at path is exactly np.save's bytes of want: its size, mmap
    'r' and 'c' through np.load (in a child: a failed page-in is SIGBUS),
    and preads of random ranges."""
    raw = npy_bytes(want)
    assert os.stat(path).st_size == len(raw)

    def maps():
        r = load(path, "r")
        c = load(path, "c")
        ok = (r.dtype == want.dtype and r.shape == want.shape and
              np.asarray(r).tobytes(order="A") == want.tobytes(order="A") and
              np.asarray(c).tobytes(order="A") == want.tobytes(order="A") and
              r.flags.f_contiguous == want.flags.f_contiguous)
        c.flat[0:1] = 0  # copy-on-write: private to this mapping
        return ok
    assert in_child(maps, timeout=300)
    rnd = random.Random(seed)

    def preads():
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(pread_checks):
                off = rnd.randrange(0, len(raw))
                n = rnd.randrange(1, 300_000)
                assert os.pread(fd, n, off) == raw[off:off + n], (off, n)
        finally:
            os.close(fd)
    guarded(preads, timeout=300)


def xattrs(path):
    return {k: os.getxattr(path, k) for k in os.listxattr(path)}


def tree(mnt, into_archives=True):
    """Every path under mnt, relative, sorted; without into_archives, an
    .npz directory is listed but not looked into (which would open it)."""
    out = []
    for root, dirs, files in os.walk(mnt):
        for n in dirs + files:
            out.append(str(Path(root, n).relative_to(mnt)))
        if not into_archives:
            dirs[:] = [n for n in dirs if not n.endswith(".npz")]
    return sorted(out)


def stats_json(npyfs_bin, mnt):
    r = run([npyfs_bin, "stats", "--json", mnt], timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ---------------------------------------------------------------- tests ---

def test_http_npz_like_local(npyfs_bin, web, data, remote_mount, mount):
    """An .npz over HTTP: every member exact, mapped and read like the file;
    attributes and xattrs those of a local mount of the same archive."""
    mnt = remote_mount(web.url("run.npz"))
    local = mount(data["dir"] / "run.npz")
    assert sorted(os.listdir(mnt)) == ["a.npy", "b.npy", "c.npy"]
    for name, arr in data["arrays"].items():
        check_array(mnt / f"{name}.npy", arr)
        assert xattrs(mnt / f"{name}.npy") == xattrs(local / f"{name}.npy")
        st = os.stat(mnt / f"{name}.npy")
        assert st.st_mode & 0o777 == 0o444 and st.st_uid == os.getuid()
    assert os.stat(mnt).st_mode & 0o777 == 0o555


def test_http_stored_members(npyfs_bin, web, data, remote_mount):
    """Stored members are read straight from the object (a ranged GET per
    read, no decoding), checked like local ones."""
    mnt = remote_mount(web.url("stored.npz"))
    for name, arr in data["stored"].items():
        check_array(mnt / f"{name}.npy", arr)
    assert os.getxattr(mnt / "s.npy", "user.npyfs.method") == b"stored"


def test_https_gzip_with_cacert(npyfs_bin, web, data, remote_mount, tmp_path):
    """A .npy.gz over HTTPS, the server's certificate checked against
    -o cacert (its IP and its DNS name); without it the mount is refused
    with one line and nothing is mounted."""
    mnt = remote_mount(web.url("g.npy.gz", tls=True), f"cacert={web.cacert}")
    assert os.listdir(mnt) == ["g.npy"]
    check_array(mnt / "g.npy", data["g"])
    mnt2 = remote_mount(web.url("g.npy.gz", tls=True, host="localhost"),
                        f"cacert={web.cacert}")
    assert os.stat(mnt2 / "g.npy").st_size == len(npy_bytes(data["g"]))
    target = tmp_path / "refused"
    target.mkdir()
    r = run([npyfs_bin, "mount", web.url("g.npy.gz", tls=True), target], timeout=120,
            env=clean_env())
    err = r.stderr.decode()
    assert r.returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert "certificate" in err and "cacert" in err, err
    assert not os.path.ismount(target)


def test_s3_object(npyfs_bin, s3, data, remote_mount):
    mnt = remote_mount(s3.url("runs/run.npz"), "s3_path_style", env=s3_env(s3))
    for name, arr in data["arrays"].items():
        check_array(mnt / f"{name}.npy", arr, pread_checks=3)


def test_s3_prefix_tree(npyfs_bin, s3, data, remote_mount):
    """s3://bucket/runs/ as a tree: the keys under the prefix split at '/',
    only .npz and .npy.gz shown (Y.npy.gz as Y.npy), each archive opened on
    its first lookup, not at mount."""
    with counting(s3) as c:
        mnt = remote_mount(s3.url("runs/"), "s3_path_style", env=s3_env(s3))
    assert [r.method for r in c.traffic.requests] == ["GET"]  # the listing only
    assert "list-type=2" in c.traffic.requests[0].query
    assert tree(mnt, False) == ["2024", "2024/g.npy", "2024/odd name+1%é.npz", "run.npz"]
    assert stats_json(npyfs_bin, mnt)["archives"] == []
    assert sorted(os.listdir(mnt / "run.npz")) == ["a.npy", "b.npy", "c.npy"]
    opened = [a["path"] for a in stats_json(npyfs_bin, mnt)["archives"]]
    assert opened == [s3.url("runs/run.npz")]
    check_array(mnt / "2024" / "g.npy", data["g"], pread_checks=3)
    check_array(mnt / "2024" / "odd name+1%é.npz" / "s.npy", data["stored"]["s"],
                pread_checks=3)
    check_array(mnt / "run.npz" / "b.npy", data["arrays"]["b"], pread_checks=3)
    assert tree(mnt) == ["2024", "2024/g.npy", "2024/odd name+1%é.npz",
                         "2024/odd name+1%é.npz/s.npy", "2024/odd name+1%é.npz/t.npy",
                         "run.npz", "run.npz/a.npy", "run.npz/b.npy", "run.npz/c.npy"]


def test_several_sources_mixed(npyfs_bin, web, s3, data, remote_mount, tmp_path):
    """A local archive, an HTTP URL and an S3 object side by side."""
    local = tmp_path / "loc.npz"
    np.savez_compressed(local, z=np.arange(1000))
    mnt = remote_mount([str(local), web.url("g.npy.gz"), s3.url("other/run.npz")],
                       "s3_path_style", env=s3_env(s3))
    assert sorted(os.listdir(mnt)) == ["g.npy", "loc.npz", "run.npz"]
    check_array(mnt / "loc.npz" / "z.npy", np.arange(1000), pread_checks=2)
    check_array(mnt / "g.npy", data["g"], pread_checks=2)
    check_array(mnt / "run.npz" / "c.npy", data["arrays"]["c"], pread_checks=2)


def test_ls_json_of_url_is_the_files(npyfs_bin, web, s3, data):
    """npyfs ls --json of a URL lists what it lists for the local file (the
    archive field aside); a prefix lists every archive under it."""
    def rows(*args, env=None):
        r = run([npyfs_bin, "ls", "--json", *args], timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    for name in ("run.npz", "stored.npz", "g.npy.gz"):
        remote = rows(web.url(name), env=clean_env())
        local = rows(data["dir"] / name)
        assert [dict(x, archive=None) for x in remote] == \
            [dict(x, archive=None) for x in local]
        assert {x["archive"] for x in remote} == {web.url(name)}
    tree_rows = rows("-o", "s3_path_style", s3.url("runs/"), env=clean_env(s3.env()))
    assert sorted({x["archive"] for x in tree_rows}) == [
        s3.url("runs/2024/g.npy.gz"), s3.url("runs/2024/odd name+1%é.npz"),
        s3.url("runs/run.npz")]
    r = run([npyfs_bin, "ls", web.url("run.npz")], timeout=60, env=clean_env())
    assert r.returncode == 0 and b"a.npy\t<f8\t(2500000,)" in r.stdout, r.stdout


def test_stats_count_requests(npyfs_bin, web, data, remote_mount):
    mnt = remote_mount(web.url("run.npz"))
    read_file(mnt / "b.npy")
    st = stats_json(npyfs_bin, mnt)
    (arch,) = st["archives"]
    assert arch["path"] == web.url("run.npz")
    rem = arch["remote"]
    assert rem["requests"] >= 2 and rem["bytes"] > 0 and rem["failures"] == 0
    assert rem["in_flight"] >= 0
    assert st["remote"]["requests"] >= rem["requests"]
    assert st["remote"]["connections_opened"] >= 1
    text = run([npyfs_bin, "stats", mnt], timeout=60).stdout.decode()
    assert "remote connections" in text and "  remote: " in text


def test_stats_takes_the_url(npyfs_bin, web, data, remote_mount):
    """npyfs stats URL: the stats of the one npyfs mount made from that URL;
    a URL mounted twice is refused with both mount points; a URL not
    mounted says so. Exit status 1 for both."""
    url = web.url("run.npz")
    mnt = remote_mount(url)
    read_file(mnt / "b.npy")
    r = run([npyfs_bin, "stats", "--json", url], timeout=60)
    assert r.returncode == 0, r.stderr
    (arch,) = json.loads(r.stdout)["archives"]
    assert arch["path"] == url and arch["remote"]["requests"] >= 2
    r = run([npyfs_bin, "stats", web.url("other.npz")], timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 1 and "no npyfs mount of this URL" in err, err
    mnt2 = remote_mount(url)
    r = run([npyfs_bin, "stats", url], timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 1 and "mounted 2 times: give the mount point" in err, err
    assert str(mnt) in err and str(mnt2) in err, err


# ------------------------------------------------------------ round trips ---

def test_mount_round_trips(npyfs_bin, remote, data, remote_mount, tmp_path):
    """Mounting a zip costs its last 56 KiB (its directory) and one look for
    URL.npyfsidx: 2 requests; with its index already local, 1. A .npy.gz
    costs its first bytes and its end, asked for in parallel, and the look:
    3 requests in 2 round trips; with the index local, 2 in one."""
    ng = remote.nginx(tls=False)
    ng.put("run.npz", data["dir"] / "run.npz")
    ng.put("g.npy.gz", data["dir"] / "g.npy.gz")
    idx = tmp_path / "idx"
    for name, cold, warm in (("run.npz", 2, 1), ("g.npy.gz", 3, 2)):
        with counting(ng) as c:
            mnt = remote_mount(ng.url(name), f"index_dir={idx}", "index=lazy")
        got = c.traffic
        assert len(got) == cold, got.requests
        assert got.count(key=name + ".npyfsidx") == 1
        r = run([npyfs_bin, "index", "-o", f"index_dir={idx}", ng.url(name)], timeout=300)
        assert r.returncode == 0, r.stderr
        with counting(ng) as c:
            mnt = remote_mount(ng.url(name), f"index_dir={idx}", "index=lazy")
        assert len(c.traffic) == warm, c.traffic.requests
        assert c.traffic.count(key=name + ".npyfsidx") == 0
        # the end (a suffix range), and for a .npy.gz its first bytes
        assert all(rq.range.startswith(("bytes=-", "bytes=0-")) for rq in c.traffic.requests)
        assert len(os.listdir(mnt)) >= 1


def _index_points(idx_dir):
    """(out, in) of every access point in the one index file in idx_dir
    (format/dfx_store.h: point count at 40, point table offset at 56, 48
    bytes a point, out and in first)."""
    (f,) = glob.glob(str(Path(idx_dir) / "*.dfx"))
    h = Path(f).read_bytes()
    npts, = struct.unpack_from("<Q", h, 40)
    poff, = struct.unpack_from("<Q", h, 56)
    return [struct.unpack_from("<QQ", h, poff + 48 * i) for i in range(npts)]


def _in_for_out(path, member):
    """A function giving, for an output offset of member, the compressed
    offset in the archive a decoder must have read to produce it (zlib,
    1 KiB of input at a time)."""
    zf = zipfile.ZipFile(path)
    info = zf.getinfo(member)
    raw = Path(path).read_bytes()
    lh = info.header_offset
    n1, n2 = struct.unpack("<HH", raw[lh + 26:lh + 30])
    data0 = lh + 30 + n1 + n2
    comp = raw[data0:data0 + info.compress_size]
    d = zlib.decompressobj(-15)
    ins, outs, out = [0], [0], 0
    for i in range(0, len(comp), 1024):
        out += len(d.decompress(comp[i:i + 1024]))
        ins.append(min(i + 1024, len(comp)))
        outs.append(out)
    return lambda x: data0 + ins[min(bisect.bisect_left(outs, x), len(ins) - 1)]


def test_random_reads_one_round_trip(npyfs_bin, remote, data, remote_mount, tmp_path):
    """With an index, a cold random 4 KiB read is one round trip (its GETs
    start together), and fetches about the compressed bytes from its access
    point to the end of the chunk it decodes through: each within 1.5x that
    span plus the rounding to fetch blocks, and the median within 1.5x of
    that span rounded out to whole fetch blocks (at the 256K spacing of
    saved indexes a span is only a few blocks)."""
    ng = remote.nginx(tls=False)
    ng.put("run.npz", data["dir"] / "run.npz")
    idx = tmp_path / "idx"
    r = run([npyfs_bin, "index", "-o", f"index_dir={idx}", ng.url("run.npz")], timeout=300)
    assert r.returncode == 0, r.stderr
    mnt = remote_mount(ng.url("run.npz"), f"index_dir={idx}", "index=lazy",
                       "remote_cache=1M")
    # the index file of a.npy is the biggest one
    files = sorted(glob.glob(str(idx / "*.dfx")), key=os.path.getsize)
    only = tmp_path / "only"
    only.mkdir()
    os.link(files[-1], only / Path(files[-1]).name)
    pts = _index_points(only)
    assert len(pts) > 10
    in_for = _in_for_out(data["dir"] / "run.npz", "a.npy")
    raw = npy_bytes(data["arrays"]["a"])
    rnd = random.Random(7)
    ratios, fd = [], os.open(mnt / "a.npy", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for _ in range(25):
            off = rnd.randrange(0, len(raw) - 4096) // 4096 * 4096
            with counting(ng) as c:
                got = guarded(os.pread, fd, 4096, off, timeout=60)
            assert got == raw[off:off + 4096]
            if not len(c.traffic):
                continue  # cached by an earlier read
            chunk_end = min((off // (128 << 10) + 1) * (128 << 10), len(raw))
            point_in = max(i for o, i in pts if o <= off)
            span = in_for(chunk_end) - point_in
            assert len(c.traffic) <= 3, c.traffic.requests
            assert c.traffic.bytes() <= 1.5 * span + 3 * BLOCK, (off, c.traffic.requests, span)
            # against the span rounded out to whole fetch blocks, as fetched
            first_block = (point_in - 1) // BLOCK
            last_block = (in_for(chunk_end) + BLOCK - 1) // BLOCK
            ratios.append(c.traffic.bytes() / ((last_block - first_block) * BLOCK))
    finally:
        os.close(fd)
    assert len(ratios) >= 10
    assert sorted(ratios)[len(ratios) // 2] <= 1.5, ratios


def test_sequential_pass_fetches_once(npyfs_bin, remote, data, remote_mount):
    """A pass over a member with no index fetches its compressed bytes about
    once (fetch-ahead, not a request per block)."""
    ng = remote.nginx(tls=False)
    ng.put("run.npz", data["dir"] / "run.npz")
    member = zipfile.ZipFile(data["dir"] / "run.npz").getinfo("a.npy")
    mnt = remote_mount(ng.url("run.npz"), "verify=lazy", "index=lazy")
    with counting(ng) as c:
        assert read_file(mnt / "a.npy", timeout=300) == npy_bytes(data["arrays"]["a"])
    assert c.traffic.bytes() <= 1.15 * member.compress_size + (1 << 20), c.traffic
    assert len(c.traffic) <= member.compress_size / BLOCK / 4, len(c.traffic)
