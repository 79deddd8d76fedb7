#!/usr/bin/python3
"""Remote-source pieces for scripts/bench (issue 12): the servers in a shaped
network namespace, and the tools users pick today (rclone mount, s3fs,
httpdirfs) mounted on the same servers, so the bench can compare time and
bytes fetched.

As a module (scripts/bench imports it; the servers, counters and namespaces
are tests/integration/remote_servers.py's):

    import bench_remote as br
    with br.RemoteSetup(workdir, {"big.npz": path}, netns=True) as rs:
        rs.shape(delay_ms=10)            # RTT + 20 ms; rs.shape(rate="400mbit")
        rs.http_url("big.npz"), rs.s3_url("big.npz"), rs.s3_env()
        argv = rs.argv(["npyfs", "mount", ...])     # run inside the namespace
        with br.counting(rs.nginx) as c:
            ...                                     # c.traffic.count(), .bytes()
        with br.AltMount("rclone-s3", rs, mnt) as m:
            open(m.path("big.npz"), "rb") ...

    br.tool_status()    {tool: None if installed, else why not}

AltMount raises AltToolError(reason) when a tool is missing, exits, or its
mount does not answer in time (the bench prints "fails: <reason>"), and always
unmounts in close(): fusermount3 -u, the daemon stopped by its pid, then
fusermount3 -u -z.

Tools (all read-only, with their default caching, as a user would run them):
  rclone-s3    rclone mount REMOTE:bucket, an s3 remote (provider Other,
               force_path_style) on s3rver; without AWS_* in the environment
               (this machine's AWS_CA_BUNDLE breaks rclone's AWS SDK)
  rclone-http  rclone mount of an http remote on nginx's directory listing
  s3fs         s3fs bucket MNT -o url=,use_path_request_style,passwd_file=,ro
  httpdirfs    httpdirfs --no-range-check URL MNT (nginx's 206 replies carry
               no Accept-Ranges header, which its check wants)

As a program, a self-check of these helpers against a small file:

    scripts/bench_remote.py [--size MB] [--netns] [--delay MS] [--rate RATE]

mounts every tool (and nothing else), reads the file whole and 20 random
4 KiB pieces through it, compares the bytes, and prints per tool the time and
the requests and bytes the server saw. Run as root (FUSE, namespaces).
"""

import argparse
import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import remote_servers as rsv  # noqa: E402
from remote_servers import (ServerError, ServerSet, clean_env, counting,  # noqa: E402,F401
                            quote_key)

TOOLS = {
    "rclone-s3": ("rclone", "rclone"),
    "rclone-http": ("rclone", "rclone"),
    "s3fs": ("s3fs", "s3fs"),
    "httpdirfs": ("httpdirfs", "httpdirfs"),
}
MOUNT_TIMEOUT = 60.0
UNMOUNT_TIMEOUT = 30.0


class AltToolError(RuntimeError):
    """A comparison tool is missing, failed, or its mount did not answer;
    str() is the reason."""


def tool_status():
    """{tool: None if its program is installed, else why not}."""
    out = {}
    for tool, (exe, pkg) in TOOLS.items():
        out[tool] = (None if shutil.which(exe)
                     else f"{exe} not installed (Debian {pkg}; scripts/install-deps --bench)")
    return out


def fuse_mounted(mnt):
    """True if /proc/self/mountinfo lists mnt as a FUSE mount (no stat of it)."""
    target = os.path.realpath(str(mnt))
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                point = left.split()[4].replace("\\040", " ").replace("\\134", "\\")
                if point == target and right.split()[0].startswith("fuse"):
                    return True
    except OSError:
        pass
    return False


def unmount(mnt, timeout=UNMOUNT_TIMEOUT):
    """fusermount3 -u (then umount) if mnt is a FUSE mount; True if it is gone."""
    for cmd in (["fusermount3", "-u", str(mnt)], ["umount", str(mnt)]):
        if not fuse_mounted(mnt):
            return True
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(cmd, capture_output=True, timeout=timeout)
    return not fuse_mounted(mnt)


def lazy_unmount(mnt):
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True,
                       timeout=UNMOUNT_TIMEOUT)
    return not fuse_mounted(mnt)


# ------------------------------------------------------------ the setup ---

