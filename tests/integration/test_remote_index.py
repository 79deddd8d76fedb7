"""Shared indexes of remote archives (issue 12, "Shared indexes").

- `npyfs index -o index_out=FILE SOURCE` writes one file holding the index
  of every member worth one (their index files back to back), from a local
  archive or a URL; built from the local file, it serves the same archive
  uploaded anywhere (its key is the archive's size and each member's name,
  CRC-32 and sizes, not where the copy lives).
- A mount of a URL looks for URL.npyfsidx once (its absence is remembered:
  one request per archive, whatever its members), or for -o index_url=,
  checks each member's file (key and checksums) and uses it: the first
  random read of a member is one round trip, not a decode from its start;
  the file is then kept in the index directory under the archive's own key
  (URL + ETag + size), so the next mount needs no request for it.
- An index file that belongs to another archive is refused (not used), and
  reads stay right.
- Without any index, a remote archive is not indexed in the background by
  default (that would download all of it); -o index=background asks for it.
"""

import glob
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import guarded, npy_bytes, read_file, run
from remote_servers import counting


def arrays(seed=5):
    rng = np.random.default_rng(seed)
    return {"a": np.cumsum(rng.integers(-3, 4, 3_000_000)).astype(np.float64),
            "b": np.cumsum(rng.integers(-3, 4, 1_000_000)).astype(np.int64),
            "small": np.arange(100, dtype=np.int16)}


@pytest.fixture
def published(npyfs_bin, tmp_path):
    """run.npz, and its published index built from the local file."""
    arrs = arrays()
    np.savez_compressed(tmp_path / "run.npz", **arrs)
    out = tmp_path / "run.npz.npyfsidx"
    r = run([npyfs_bin, "index", "-o", f"index_dir={tmp_path / 'pubidx'},index_out={out}",
             tmp_path / "run.npz"], timeout=300)
    assert r.returncode == 0, r.stderr
    return {"arrays": arrs, "npz": tmp_path / "run.npz", "idx": out}


