"""Listings carry attributes (READDIRPLUS).

A directory listing through the mount hands the kernel every entry's
attributes with its name, so that opening, reading or stat'ing the files of
a listed directory costs no LOOKUP request per file (a 1000-member .npz read
member by member paid one round trip per member for it). What the kernel
sends is read from its own FUSE trace events (tracefs, on this connection
only), not from anything npyfs reports about itself.

The attributes in a listing must be exactly what a lookup gives:
- members and directories: their final sizes and modes;
- an .npy.gz not opened yet (a directory mount): its size is known only
  once it is opened, so its entry goes out with attributes that expire at
  once, and a stat after the listing still waits for the exact size;
- a listing opens nothing: no archive of a listed directory is opened by
  being listed.
"""

import gzip
import io
import json
import os
import stat

import numpy as np
import pytest

from conftest import assert_same_array, fuse_requests, guarded, load, npy_bytes, run

MEMBERS = {f"m{i:03d}": np.arange(i, i + 300 + 7 * i, dtype="<f8") for i in range(80)}


@pytest.fixture
def many_npz(tmp_path):
    p = tmp_path / "many.npz"
    np.savez_compressed(p, **MEMBERS)
    return p


def test_listed_files_open_without_lookups(many_npz, mount):
    """os.listdir, then np.load of every member: no LOOKUP at all, and the
    data is exact."""
    mnt = mount(many_npz)

    def body():
        with fuse_requests(mnt) as sent:
            names = sorted(os.listdir(mnt))
            assert names == sorted(f"{k}.npy" for k in MEMBERS)
            for n in names:
                assert_same_array(np.load(mnt / n), MEMBERS[n[:-4]], raw=False)
        return sent

    sent = guarded(body)
    assert sent["FUSE_READDIRPLUS"] >= 1, sent
    assert sent["FUSE_LOOKUP"] == 0, sent
    assert sent["FUSE_OPEN"] == len(MEMBERS), sent


def test_listing_attributes_are_exact(many_npz, mount):
    """`ls -l` through scandir: every size, mode and owner as stat gives
    them, without a LOOKUP or GETATTR after the listing."""
    mnt = mount(many_npz)

    def body():
        with fuse_requests(mnt) as sent:
            got = {e.name: e.stat() for e in os.scandir(mnt)}
        return got, sent

    got, sent = guarded(body)
    assert sent["FUSE_LOOKUP"] == 0 and sent["FUSE_GETATTR"] == 0, sent
    src = os.stat(many_npz)
    for k, arr in MEMBERS.items():
        st = got[f"{k}.npy"]
        assert stat.S_ISREG(st.st_mode)
        assert st.st_size == len(npy_bytes(arr))
        assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(src.st_mode)
        assert (st.st_uid, st.st_gid) == (src.st_uid, src.st_gid)
        assert st.st_size == os.stat(mnt / f"{k}.npy").st_size


def _gz_bytes(arr):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
        g.write(npy_bytes(arr))
    return buf.getvalue()


def test_listing_leaves_gzip_sizes_to_the_open(tmp_path, mount, npyfs_bin):
    """A directory mount: listing it opens no archive; the .npy.gz entries
    it lists carry their gzip file's size for an instant only, so a stat
    after the listing waits for (and gives) the exact .npy size."""
    src = tmp_path / "src"
    src.mkdir()
    arrs = {f"g{i}": np.arange(1000 * (i + 1), dtype="<i4") for i in range(3)}
    for k, a in arrs.items():
        (src / f"{k}.npy.gz").write_bytes(_gz_bytes(a))
    np.savez_compressed(src / "z.npz", a=np.arange(10.0))
    mnt = mount(src)

    def listing():
        return sorted(os.listdir(mnt))

    assert guarded(listing) == ["g0.npy", "g1.npy", "g2.npy", "z.npz"]
    out = run([npyfs_bin, "stats", "--json", mnt], timeout=30, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["archives_opened"] == 0, out.stdout

    def stats_after_listing():
        return {n: os.stat(mnt / n).st_size for n in ("g0.npy", "g1.npy", "g2.npy")}

    sizes = guarded(stats_after_listing)
    for k, a in arrs.items():
        assert sizes[f"{k}.npy"] == len(npy_bytes(a))
        assert_same_array(load(mnt / f"{k}.npy"), a)
    # listed again, now that they are open: the same names, exact sizes
    assert guarded(listing) == ["g0.npy", "g1.npy", "g2.npy", "z.npz"]
    assert {e.name: e.stat().st_size for e in os.scandir(mnt) if e.name.startswith("g")} \
        == {f"{k}.npy": len(npy_bytes(a)) for k, a in arrs.items()}
