"""Remote sources (issue 12) as a new user meets them: the README's "Remote
sources (HTTPS and S3)" walkthroughs, followed literally, and the claims of
that section and of the man page's REMOTE SOURCES that an acceptance test
from outside would check, against real servers started here on 127.0.0.1
(nginx for HTTPS, s3rver for the S3 API, tests/servers/testserver.py where a
server must check SigV4 signatures as real S3 does).

- The S3 walkthrough: credentials exported in the environment, `-o
  endpoint=...,s3_path_style`, np.load(mmap_mode='r'), npyfs unmount.
- The HTTPS walkthrough: a self-signed certificate refused without `-o
  cacert=` (the message says to give it) and accepted with it.
- Settings "as every AWS tool reads them": keys from ~/.aws/credentials and
  the region and endpoint from ~/.aws/config, chosen by AWS_PROFILE, checked
  by a server that verifies each signature with botocore; the profile's
  own `s3 =` / `  endpoint_url =` (the README's table names it); a profile
  with sso_* settings refused with a message saying so (the README says
  `sso_*`, not only sso_start_url).
- Messages at mount are those the README shows: `404 Not Found: no such
  object` for a web server's 404 (not S3's "no such key"), `the server
  ignores Range requests`, a host that does not resolve named, and a
  header or CA file that cannot be read named with the reason.
- `npyfs stats` counts no failure for a healthy mount: s3rver answers the
  opening suffix range wrongly (the README says it costs one more request),
  which is not a failure of the server.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import load, npy_bytes, read_file, run
from remote_servers import S3_ACCESS_KEY, S3_SECRET_KEY, clean_env

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYACCEPTKEY"
AKID = "AKIDACCEPTANCE"


def make_run17(path, seed=17):
    rng = np.random.default_rng(seed)
    u = np.cumsum(rng.standard_normal((600, 300)), axis=0)
    v = np.arange(50_000, dtype=np.int32)
    np.savez_compressed(path, u=u, v=v)
    return {"u": u, "v": v}


def mount_fails(npyfs_bin, tmp_path, source, *opts, env=None):
    """`npyfs mount` of source must fail: exit status 1, one line on stderr
    starting with "npyfs: ", nothing mounted. Returns that line."""
    mnt = tmp_path / f"fail{len(list(tmp_path.glob('fail*')))}"
    mnt.mkdir()
    cmd = [npyfs_bin, "mount"] + (["-o", ",".join(opts)] if opts else []) + [source, mnt]
    r = run(cmd, timeout=180, env=clean_env(env))
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, (r.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npyfs: "), err
    assert not os.path.ismount(mnt)
    return lines[0]


def stats_json(npyfs_bin, mnt):
    r = run([npyfs_bin, "stats", "--json", mnt], timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ------------------------------------------------------- the walkthroughs ---

def test_readme_s3_walkthrough(npyfs_bin, s3_server, tmp_path):
    """export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...; npyfs mount -o
    endpoint=URL,s3_path_style s3://experiments/runs/run17.npz /mnt/run17;
    np.load(mmap_mode='r'); npyfs unmount."""
    want = make_run17(tmp_path / "run17.npz")
    s3_server.put("runs/run17.npz", tmp_path / "run17.npz")
    mnt = tmp_path / "run17"
    mnt.mkdir()
    env = clean_env({"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY})
    r = run([npyfs_bin, "mount", "-o", f"endpoint={s3_server.endpoint},s3_path_style",
             s3_server.url("runs/run17.npz"), mnt], timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    def check():  # the map is gone when it returns, so the unmount is not busy
        a = load(mnt / "u.npy")
        assert a.shape == want["u"].shape and np.array_equal(a[-1], want["u"][-1])
        assert np.array_equal(a, want["u"])
        assert os.path.getsize(mnt / "v.npy") == len(npy_bytes(want["v"]))

    try:
        check()
    finally:
        r = run([npyfs_bin, "unmount", mnt], timeout=60)
        if r.returncode != 0:
            run(["fusermount3", "-u", "-z", mnt], timeout=60)
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(mnt)


def test_readme_https_walkthrough(npyfs_bin, http_server, remote_mount, tmp_path):
    """npyfs mount https://.../sim/run17.npz /mnt/run17: a private CA's
    certificate is refused with a hint to -o cacert=FILE, and accepted with
    it; then np.load(mmap_mode='r') reads the array."""
    want = make_run17(tmp_path / "run17.npz")
    http_server.put("sim/run17.npz", tmp_path / "run17.npz")
    url = http_server.url("sim/run17.npz", tls=True)
    line = mount_fails(npyfs_bin, tmp_path, url)
    assert "certificate" in line and "cacert=" in line, line
    mnt = remote_mount(url, f"cacert={http_server.cacert}")
    a = load(mnt / "u.npy")
    assert a[::100].sum() == want["u"][::100].sum()
    assert np.array_equal(a, want["u"])


def _bg_mount(npyfs_bin, cwd, opts, url, mnt, env):
    mnt.mkdir()
    r = run([npyfs_bin, "mount", "-o", opts, url, mnt.name], timeout=120, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr


def _bg_unmount(npyfs_bin, mnt):
    r = run([npyfs_bin, "unmount", mnt], timeout=60)
    if r.returncode != 0:
        run(["fusermount3", "-u", "-z", mnt], timeout=60)
    assert r.returncode == 0, r.stderr


def test_relative_ca_file_and_index_url_in_background(npyfs_bin, http_server, tmp_path):
    """`-o cacert=ca/ca.pem` and a relative `index_url=`, given from the
    directory that holds them: the daemon, which works from /, still finds
    both, for the connections it opens after the mount returned and for the
    first open of a member. (And stats says no background pass runs.)"""
    want = make_run17(tmp_path / "run17.npz")
    http_server.put("sim/run17.npz", tmp_path / "run17.npz")
    url = http_server.url("sim/run17.npz", tls=True)
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "ca.pem").write_bytes(Path(http_server.cacert).read_bytes())
    mnt = tmp_path / "m"
    _bg_mount(npyfs_bin, tmp_path, "cacert=ca/ca.pem", url, mnt,
              clean_env({"XDG_CACHE_HOME": str(tmp_path / "cache1")}))
    try:
        a = load(mnt / "u.npy")
        assert np.array_equal(a, want["u"])
        del a
        # a remote archive is indexed as reads go unless index= is given
        assert stats_json(npyfs_bin, mnt)["indexing"]["background"] is False
        r = run([npyfs_bin, "stats", mnt], timeout=60)
        assert b"(index=lazy: no background pass)" in r.stdout, r.stdout
    finally:
        _bg_unmount(npyfs_bin, mnt)

    r = run([npyfs_bin, "index", "-o", f"cacert={http_server.cacert},index_out=run17.idx",
             url], timeout=120, cwd=tmp_path,
            env=clean_env({"XDG_CACHE_HOME": str(tmp_path / "cache2")}))
    assert r.returncode == 0, r.stderr
    mnt = tmp_path / "m2"
    _bg_mount(npyfs_bin, tmp_path, f"cacert={http_server.cacert},index_url=run17.idx,verify=lazy",
              url, mnt, clean_env({"XDG_CACHE_HOME": str(tmp_path / "cache3")}))
    try:
        os.close(os.open(mnt / "u.npy", os.O_RDONLY))  # loads the published index
        st = stats_json(npyfs_bin, mnt)
        (arch,) = st["archives"]
        u = {m["name"]: m for m in arch["members"]}["u.npy"]
        assert u["index_complete"] and u["crc_checked"], u
    finally:
        _bg_unmount(npyfs_bin, mnt)


# ------------------------------------------------------------ AWS config ---

def _aws_files(home, config, credentials):
    aws = Path(home) / ".aws"
    aws.mkdir(parents=True, exist_ok=True)
    (aws / "config").write_text(config)
    (aws / "credentials").write_text(credentials)
    return home


def test_credentials_from_aws_files_and_profile(npyfs_bin, remote, remote_mount, tmp_path):
    """Keys in ~/.aws/credentials and the endpoint and region in
    ~/.aws/config, the profile picked by AWS_PROFILE (its default profile
    holds a wrong secret), against a server that checks every signature
    with botocore, as S3 does."""
    srv = remote.testserver(sigv4=(AKID, SECRET, "eu-west-3"))
    want = make_run17(tmp_path / "run17.npz")
    srv.put("bucket/runs/run17.npz", (tmp_path / "run17.npz").read_bytes())
    home = _aws_files(
        tmp_path / "home",
        "[default]\nregion = us-east-1\n\n"
        f"[profile work]\nregion = eu-west-3\nendpoint_url = {srv.endpoint}\n",
        f"[default]\naws_access_key_id = {AKID}\naws_secret_access_key = not-it\n\n"
        f"[work]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n")
    files = {"AWS_CONFIG_FILE": str(home / ".aws/config"),
             "AWS_SHARED_CREDENTIALS_FILE": str(home / ".aws/credentials")}
    mnt = remote_mount(srv.s3_url("runs/run17.npz"), env=dict(files, AWS_PROFILE="work"))
    assert read_file(mnt / "v.npy") == npy_bytes(want["v"])
    last = srv.last()
    assert last["authorization"] == last["expected"]
    assert "/eu-west-3/s3/aws4_request" in last["authorization"]
    # The default profile's wrong secret: rejected by the server, said so.
    line = mount_fails(npyfs_bin, tmp_path, srv.s3_url("runs/run17.npz"),
                       f"endpoint={srv.endpoint}", "region=eu-west-3", env=files)
    assert "SignatureDoesNotMatch" in line and "not-it" not in line, line


def test_profile_s3_section_endpoint_url(s3_server, remote_mount, tmp_path):
    """The README's endpoint row: "... the profile's `s3 = endpoint_url =`
    or `endpoint_url`": a profile whose S3 endpoint is in its own nested
    s3 section (before its global endpoint_url, which points nowhere)."""
    want = make_run17(tmp_path / "run17.npz")
    s3_server.put("nested/run17.npz", tmp_path / "run17.npz")
    home = _aws_files(
        tmp_path / "home",
        "[profile lab]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:9\n"
        f"s3 =\n    endpoint_url = {s3_server.endpoint}\n    addressing_style = path\n",
        f"[lab]\naws_access_key_id = {S3_ACCESS_KEY}\n"
        f"aws_secret_access_key = {S3_SECRET_KEY}\n")
    mnt = remote_mount(s3_server.url("nested/run17.npz"),
                       env={"AWS_PROFILE": "lab",
                            "AWS_CONFIG_FILE": str(home / ".aws/config"),
                            "AWS_SHARED_CREDENTIALS_FILE": str(home / ".aws/credentials")})
    assert np.array_equal(load(mnt / "u.npy"), want["u"])


def test_profile_with_sso_settings_refused(npyfs_bin, tmp_path):
    """README: "A profile that needs another program (role_arn,
    credential_process, sso_*, web_identity_token_file) is refused with a
    message saying so". A legacy SSO profile has sso_account_id,
    sso_role_name and sso_region (and sso_start_url, which a user may keep
    in a shared section): every sso_* setting counts."""
    home = _aws_files(tmp_path / "home",
                      "[profile sso]\nsso_account_id = 111122223333\n"
                      "sso_role_name = reader\nsso_region = us-east-1\nregion = us-east-1\n",
                      "")
    line = mount_fails(npyfs_bin, tmp_path, "s3://bucket/x.npz", "endpoint=http://127.0.0.1:9",
                       env={"AWS_PROFILE": "sso",
                            "AWS_CONFIG_FILE": str(home / ".aws/config"),
                            "AWS_SHARED_CREDENTIALS_FILE": str(home / ".aws/credentials")})
    assert "sso_" in line and "export" in line, line


# -------------------------------------------------------------- messages ---

def test_web_server_errors_as_the_readme_shows(npyfs_bin, http_server, fault_server, tmp_path):
    """README: `npyfs: https://data.example.org/sim/run17.npz: 404 Not
    Found: no such object`, and a server that sends the whole file is
    refused at mount (`the server ignores Range requests`). testserver.py's
    norange mode stands for a web server or proxy that ignores Range."""
    url = http_server.url("sim/missing.npz", tls=True)
    line = mount_fails(npyfs_bin, tmp_path, url, f"cacert={http_server.cacert}")
    assert line == f"npyfs: {url}: 404 Not Found: no such object", line
    make_run17(tmp_path / "run17.npz")
    fault_server.put("run17.npz", (tmp_path / "run17.npz").read_bytes())
    fault_server.mode("norange")
    line = mount_fails(npyfs_bin, tmp_path, fault_server.url("run17.npz"))
    assert "the server ignores Range requests" in line, line


def test_unresolvable_host_is_named(npyfs_bin, tmp_path):
    """The host that did not resolve is named, also when it is an S3
    endpoint the URL does not show (.invalid never resolves)."""
    line = mount_fails(npyfs_bin, tmp_path, "s3://bucket/x.npz",
                       "endpoint=http://no-such-endpoint.invalid:9000", "s3_anonymous",
                       "retries=0")
    assert "resolve" in line and "no-such-endpoint.invalid" in line, line


def test_url_with_a_raw_space(npyfs_bin, http_server, remote_mount, tmp_path):
    """A URL typed with a space in it (as a file name has it) is refused
    with what to do, and the same URL %-encoded mounts."""
    make_run17(tmp_path / "run 17.npz")
    http_server.put("sim/run 17.npz", tmp_path / "run 17.npz")
    line = mount_fails(npyfs_bin, tmp_path, http_server.base() + "/sim/run 17.npz")
    assert "not a valid URL" in line and "%20" in line, line
    mnt = remote_mount(http_server.url("sim/run 17.npz"))
    assert sorted(os.listdir(mnt)) == ["u.npy", "v.npy"]


def test_unreadable_option_files_are_named(npyfs_bin, http_server, tmp_path):
    """One line "that names the file (or the option) and the problem": a
    header file or a CA file that cannot be read is named, with why; a
    header file's values are never shown."""
    url = http_server.url("x.npz")
    missing = tmp_path / "no-such-headers"
    line = mount_fails(npyfs_bin, tmp_path, url, f"http_header={missing}")
    assert str(missing) in line and "No such file" in line, line
    line = mount_fails(npyfs_bin, tmp_path, url, f"cacert={tmp_path / 'no-such-ca.pem'}")
    assert str(tmp_path / "no-such-ca.pem") in line and "No such file" in line, line
    bad = tmp_path / "headers"
    bad.write_text("Bearer tok-3f9a-never-shown\n")
    line = mount_fails(npyfs_bin, tmp_path, url, f"http_header={bad}")
    assert str(bad) in line and "line 1" in line and "tok-3f9a" not in line, line


