"""Defects from the code review (issue 9) in the tree, its attributes, its
sources and the text npyfs prints, each reproduced on a real mount.

- Archives of a directory source opened for the first time at the same
  time (8 .npz of 30,000 members, listed in parallel threads): the daemon
  survives and every member is found by lookup (their trees were sorted
  with a shared global before: SIGSEGV, or children sorted wrongly).
"""

import os
import random
import struct
import threading

import pytest

from conftest import guarded

# --------------------------------------------------------------- helpers ---


def _empty_members_zip(names):
    """Bytes of a zip whose members (names: bytes) are all empty and stored:
    small on disk however many members it has (no zip64: < 65535)."""
    assert len(names) < 0xFFFF
    out = bytearray()
    offsets = []
    for n in names:
        offsets.append(len(out))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21,
                           0, 0, 0, len(n), 0) + n
    cd = len(out)
    for n, off in zip(names, offsets):
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x0314, 20, 0, 0,
                           0, 0x21, 0, 0, 0, len(n), 0, 0, 0, 0,
                           0o100644 << 16, off) + n
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(names), len(names),
                       len(out) - cd, cd, 0)
    return bytes(out)


def _daemon_alive(mount, mnt):
    m = mount.mount_of(mnt)
    assert m.proc.poll() is None, (
        f"daemon exited with {m.proc.returncode}\n{m.stderr()}")
    guarded(os.stat, mnt, timeout=30)


# ----------------------------------------- 1. concurrent first opens ---

N_ARCHIVES = 8
N_MEMBERS = 30_000


def test_parallel_first_listings_of_big_archives(tmp_path, mount):
    """8 archives of 30,000 members each, never opened, listed at once from
    8 threads: each listing is complete, the daemon is alive, and lookups of
    real members (and of names that are not there) are answered right, so
    every archive's children were sorted with its own tree."""
    src = tmp_path / "tree"
    src.mkdir()
    rng = random.Random(9)
    want = {}
    for k in range(N_ARCHIVES):
        names = [f"m{i:05d}_{rng.randrange(10 ** 6):06d}.npy"
                 for i in range(N_MEMBERS)]
        rng.shuffle(names)  # central directory order != name order
        (src / f"a{k}.npz").write_bytes(
            _empty_members_zip([n.encode() for n in names]))
        want[f"a{k}.npz"] = names
    mnt = mount(src)
    barrier = threading.Barrier(N_ARCHIVES)
    got, errors = {}, []

    def lister(name):
        try:
            barrier.wait()
            got[name] = os.listdir(mnt / name)
        except BaseException as e:  # reported below
            errors.append((name, e))

    def listings():
        ts = [threading.Thread(target=lister, args=(n,)) for n in want]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    guarded(listings, timeout=240)
    assert not errors, errors
    _daemon_alive(mount, mnt)
    for name, names in want.items():
        assert sorted(got[name]) == sorted(names), name

    def lookups():
        for name, names in want.items():
            for n in rng.sample(names, 400):
                st = os.stat(mnt / name / n)
                assert st.st_size == 0, (name, n)
            with pytest.raises(FileNotFoundError):
                os.stat(mnt / name / "m99999_x.npy")
    guarded(lookups, timeout=240)
    _daemon_alive(mount, mnt)