class RemoteSetup:
    """nginx and s3rver serving the same files (name -> local path: nginx
    links them, s3rver gets them uploaded to bucket "bench"), inside a fresh
    network namespace when netns is true. shape() sets delay and rate;
    close() stops everything and deletes the namespace."""

    def __init__(self, workdir, files, *, netns=True, tls=False, s3=True):
        self.dir = Path(workdir)
        self.set = ServerSet(self.dir / "servers")
        try:
            self.netns = self.set.netns() if netns else None
            self.nginx = self.set.nginx(netns=self.netns, tls=tls)
            self.s3 = self.set.s3rver(netns=self.netns, buckets=("bench",)) if s3 else None
            for name, path in files.items():
                self.nginx.put(name, Path(path))
                if self.s3:
                    self.s3.put(name, Path(path))
        except BaseException:
            self.set.close()
            raise

    def shape(self, delay_ms=0, rate=None, burst="1mb", latency="50ms"):
        """Delay each packet delay_ms on INPUT (RTT + 2*delay_ms) and cap lo
        at rate (tc tbf syntax, e.g. "400mbit"; None: no cap)."""
        if self.netns is None:
            raise ValueError("shaping needs RemoteSetup(netns=True)")
        self.netns.set_delay(delay_ms)
        if rate:
            self.netns.set_rate(rate, burst, latency)
        else:
            self.netns.clear_rate()

    def argv(self, cmd):
        """cmd run in the namespace (unchanged without one)."""
        return self.netns.argv(cmd) if self.netns else [str(c) for c in cmd]

    def http_url(self, name):
        return self.nginx.url(name)

    def s3_url(self, name):
        return self.s3.url(name)

    def s3_env(self):
        """The process environment for npyfs on s3rver (no other AWS_*)."""
        return clean_env(self.s3.env())

    def close(self):
        return self.set.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        problems = self.close()
        if problems and exc[0] is None:
            raise ServerError("; ".join(problems))
        return False


# ------------------------------------------------------- the other tools ---

