"""The request loop (fs/loop.c), which replaced libfuse's.

One thread at a time reads the FUSE device; after a request other than a
read it keeps polling for up to -o spin= microseconds (default 200) before
it sleeps, so that a caller's next request finds it awake. What must hold:

- an idle mount uses no CPU: the polling stops once requests stop;
- a request that waits (a read whose bytes must be fetched and decoded)
  holds up no other request: the device goes to another thread first;
- spin=0 and the largest value work, and bad values are refused with the
  option named;
- exact bytes throughout (many small files, the same as numpy reads them).
"""

import os
import threading
import time

import numpy as np
import pytest

from conftest import assert_same_array, guarded, npy_bytes, run

SMALL = {f"m{i:03d}": np.arange(i, i + 500, dtype="<f8") for i in range(200)}


@pytest.fixture
def small_npz(tmp_path):
    p = tmp_path / "small.npz"
    np.savez_compressed(p, **SMALL)
    return p


def cpu_seconds(pid):
    """User + system CPU time of process pid so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_all(mnt):
    for k, v in SMALL.items():
        assert_same_array(np.load(mnt / f"{k}.npy"), v)


def test_idle_mount_uses_no_cpu(small_npz, mount):
    """Bursts of open, read and close (what the polling is for), then
    nothing: over the next 2 s the daemon uses (almost) no CPU. (index=lazy:
    no background indexer that could still be at work.)"""
    mnt = mount(small_npz, "index=lazy")
    pid = mount.mount_of(mnt).proc.pid
    for _ in range(3):
        guarded(load_all, mnt)
    time.sleep(0.3)
    before = cpu_seconds(pid)
    time.sleep(2.0)
    used = cpu_seconds(pid) - before
    assert used <= 0.05, f"an idle mount used {used:.2f} s of CPU in 2 s"


@pytest.mark.parametrize("spin", ["0", "10000"])
def test_spin_values(small_npz, mount, spin):
    mnt = mount(small_npz, f"spin={spin}")
    guarded(load_all, mnt)
    guarded(load_all, mnt)


@pytest.mark.parametrize("bad", ["10001", "-1", "x", "1.5", ""])
def test_bad_spin_refused(small_npz, npyfs_bin, tmp_path, bad):
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = run([npyfs_bin, "mount", "-o", f"spin={bad}", small_npz, mnt], timeout=30, text=True)
    assert r.returncode != 0
    assert f"spin={bad}" in r.stderr and "microseconds" in r.stderr, r.stderr
    assert not os.path.ismount(mnt)


def test_waiting_read_holds_up_nothing(tmp_path, remote, remote_mount):
    """A read that waits 1.5 s for the server (every HTTP request is held
    that long) while the mount is listed from another thread: the listing
    returns while the read still waits, and both are exact."""
    rng = np.random.default_rng(7)
    big = rng.random(1_000_000)  # 8 MB that does not compress: fetched as read
    small = np.arange(100, dtype="<i4")
    src = tmp_path / "d.npz"
    np.savez_compressed(src, big=big, small=small)
    ng = remote.nginx()
    ng.put("d.npz", src)
    mnt = remote_mount(ng.url("d.npz", delay_ms=1500), "index=lazy", "verify=lazy")
    raw = npy_bytes(big)
    off = len(raw) // 2
    fd = guarded(os.open, mnt / "big.npy", os.O_RDONLY, timeout=60)
    got = {}

    def reader():
        t0 = time.monotonic()
        got["bytes"] = os.pread(fd, 4096, off)
        got["secs"] = time.monotonic() - t0

    try:
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        time.sleep(0.3)  # the READ is in the daemon, waiting for the server
        t0 = time.monotonic()
        names = guarded(os.listdir, mnt, timeout=60)
        got["list_secs"] = time.monotonic() - t0
        still_waiting = t.is_alive()
        t.join(60)
        assert not t.is_alive(), "the read never returned"
    finally:
        os.close(fd)
    assert sorted(names) == ["big.npy", "small.npy"]
    assert got["secs"] >= 1.0, f"self-check: the read took {got['secs']:.3f} s, no wait"
    assert still_waiting, (f"the listing waited for the read: it took {got['list_secs']:.2f} s, "
                           f"the read {got['secs']:.2f} s")
    assert got["bytes"] == raw[off:off + 4096]
