"""Servers, traffic counters and network shaping for the remote-source tests
(issue 12) and for the benchmark's remote section.

Everything listens on 127.0.0.1, either on the host's loopback or inside a
network namespace made here; no other address is ever a target. Each server
has its own directory (config, pid, logs, data), is started as our child with
a timeout on start, and is stopped by its pid (SIGTERM, then SIGKILL); it also
gets SIGTERM if the process that started it dies (PR_SET_PDEATHSIG). A missing
server program raises ServerError saying what to install (the pytest fixtures
turn it into a failure, not a skip: CI installs everything with
scripts/install-deps --test); only what needs root (namespaces) skips without
it.

The classes need only the standard library (and botocore for S3), so
scripts/bench_remote.py imports this module too; the pytest fixtures at the
end are defined only when pytest is importable, and conftest.py registers
them.

Servers (all take netns=Netns or None, and a work directory):
- Nginx: a directory (.root) over HTTP (.port) and HTTPS (.tls_port, with a
  self-signed certificate for IP 127.0.0.1 and DNS localhost made by openssl
  at start; .cacert is the file for `-o cacert=`). Keep-alive, ETag, Range,
  If-Match (412) and a directory listing (autoindex, for rclone's and
  httpdirfs's http remotes). Per-request latency from nginx's echo module:
  /delay/SECONDS/NAME sleeps SECONDS then serves /NAME, and /hdelay/NAME
  sleeps for the seconds in the request's X-Delay header (url(name,
  delay_ms=..) builds the first). JSON access log, see traffic().
- S3rver: s3rver (node, tests/servers/node_modules) with buckets, credentials
  S3RVER/S3RVER, path-style. put()/replace()/delete()/get()/head() use
  botocore; env() is what npyfs needs in its environment. Requests are logged
  by tests/servers/reqlog.js, preloaded into node.
- FaultServer: tests/servers/testserver.py (faults, broken Range, If-Match,
  SigV4 checked against botocore); fault()/mode()/delay()/stats()/last() send
  its stdin commands; restart() brings it back on the same port.

Every server has traffic() (a Traffic: the requests since the last mark(),
with method, key, range, status and body bytes) and mark(); counting(*servers)
wraps both around a block.

Netns: `ip netns add npyfs-PID-XXXX` with lo up; argv(cmd) runs cmd in it
with nsenter --net (NOT `ip netns exec`, which also makes a private mount
namespace: a FUSE mount made under it is invisible to everyone else); call(fn)
runs fn in a thread that entered it (sockets made there stay in it);
set_rate() puts a tbf qdisc on lo; set_delay(ms) holds every TCP packet ms
milliseconds on INPUT with tests/servers/delayq.c (NFQUEUE; this kernel has
no netem), so the round trip grows by 2*ms. close() stops delayq and deletes
the namespace, with its qdisc and iptables rule.

ServerSet starts any of these under one directory and stops all of them on
close(), the namespaces last.

Fixtures (registered by conftest.py):
  remote          a ServerSet for the test: remote.nginx(tls=, root=, netns=),
                  remote.s3rver(buckets=, netns=), remote.testserver(sigv4=,
                  token=, netns=, port=), remote.netns(); start errors fail the
                  test, netns() skips without root
  remote_module   the same, shared by one test module
  http_server     remote.nginx()            s3_server     remote.s3rver()
  fault_server    remote.testserver()       sigv4_server  remote.testserver(sigv4=True)
  netns           remote.netns()
  remote_mount    remote_mount(source(s), *opts, env=, netns=, name=) -> mount
                  point; URLs kept as strings, env for the daemon (AWS_*),
                  the daemon in netns (nsenter), unmounted before the servers stop
A server in a namespace is reachable only from inside it: talk to it with
netns.call(fn) (S3rver's botocore calls already do), run programs with
netns.argv(cmd), mount with remote_mount(..., netns=ns).
"""

import contextlib
import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVERS_DIR = REPO / "tests" / "servers"
PYTHON = "/usr/bin/python3"
NGINX = "/usr/sbin/nginx"
NODE = "/usr/bin/node"
OPENSSL = "/usr/bin/openssl"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
S3RVER_JS = SERVERS_DIR / "node_modules" / "s3rver" / "bin" / "s3rver.js"
REQLOG_JS = SERVERS_DIR / "reqlog.js"
TESTSERVER = SERVERS_DIR / "testserver.py"

S3_ACCESS_KEY = "S3RVER"
S3_SECRET_KEY = "S3RVER"
S3_REGION = "us-east-1"

START_TIMEOUT = 20.0   # seconds for a server to accept connections
STOP_TIMEOUT = 5.0     # seconds after SIGTERM before SIGKILL
CMD_TIMEOUT = 20.0     # seconds for a control command's answer

INSTALL_HINT = "scripts/install-deps --test"


class ServerError(RuntimeError):
    """A server or tool could not be started; the message says why (and what
    to install)."""


def _require(path, what):
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ServerError(f"MISSING: {path} (Debian {what}; {INSTALL_HINT})")


# ------------------------------------------------------------- processes ---

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000


