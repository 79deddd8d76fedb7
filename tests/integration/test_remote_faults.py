"""Remote sources when things go wrong (issue 12), with real servers started
by the tests on 127.0.0.1: nginx, s3rver, and tests/servers/testserver.py
where no packaged server does the thing (each use says which behaviour of
real S3 or of a real web server it stands for).

- An object replaced under the mount: the reads that need bytes not
  fetched before fail with EIO, and then every read of the archive does
  (the kernel's pages dropped), exactly like a local archive rewritten in
  place; no read ever returns a byte of the new object. nginx answers 412
  to If-Match; s3rver ignores If-Match (so the reply's ETag is what tells).
- 503 SlowDown replies and bodies cut short are retried: reads succeed,
  stats count the retries.
- A server that goes away: reads fail with EIO, the mount stays up, and once
  the server is back the same mount reads again; a server that stops
  answering: ETIMEDOUT (or EIO) for that read only.
- Every failure at mount is one line on stderr, exit status 1, nothing
  mounted: missing object, missing bucket, missing key, 403, no Range
  support, wrong credentials, wrong session token, unresolvable host.
- SigV4: keys with spaces, '+', '%' and non-ASCII letters, a prefix
  listing, and a session token, all through the mount against a server
  that checks every signature with botocore.
- Secrets (secret key, session token, a bearer token from -o http_header, a
  signed URL's query) appear in none of: the mount's stderr and log lines,
  stats (text and JSON), /proc/mounts, the daemon's command line, ls output,
  error messages.
"""

import errno
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import guarded, in_child, npy_bytes, read_file, run
from remote_servers import clean_env

SECRET = "SECRETKEY-do-not-show-1234"
TOKEN = "SESSIONTOKEN-do-not-show-5678"
BEARER = "BEARER-do-not-show-9999"
SIGNATURE = "SIGNATURE-do-not-show-4321"


def arrays(seed=3):
    rng = np.random.default_rng(seed)
    return {"a": np.cumsum(rng.integers(-3, 4, 1_500_000)).astype(np.float64),
            "b": rng.integers(0, 1000, (400, 300)).astype(np.int32)}


def make_npz(path, seed=3):
    arrs = arrays(seed)
    np.savez_compressed(path, **arrs)
    return arrs


def read_errno(path, off, n):
    """The errno of a pread of path (0 if it succeeded), and the bytes."""
    def go():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            return e.errno, b""
        try:
            return 0, os.pread(fd, n, off)
        except OSError as e:
            return e.errno, b""
        finally:
            os.close(fd)
    return guarded(go, timeout=120)


@pytest.fixture
def data_npz(tmp_path):
    p = tmp_path / "data.npz"
    np.savez_compressed(p, v=np.arange(200_000, dtype=np.float64), w=np.eye(50))
    return p


