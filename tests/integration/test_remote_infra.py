"""The remote-source test infrastructure itself (remote_servers.py,
scripts/bench_remote.py): each server starts and serves the right bytes, the
fault server's faults happen, the counters count, a network namespace's
delay and bandwidth cap measurably change round trip time and rate, a daemon
started inside a namespace mounts where the test sees it, and teardown leaves
no process, namespace, iptables rule or mount behind.

The time checks compare against floors and ceilings the shaping imposes (a
held packet cannot arrive early, a token bucket cannot pass more than its
rate), with wide margins, so a busy machine does not make them fail.
"""

import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import guarded, mounted_fuse
from remote_servers import (ServerSet, botocore_client, counting, netns_names,
                            netns_supported, quote_key)

# Names a remote source must survive: space, +, %, ?, #, non-ASCII.
ODD_NAMES = ["plain.bin", "dir/a b.bin", "x+y.bin", "100%.bin", "q?h#.bin", "émoji 😀.bin"]


def payload(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def get(url, rng=None, headers=None, context=None, timeout=30):
    """(status, headers, body) of a GET; HTTP errors returned, not raised."""
    h = dict(headers or {})
    if rng:
        h["Range"] = "bytes=%d-%d" % rng
    req = urllib.request.Request(url, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def host_input_rules():
    r = subprocess.run(["iptables", "-w", "10", "-S"], capture_output=True, text=True,
                       timeout=30)
    return r.stdout


def gone(pid):
    """True once pid is no process (or only an unreaped zombie of someone else)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ------------------------------------------------------------------ nginx ---

def test_nginx_ranges_etag_keepalive_counters(http_server):
    srv = http_server
    files = {n: payload(200_000 + i, i) for i, n in enumerate(ODD_NAMES)}
    for n, data in files.items():
        srv.put(n, data)
    srv.mark()
    # several ranges of each file on ONE keep-alive connection
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    asked = 0
    for n, data in files.items():
        for a, b in ((0, 99), (1000, 70_000), (len(data) - 10, len(data) - 1)):
            conn.request("GET", "/" + quote_key(n), headers={"Range": f"bytes={a}-{b}"})
            r = conn.getresponse()
            body = r.read()
            assert r.status == 206, (n, r.status)
            assert r.getheader("Content-Range") == f"bytes {a}-{b}/{len(data)}"
            assert r.getheader("ETag") == srv.etag(n)
            assert body == data[a:b + 1]
            asked += b - a + 1
    conn.close()
    t = srv.traffic()
    assert t.count() == 3 * len(files) and t.bytes() == asked
    assert t.connections() == 1
    assert sorted(t.by_key()) == sorted(files)
    for n, data in files.items():
        assert t.count(n) == 3
        assert t.ranges(n) == [(0, 99), (1000, 70_000), (len(data) - 10, len(data) - 1)]
        assert set(t.statuses(n)) == {206}
    # If-Match: the current ETag passes, another one gets 412
    n = ODD_NAMES[1]
    assert get(srv.url(n), (0, 9), {"If-Match": srv.etag(n)})[0] == 206
    assert get(srv.url(n), (0, 9), {"If-Match": '"0-0"'})[0] == 412
    # replace(): new bytes and a new ETag, even at the same size
    old = srv.etag(n)
    new = payload(len(files[n]), 99)
    srv.replace(n, new)
    assert srv.etag(n) != old
    st, h, body = get(srv.url(n), (5, 14))
    assert st == 206 and body == new[5:15] and h["ETag"] == srv.etag(n)
    assert get(srv.url(n), (0, 9), {"If-Match": old})[0] == 412
    with counting(srv) as c:
        get(srv.url(n))
    assert c.traffic.count() == 1 and c.traffic.bytes() == len(new)


def test_nginx_https_with_test_ca(http_server):
    srv = http_server
    data = payload(50_000, 3)
    srv.put("d/x y.bin", data)
    ctx = ssl.create_default_context(cafile=str(srv.cacert))
    for host in ("127.0.0.1", "localhost"):  # the certificate names both
        st, h, body = get(srv.url("d/x y.bin", tls=True, host=host), (10, 20), context=ctx)
        assert st == 206 and body == data[10:21]
    # without the test CA the certificate is refused
    with pytest.raises(urllib.error.URLError) as e:
        get(srv.url("d/x y.bin", tls=True), (0, 1), context=ssl.create_default_context())
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)
    assert srv.cacert.is_file()
    t = srv.traffic()
    assert t.count("d/x y.bin") == 2  # the refused handshake sent no request


def test_nginx_delay_location(http_server):
    srv = http_server
    data = payload(10_000, 4)
    srv.put("a b+c.bin", data)
    srv.mark()
    t0 = time.monotonic()
    st, _, body = get(srv.url("a b+c.bin", delay_ms=300), (100, 199))
    slept = time.monotonic() - t0
    assert st == 206 and body == data[100:200]
    assert slept >= 0.29  # a floor: the server slept before answering
    t0 = time.monotonic()
    st, _, body = get(srv.base() + "/hdelay/" + quote_key("a b+c.bin"), (0, 9),
                      {"X-Delay": "0.3"})
    assert st == 206 and body == data[:10] and time.monotonic() - t0 >= 0.29
    # the log names the file, not the delay path
    t = srv.traffic()
    assert t.count("a b+c.bin") == 2 and t.bytes("a b+c.bin") == 110


# ----------------------------------------------------------------- s3rver ---

def test_s3rver_objects_with_odd_keys(s3_server):
    srv = s3_server
    objs = {"p/" + n: payload(100_000 + i, 10 + i) for i, n in enumerate(ODD_NAMES)}
    for k, data in objs.items():
        srv.put(k, data)
    assert sorted(srv.keys("p/")) == sorted(objs)
    srv.mark()
    for k, data in objs.items():
        assert srv.get(k, "bytes=1000-1999") == data[1000:2000]
        assert srv.head(k)["ContentLength"] == len(data)
    t = srv.traffic()
    for k in objs:
        assert t.count("bucket/" + k, "GET") == 1
        assert t.bytes("bucket/" + k, "GET") == 1000
        assert t.ranges("bucket/" + k) == [(1000, 1999)]
        assert t.count("bucket/" + k, "HEAD") == 1
    # replacing an object changes its ETag and bytes
    k = "p/" + ODD_NAMES[2]
    old = srv.head(k)["ETag"]
    srv.replace(k, b"new bytes")
    assert srv.head(k)["ETag"] != old and srv.get(k) == b"new bytes"
    # what npyfs gets in its environment
    env = srv.env()
    assert env == {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
                   "AWS_ENDPOINT_URL": srv.endpoint, "AWS_REGION": "us-east-1"}
    assert srv.url(k) == "s3://bucket/" + k
    # a client built from that environment reads the object
    c = botocore_client(env["AWS_ENDPOINT_URL"], access_key=env["AWS_ACCESS_KEY_ID"],
                        secret_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"])
    assert c.get_object(Bucket="bucket", Key=k)["Body"].read() == b"new bytes"


# ------------------------------------------------------------ testserver ---

def test_fault_server_faults(fault_server):
    srv = fault_server
    data = payload(300_000, 5)
    srv.put("f.bin", data)
    url = srv.url("f.bin")
    assert get(url, (10, 19))[2] == data[10:20]
    # a burst of 503s, then normal service
    srv.fault("status", 503, 2)
    assert [get(url, (0, 9))[0] for _ in range(3)] == [503, 503, 206]
    srv.fault("retry-after", 429)
    st, h, _ = get(url, (0, 9))
    assert st == 429 and h["Retry-After"] == "0"
    # Range ignored: 200 and the whole body
    srv.mode("norange")
    st, _, body = get(url, (0, 9))
    assert st == 200 and body == data
    srv.mode("norange", False)
    # a Content-Range other than the one asked for
    srv.mode("badrange")
    st, h, _ = get(url, (100, 199))
    assert st == 206 and h["Content-Range"] == f"bytes 101-200/{len(data)}"
    srv.mode("badrange", False)
    # a body cut short, a reset
    srv.fault("cut", 1000)
    with pytest.raises(http.client.IncompleteRead):
        get(url, (0, 99_999))
    srv.fault("reset")
    with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
        get(url, (0, 9))
    # If-Match: 412 once the object changed
    etag = get(url, (0, 0))[1]["ETag"]
    assert get(url, (0, 9), {"If-Match": etag})[0] == 206
    srv.replace("f.bin", payload(300_000, 6))
    assert get(url, (0, 9), {"If-Match": etag})[0] == 412
    # counters: every request above, ranges as asked
    t = srv.traffic()
    assert t.count("f.bin") == 12
    assert t.ranges("f.bin")[:2] == [(10, 19), (0, 9)]
    srv.mark()
    get(url, (5, 104))
    assert srv.traffic().count() == 1 and srv.traffic().bytes() == 100


def test_fault_server_stop_and_restart_same_port(fault_server):
    srv = fault_server
    srv.put("r.bin", b"0123456789")
    port, pid = srv.port, srv.child.pid
    assert get(srv.url("r.bin"), (2, 4))[2] == b"234"
    srv.stop()
    assert gone(pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    srv.start()
    assert srv.port == port and srv.child.pid != pid
    assert get(srv.url("r.bin"), (2, 4))[2] == b"234"


def test_sigv4_server_checks_signatures(sigv4_server):
    srv = sigv4_server
    keys = {"k/" + n: payload(5000 + i, 20 + i) for i, n in enumerate(ODD_NAMES)}
    for k, data in keys.items():
        srv.put(k, data, bucket="bucket")
    env = srv.env()
    good = botocore_client(srv.endpoint)
    for k, data in keys.items():
        r = good.get_object(Bucket="bucket", Key=k, Range="bytes=10-19")
        assert r["Body"].read() == data[10:20]
    last = srv.last()
    assert last["authorization"] == last["expected"]
    bad = botocore_client(srv.endpoint, secret_key="wrong")
    with pytest.raises(Exception) as e:
        bad.get_object(Bucket="bucket", Key="k/plain.bin")
    assert "SignatureDoesNotMatch" in str(e.value) or "403" in str(e.value)
    assert srv.last()["authorization"] != srv.last()["expected"]
    assert env["AWS_SECRET_ACCESS_KEY"] == "S3RVER" and env["AWS_ENDPOINT_URL"] == srv.endpoint


def test_sigv4_server_session_token(remote):
    srv = remote.testserver(sigv4=True, token="TOKEN/with+odd=chars")
    srv.put("t.bin", b"token data", bucket="bucket")
    assert srv.env()["AWS_SESSION_TOKEN"] == "TOKEN/with+odd=chars"
    ok = botocore_client(srv.endpoint, token="TOKEN/with+odd=chars")
    assert ok.get_object(Bucket="bucket", Key="t.bin")["Body"].read() == b"token data"
    for token in (None, "other"):
        with pytest.raises(Exception) as e:
            botocore_client(srv.endpoint, token=token).get_object(Bucket="bucket", Key="t.bin")
        assert "InvalidToken" in str(e.value) or "403" in str(e.value)


# -------------------------------------------------------------- namespace ---

def _rtt_min(port, n=5):
    """Smallest time of a tiny GET on a kept-alive connection: one RTT."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/small")
    c.getresponse().read()
    best = 1e9
    for _ in range(n):
        t = time.perf_counter()
        c.request("GET", "/small", headers={"Range": "bytes=0-9"})
        c.getresponse().read()
        best = min(best, time.perf_counter() - t)
    c.close()
    return best


def _rate(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t = time.perf_counter()
    c.request("GET", "/" + name)
    r = c.getresponse()
    n = 0
    while True:
        b = r.read(1 << 20)
        if not b:
            break
        n += len(b)
    c.close()
    return n / (time.perf_counter() - t)


def test_netns_delay_and_rate(remote, netns):
    ns = netns
    srv = remote.nginx(netns=ns, tls=False)
    srv.put("small", b"s" * 100)
    size = 16 * 10 ** 6
    with open(srv.root / "big", "wb") as f:
        f.truncate(size)
    # the server is only reachable inside the namespace
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    base = ns.call(_rtt_min, srv.port)
    ns.set_delay(20)
    delayed = ns.call(_rtt_min, srv.port)
    assert delayed - base >= 0.030, (base, delayed)  # 2 x 20 ms added
    stats = ns.delay_stats()
    assert stats["packets"] > 0 and stats["lost"] == 0
    assert "NFQUEUE" in ns.rules()
    ns.set_delay(0)
    assert ns.call(_rtt_min, srv.port) < delayed
    free = ns.call(_rate, srv.port, "big")
    cap = 100e6 / 8  # 100 Mbit/s in bytes
    ns.set_rate("100mbit")
    assert "tbf" in ns.qdisc()
    capped = ns.call(_rate, srv.port, "big")
    assert capped <= 1.25 * cap, capped          # a ceiling (burst 1 MB of 16)
    assert free >= 1.5 * capped, (free, capped)   # loopback is much faster
    assert srv.traffic().bytes("big") == 2 * size


def test_daemon_in_netns_mounts_visibly(netns, remote_mount, tmp_path):
    arr = np.arange(100_000, dtype=np.float64)
    src = tmp_path / "a.npz"
    np.savez_compressed(src, x=arr)
    mnt = remote_mount(src, netns=netns, env={"AWS_ACCESS_KEY_ID": "AKTEST"})
    assert mounted_fuse(mnt)
    got = guarded(lambda: np.load(mnt / "x.npy"), timeout=60)
    assert np.array_equal(got, arr)
    pid = remote_mount.mount_of(mnt).proc.pid
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns.inode
    assert os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"AWS_ACCESS_KEY_ID=AKTEST" in environ
    assert not any(e.startswith(b"AWS_CA_BUNDLE=") for e in environ)
    assert netns.pids() == [pid]
    problems = remote_mount.teardown_all()
    assert problems == [] and not mounted_fuse(mnt) and gone(pid)


# --------------------------------------------------------------- teardown ---

def test_teardown_leaves_nothing(tmp_path):
    why = netns_supported()
    if why:
        pytest.skip(why)
    rules_before = host_input_rules()
    ss = ServerSet(tmp_path / "set")
    try:
        ns = ss.netns()
        servers = [ss.nginx(netns=ns), ss.s3rver(netns=ns), ss.testserver(netns=ns),
                   ss.nginx(), ss.testserver(sigv4=True)]
        ns.set_delay(1)
        ns.set_rate("1gbit")
        pids = [p for s in servers for p in s.pids] + [ns.delayq.pid]
        assert all(not gone(p) for p in pids)
        assert ns.name in netns_names()
        assert sorted(ns.pids()) == sorted(servers[0].pids + servers[1].pids
                                           + servers[2].pids + [ns.delayq.pid])
    finally:
        problems = ss.close()
    assert problems == []
    assert all(gone(p) for p in pids)
    assert ns.name not in netns_names()
    assert not os.path.exists(ns.path)
    assert host_input_rules() == rules_before
    assert "NFQUEUE" not in host_input_rules().replace(rules_before, "")


# -------------------------------------------------- the benchmark's tools ---

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_remote  # noqa: E402


@pytest.mark.parametrize("tool", sorted(bench_remote.TOOLS))
def test_alt_tool_mounts_and_unmounts(tool, tmp_path):
    """The benchmark's helpers for rclone / s3fs / httpdirfs: the tool reads
    the right bytes off the same servers, and leaves no mount or process.
    (The tools are in install-deps' --bench set, not --test: skipped
    where they are not installed.)"""
    why = bench_remote.tool_status()[tool]
    if why:
        pytest.skip(why)
    data = payload(1_000_000, 7)
    src = tmp_path / "obj.bin"
    src.write_bytes(data)
    with bench_remote.RemoteSetup(tmp_path / "setup", {"d/obj.bin": src}, netns=False,
                                  s3="s3" in tool) as rs:
        srv = rs.s3 if "s3" in tool else rs.nginx
        mnt = tmp_path / "mnt"
        m = bench_remote.AltMount(tool, rs, mnt)
        try:
            pid = m.pid
            assert mounted_fuse(mnt)
            srv.mark()
            got = guarded(lambda: m.path("d/obj.bin").read_bytes(), timeout=60)
            assert got == data
            assert srv.traffic().bytes() >= len(data)
        finally:
            problems = m.close()
        assert problems == []
        assert not mounted_fuse(mnt) and gone(pid)