def _die_with_parent():
    # preexec_fn: SIGTERM when the thread that started us ends (pytest's main
    # thread; see Child).
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Child:
    """One child process, stopped by its pid. argv runs in netns if given
    (nsenter execs, so the pid is the program's). stdout/stdin: "pipe" for a
    pipe, else stdout goes to the log with stderr.

    PR_SET_PDEATHSIG is tied to the starting thread: only set when started
    from the main thread, so a child started from a short-lived thread is not
    killed when that thread ends."""

    def __init__(self, argv, log, *, netns=None, env=None, stdin=None, stdout=None, cwd=None):
        self.argv = [str(a) for a in argv]
        if netns is not None:
            self.argv = netns.argv(self.argv)
        self.log = Path(log)
        self._logf = open(self.log, "ab")
        main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=env,
            stdin=subprocess.PIPE if stdin == "pipe" else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout == "pipe" else self._logf,
            stderr=self._logf, start_new_session=True,
            preexec_fn=_die_with_parent if main else None)
        self.pid = self.proc.pid
        self._buf = b""

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, SIGKILL; reaps the child. Idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout)
        for f in (self.proc.stdin, self.proc.stdout, self._logf):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def tail(self, n=20):
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def readline(self, timeout=CMD_TIMEOUT):
        """One line from the child's stdout pipe (without the newline), or
        raise ServerError on timeout or end of file."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(f"no answer within {timeout:.0f} s from {self.argv[0]}"
                                  f" (pid {self.pid}); log:\n{self.tail()}")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                b = os.read(fd, 65536)
                if not b:
                    raise ServerError(f"{self.argv} exited (status {self.proc.poll()}); "
                                      f"log:\n{self.tail()}")
                self._buf += b
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def command(self, line, timeout=CMD_TIMEOUT):
        """Write one line to the child's stdin, return its one-line answer."""
        if self.proc.poll() is not None:
            raise ServerError(f"{self.argv[0]} is not running; log:\n{self.tail()}")
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.readline(timeout)


def free_port(netns=None):
    """A TCP port free on 127.0.0.1 right now (in netns if given)."""
    def pick():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    return netns.call(pick) if netns else pick()


