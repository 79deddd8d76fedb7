"""Issue 13, target 3: what random reads start from.

- Saved indexes (`npyfs index`, the background pass of a mount) put their
  access points 256K apart by default, while the points that reads record in
  memory stay 1M apart; `-o spacing=` sets both.
- Random reads through a mount that loaded such a file, `os.pread` of 4 KiB
  and single elements through `np.load(mmap_mode='r')`, at offsets around
  every access point and chunk boundary, give numpy's bytes.

Every mount and `npyfs index` run passes its own index_dir.
"""

import json
import os
import random
import struct
import time
from pathlib import Path

import numpy as np

from conftest import guarded, in_child, load, npy_bytes, run

KiB = 1 << 10
MiB = 1 << 20
STATS_JSON = "user.npyfs.stats.json"
N = 1_500_000  # float64 elements: 12 MB, about 46 saved points at 256K


def walk(n, seed):
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.standard_normal(n)) / 16).round(2)


def file_spacing(path):
    """The spacing recorded in an index file's header (FORMATS.md, section 6)."""
    with open(path, "rb") as f:
        h = f.read(32)
    assert h[:8] == b"NPYFSIDX"
    return struct.unpack_from("<Q", h, 24)[0]


def index_file(d):
    files = sorted(Path(d).glob("*.dfx"))
    assert len(files) == 1, files
    return files[0]


def member_stats(mnt):
    s = json.loads(os.getxattr(mnt, STATS_JSON))
    return s["archives"][0]["members"][0]


def wait_for_file(d, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if list(Path(d).glob("*.dfx")):
            return index_file(d)
        time.sleep(0.05)
    raise AssertionError(f"no index file in {d} after {timeout:.0f} s")


def wait_for_points(mnt, at_least, timeout=120.0):
    end = time.monotonic() + timeout
    m = member_stats(mnt)
    while time.monotonic() < end and not (m["index_complete"] and
                                          m["index_points"] >= at_least):
        time.sleep(0.05)
        m = member_stats(mnt)
    return m


def offsets(size, spacings, seed):
    """Offsets around every multiple of each spacing (points fall at the
    first block boundary past one: about there) and of the 128 KiB chunk,
    plus random ones."""
    rng = random.Random(seed)
    out = set()
    for step in spacings:
        for base in range(step, size, step):
            for d in (-4097, -1, 0, 1, 4096, 40_000):
                if 0 <= base + d < size:
                    out.add(base + d)
    out.update(rng.randrange(size) for _ in range(300))
    out = sorted(out)
    rng.shuffle(out)
    return out


def random_reads(path, truth, offs):
    """4 KiB preads, and single elements through np.load(mmap_mode='r')
    (a fresh mapping every 50 reads), compared with the .npy bytes; returns
    the number of mismatches."""
    bad = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in offs:
            n = min(4096, len(truth) - off)
            if os.pread(fd, n, off) != truth[off:off + n]:
                bad += 1
    finally:
        os.close(fd)
    hdr = len(truth) - N * 8
    want = np.frombuffer(truth, dtype="<f8", offset=hdr)
    a = None
    for j, off in enumerate(offs):
        if j % 50 == 0:
            a = load(path)
        i = min(N - 1, max(0, (off - hdr) // 8))
        if a[i] != want[i]:
            bad += 1
    return bad


def test_saved_points_256k_recorded_1m(npyfs_bin, mount, tmp_path):
    """The background pass saves a file with points 256K apart, which the
    mount then reads from; `npyfs index` does the same, and with
    -o spacing=1M builds 1M; a read that runs past the end of the index
    records points 1M apart."""
    src = tmp_path / "a.npz"
    arr = walk(N, 1)
    np.savez_compressed(src, x=arr)
    truth = npy_bytes(arr)

    # index=lazy, no file, no pass at open (verify=lazy): a full read
    # records points 1M apart
    lazy = mount(src, f"index_dir={tmp_path / 'lazy'}", "index=lazy", "verify=lazy")
    got = guarded(lambda: (lazy / "x.npy").read_bytes())
    assert got == truth
    m = member_stats(lazy)
    assert m["index_complete"], m
    recorded = m["index_points"]
    assert len(truth) // (2 * MiB) <= recorded <= len(truth) // MiB + 1, m

    # the background pass: a 256K file, whose points the mount then uses
    bg_dir = tmp_path / "bg"
    bg = mount(src, f"index_dir={bg_dir}")
    f = wait_for_file(bg_dir)
    assert file_spacing(f) == 256 * KiB
    m = wait_for_points(bg, 3 * recorded)
    assert m["index_complete"] and m["index_points"] >= 3 * recorded, (m, recorded)
    offs = offsets(len(truth), (256 * KiB, 128 * KiB, MiB), seed=2)
    assert in_child(random_reads, bg / "x.npy", truth, offs, timeout=300) == 0

    # npyfs index: 256K by default, what -o spacing= says otherwise
    d = tmp_path / "cmd"
    r = run([npyfs_bin, "index", "-o", f"index_dir={d}", src], timeout=300)
    assert r.returncode == 0, r.stderr
    assert file_spacing(index_file(d)) == 256 * KiB
    d1 = tmp_path / "cmd1"
    r = run([npyfs_bin, "index", "-o", f"index_dir={d1},spacing=1M", src], timeout=300)
    assert r.returncode == 0, r.stderr
    assert file_spacing(index_file(d1)) == MiB

    # a fresh mount loads the 256K file: cold random reads start near them
    again = mount(src, f"index_dir={d}", "index=lazy")
    assert in_child(random_reads, again / "x.npy", truth, offs, timeout=300) == 0
    m = member_stats(again)
    assert m["index_points"] >= 3 * recorded, (m, recorded)