def stats(npyfs_bin, mnt, json_=True):
    r = run([npyfs_bin, "stats"] + (["--json"] if json_ else []) + [mnt], timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if json_ else r.stdout.decode()


# --------------------------------------------------------------- changes ---

@pytest.mark.parametrize("server", ["nginx", "s3rver"])
def test_object_replaced_under_the_mount(npyfs_bin, remote, remote_mount, tmp_path, server):
    """Like a local archive rewritten in place: once a fetch sees the new
    object (nginx: 412 to If-Match; s3rver: another ETag in the reply), the
    read fails with EIO, and from then on so does every read of the
    archive, pages read before included; no byte of the new object is
    ever returned."""
    old = make_npz(tmp_path / "old.npz", 3)
    new = make_npz(tmp_path / "new.npz", 4)
    old_raw, new_raw = npy_bytes(old["a"]), npy_bytes(new["a"])
    if server == "nginx":
        srv = remote.nginx(tls=False)
        srv.put("run.npz", (tmp_path / "old.npz").read_bytes())
        url, env, opts = srv.url("run.npz"), None, []
    else:
        srv = remote.s3rver()
        srv.put("run.npz", tmp_path / "old.npz")
        url, env, opts = srv.url("run.npz"), srv.env(), ["s3_path_style"]
    mnt = remote_mount(url, "verify=lazy", "index=lazy", "remote_cache=1M", *opts, env=env)
    err, head = read_errno(mnt / "a.npy", 0, 100_000)
    assert err == 0 and head == old_raw[:100_000]
    srv.replace("run.npz", (tmp_path / "new.npz").read_bytes())
    err, got = read_errno(mnt / "a.npy", len(old_raw) - 200_000, 100_000)
    assert err == errno.EIO, (err, got[:16])
    # the kernel's pages were dropped: the bytes read before fail too
    for off in (0, 50_000, len(old_raw) // 2):
        err, got = read_errno(mnt / "a.npy", off, 4096)
        assert err == errno.EIO or got == old_raw[off:off + 4096]
        assert got != new_raw[off:off + 4096] or got == old_raw[off:off + 4096]
    err, _ = read_errno(mnt / "b.npy", 0, 4096)
    assert err == errno.EIO
    st = stats(npyfs_bin, mnt)
    assert st["archives"][0]["changed"] is True
    assert st["archives"][0]["remote"]["failures"] >= 1


# ---------------------------------------------------------------- faults ---

def test_slowdown_and_cut_bodies_are_retried(npyfs_bin, fault_server, remote_mount, tmp_path):
    """503 SlowDown (as S3 sends under load) and a body cut short (a reset
    connection mid-reply) are retried with backoff; the reads succeed."""
    arrs = make_npz(tmp_path / "r.npz")
    fault_server.put("r.npz", (tmp_path / "r.npz").read_bytes())
    mnt = remote_mount(fault_server.url("r.npz"), "verify=lazy", "index=lazy", "retries=4")
    fault_server.fault("status", "503", 2)
    assert read_file(mnt / "b.npy") == npy_bytes(arrs["b"])
    fault_server.fault("cut", "3000", 2)
    fault_server.fault("reset", "", 1)
    assert read_file(mnt / "a.npy", timeout=300) == npy_bytes(arrs["a"])
    rem = stats(npyfs_bin, mnt)["archives"][0]["remote"]
    assert rem["retries"] >= 5 and rem["failures"] == 0, rem


def test_server_down_then_back(npyfs_bin, fault_server, remote_mount, tmp_path):
    """The server goes away: the reads that need it fail with EIO, the mount
    stays up; it comes back (same port): the same mount reads again."""
    arrs = make_npz(tmp_path / "r.npz")
    fault_server.put("r.npz", (tmp_path / "r.npz").read_bytes())
    mnt = remote_mount(fault_server.url("r.npz"), "verify=lazy", "index=lazy",
                       "remote_cache=1M", "retries=1", "timeout=5")
    raw = npy_bytes(arrs["a"])
    assert read_errno(mnt / "a.npy", 0, 4096) == (0, raw[:4096])
    fault_server.stop()
    err, _ = read_errno(mnt / "a.npy", len(raw) - 8192, 4096)
    assert err == errno.EIO
    assert sorted(os.listdir(mnt)) == ["a.npy", "b.npy"]  # still mounted
    fault_server.start()
    assert read_errno(mnt / "a.npy", len(raw) - 8192, 4096) == (0, raw[-8192:-4096])
    assert read_file(mnt / "b.npy") == npy_bytes(arrs["b"])
    assert stats(npyfs_bin, mnt)["archives"][0]["remote"]["failures"] >= 1


def test_failure_at_first_open_is_logged(npyfs_bin, fault_server, remote_mount, tmp_path):
    """A remote zip's member is located (its local header fetched) at its
    first open: when that fetch fails, the open gets EIO and the daemon logs
    it once, as for a failed read; the next open works."""
    arrs = make_npz(tmp_path / "r.npz")
    fault_server.put("r.npz", (tmp_path / "r.npz").read_bytes())
    mnt = remote_mount(fault_server.url("r.npz"), "verify=lazy", "index=lazy", "retries=0")
    fault_server.fault("status", "500", 3)
    with pytest.raises(OSError) as e:
        guarded(lambda: os.close(os.open(mnt / "b.npy", os.O_RDONLY)), timeout=60)
    assert e.value.errno == errno.EIO
    log = remote_mount.mount_of(mnt).stderr()
    assert log.count("fetching archive bytes failed") == 1, log
    fault_server.command("clear")
    assert read_file(mnt / "b.npy") == npy_bytes(arrs["b"])
    assert stats(npyfs_bin, mnt)["archives"][0]["remote"]["failures"] >= 1


def test_server_that_stops_answering(npyfs_bin, fault_server, remote_mount, tmp_path):
    """A server that accepts and then says nothing: the read fails after
    -o timeout (ETIMEDOUT, or EIO), only that read; the next one works."""
    arrs = make_npz(tmp_path / "r.npz")
    fault_server.put("r.npz", (tmp_path / "r.npz").read_bytes())
    mnt = remote_mount(fault_server.url("r.npz"), "verify=lazy", "index=lazy", "timeout=1",
                       "retries=0")
    fault_server.fault("stall", "4", 4)
    err, _ = read_errno(mnt / "b.npy", 0, 4096)
    assert err in (errno.ETIMEDOUT, errno.EIO)
    time.sleep(4)
    fault_server.command("clear")
    assert read_file(mnt / "b.npy") == npy_bytes(arrs["b"])


def test_stats_counts_the_connections_a_source_uses(npyfs_bin, fault_server, remote_mount,
                                                   tmp_path):
    """While a read waits on a server that says nothing, stats shows the
    archive using a connection (and as many fetches in flight); after it,
    none."""
    arrs = make_npz(tmp_path / "r.npz")
    fault_server.put("r.npz", (tmp_path / "r.npz").read_bytes())
    mnt = remote_mount(fault_server.url("r.npz"), "verify=lazy", "index=lazy", "timeout=3",
                       "retries=0", "connections=4")
    fault_server.fault("stall", "5", 1)
    t = threading.Thread(target=read_errno, args=(mnt / "b.npy", 0, 4096), daemon=True)
    t.start()
    seen = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not seen:
        rem = stats(npyfs_bin, mnt)["archives"][0]["remote"]
        seen = rem["connections"]
        assert rem["connections"] == rem["in_flight"], rem
        time.sleep(0.05)
    assert seen >= 1, "no connection in use while a fetch was stalled"
    t.join(30)
    fault_server.command("clear")
    assert read_file(mnt / "b.npy") == npy_bytes(arrs["b"])
    assert stats(npyfs_bin, mnt)["archives"][0]["remote"]["connections"] == 0


# --------------------------------------------------------- mount errors ---

def one_line_failure(npyfs_bin, tmp_path, source, *opts, env=None):
    """Mount source (foreground off: the command itself), expecting failure:
    exit 1, one line on stderr, nothing mounted. Returns the line."""
    mnt = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
    mnt.mkdir()
    cmd = [npyfs_bin, "mount"] + (["-o", ",".join(opts)] if opts else []) + [source, mnt]
    r = run(cmd, timeout=180, env=clean_env(env))
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, (r.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npyfs: "), err
    assert not os.path.ismount(mnt)
    return lines[0]


def test_mount_errors_nginx(npyfs_bin, http_server, tmp_path):
    line = one_line_failure(npyfs_bin, tmp_path, http_server.url("missing.npz"))
    assert "404" in line and http_server.url("missing.npz") in line, line
    http_server.put("dir/x.npz", b"x")
    line = one_line_failure(npyfs_bin, tmp_path, http_server.url("dir/"))
    assert "names one .npz or .npy.gz object" in line, line


def test_mount_errors_s3(npyfs_bin, s3_server, tmp_path, data_npz):
    s3_server.put("x.npz", data_npz)
    env = s3_server.env()
    line = one_line_failure(npyfs_bin, tmp_path, s3_server.url("x.npz", bucket="nobucket"),
                            "s3_path_style", env=env)
    assert "bucket" in line.lower() and "nobucket" in line, line
    line = one_line_failure(npyfs_bin, tmp_path, s3_server.url("nokey.npz"), "s3_path_style",
                            env=env)
    assert "NoSuchKey" in line or "no such key" in line.lower(), line
    line = one_line_failure(npyfs_bin, tmp_path, s3_server.url("empty/"), "s3_path_style",
                            env=env)
    assert "no .npz or .npy.gz object" in line, line


def test_mount_errors_faults(npyfs_bin, fault_server, tmp_path, data_npz):
    """A 403 (a private object, S3's AccessDenied), and a server that ignores
    Range (sends the whole object with 200, as some web servers and proxies
    do): refused at mount, not downloaded whole."""
    big = np.arange(200_000, dtype=np.float64)
    np.savez_compressed(tmp_path / "big.npz", a=big, b=big[::-1].copy())
    fault_server.put("big.npz", (tmp_path / "big.npz").read_bytes())
    fault_server.fault("status", "403", 1)
    line = one_line_failure(npyfs_bin, tmp_path, fault_server.url("big.npz"), "retries=0")
    assert "403" in line or "denied" in line.lower(), line
    fault_server.mode("norange")
    line = one_line_failure(npyfs_bin, tmp_path, fault_server.url("big.npz"))
    assert "Range" in line, line


def test_remote_cache_must_hold_blocks(npyfs_bin, tmp_path):
    """A block cache that could keep none of a fetch is refused, with the
    size that works (nothing is fetched: the options are checked first)."""
    line = one_line_failure(npyfs_bin, tmp_path, "http://127.0.0.1:9/x.npz",
                            "block=16M", "remote_cache=1M")
    assert "remote_cache=" in line and "65536K for block=16384K" in line, line


def test_mount_errors_credentials(npyfs_bin, remote, tmp_path, data_npz):
    """Against a server that checks SigV4 with botocore: a wrong secret, a
    missing session token; and a host name that does not resolve."""
    srv = remote.testserver(sigv4=("AKIDNPYFSTEST", SECRET, "us-east-1"), token=TOKEN)
    srv.put("bucket/x.npz", Path(data_npz).read_bytes())
    url = srv.s3_url("x.npz")
    line = one_line_failure(npyfs_bin, tmp_path, url, "s3_path_style",
                            env=srv.env(secret_key="wrong-secret"))
    assert "SignatureDoesNotMatch" in line or "secret" in line.lower(), line
    line = one_line_failure(npyfs_bin, tmp_path, url, "s3_path_style",
                            env={k: v for k, v in srv.env().items()
                                 if k != "AWS_SESSION_TOKEN"})
    assert "token" in line.lower(), line
    # no keys anywhere: the line names the source and the credentials file read
    creds = tmp_path / "my-credentials"
    creds.write_text("[other]\naws_access_key_id = A\naws_secret_access_key = B\n")
    line = one_line_failure(npyfs_bin, tmp_path, url, "s3_path_style",
                            env={"AWS_SHARED_CREDENTIALS_FILE": str(creds)})
    assert line.startswith(f"npyfs: {url}: no AWS credentials found"), line
    assert f"profile 'default' of {creds}" in line, line
    line = one_line_failure(npyfs_bin, tmp_path, "http://no-such-host.invalid/x.npz",
                            "retries=0")
    assert "resolve" in line.lower() or "dns" in line.lower(), line


# ------------------------------------------------------------------ SigV4 ---

def test_sigv4_keys_through_the_mount(npyfs_bin, remote, remote_mount, tmp_path):
    """Keys with a space, '+', '%' and non-ASCII letters, each a source of
    one mount, and the same keys under a prefix listed through the mount:
    every request is checked against botocore's signature (a wrong one is
    a 403 SignatureDoesNotMatch, which would fail the mount)."""
    srv = remote.testserver(sigv4=("AKIDNPYFSTEST", SECRET, "us-east-1"), token=TOKEN)
    keys = ["a b.npz", "x+y.npz", "100%.npz", "dir é/ü ñ.npz"]
    want = {}
    for i, k in enumerate(keys):
        want[k] = make_npz(tmp_path / f"k{i}.npz", 10 + i)
        srv.put(f"bucket/data/{k}", (tmp_path / f"k{i}.npz").read_bytes())
    mnt = remote_mount([srv.s3_url("data/" + k) for k in keys], "s3_path_style",
                       env=srv.env())
    for k in keys:
        name = k.rsplit("/", 1)[-1]
        assert read_file(mnt / name / "b.npy") == npy_bytes(want[k]["b"])
    tree = remote_mount(srv.s3_url("data/"), "s3_path_style", env=srv.env())
    assert sorted(os.listdir(tree)) == ["100%.npz", "a b.npz", "dir é", "x+y.npz"]
    assert read_file(tree / "dir é" / "ü ñ.npz" / "b.npy") == \
        npy_bytes(want["dir é/ü ñ.npz"]["b"])
    last = srv.last()
    assert last["authorization"] == last["expected"]
    assert dict((k.lower(), v) for k, v in last["headers"])["x-amz-security-token"] == TOKEN


# ---------------------------------------------------------------- secrets ---

def test_secrets_never_shown(npyfs_bin, remote, remote_mount, tmp_path, data_npz):
    """A secret key and a session token (environment), a bearer token (-o
    http_header=FILE) and a signed URL's query (on the command line) reach
    the servers, and none of them shows anywhere a person or another user
    can look: stderr and log lines, stats, /proc/mounts, the daemon's
    command line, ls, error messages."""
    srv = remote.testserver(sigv4=("AKIDNPYFSTEST", SECRET, "us-east-1"), token=TOKEN)
    srv.put("bucket/x.npz", Path(data_npz).read_bytes())
    ng = remote.nginx(tls=False)
    np.savez_compressed(tmp_path / "w.npz", w=np.arange(50_000))
    ng.put("w.npz", tmp_path / "w.npz")
    hdr = tmp_path / "headers"
    hdr.write_text(f"Authorization: Bearer {BEARER}\n")
    signed = ng.url("w.npz") + f"?X-Amz-Signature={SIGNATURE}&X-Amz-Expires=600"
    secrets = [SECRET, TOKEN, BEARER, SIGNATURE]
    mnt = remote_mount([srv.s3_url("x.npz"), signed], "s3_path_style",
                       f"http_header={hdr}", env=srv.env())
    assert read_file(mnt / "w.npz" / "w.npy") == npy_bytes(np.arange(50_000))
    assert len(read_file(mnt / "x.npz" / os.listdir(mnt / "x.npz")[0])) > 0
    seen = [stats(npyfs_bin, mnt, json_=False), json.dumps(stats(npyfs_bin, mnt)),
            Path("/proc/mounts").read_text()]
    m = remote_mount.mount_of(mnt)
    seen.append(Path(f"/proc/{m.proc.pid}/cmdline").read_bytes().decode(errors="replace"))
    assert "X-Amz-Expires" not in seen[-1] or SIGNATURE not in seen[-1]
    for args in (["ls", signed], ["ls", "--json", signed], ["ls", "-o", "s3_path_style",
                                                           srv.s3_url("x.npz")]):
        r = run([npyfs_bin] + args, timeout=120, env=clean_env(srv.env()))
        assert r.returncode == 0, r.stderr
        seen += [r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")]
    for bad in (ng.url("missing.npz") + f"?X-Amz-Signature={SIGNATURE}",
                srv.s3_url("missing.npz")):
        target = tmp_path / "bad"
        target.mkdir(exist_ok=True)
        r = run([npyfs_bin, "mount", "-o", f"s3_path_style,http_header={hdr}", bad, target],
                timeout=120, env=clean_env(srv.env()))
        assert r.returncode == 1
        seen.append(r.stderr.decode(errors="replace"))
    seen.append(m.stderr())
    for text in seen:
        for s in secrets:
            assert s not in text, (s, text[:2000])
    assert "**" in seen[3] or "?" not in seen[3]  # the query was blanked, not dropped