def _listening_ports(pid):
    """Ports pid itself listens on (TCP, IPv4), in its own namespace: a
    LISTEN socket in /proc/PID/net/tcp whose inode is one of pid's fds. So
    another program that took the port meanwhile is never mistaken for
    ours."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        with open(f"/proc/{pid}/net/tcp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return set()
    ports = set()
    for line in lines:
        w = line.split()
        if len(w) > 9 and w[3] == "0A" and w[9] in inodes:
            ports.add(int(w[1].split(":")[1], 16))
    return ports


def wait_listening(child, ports, timeout=START_TIMEOUT):
    """Wait until the child listens on every port; False if it died or the
    time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        if not child.alive():
            return False
        if set(ports) <= _listening_ports(child.pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def quote_key(name):
    """A path or S3 key as a URL path: only A-Za-z0-9-_.~/ raw, the rest
    %XX (what S3's canonical form and nginx's decoding both accept)."""
    return urllib.parse.quote(name, safe="/-_.~")


# --------------------------------------------------------------- traffic ---

@dataclass(frozen=True)
class Request:
    """One request as a server saw it."""
    method: str
    key: str          # decoded path without the leading /, a /delay/S/ prefix or the query
    query: str
    range: str        # the Range header ("" if none)
    status: object    # int, or None where the server does not say (testserver.py)
    body_bytes: int   # body bytes sent (testserver.py: computed from the range, see there)
    if_match: str = ""
    conn: object = None  # connection number (nginx only)


def parse_range(value):
    """'bytes=A-B' -> (A, B); 'bytes=A-' -> (A, None); anything else None."""
    if not value.startswith("bytes=") or "," in value:
        return None
    a, _, b = value[6:].partition("-")
    try:
        return (int(a), int(b) if b else None) if a else None
    except ValueError:
        return None


class Traffic:
    """A list of Requests with the sums the tests assert on."""

    def __init__(self, requests=()):
        self.requests = list(requests)

    def __len__(self):
        return len(self.requests)

    def __add__(self, other):
        return Traffic(self.requests + other.requests)

    def __repr__(self):
        return f"Traffic({len(self.requests)} requests, {self.bytes()} bytes)"

    def select(self, key=None, method=None):
        return [r for r in self.requests
                if (key is None or r.key == key) and (method is None or r.method == method)]

    def count(self, key=None, method=None):
        """Number of requests (for one key and/or method)."""
        return len(self.select(key, method))

    def bytes(self, key=None, method=None):
        """Body bytes sent (for one key and/or method)."""
        return sum(r.body_bytes for r in self.select(key, method))

    def by_key(self):
        """{key: {"requests": n, "bytes": b}}"""
        out = {}
        for r in self.requests:
            e = out.setdefault(r.key, {"requests": 0, "bytes": 0})
            e["requests"] += 1
            e["bytes"] += r.body_bytes
        return out

    def ranges(self, key=None):
        """The parsed Range of each GET (None where there was none)."""
        return [parse_range(r.range) for r in self.select(key, "GET")]

    def statuses(self, key=None):
        return [r.status for r in self.select(key)]

    def connections(self):
        """Distinct connections (nginx only; None elsewhere)."""
        conns = {r.conn for r in self.requests}
        return None if None in conns else len(conns)


class _JsonLog:
    """A server's JSON-lines request log, read from a mark."""

    def __init__(self, path, to_request):
        self.path = Path(path)
        self.to_request = to_request
        self.offset = 0

    def _size(self):
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _settle(self, settle):
        """Wait (up to 2 s) until the log has not grown for `settle` seconds:
        a server writes a request's line just after the last byte of its
        reply, so the line of a reply the client already has may still come."""
        deadline = time.monotonic() + 2.0
        last, since = self._size(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(settle / 4)
            size = self._size()
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= settle:
                break

    def mark(self, settle=0.1):
        """Count from here: once the lines of the requests before are in
        (a late line would otherwise count as one after the mark)."""
        if settle:
            self._settle(settle)
        self.offset = self._size()

    def read(self, settle=0.1):
        """The requests logged since the mark, once the log has settled."""
        if settle:
            self._settle(settle)
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return Traffic()
        out = []
        for line in data.decode(errors="replace").splitlines():
            if line.strip():
                out.append(self.to_request(json.loads(line)))
        return Traffic(out)


def _split_uri(uri):
    path, _, query = uri.partition("?")
    return urllib.parse.unquote(path).lstrip("/"), query


class _Counted:
    """Mixin: mark() and traffic() over self._log."""

    def mark(self):
        """Start counting from now (traffic() reports what follows)."""
        self._log.mark()

    def traffic(self, settle=0.1):
        """A Traffic of the requests since the last mark() (or start)."""
        return self._log.read(settle)


@contextlib.contextmanager
def counting(*servers):
    """with counting(srv, ...) as c: ...  then c.traffic holds the requests all
    the servers got inside the block (also c.per_server, in order)."""
    class Box:
        traffic = None
        per_server = None
    box = Box()
    for s in servers:
        s.mark()
    yield box
    box.per_server = [s.traffic() for s in servers]
    total = Traffic()
    for t in box.per_server:
        total = total + t
    box.traffic = total


# ----------------------------------------------------------------- nginx ---

NGINX_LOG_FORMAT = (
    '{"msec":$msec,"method":"$request_method","uri":"$request_uri",'
    '"range":"$http_range","if_match":"$http_if_match","status":$status,'
    '"bytes_sent":$bytes_sent,"body_bytes":$body_bytes_sent,"conn":$connection,'
    '"conn_requests":$connection_requests,"request_time":$request_time,"https":"$https"}')


def _nginx_request(e):
    key, query = _split_uri(e["uri"])
    for prefix in ("delay/", "hdelay/"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            if prefix == "delay/":
                key = key.partition("/")[2]
            break
    return Request(e["method"], key, query, e["range"], e["status"], e["body_bytes"],
                   e["if_match"], e["conn"])


def make_cert(workdir):
    """A self-signed P-256 certificate for IP 127.0.0.1 and DNS localhost
    (also its own CA); returns (cert, key) paths."""
    _require(OPENSSL, "openssl")
    cert, key = Path(workdir) / "cert.pem", Path(workdir) / "key.pem"
    r = subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-days", "2",
                        "-keyout", str(key), "-out", str(cert)],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        raise ServerError("openssl could not make a test certificate: "
                          + r.stderr.decode(errors="replace").strip())
    return cert, key


class Nginx(_Counted):
    """nginx serving .root (default workdir/www) on .port and, with tls,
    .tls_port; see the module docstring. Started by the constructor."""

    def __init__(self, workdir, *, root=None, tls=True, netns=None):
        _require(NGINX, "nginx-light")
        if not os.path.isfile(ECHO_MODULE):
            raise ServerError(f"MISSING: {ECHO_MODULE} (Debian libnginx-mod-http-echo; "
                              f"{INSTALL_HINT})")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = Path(root) if root else self.dir / "www"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.netns, self.tls = netns, tls
        self.cacert = None
        if tls:
            self.cacert, self.key = make_cert(self.dir)
        self.access_log = self.dir / "access.log"
        self._log = _JsonLog(self.access_log, _nginx_request)
        self.port = self.tls_port = None
        self.child = None
        self.start()

    def _config(self):
        d = self.dir
        tls = ""
        if self.tls:
            tls = (f"listen 127.0.0.1:{self.tls_port} ssl; ssl_certificate {self.cacert}; "
                   f"ssl_certificate_key {self.key};")
        return f"""# made by remote_servers.py
daemon off; master_process off; {'user root;' if os.geteuid() == 0 else ''}
pid {d}/nginx.pid; error_log {d}/error.log;
load_module {ECHO_MODULE};
events {{ worker_connections 4096; }}
http {{
  default_type application/octet-stream; sendfile on; etag on;
  keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path {d}/tmp/b; proxy_temp_path {d}/tmp/p; fastcgi_temp_path {d}/tmp/f;
  uwsgi_temp_path {d}/tmp/u; scgi_temp_path {d}/tmp/s;
  log_format npyfs escape=json '{NGINX_LOG_FORMAT}';
  access_log {self.access_log} npyfs;
  map $http_x_delay $npyfs_hdelay {{ "" 0; default $http_x_delay; }}
  # The rest of the path as sent (still %-encoded): echo_exec decodes it.
  map $request_uri $npyfs_draw {{ "~^/delay/[0-9.]+(/[^?]*)" $1; default /; }}
  map $request_uri $npyfs_hraw {{ "~^/hdelay(/[^?]*)" $1; default /; }}
  server {{
    listen 127.0.0.1:{self.port}; {tls}
    root {self.root}; autoindex on;
    location ~ ^/delay/(?<npyfs_d>[0-9]+(\\.[0-9]+)?)/ {{
      echo_sleep $npyfs_d; echo_exec $npyfs_draw;
    }}
    location ^~ /hdelay/ {{
      echo_sleep $npyfs_hdelay; echo_exec $npyfs_hraw;
    }}
  }}
}}
"""

    def start(self):
        """Start (again, on the same ports once they are known)."""
        if self.child and self.child.alive():
            return
        fixed = self.port is not None
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port(self.netns)
                self.tls_port = free_port(self.netns) if self.tls else None
                while self.tls and self.tls_port == self.port:
                    self.tls_port = free_port(self.netns)
            conf = self.dir / "nginx.conf"
            conf.write_text(self._config())
            self.child = Child([NGINX, "-c", conf, "-e", self.dir / "error.log"],
                               self.dir / "nginx.stderr", netns=self.netns)
            ports = [self.port] + ([self.tls_port] if self.tls else [])
            if wait_listening(self.child, ports):
                return
            self.child.stop()
        err = ""
        with contextlib.suppress(OSError):
            err = (self.dir / "error.log").read_text(errors="replace")[-2000:]
        raise ServerError(f"nginx did not start (see {self.dir}/error.log):\n{err}")

    def stop(self):
        if self.child:
            self.child.stop()

    @property
    def pids(self):
        return [self.child.pid] if self.child else []

    def base(self, tls=False):
        if tls and not self.tls:
            raise ValueError("this nginx has no TLS listener")
        return (f"https://127.0.0.1:{self.tls_port}" if tls
                else f"http://127.0.0.1:{self.port}")

    def url(self, name, *, tls=False, delay_ms=None, host=None):
        """URL of root/name; delay_ms: through /delay/ (slept per request);
        host: "localhost" to check the certificate's DNS name."""
        b = self.base(tls)
        if host:
            b = b.replace("127.0.0.1", host, 1)
        prefix = f"/delay/{delay_ms / 1000:.3f}" if delay_ms else ""  # whole ms
        return f"{b}{prefix}/{quote_key(name)}"

    def put(self, name, data):
        """Write root/name: bytes, or a file (Path/str) served through a
        symbolic link, not copied. Returns its path."""
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        if isinstance(data, (str, Path)):
            os.symlink(Path(data).resolve(), p)
        else:
            p.write_bytes(data)
        return p

    def replace(self, name, data):
        """Replace root/name atomically with new bytes and a later mtime, so
        its ETag (mtime-size) changes even for the same size."""
        p = self.root / name
        old = p.stat().st_mtime if p.exists() else 0
        tmp = p.with_name(p.name + ".npyfs-tmp")
        tmp.write_bytes(data)
        t = max(time.time(), old + 2)
        os.utime(tmp, (t, t))
        os.replace(tmp, p)
        return p

    def etag(self, name):
        """The ETag nginx sends for root/name."""
        st = (self.root / name).stat()
        return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


# ---------------------------------------------------------------- s3rver ---

def botocore_client(endpoint, *, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY,
                    region=S3_REGION, token=None):
    """A botocore S3 client, path-style, that ignores the environment's and
    the user's AWS settings (profile, config files, CA bundle)."""
    import botocore.session
    from botocore.config import Config
    unused = "NPYFS_TEST_UNUSED_ENV"
    s = botocore.session.Session(session_vars={
        "profile": (None, unused, None, None),
        "config_file": (None, unused, os.devnull, None),
        "credentials_file": (None, unused, os.devnull, None),
        "ca_bundle": (None, unused, None, None),
        "region": (None, unused, None, None),
    })
    return s.create_client("s3", endpoint_url=endpoint, region_name=region,
                           aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                           aws_session_token=token,
                           config=Config(s3={"addressing_style": "path"},
                                         retries={"max_attempts": 1},
                                         connect_timeout=10, read_timeout=60))


def _s3rver_request(e):
    key, query = _split_uri(e["uri"])
    return Request(e["method"], key, query, e["range"], e["status"], e["body_bytes"],
                   e["if_match"])


def aws_env(endpoint, *, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, region=S3_REGION,
            token=None):
    """The environment entries an AWS tool (npyfs) needs for endpoint."""
    env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
           "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": region}
    if token:
        env["AWS_SESSION_TOKEN"] = token
    return env


def clean_env(extra=None, home=None):
    """os.environ without any AWS_* variable (this machine sets
    AWS_CA_BUNDLE), with the AWS config files pointed at nothing (or at
    home/.aws if home is given), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if home is None:
        env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/npyfs-test"
    else:
        env["HOME"] = str(home)
    env.update(extra or {})
    return env


class S3rver(_Counted):
    """s3rver on 127.0.0.1:.port with the given buckets (the first is
    .bucket); see the module docstring. Started by the constructor."""

    def __init__(self, workdir, *, buckets=("bucket",), netns=None):
        _require(NODE, "nodejs")
        if not S3RVER_JS.is_file():
            raise ServerError(f"MISSING: {S3RVER_JS}; install it with "
                              f"npm ci --prefix {SERVERS_DIR} (or {INSTALL_HINT})")
        self.dir = Path(workdir)
        self.data = self.dir / "s3"
        self.data.mkdir(parents=True, exist_ok=True)
        self.buckets = list(buckets)
        self.bucket = self.buckets[0]
        self.netns = netns
        self.reqlog = self.dir / "requests.log"
        self._log = _JsonLog(self.reqlog, _s3rver_request)
        self.port = None
        self.child = None
        self._client = None
        self.start()

    def start(self):
        if self.child and self.child.alive():
            return
        fixed = self.port is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_OPTIONS")}
        env["NPYFS_REQLOG"] = str(self.reqlog)
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = free_port(self.netns)
            # s3rver's continuation tokens use DES, which OpenSSL 3 only has
            # in its legacy provider: without it a truncated listing is a 500.
            argv = [NODE, "--openssl-legacy-provider", "-r", REQLOG_JS, S3RVER_JS,
                    "-d", self.data, "-a", "127.0.0.1", "-p", str(self.port), "--silent",
                    "--no-vhost-buckets"]
            for b in self.buckets:
                argv += ["--configure-bucket", b]
            self.child = Child(argv, self.dir / "s3rver.log", netns=self.netns, env=env)
            if wait_listening(self.child, [self.port]):
                return
            self.child.stop()
        raise ServerError(f"s3rver did not start; log:\n{self.child.tail()}")

    def stop(self):
        if self.child:
            self.child.stop()
        self._client = None

    @property
    def pids(self):
        return [self.child.pid] if self.child else []

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def env(self, **kw):
        """AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL,
        AWS_REGION for this server (kw: secret_key=, token=, region= ...)."""
        return aws_env(self.endpoint, **kw)

    def url(self, key, bucket=None):
        """s3://bucket/key (the key as is, not encoded)."""
        return f"s3://{bucket or self.bucket}/{key}"

    def http_url(self, key, bucket=None):
        """The path-style object URL (key encoded as S3 expects)."""
        return f"{self.endpoint}/{bucket or self.bucket}/{quote_key(key)}"

    # botocore: every call in the namespace (a connection made outside it
    # would reach whatever listens on that port on the host).
    def _call(self, fn):
        if self._client is None:
            self._client = botocore_client(self.endpoint)
        return self.netns.call(fn, self._client) if self.netns else fn(self._client)

    def put(self, key, data, bucket=None):
        """Upload bytes, or a file (Path/str), as key; returns its ETag."""
        def up(c):
            if isinstance(data, (str, Path)):
                with open(data, "rb") as f:
                    return c.put_object(Bucket=bucket or self.bucket, Key=key, Body=f)["ETag"]
            return c.put_object(Bucket=bucket or self.bucket, Key=key, Body=data)["ETag"]
        return self._call(up)

    replace = put  # a new object under the same key: new ETag and Last-Modified

    def delete(self, key, bucket=None):
        self._call(lambda c: c.delete_object(Bucket=bucket or self.bucket, Key=key))

    def head(self, key, bucket=None):
        return self._call(lambda c: c.head_object(Bucket=bucket or self.bucket, Key=key))

    def get(self, key, range=None, bucket=None):
        """The object's bytes (range: "bytes=A-B")."""
        def rd(c):
            kw = {"Range": range} if range else {}
            r = c.get_object(Bucket=bucket or self.bucket, Key=key, **kw)
            return r["Body"].read()
        return self._call(rd)

    def keys(self, prefix="", bucket=None):
        def ls(c):
            out, tok = [], None
            while True:
                kw = {"ContinuationToken": tok} if tok else {}
                r = c.list_objects_v2(Bucket=bucket or self.bucket, Prefix=prefix, **kw)
                out += [o["Key"] for o in r.get("Contents", [])]
                if not r.get("IsTruncated"):
                    return out
                tok = r["NextContinuationToken"]
        return self._call(ls)


# ------------------------------------------------------------ testserver ---

class FaultServer:
    """tests/servers/testserver.py over .root; sigv4=True (or (ak, sk,
    region)) makes it check signatures against botocore's, with the layout
    root/BUCKET/KEY; token: the session token it requires. Started by the
    constructor. See testserver.py for its commands; they take effect on the
    next requests, and a restart() forgets them."""

    def __init__(self, workdir, *, root=None, sigv4=None, token=None, netns=None, port=0):
        _require(PYTHON, "python3")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = Path(root) if root else self.dir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        if sigv4 is True:
            sigv4 = (S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)
        self.sigv4, self.token, self.netns = sigv4, token, netns
        self.port = port
        self.child = None
        self._base = 0   # requests before the last mark(), in testserver's own count
        self.start()

    def start(self):
        if self.child and self.child.alive():
            return
        argv = [PYTHON, TESTSERVER, "--root", self.root, "--port", str(self.port)]
        if self.sigv4:
            argv += ["--sigv4", ":".join(self.sigv4)]
        if self.token:
            argv += ["--token", self.token]
        # the port may still be held by the previous process for a moment
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.child = Child(argv, self.dir / "testserver.log", netns=self.netns,
                               stdin="pipe", stdout="pipe")
            try:
                line = self.child.readline(START_TIMEOUT)
                self.port = int(line.split()[1])
                break
            except (ServerError, IndexError, ValueError):
                self.child.stop()
                if time.monotonic() > deadline:
                    raise ServerError("testserver.py did not start; log:\n"
                                      + self.child.tail())
                time.sleep(0.1)
        self._base = 0

    def stop(self):
        """Stop it by its pid; restart() brings it back on .port."""
        if self.child:
            self.child.stop()

    def restart(self):
        self.stop()
        self.start()

    @property
    def pids(self):
        return [self.child.pid] if self.child else []

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, name):
        return f"{self.endpoint}/{quote_key(name)}"

    def s3_url(self, key, bucket="bucket"):
        return f"s3://{bucket}/{key}"

    def env(self, **kw):
        """The AWS environment for npyfs (sigv4 mode); kw as aws_env()."""
        if self.sigv4:
            kw.setdefault("access_key", self.sigv4[0])
            kw.setdefault("secret_key", self.sigv4[1])
            kw.setdefault("region", self.sigv4[2])
        if self.token:
            kw.setdefault("token", self.token)
        return aws_env(self.endpoint, **kw)

    def put(self, name, data, bucket=None):
        """Write root/[bucket/]name: a later request sees the new bytes (and
        a new ETag: the MD5)."""
        p = self.root / (f"{bucket}/{name}" if bucket else name)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".npyfs-tmp")
        tmp.write_bytes(data if isinstance(data, bytes) else Path(data).read_bytes())
        os.replace(tmp, p)
        return p

    replace = put

    def command(self, line):
        reply = self.child.command(line)
        if reply == "error":
            raise ServerError(f"testserver.py refused {line!r}")
        return reply

    def fault(self, kind, arg="", count=1):
        """Spoil the next count requests: status CODE | retry-after CODE |
        cut BYTES | reset | stall SECONDS."""
        self.command(f"fault {kind} {arg if arg != '' else '-'} {count}")

    def mode(self, name, on=True):
        """norange | badrange | long | ifmatch | noetag."""
        self.command(f"mode {name} {1 if on else 0}")

    def delay(self, ms):
        self.command(f"delay {int(ms)}")

    def stats(self):
        return json.loads(self.command("stats"))

    def last(self):
        """The last request: method, path, headers (and the Authorization
        received and expected in sigv4 mode)."""
        return json.loads(self.command("last"))

    def clear(self):
        self.command("clear")
        self._base = 0

    def mark(self):
        self._base = self.stats()["requests"]

    def traffic(self, settle=0):
        """The requests since the last mark(). testserver.py logs each one
        when it arrives (so nothing to wait for), without the status or the
        bytes sent: body_bytes is the length of the range asked for (clamped
        to the file as it is now; the whole file without a Range, 0 for
        HEAD), so a cut or refused reply counts in full."""
        log = self.stats()["log"][self._base:]
        out = []
        for method, path, rng, im in log:
            key, query = _split_uri(path)
            out.append(Request(method, key, query, rng, None,
                               self._body_len(method, key, rng), im))
        return Traffic(out)

    def _body_len(self, method, key, rng):
        if method == "HEAD":
            return 0
        try:
            size = (self.root / key).stat().st_size
        except OSError:
            return 0
        r = parse_range(rng)
        if not rng:
            return size
        if r is None:
            return 0
        a, b = r
        b = size - 1 if b is None else min(b, size - 1)
        return max(0, b - a + 1)