class AltMount:
    """tool mounted at mnt on setup's servers (a RemoteSetup, or anything
    with .nginx, .s3 and .netns); see the module docstring. Use as a context
    manager, or call close() in a finally."""

    def __init__(self, tool, setup, mnt, *, timeout=MOUNT_TIMEOUT, extra=()):
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool}; known: {', '.join(TOOLS)}")
        why = tool_status()[tool]
        if why:
            raise AltToolError(why)
        self.tool, self.setup, self.mnt = tool, setup, Path(mnt)
        self.mnt.mkdir(parents=True, exist_ok=True)
        if fuse_mounted(self.mnt):
            raise AltToolError(f"{self.mnt} is already a mount point")
        self.dir = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=self.mnt.parent))
        self.log = self.dir / "log"
        self.child = None
        argv, env = getattr(self, "_argv_" + tool.replace("-", "_"))()
        argv += list(extra)
        t0 = time.perf_counter()
        self.child = rsv.Child(argv, self.log, netns=setup.netns, env=env)
        self.pid = self.child.pid
        try:
            self._wait(timeout)
        except BaseException:
            self.close()
            raise
        self.mount_seconds = time.perf_counter() - t0

    # -- argv and environment per tool --
    def _need(self, what):
        srv = getattr(self.setup, what, None)
        if srv is None:
            raise AltToolError(f"{self.tool} needs a{'n' if what == 's3' else ''} "
                               f"{what} server in the setup")
        return srv

    def _rclone(self, remote, conf_text):
        conf = self.dir / "rclone.conf"
        conf.write_text(conf_text)
        conf.chmod(0o600)
        argv = ["rclone", "mount", remote, self.mnt, "--config", conf, "--read-only",
                "--cache-dir", self.dir / "cache", "--log-file", self.log,
                "--log-level", "NOTICE"]
        env = clean_env({"HOME": str(self.dir), "XDG_CACHE_HOME": str(self.dir / "xdg")})
        return argv, env

    def _argv_rclone_s3(self):
        s3 = self._need("s3")
        return self._rclone(
            f"npyfs-s3:{s3.bucket}",
            "[npyfs-s3]\ntype = s3\nprovider = Other\n"
            f"access_key_id = {rsv.S3_ACCESS_KEY}\nsecret_access_key = {rsv.S3_SECRET_KEY}\n"
            f"endpoint = {s3.endpoint}\nregion = {rsv.S3_REGION}\nforce_path_style = true\n")

    def _argv_rclone_http(self):
        ng = self._need("nginx")
        return self._rclone("npyfs-http:", f"[npyfs-http]\ntype = http\nurl = {ng.base()}/\n")

    def _argv_s3fs(self):
        s3 = self._need("s3")
        pw = self.dir / "passwd"
        pw.write_text(f"{rsv.S3_ACCESS_KEY}:{rsv.S3_SECRET_KEY}\n")
        pw.chmod(0o600)
        argv = ["s3fs", s3.bucket, self.mnt, "-f", "-o", f"url={s3.endpoint}",
                "-o", "use_path_request_style", "-o", f"passwd_file={pw}", "-o", "ro",
                "-o", f"endpoint={rsv.S3_REGION}"]
        return argv, clean_env({"HOME": str(self.dir)})

    def _argv_httpdirfs(self):
        ng = self._need("nginx")
        argv = ["httpdirfs", "-f", "--no-range-check", f"{ng.base()}/", self.mnt]
        return argv, clean_env({"HOME": str(self.dir),
                                "XDG_CACHE_HOME": str(self.dir / "xdg")})

    # -- life --
    def _wait(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if not self.child.alive():
                raise AltToolError(f"{self.tool} exited with {self.child.proc.returncode}: "
                                   + (self.child.tail(3).strip() or "no output"))
            if fuse_mounted(self.mnt):
                try:
                    os.listdir(self.mnt)
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise AltToolError(f"{self.tool} mount did not answer within {timeout:.0f} s: "
                                   + (self.child.tail(3).strip() or "no output"))
            time.sleep(0.02)

    def path(self, name):
        """The mount's path of a file the setup serves (bucket key / path
        under nginx's root)."""
        return self.mnt / name

    def close(self):
        """Unmount, stop the daemon by its pid, remove the tool's files.
        Returns a list of problems (empty when clean); never raises."""
        problems = []
        if not unmount(self.mnt):
            problems.append(f"{self.tool}: unmount failed")
        if self.child is not None:
            try:
                self.child.proc.wait(UNMOUNT_TIMEOUT if not problems else 1)
            except subprocess.TimeoutExpired:
                if not problems:
                    problems.append(f"{self.tool}: daemon did not exit after unmount")
            self.child.stop()
        if fuse_mounted(self.mnt) and not lazy_unmount(self.mnt):
            problems.append(f"{self.tool}: still mounted at {self.mnt}")
        shutil.rmtree(self.dir, ignore_errors=True)
        return problems

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        problems = self.close()
        if problems and exc[0] is None:
            raise AltToolError("; ".join(problems))
        return False


# ------------------------------------------------------------ self-check ---

def _read_all(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def _drop_caches():
    with contextlib.suppress(OSError):
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def check(args):
    work = Path(tempfile.mkdtemp(prefix="npyfs-bench-remote-", dir=args.dir))
    src = work / "data.bin"
    rng = random.Random(1)
    size = int(args.size * 1e6)
    with open(src, "wb") as f:
        f.write(rng.randbytes(size))
    want = _read_all(src)
    blob = src.read_bytes()
    offsets = [rng.randrange(0, size - 4096) for _ in range(20)]
    rows = []
    try:
        with RemoteSetup(work, {"data.bin": src}, netns=args.netns) as rs:
            if args.netns:
                rs.shape(args.delay, args.rate)
            for tool in TOOLS:
                srv = rs.s3 if tool in ("rclone-s3", "s3fs") else rs.nginx
                row = {"tool": tool}
                rows.append(row)
                mnt = work / f"mnt-{tool}"
                try:
                    srv.mark()
                    with AltMount(tool, rs, mnt) as m:
                        row["mount_s"] = m.mount_seconds
                        row["mount_requests"] = srv.traffic().count()
                        _drop_caches()
                        srv.mark()
                        t = time.perf_counter()
                        ok = _read_all(m.path("data.bin")) == want
                        row["pass_s"] = time.perf_counter() - t
                        tr = srv.traffic()
                        row["pass_ok"] = ok
                        row["pass_requests"], row["pass_bytes"] = tr.count(), tr.bytes()
                    # random reads on a fresh mount: nothing cached
                    with AltMount(tool, rs, mnt) as m:
                        _drop_caches()
                        srv.mark()
                        t = time.perf_counter()
                        bad = 0
                        fd = os.open(m.path("data.bin"), os.O_RDONLY)
                        try:
                            for off in offsets:
                                bad += os.pread(fd, 4096, off) != blob[off:off + 4096]
                        finally:
                            os.close(fd)
                        row["random_s"] = (time.perf_counter() - t) / len(offsets)
                        tr = srv.traffic()
                        row["random_ok"] = bad == 0
                        row["random_requests"] = tr.count() / len(offsets)
                        row["random_bytes"] = tr.bytes() / len(offsets)
                except AltToolError as e:
                    row["fails"] = str(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shape = (f" in a namespace, delay {args.delay} ms/packet, rate {args.rate or 'uncapped'}"
             if args.netns else " on the host's loopback")
    print(f"{args.size:g} MB file{shape}")
    for r in rows:
        if "fails" in r:
            print(f"{r['tool']:12} fails: {r['fails']}")
            continue
        print(f"{r['tool']:12} mount {r['mount_s']:.2f} s ({r['mount_requests']} req); "
              f"pass {r['pass_s']:.2f} s, {r['pass_requests']} req, "
              f"{r['pass_bytes'] / size:.2f}x the file, bytes {'ok' if r['pass_ok'] else 'WRONG'}; "
              f"random 4 KiB {r['random_s'] * 1e3:.0f} ms, {r['random_requests']:.1f} req, "
              f"{r['random_bytes'] / 1024:.0f} KiB per read, "
              f"bytes {'ok' if r['random_ok'] else 'WRONG'}")
    return 0 if all("fails" not in r and r["pass_ok"] and r["random_ok"] for r in rows) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=20, help="file size in MB (default 20)")
    p.add_argument("--netns", action="store_true", help="servers and tools in a namespace")
    p.add_argument("--delay", type=float, default=0, help="ms per packet (with --netns)")
    p.add_argument("--rate", default=None, help="tbf rate, e.g. 400mbit (with --netns)")
    p.add_argument("--dir", default=None, help="work directory parent (default: /tmp)")
    args = p.parse_args()
    if (args.delay or args.rate) and not args.netns:
        p.error("--delay and --rate need --netns")
    sys.exit(check(args))


if __name__ == "__main__":
    main()