# ----------------------------------------------------------------- stats ---

def test_healthy_mount_counts_no_failure(npyfs_bin, s3_server, remote_mount, tmp_path):
    """s3rver answers the opening suffix range (bytes=-N) with the wrong
    bytes; the README says that costs it one more request. It is no failure
    of the server: after a mount and a full read, stats say 0 failures,
    for the mount and for the archive."""
    want = make_run17(tmp_path / "run17.npz")
    s3_server.put("ok/run17.npz", tmp_path / "run17.npz")
    mnt = remote_mount(s3_server.url("ok/run17.npz"), "s3_path_style", env=s3_server.env())
    assert np.array_equal(load(mnt / "u.npy"), want["u"])
    st = stats_json(npyfs_bin, mnt)
    assert st["remote"]["requests"] >= 2
    assert st["remote"]["failures"] == 0, st["remote"]
    remote = [a["remote"] for a in st["archives"] if a.get("remote")]
    assert remote and all(r["failures"] == 0 for r in remote), remote


# ---------------------------------------------------------- round trips ---

def test_big_zip_directory_is_one_more_request(npyfs_bin, http_server, remote_mount, tmp_path):
    """README: "Opening a zip costs one request (its last 56 KiB ...; a
    bigger directory one more)". An .npz of 3000 members has a directory of
    some 200 KiB: the mount fetches the end, then the rest of the directory
    in one request, and never the end's bytes again."""
    arrs = {f"member_with_a_longish_name_{i:05d}": np.arange(i % 40) for i in range(3000)}
    np.savez_compressed(tmp_path / "many.npz", **arrs)
    http_server.put("many.npz", tmp_path / "many.npz")
    size = (tmp_path / "many.npz").stat().st_size
    http_server.mark()
    mnt = remote_mount(http_server.url("many.npz"), f"index_dir={tmp_path / 'idx'}")
    assert len(os.listdir(mnt)) == 3000
    t = http_server.traffic()
    gets = t.select("many.npz", "GET")
    assert len(gets) == 2, [r.range for r in gets]
    assert gets[0].range == f"bytes=-{56 << 10}"
    tail_start = size - (56 << 10)
    a, b = [int(x) for x in gets[1].range[len("bytes="):].split("-")]
    assert b < tail_start + (16 << 10), (a, b, tail_start)  # at most a block into the end
    assert t.bytes("many.npz") < size - a + (16 << 10) + (56 << 10)
    name = "member_with_a_longish_name_02999.npy"
    assert read_file(mnt / name) == npy_bytes(arrs[name[:-4]])