def stats(npyfs_bin, mnt):
    r = run([npyfs_bin, "stats", "--json", mnt], timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def members(st):
    return {m["name"]: m for a in st["archives"] for m in a["members"]}


def random_reads(path, raw, n=5, seed=3):
    rnd = random.Random(seed)

    def go():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            for _ in range(n):
                off = rnd.randrange(0, len(raw) - 4096)
                assert os.pread(fd, 4096, off) == raw[off:off + 4096]
        finally:
            os.close(fd)
    guarded(go, timeout=120)


def index_file_lengths(blob):
    """The lengths of the index files back to back in a published index
    (format/dfx_store.h: magic, then the file length at byte 16)."""
    lens, at = [], 0
    while at < len(blob):
        assert blob[at:at + 8] == b"NPYFSIDX"
        n = int.from_bytes(blob[at + 16:at + 24], "little")
        assert n > 0
        lens.append(n)
        at += n
    assert at == len(blob)
    return lens


def test_index_out_file(npyfs_bin, published):
    """One file, the members' index files back to back, one per member
    bigger than a chunk."""
    assert len(index_file_lengths(published["idx"].read_bytes())) == 2  # a and b, not small


def test_index_out_with_only_small_members(npyfs_bin, tmp_path):
    """An archive whose members all fit in one chunk has nothing to publish:
    the (empty) file is written and npyfs index says so, exit 0."""
    src = tmp_path / "small.npz"
    np.savez_compressed(src, a=np.arange(10), b=np.ones(5))
    out = tmp_path / "small.npz.npyfsidx"
    r = run([npyfs_bin, "index", "-o", f"index_dir={tmp_path / 'idx'},index_out={out}", src],
            timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert f"-o index_out={out}: no member needs an index file" in err, err
    assert "the published index written is empty" in err, err
    assert out.read_bytes() == b""


def test_published_index_used_at_mount(npyfs_bin, remote, remote_mount, published, tmp_path):
    ng = remote.nginx(tls=False)
    ng.put("run.npz", published["npz"])
    ng.put("run.npz.npyfsidx", published["idx"])
    idx = tmp_path / "mine"
    with counting(ng) as c:
        mnt = remote_mount(ng.url("run.npz"), f"index_dir={idx}", "remote_cache=1M")
    assert [r.key for r in c.traffic.requests] == ["run.npz", "run.npz.npyfsidx"]
    raw = npy_bytes(published["arrays"]["a"])
    off = len(raw) * 3 // 4
    fd = os.open(mnt / "a.npy", os.O_RDONLY)
    try:
        with counting(ng) as c:
            assert guarded(os.pread, fd, 4096, off) == raw[off:off + 4096]
    finally:
        os.close(fd)
    # the index came with the file: one read fetches a piece of the
    # member, not everything before the offset
    assert c.traffic.bytes() < 600_000 and len(c.traffic) <= 2, c.traffic
    m = members(stats(npyfs_bin, mnt))["a.npy"]
    assert m["index_complete"] and m["crc_checked"], m
    random_reads(mnt / "a.npy", raw, n=10)
    assert read_file(mnt / "b.npy") == npy_bytes(published["arrays"]["b"])
    # kept in the index directory under the archive's own key
    assert len(glob.glob(str(idx / "*.dfx"))) == 2
    with counting(ng) as c:
        mnt2 = remote_mount(ng.url("run.npz"), f"index_dir={idx}")
    assert [r.key for r in c.traffic.requests] == ["run.npz"]
    random_reads(mnt2 / "a.npy", raw, n=3)


def test_index_url_option(npyfs_bin, remote, remote_mount, published, tmp_path):
    """-o index_url= names the file (here on another server path, and as a
    local file); it is tried instead of URL.npyfsidx."""
    ng = remote.nginx(tls=False)
    ng.put("data/run.npz", published["npz"])
    ng.put("indexes/run.idx", published["idx"])
    with counting(ng) as c:
        mnt = remote_mount(ng.url("data/run.npz"), f"index_dir={tmp_path / 'i1'}",
                           f"index_url={ng.url('indexes/run.idx')}")
    assert [r.key for r in c.traffic.requests] == ["data/run.npz", "indexes/run.idx"]
    assert members(stats(npyfs_bin, mnt))["a.npy"]["index_complete"] is False  # not yet opened
    random_reads(mnt / "a.npy", npy_bytes(published["arrays"]["a"]), n=2)
    assert members(stats(npyfs_bin, mnt))["a.npy"]["index_complete"] is True
    with counting(ng) as c:
        mnt = remote_mount(ng.url("data/run.npz"), f"index_dir={tmp_path / 'i2'}",
                           f"index_url={published['idx']}")
    assert [r.key for r in c.traffic.requests] == ["data/run.npz"]
    random_reads(mnt / "a.npy", npy_bytes(published["arrays"]["a"]), n=2)
    assert members(stats(npyfs_bin, mnt))["a.npy"]["index_complete"] is True


def test_index_of_another_archive_is_refused(npyfs_bin, remote, remote_mount, published,
                                             tmp_path):
    """A published index of other content (same names, other data) is not
    used: the member is decoded as without an index, and reads are right."""
    other = arrays(seed=9)
    np.savez_compressed(tmp_path / "other.npz", **other)
    ng = remote.nginx(tls=False)
    ng.put("other.npz", tmp_path / "other.npz")
    ng.put("other.npz.npyfsidx", published["idx"])
    mnt = remote_mount(ng.url("other.npz"), f"index_dir={tmp_path / 'i'}", "verify=lazy")
    assert read_file(mnt / "b.npy") == npy_bytes(other["b"])
    random_reads(mnt / "a.npy", npy_bytes(other["a"]), n=3)
    m = members(stats(npyfs_bin, mnt))["a.npy"]
    assert not m["crc_checked"], m  # no table came from the wrong file
    log = remote_mount.mount_of(mnt).stderr()
    assert "published index" in log and "not used" in log, log


def test_index_out_from_url(npyfs_bin, remote, remote_mount, published, tmp_path):
    """npyfs index -o index_out= of a URL writes the same kind of file: one
    index file per member worth one, which a mount of the URL uses. (Not
    byte for byte the file built from the local copy: ISA-L records access
    points where its input happens to end, and remote reads end elsewhere
    than local ones; both indexes are right.)"""
    ng = remote.nginx(tls=False)
    ng.put("run.npz", published["npz"])
    out = tmp_path / "fromurl.idx"
    r = run([npyfs_bin, "index", "-o", f"index_dir={tmp_path / 'x'},index_out={out}",
             ng.url("run.npz")], timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(index_file_lengths(out.read_bytes())) == 2
    mnt = remote_mount(ng.url("run.npz"), f"index_dir={tmp_path / 'i'}", f"index_url={out}",
                       "verify=lazy")
    random_reads(mnt / "a.npy", npy_bytes(published["arrays"]["a"]), n=3)
    random_reads(mnt / "b.npy", npy_bytes(published["arrays"]["b"]), n=3)
    m = members(stats(npyfs_bin, mnt))
    assert m["a.npy"]["index_complete"] and m["b.npy"]["index_complete"], m
    log = remote_mount.mount_of(mnt).stderr()
    assert "not used" not in log and log.count("index loaded from the published index") == 2, log


def test_absent_index_asked_once_per_archive(npyfs_bin, s3_server, remote_mount, tmp_path):
    """A prefix of several archives: each archive opened looks for its
    URL.npyfsidx once, however many of its members are read."""
    for i in range(3):
        np.savez_compressed(tmp_path / f"r{i}.npz", a=np.arange(300_000) * i,
                            b=np.arange(300_000) + i)
        s3_server.put(f"p/r{i}.npz", tmp_path / f"r{i}.npz")
    mnt = remote_mount(s3_server.url("p/"), "s3_path_style", f"index_dir={tmp_path / 'i'}",
                       env=s3_server.env())
    with counting(s3_server) as c:
        for i in range(2):
            for m in ("a", "b"):
                assert read_file(mnt / f"r{i}.npz" / f"{m}.npy") == \
                    npy_bytes(np.arange(300_000) * i if m == "a" else np.arange(300_000) + i)
    looks = [r.key for r in c.traffic.requests if r.key.endswith(".npyfsidx")]
    assert sorted(looks) == [f"bucket/p/r{i}.npz.npyfsidx" for i in range(2)]


def test_no_background_download_by_default(npyfs_bin, remote, remote_mount, published,
                                           tmp_path):
    """A remote archive is indexed lazily unless -o index=background is
    given: mounting and waiting fetches nothing of its members."""
    ng = remote.nginx(tls=False)
    ng.put("run.npz", published["npz"])
    mnt = remote_mount(ng.url("run.npz"), f"index_dir={tmp_path / 'i'}")
    with counting(ng) as c:
        st = stats(npyfs_bin, mnt)
        import time
        time.sleep(1.0)
    assert c.traffic.bytes() == 0, c.traffic
    assert not members(st)["a.npy"]["index_complete"]
    mnt = remote_mount(ng.url("run.npz"), f"index_dir={tmp_path / 'j'}", "index=background")
    for _ in range(100):
        if members(stats(npyfs_bin, mnt))["a.npy"]["index_complete"]:
            break
        import time
        time.sleep(0.2)
    assert members(stats(npyfs_bin, mnt))["a.npy"]["index_complete"]
