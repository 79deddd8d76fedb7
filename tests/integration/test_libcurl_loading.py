"""libcurl is loaded only when a URL source is used (fs/curlsym.c).

npyfs does not link libcurl: it dlopen()s libcurl.so.4 when the first
http://, https:// or s3:// source is opened. Shown here:
- a mount of a local .npz reads right, and its daemon never maps libcurl
  (nor the libraries only libcurl brings: a cold start paid for them all);
- a mount of the same archive over HTTP (nginx) maps libcurl and reads
  right;
- with libcurl.so.4 unloadable (an empty file bound over it in a private
  mount namespace; needs root), local commands still work, and a URL
  source fails with one line that says libcurl is missing and what needs
  it, exit status 1, nothing mounted;
- a libcurl older than 7.85.0 (a stand-in library built here that says it
  is 7.74.0, bound over the real one the same way) is refused the same
  way, with the version found and the one needed: before 7.85.0 libcurl
  ignores the options that keep redirects to http(s), and before 7.75.0
  the one that signs S3 requests.
"""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import assert_same_array, guarded, in_child, load, run
from remote_servers import clean_env

# What libcurl 7.88 (Debian 12) brings with it and nothing else in npyfs
# needs; libcurl itself is the one that must not be there.
CURL_ONLY = ("libcurl", "libnghttp2", "libssh2", "librtmp", "libldap", "libpsl")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    d = tmp_path_factory.mktemp("libcurl_loading")
    rng = np.random.default_rng(4)
    arrs = {"a": np.cumsum(rng.integers(-3, 4, 300_000)).astype(np.float64),
            "b": np.asfortranarray(rng.integers(0, 1000, (40, 30)).astype(np.int16))}
    p = d / "w.npz"
    np.savez_compressed(p, **arrs)
    return p, arrs


def mapped_libraries(pid):
    """Base names of the shared objects mapped into process pid."""
    names = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and ".so" in fields[5]:
                names.add(os.path.basename(fields[5].strip()))
    return names


def check_members(mnt, arrs):
    assert sorted(os.listdir(mnt)) == sorted(f"{k}.npy" for k in arrs)

    def same():
        for k, want in arrs.items():
            assert_same_array(load(mnt / f"{k}.npy"), want)
        return True
    assert in_child(same, timeout=120)


def test_local_mount_maps_no_libcurl(archive, mount):
    src, arrs = archive
    mnt = mount(src)
    check_members(mnt, arrs)
    libs = guarded(mapped_libraries, mount.mount_of(mnt).proc.pid, timeout=30)
    assert any(n.startswith("libfuse3") for n in libs), libs  # the check sees libraries
    found = sorted(n for n in libs if n.startswith(CURL_ONLY))
    assert not found, f"a local mount maps {found}"


def test_url_mount_maps_libcurl(archive, http_server, remote_mount):
    src, arrs = archive
    http_server.put("w.npz", src)
    mnt = remote_mount(http_server.url("w.npz"))
    check_members(mnt, arrs)
    libs = guarded(mapped_libraries, remote_mount.mount_of(mnt).proc.pid, timeout=30)
    assert any(n.startswith("libcurl.so.4") for n in libs), sorted(libs)


def libcurl_files():
    """The files the dynamic loader would open for libcurl.so.4."""
    r = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True)
    paths = re.findall(r"^\s*libcurl\.so\.4 \(.*\) => (\S+)$", r.stdout, re.M)
    return sorted({os.path.realpath(p) for p in paths})


def without_libcurl(cmd, stand_in="/dev/null"):
    """cmd run in a private mount namespace where every libcurl.so.4 the
    loader could find is an empty file (or stand_in)."""
    binds = " && ".join(f"mount --bind '{stand_in}' '{p}'" for p in libcurl_files())
    script = (binds + " && " if binds else "") + 'exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            *[str(c) for c in cmd]]


def local_works_urls_refused(npyfs_bin, archive, tmp_path, stand_in, why_re):
    """With stand_in bound over libcurl.so.4: a local source lists, and each
    kind of URL source fails with exit status 1 and the one line
    `npyfs: cannot load libcurl (WHY): needed for ...`, WHY matching
    why_re; nothing mounted."""
    src, arrs = archive
    r = run(without_libcurl([npyfs_bin, "ls", src], stand_in), timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"a.npy\t<f8\t(300000,)" in r.stdout, r.stdout
    target = tmp_path / "mnt"
    target.mkdir()
    for cmd in ([npyfs_bin, "ls", "http://127.0.0.1:1/w.npz"],
                [npyfs_bin, "ls", "s3://bucket/w.npz"],
                [npyfs_bin, "mount", "-f", "https://127.0.0.1:1/w.npz", target]):
        r = run(without_libcurl(cmd, stand_in), timeout=60, env=clean_env())
        err = r.stderr.decode()
        assert r.returncode == 1, (cmd, r.returncode, err)
        assert len(err.strip().splitlines()) == 1, err
        assert re.fullmatch(r"npyfs: cannot load libcurl \((" + why_re + r")\): "
                            r"needed for http://, https:// and s3:// sources\n", err), err
    assert not os.path.ismount(target)


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare(1) is missing")
def test_without_libcurl_local_works_url_says_why(npyfs_bin, archive, tmp_path):
    local_works_urls_refused(npyfs_bin, archive, tmp_path, "/dev/null", r".*libcurl\.so\.4.*")


# Every function npyfs resolves, and a curl_version_info() that says 7.74.0
# (its struct begins: age, version string, version number).
OLD_LIBCURL_C = r"""
struct version_info { int age; const char *version; unsigned int version_num; char rest[512]; };
static struct version_info v = {10, "7.74.0", 0x074a00};
struct version_info *curl_version_info(int which) { (void)which; return &v; }
"""
CURL_FUNCS = ("easy_cleanup", "easy_getinfo", "easy_init", "easy_perform", "easy_reset",
              "easy_setopt", "easy_strerror", "getdate", "global_init", "share_cleanup",
              "share_init", "share_setopt", "slist_append", "slist_free_all")


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare(1) is missing")
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the stand-in")
def test_old_libcurl_refused(npyfs_bin, archive, tmp_path):
    c = tmp_path / "oldcurl.c"
    c.write_text(OLD_LIBCURL_C + "".join(f"void curl_{f}(void) {{}}\n" for f in CURL_FUNCS))
    so = tmp_path / "libcurl.so.4"
    run(["cc", "-shared", "-fPIC", "-o", so, c], timeout=60, check=True)
    local_works_urls_refused(npyfs_bin, archive, tmp_path, so,
                             re.escape("version 7.74.0; npyfs needs 7.85.0 or later"))