# ------------------------------------------------------------- namespace ---

def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({path}): {os.strerror(e)}")
    finally:
        os.close(fd)


def _net_inode(pid):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def find_delayq():
    """delayq's path: $NPYFS_DELAYQ, else next to $NPYFS_BIN, else build/."""
    cands = []
    if os.environ.get("NPYFS_DELAYQ"):
        cands.append(Path(os.environ["NPYFS_DELAYQ"]))
    if os.environ.get("NPYFS_BIN"):
        cands.append(Path(os.environ["NPYFS_BIN"]).parent / "delayq")
    cands.append(REPO / "build" / "delayq")
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise ServerError("delayq is not built (tests/servers/delayq.c; CMake builds it when "
                      f"Debian libnetfilter-queue-dev is installed: {INSTALL_HINT}); "
                      f"looked at {', '.join(map(str, cands))}")


def netns_supported():
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, pkg in (("ip", "iproute2"), ("nsenter", "util-linux"), ("tc", "iproute2"),
                      ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian {pkg})"
    return None


class Netns:
    """A network namespace with only lo, up. See the module docstring."""

    QUEUE = 0  # NFQUEUE numbers are per namespace

    def __init__(self, workdir=None, prefix="npyfs"):
        why = netns_supported()
        if why:
            raise ServerError(why)
        _reap_stale_namespaces(prefix)
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.path = f"/run/netns/{self.name}"
        self.dir = Path(workdir) if workdir else None
        self.delayq = None
        self.delay_ms = 0
        self.rate = None
        self._rule = False
        r = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, timeout=30)
        if r.returncode != 0:
            raise ServerError(f"ip netns add failed: {r.stderr.decode(errors='replace')}")
        self.inode = os.stat(self.path).st_ino
        self.closed = False
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except Exception:
            self.close()
            raise

    def argv(self, cmd):
        """cmd run in the namespace (network only: mounts stay shared)."""
        return ["nsenter", f"--net={self.path}", "--"] + [str(c) for c in cmd]

    def run(self, cmd, timeout=30, check=True, **kw):
        r = subprocess.run(self.argv(cmd), capture_output=True, timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise ServerError(f"{' '.join(map(str, cmd))} in {self.name}: exit "
                              f"{r.returncode}: {r.stderr.decode(errors='replace').strip()}")
        return r

    def call(self, fn, *args, timeout=120.0, **kwargs):
        """fn(*args, **kwargs) in a thread inside the namespace; its result
        or exception. Sockets made there stay in the namespace."""
        box = {}

        def runner():
            try:
                _setns(self.path)
                box["v"] = fn(*args, **kwargs)
            except BaseException as e:  # re-raised in the caller's thread
                box["e"] = e
        t = threading.Thread(target=runner, name=f"netns-{self.name}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise TimeoutError(f"call in {self.name} did not finish in {timeout:.0f} s")
        if "e" in box:
            raise box["e"]
        return box.get("v")

    # -- bandwidth --
    def set_rate(self, rate="400mbit", burst="1mb", latency="50ms"):
        """Cap lo (both directions share it) with a token bucket."""
        self.run(["tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", rate,
                  "burst", burst, "latency", latency])
        self.rate = rate

    def clear_rate(self):
        self.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
        self.rate = None

    def qdisc(self):
        return self.run(["tc", "qdisc", "show", "dev", "lo"]).stdout.decode()

    # -- delay --
    def set_delay(self, ms, delayq=None):
        """Hold each TCP packet on lo for ms milliseconds (RTT + 2*ms);
        0 lets packets through at once (delayq keeps running)."""
        if ms and self.delayq is None:
            exe = Path(delayq) if delayq else find_delayq()
            log = (self.dir / f"delayq-{self.name}.log") if self.dir else Path(os.devnull)
            self.delayq = Child([exe, "-q", str(self.QUEUE), "-d", str(ms)], log, netns=self,
                                stdin="pipe", stdout="pipe")
            line = self.delayq.readline(START_TIMEOUT)
            if line != "ready":
                raise ServerError(f"delayq did not start: {line!r} {self.delayq.tail()}")
        if self.delayq is not None:
            self.delayq.command(f"delay {ms}")
        if ms and not self._rule:
            self.run(["iptables", "-w", "10", "-A", "INPUT", "-i", "lo", "-p", "tcp", "-j",
                      "NFQUEUE", "--queue-num", str(self.QUEUE), "--queue-bypass"])
            self._rule = True
        self.delay_ms = ms

    def delay_stats(self):
        """delayq's counters: {"packets", "held", "max_held", "overflow", "lost"}."""
        if self.delayq is None:
            return None
        w = self.delayq.command("stats").split()
        return {w[i]: int(w[i + 1]) for i in range(0, len(w) - 1, 2)}

    def rules(self):
        return self.run(["iptables", "-w", "10", "-S", "INPUT"]).stdout.decode()

    # -- teardown --
    def pids(self):
        """Processes (other than us) whose network namespace is this one."""
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != os.getpid() and _net_inode(d) == self.inode:
                out.append(int(d))
        return out

    def close(self):
        """Stop delayq, delete the namespace (its rule and qdisc go with it).
        Returns a list of problems (processes still inside, a failed
        delete); empty when clean."""
        problems = []
        if self.closed:
            return problems
        self.closed = True
        if self.delayq is not None:
            self.delayq.stop()
        left = self.pids()
        if left:
            problems.append(f"processes still in {self.name}: {left}")
        r = subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        if r.returncode != 0:
            problems.append(f"ip netns del {self.name}: {r.stderr.decode(errors='replace')}")
        return problems


def _reap_stale_namespaces(prefix):
    """Delete namespaces this module made in a run that died without its
    teardown (named PREFIX-PID-XXXXXX, PID no longer running)."""
    for name in netns_names():
        parts = name.split("-")
        if (len(parts) == 3 and parts[0] == prefix and parts[1].isdigit()
                and len(parts[2]) == 6 and not os.path.exists(f"/proc/{parts[1]}")):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def netns_names():
    """Names of the namespaces `ip netns` knows."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=30, text=True)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


# ------------------------------------------------------------ server set ---

class ServerSet:
    """Starts servers and namespaces under one directory and stops them all:
    close() (or leaving a with block) stops the servers in reverse order,
    then deletes the namespaces, and returns the problems found."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.servers = []
        self.namespaces = []
        self._n = 0

    def _sub(self, kind):
        self._n += 1
        d = self.dir / f"{kind}{self._n}"
        d.mkdir()
        return d

    def _add(self, srv):
        self.servers.append(srv)
        return srv

    def nginx(self, **kw):
        return self._add(Nginx(self._sub("nginx"), **kw))

    def s3rver(self, **kw):
        return self._add(S3rver(self._sub("s3rver"), **kw))

    def testserver(self, **kw):
        return self._add(FaultServer(self._sub("testserver"), **kw))

    def netns(self):
        ns = Netns(self.dir)
        self.namespaces.append(ns)
        return ns

    def close(self):
        problems = []
        for s in reversed(self.servers):
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                problems.append(f"stopping {type(s).__name__}: {e}")
            for pid in s.pids:
                if os.path.exists(f"/proc/{pid}") and _proc_state(pid) not in ("Z", None):
                    problems.append(f"{type(s).__name__} pid {pid} still running")
        self.servers.clear()
        for ns in reversed(self.namespaces):
            problems += ns.close()
        self.namespaces.clear()
        return problems

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        problems = self.close()
        if problems and exc[0] is None:
            raise ServerError("; ".join(problems))
        return False


def _proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


# --------------------------------------------------------- pytest fixtures ---

try:
    import pytest
except ImportError:  # the benchmark imports this module without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture
    def remote(tmp_path):
        """A ServerSet under tmp_path/remote: remote.nginx(...),
        remote.s3rver(...), remote.testserver(...), remote.netns(); all
        stopped after the test (a failure to stop fails it). A server that
        cannot start fails the test with the reason."""
        ss = ServerSet(tmp_path / "remote")
        try:
            yield _Failing(ss)
        finally:
            problems = ss.close()
        if problems:
            pytest.fail("remote server teardown problems:\n" + "\n".join(problems))

    @pytest.fixture(scope="module")
    def remote_module(tmp_path_factory):
        """Like `remote`, for servers shared by the tests of one module (s3rver
        takes about a second to start). Tests that change a server (faults,
        replaced objects, shaping) should use `remote` instead."""
        ss = ServerSet(tmp_path_factory.mktemp("remote_module"))
        try:
            yield _Failing(ss)
        finally:
            problems = ss.close()
        if problems:
            pytest.fail("remote server teardown problems:\n" + "\n".join(problems))

    class _Failing:
        """ServerSet whose start errors fail the test (with the reason)."""

        def __init__(self, ss):
            self._ss = ss

        def __getattr__(self, name):
            attr = getattr(self._ss, name)
            if name not in ("nginx", "s3rver", "testserver", "netns"):
                return attr

            def call(*a, **kw):
                if name == "netns":
                    why = netns_supported()
                    if why:
                        pytest.skip(why)
                try:
                    return attr(*a, **kw)
                except ServerError as e:
                    pytest.fail(str(e))
            return call

    @pytest.fixture
    def http_server(remote):
        """Nginx over a fresh directory (.root), HTTP and HTTPS."""
        return remote.nginx()

    @pytest.fixture
    def s3_server(remote):
        """S3rver with the bucket "bucket"."""
        return remote.s3rver()

    @pytest.fixture
    def fault_server(remote):
        """testserver.py serving .root as plain HTTP."""
        return remote.testserver()

    @pytest.fixture
    def sigv4_server(remote):
        """testserver.py checking SigV4 (S3RVER/S3RVER, us-east-1), files at
        .root/BUCKET/KEY."""
        return remote.testserver(sigv4=True)

    @pytest.fixture
    def netns(remote):
        """A fresh network namespace (skips without root)."""
        return remote.netns()

    @pytest.fixture
    def remote_mount(npyfs_bin, tmp_path, remote):
        """remote_mount(source, *opts, env=None, netns=None, name=None) ->
        mount point Path, like `mount` but: sources are kept as strings (URLs
        survive), env (a dict) replaces the daemon's AWS_* environment (see
        clean_env: no AWS_* from this machine, the AWS config files pointed
        at nothing unless env names them), and netns runs the daemon in that
        namespace (with nsenter, so the mount is visible here). Unmounted
        after the test, before the servers stop (it depends on `remote`)."""
        import conftest
        m = _RemoteMounter(conftest, npyfs_bin, tmp_path / "rmounts")
        yield m
        problems = m.teardown_all()
        if problems:
            pytest.fail("mount teardown problems:\n" + "\n".join(problems))

    class _RemoteMounter:
        def __init__(self, conftest, binary, basedir):
            self.conftest, self.binary, self.basedir = conftest, binary, Path(basedir)
            self.mounts = []
            self.cls = _remote_mount_class(conftest)

        def __call__(self, source, *opts, env=None, netns=None, name=None,
                     watchdog="default"):
            if watchdog == "default":
                watchdog = self.conftest.DEFAULT_WATCHDOG
            mnt = self.basedir / (name or f"mnt{len(self.mounts)}")
            mnt.mkdir(parents=True, exist_ok=False)
            m = self.cls(self.binary, source, mnt, opts, self.basedir / f"{mnt.name}.stderr",
                         watchdog, env=env, netns=netns)
            self.mounts.append(m)
            m.wait_live()
            return mnt

        def mount_of(self, mnt):
            for m in self.mounts:
                if m.mnt == Path(mnt):
                    return m
            raise KeyError(mnt)

        def teardown_all(self):
            problems = []
            for m in reversed(self.mounts):
                problems += m.teardown()
            self.mounts.clear()
            return problems

    _RM_CLASS = {}

    def _remote_mount_class(conftest):
        """conftest.Mount with string sources, an environment and a
        namespace; everything else (live wait, watchdog, teardown) is
        Mount's."""
        if "cls" in _RM_CLASS:
            return _RM_CLASS["cls"]

        class RemoteMount(conftest.Mount):
            def __init__(self, binary, source, mnt, opts, errfile, watchdog, env=None,
                         netns=None):
                self.sources = ([str(s) for s in source] if isinstance(source, (list, tuple))
                                else [str(source)])
                self.binary, self.source, self.mnt = binary, self.sources[0], Path(mnt)
                self.opts, self.errfile = list(opts), Path(errfile)
                self.watchdog_fired = False
                cmd = [str(binary), "mount", "-f"]
                if self.opts:
                    cmd += ["-o", ",".join(self.opts)]
                cmd += self.sources + [str(self.mnt)]
                self.cmd = netns.argv(cmd) if netns is not None else cmd
                self._err = open(self.errfile, "wb")
                self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                             stdout=self._err, stderr=self._err,
                                             env=clean_env(env) if env is not None else None)
                self._timer = threading.Timer(watchdog or 0, self._fire)
                self._timer.daemon = True
                self._use_timer = watchdog is not None

        _RM_CLASS["cls"] = RemoteMount
        return RemoteMount
