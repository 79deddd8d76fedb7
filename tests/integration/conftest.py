"""Fixtures and helpers for the npyfs integration suite (mounts for real).

What lives here:
- ``npyfs_bin``: path of the binary under test ($NPYFS_BIN, default
  build/npyfs). Skips the whole suite when /dev/fuse or fusermount3 is missing
  (no FUSE on this machine); fails when the binary itself is missing.
- ``mount``: factory ``mount(source, *opts) -> Path``. ``source`` is one path,
  or a list of paths for a mount of several sources. Starts
  ``npyfs mount -f [-o OPT,...] SOURCE... MNT`` with stderr captured to a file,
  polls until MNT is a mount point while checking the daemon is alive, and on
  teardown unmounts with ``fusermount3 -u``, reaps the daemon (a non-zero exit
  or a sanitizer report fails the test), and falls back to kill +
  ``fusermount3 -u -z`` so no mount is ever left behind.
- ``session_mounter``: the same machinery with session lifetime, for archives
  that many parametrized tests share.
- Where mounts go: under pytest's tmp_path (and basetemp), or ``shared_dir``
  (a 0755 directory other users can reach, for tests that read as nobody).
  When scripts/test runs the suite it exports NPYFS_TEST_TMP, a private
  directory: pytest's basetemp and every shared_dir are then made under it,
  so scripts/test can find (and fail on) the mounts its tests left, and no
  one else's. Run by hand (no NPYFS_TEST_TMP), pytest's defaults and /tmp.
- A watchdog per mount: if a test is still using a mount after its deadline
  (a hung daemon), the daemon is killed, which aborts the FUSE connection so
  blocked system calls return ENOTCONN instead of hanging the run.
- ``guarded(fn, timeout)``: run ``fn`` in a thread with a join timeout, so a
  read that never returns fails the test instead of hanging it.
- ``in_child(fn, timeout)``: run ``fn`` in a forked child; used for every check
  that maps a file, because a failed page-in is SIGBUS, which would kill the
  whole pytest process.
- ``fuse_requests(mnt)``: a context manager counting, by opcode, the FUSE
  requests the kernel sends to one mount while it runs (its own trace
  events in a private tracefs instance): what the kernel asks, not what
  npyfs says about itself.
- Truth helpers: ``npy_bytes(arr)`` is what ``np.save`` writes;
  ``assert_same_array`` compares dtype, shape, order, values and bytes.
"""

import contextlib
import errno
import faulthandler
import hashlib
import io
import os
import pickle
import secrets
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

DEFAULT_BIN = Path(__file__).resolve().parents[2] / "build" / "npyfs"
MOUNT_DEADLINE = 20.0      # seconds until a mount must be live
UNMOUNT_TIMEOUT = 15.0     # seconds for fusermount3 and for the daemon to exit
DEFAULT_WATCHDOG = 300.0   # seconds a single mount may be used before we kill it
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer",
                     "runtime error:", "UndefinedBehaviorSanitizer")

# A header bigger than numpy's default 10000-character limit (v2 case).
MAX_HEADER = 10 ** 6

# Set by scripts/test: the private directory every mount point of the run is
# made under (see the module docstring).
TEST_TMP_ENV = "NPYFS_TEST_TMP"


def private_tmp_root():
    """The directory test directories outside tmp_path are made in:
    $NPYFS_TEST_TMP when scripts/test runs us, else the system's tmp."""
    return os.environ.get(TEST_TMP_ENV) or tempfile.gettempdir()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Under scripts/test, put this run's basetemp (so every tmp_path and
    mount point) in $NPYFS_TEST_TMP, unless --basetemp was given. Each run
    gets its own directory there (pytest empties a given basetemp)."""
    root = os.environ.get(TEST_TMP_ENV)
    if root and not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="pytest-", dir=root)


# ---------------------------------------------------------------- helpers ---

TRACEFS = Path("/sys/kernel/tracing")


def _tracefs():
    """Skip unless tracefs and the kernel's FUSE trace events are there."""
    if not (TRACEFS / "instances").is_dir():
        # root may mount it; the kernel keeps one tracefs whoever mounts it
        r = run(["mount", "-t", "tracefs", "nodev", TRACEFS], timeout=10)
        if r.returncode != 0 or not (TRACEFS / "instances").is_dir():
            pytest.skip("tracefs is not available (needs root)")
    if not (TRACEFS / "events" / "fuse" / "fuse_request_send").is_dir():
        pytest.skip("this kernel has no FUSE trace events (fuse:fuse_request_send)")


@contextlib.contextmanager
def fuse_requests(mnt):
    """Count the FUSE requests the kernel sends to the mount at mnt while the
    block runs, by opcode name: a private trace instance (the global trace
    buffer is left alone), its fuse_request_send event filtered to this
    connection (the kernel's dev_t of the mount: major << 20 | minor)."""
    _tracefs()
    dev = os.stat(mnt).st_dev
    conn = (os.major(dev) << 20) | os.minor(dev)
    inst = TRACEFS / "instances" / f"npyfs-test-{os.getpid()}-{secrets.token_hex(4)}"
    inst.mkdir()
    counts = Counter()
    try:
        ev = inst / "events" / "fuse" / "fuse_request_send"
        (inst / "buffer_size_kb").write_text("8192")
        (ev / "filter").write_text(f"connection == {conn}")
        (ev / "enable").write_text("1")
        yield counts
        (ev / "enable").write_text("0")
        for line in (inst / "trace").read_text(errors="replace").splitlines():
            if "fuse_request_send:" not in line or "(FUSE_" not in line:
                continue
            counts[line.split("(", 1)[1].split(")", 1)[0]] += 1
        assert "LOST EVENTS" not in (inst / "trace").read_text(errors="replace")
    finally:
        with contextlib.suppress(OSError):
            (inst / "events" / "fuse" / "fuse_request_send" / "enable").write_text("0")
        inst.rmdir()



def npy_bytes(arr):
    """The exact bytes np.save writes for arr (warnings about v2/v3 muted)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def load(path, mmap_mode="r"):
    """np.load through the mount, allowing the big v2 header."""
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False,
                   max_header_size=MAX_HEADER)


def assert_same_array(got, want, raw=True):
    """dtype, shape, Fortran flag, values (NaN-aware) and, if raw, the bytes
    in memory order. raw=False for a `want` that np.load read from a zip:
    numpy copies structured arrays field by field there, leaving padding
    bytes uninitialized."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.ndim > 1:
        assert got.flags.f_contiguous == want.flags.f_contiguous
        assert got.flags.c_contiguous == want.flags.c_contiguous
    kind = want.dtype.kind
    if want.dtype.names is None and kind != "V":
        if kind in "fcmM":
            assert np.array_equal(got, want, equal_nan=True)
        else:
            assert np.array_equal(got, want)
    elif not raw:
        assert np.array_equal(got, want)  # field by field
    if raw:
        # Memory-order bytes: covers structured padding and NaN payloads.
        assert np.asarray(got).tobytes(order="A") == want.tobytes(order="A")


def fingerprint(path):
    """(sha256, size, mtime_ns) of a source file, to show npyfs never writes it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    st = os.stat(path)
    return h.hexdigest(), st.st_size, st.st_mtime_ns


def guarded(fn, *args, timeout=120.0, **kwargs):
    """Run fn(*args, **kwargs) in a thread; fail the test if it takes longer
    than timeout (a FUSE daemon that never answers). Exceptions propagate."""
    result = {}

    def runner():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    t = threading.Thread(target=runner, daemon=True,
                         name=f"guarded-{getattr(fn, '__name__', 'fn')}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not finish within "
                    f"{timeout:.0f} s: npyfs daemon hung?")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def in_child(fn, *args, timeout=120.0, **kwargs):
    """Run fn(*args, **kwargs) in a forked child and return its (pickled)
    result; exceptions come back with the child's traceback attached.

    Use it for anything that touches a memory mapping of a file in the mount:
    if the daemon answers a page-in with an error, the kernel raises SIGBUS,
    which would otherwise kill the whole pytest run. Here it fails one test.
    """
    name = getattr(fn, "__name__", repr(fn))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(r)
            try:
                faulthandler.disable()
            except Exception:
                pass
            try:
                payload = ("ok", fn(*args, **kwargs), None)
            except BaseException as exc:
                payload = ("err", exc, traceback.format_exc())
            try:
                data = pickle.dumps(payload)
            except Exception:
                data = pickle.dumps(("err", None, payload[2] or "unpicklable result"))
            view = memoryview(data)
            while view:
                n = os.write(w, view)
                view = view[n:]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"{name} did not finish within {timeout:.0f} s "
                            "(in a child process): npyfs daemon hung?")
            ready, _, _ = select.select([r], [], [], min(left, 1.0))
            if ready:
                b = os.read(r, 1 << 16)
                if not b:
                    break
                chunks.append(b)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        hint = (" (a page of a memory-mapped file could not be read: the daemon "
                "answered a read with an error)") if sig == "SIGBUS" else ""
        pytest.fail(f"{name}: child process killed by {sig}{hint}")
    if not chunks:
        pytest.fail(f"{name}: child exited ({os.WEXITSTATUS(status)}) without a result")
    kind, value, tb = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value
    if isinstance(value, BaseException):
        value.add_note("--- in child process ---\n" + tb)
        raise value
    raise AssertionError(tb)


def read_all(path, chunk=1 << 20):
    """Every byte of path via os.read (call through guarded())."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            b = os.read(fd, chunk)
            if not b:
                break
            parts.append(b)
        return b"".join(parts)
    finally:
        os.close(fd)


def read_file(path, timeout=120.0):
    return guarded(read_all, path, timeout=timeout)


def run(cmd, timeout=60, **kw):
    """subprocess.run with a timeout and captured output."""
    return subprocess.run([str(c) for c in cmd], capture_output=True,
                          timeout=timeout, **kw)


def mounted_fuse(mnt):
    """True if /proc/self/mountinfo lists mnt as a fuse mount. Unlike
    os.path.ismount this never stats the mount, so it cannot hang."""
    target = os.path.realpath(str(mnt))
    for m in _mountinfo():
        if m["point"] == target and m["fstype"].startswith("fuse"):
            return True
    return False


def _unescape(s):
    return s.replace("\\040", " ").replace("\\011", "\t") \
            .replace("\\012", "\n").replace("\\134", "\\")


def _mountinfo():
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                fstype = right.split()[0] if right else ""
                out.append({"dev": fields[2], "point": _unescape(fields[4]),
                            "fstype": fstype})
    except OSError:
        pass
    return out


def abort_connection(mnt):
    """Abort the FUSE connection behind mnt via fusectl, if available.
    Makes every request pending on it fail with ENOTCONN."""
    target = os.path.realpath(str(mnt))
    for m in _mountinfo():
        if m["point"] == target and m["fstype"].startswith("fuse"):
            minor = m["dev"].split(":")[1]
            p = Path("/sys/fs/fuse/connections") / minor / "abort"
            try:
                p.write_text("1")
            except OSError:
                pass


def pids_for_mountpoint(mnt):
    """PIDs whose command line names mnt (our unique tmp path): the daemons
    we started for it, including backgrounded ones whose pid we never saw."""
    target = str(mnt)
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.decode(errors="replace") in (target, target.rstrip("/"))
               for a in argv) and any(b"npyfs" in a for a in argv[:1]):
            pids.append(int(d.name))
    return pids


def force_unmount(mnt):
    """Last resort: lazy unmount; never raises."""
    for cmd in (["fusermount3", "-u", "-z", str(mnt)], ["umount", "-l", str(mnt)]):
        if not mounted_fuse(mnt):
            return
        try:
            subprocess.run(cmd, capture_output=True, timeout=UNMOUNT_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            pass


def cleanup_background(mnt):
    """Make sure a backgrounded daemon for mnt is gone and nothing is mounted."""
    if mounted_fuse(mnt):
        try:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=15)
        except subprocess.TimeoutExpired:
            abort_connection(mnt)
    force_unmount(mnt)
    for pid in pids_for_mountpoint(mnt):
        try:
            os.kill(pid, 9)
        except OSError:
            pass


# --------------------------------------------------------------- mounting ---

class Mount:
    """One `npyfs mount -f` daemon and its mount point."""

    def __init__(self, binary, source, mnt, opts, errfile, watchdog):
        # source: one path, or a list/tuple of them (several sources)
        self.sources = ([Path(s) for s in source] if isinstance(source, (list, tuple))
                        else [Path(source)])
        self.binary, self.source, self.mnt = binary, self.sources[0], Path(mnt)
        self.opts, self.errfile = list(opts), Path(errfile)
        self.watchdog_fired = False
        cmd = [str(binary), "mount", "-f"]
        if self.opts:
            cmd += ["-o", ",".join(self.opts)]
        cmd += [str(s) for s in self.sources] + [str(self.mnt)]
        self.cmd = cmd
        self._err = open(self.errfile, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=self._err, stderr=self._err)
        # watchdog=None: no timer (session mounts; their users call guarded()).
        self._timer = threading.Timer(watchdog or 0, self._fire)
        self._timer.daemon = True
        self._use_timer = watchdog is not None

    def stderr(self):
        try:
            return self.errfile.read_text(errors="replace")
        except OSError:
            return ""

    def wait_live(self):
        deadline = time.monotonic() + MOUNT_DEADLINE
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._close()
                # A daemon that detached despite -f may have mounted anyway.
                left = mounted_fuse(self.mnt)
                cleanup_background(self.mnt)
                pytest.fail(f"npyfs exited with {rc} before the mount was live"
                            f"{' (but it had mounted: detached despite -f?)' if left else ''}\n"
                            f"cmd: {' '.join(self.cmd)}\nstderr:\n{self.stderr()}")
            if mounted_fuse(self.mnt) and os.path.ismount(self.mnt):
                if self._use_timer:
                    self._timer.start()
                return
            time.sleep(0.05)
        self.teardown(check=False)
        pytest.fail(f"mount not live after {MOUNT_DEADLINE:.0f} s\n"
                    f"cmd: {' '.join(self.cmd)}\nstderr:\n{self.stderr()}")

    def _fire(self):
        # A test is stuck on this mount: kill the daemon so the kernel aborts
        # the connection and the blocked system calls return.
        self.watchdog_fired = True
        abort_connection(self.mnt)
        try:
            self.proc.send_signal(signal.SIGKILL)
        except OSError:
            pass

    def _close(self):
        self._timer.cancel()
        try:
            self._err.close()
        except OSError:
            pass

    def teardown(self, check=True):
        """Unmount and reap; returns a list of problems (empty when clean)."""
        problems = []
        self._timer.cancel()
        if self.proc.poll() is None:
            ok = False
            for attempt in range(3):
                try:
                    r = subprocess.run(["fusermount3", "-u", str(self.mnt)],
                                       capture_output=True, timeout=UNMOUNT_TIMEOUT)
                    ok = r.returncode == 0
                    if ok:
                        break
                    if attempt == 0:
                        import gc
                        gc.collect()  # stray memmaps keep the mount busy
                    time.sleep(0.3)
                except subprocess.TimeoutExpired:
                    break
            if not ok:
                problems.append("fusermount3 -u failed (busy or hung)")
            try:
                self.proc.wait(timeout=UNMOUNT_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append("daemon did not exit after unmount; killed")
                abort_connection(self.mnt)
                self.proc.kill()
                try:
                    self.proc.wait(timeout=UNMOUNT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    problems.append("daemon survived SIGKILL")
        force_unmount(self.mnt)
        self._close()
        rc = self.proc.returncode
        err = self.stderr()
        if self.watchdog_fired:
            problems.append("watchdog fired: the test hung on this mount")
        elif rc not in (0, None):
            problems.append(f"daemon exit status {rc}")
        if any(m in err for m in SANITIZER_MARKERS):
            problems.append("sanitizer report in daemon stderr")
        if mounted_fuse(self.mnt):
            problems.append("mount still present after cleanup")
        if problems and check:
            return [f"{p} (cmd: {' '.join(self.cmd)})\nstderr:\n{err}"
                    for p in problems]
        return []


class Mounter:
    """Creates mounts under a base directory and tears all of them down."""

    def __init__(self, binary, basedir, watchdog=DEFAULT_WATCHDOG):
        self.binary, self.basedir = binary, Path(basedir)
        self.watchdog = watchdog
        self.mounts = []

    def __call__(self, source, *opts, watchdog="default", name=None):
        if watchdog == "default":
            watchdog = self.watchdog
        n = len(self.mounts)
        mnt = self.basedir / (name or f"mnt{n}")
        mnt.mkdir(parents=True, exist_ok=False)
        m = Mount(self.binary, source, mnt, opts,
                  self.basedir / f"{mnt.name}.stderr", watchdog)
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


def _check_fuse():
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: FUSE not available")
    if shutil.which("fusermount3") is None:
        pytest.skip("fusermount3 is missing")


@pytest.fixture(scope="session", autouse=True)
def _private_index_dir(tmp_path_factory):
    """Saved indexes of test mounts go to a per-session directory, never to the
    user's ~/.cache (daemons inherit the environment)."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def npyfs_bin():
    _check_fuse()
    b = Path(os.environ.get("NPYFS_BIN", DEFAULT_BIN))
    if not b.is_file() or not os.access(b, os.X_OK):
        pytest.fail(f"npyfs binary not found or not executable: {b} "
                    "(build it, or set NPYFS_BIN)")
    return b


@pytest.fixture
def mount(npyfs_bin, tmp_path):
    """mount(source, *opts) -> mount point Path; unmounted after the test."""
    m = Mounter(npyfs_bin, tmp_path / "mounts")
    yield m
    problems = m.teardown_all()
    if problems:
        pytest.fail("mount teardown problems:\n" + "\n".join(problems))


@pytest.fixture
def shared_dir():
    """A 0755 directory other users can enter (pytest's tmp_path is 0700),
    under private_tmp_root(); mounts left in it are cleared, then it is
    removed."""
    d = Path(tempfile.mkdtemp(prefix="npyfs-shared-", dir=private_tmp_root()))
    d.chmod(0o755)
    yield d
    for sub in d.iterdir():
        if sub.is_dir() and mounted_fuse(sub):
            cleanup_background(sub)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def session_mounter(npyfs_bin, tmp_path_factory):
    """Like `mount`, but mounts live for the whole session (shared archives).
    No watchdog: tests using these mounts wrap their I/O in guarded()."""
    m = Mounter(npyfs_bin, tmp_path_factory.mktemp("session_mounts"),
                watchdog=None)
    yield m
    problems = m.teardown_all()
    if problems:
        pytest.fail("session mount teardown problems:\n" + "\n".join(problems))


# ------------------------------------------------------------- sanity bits ---

def shown_perm(src_st, as_dir):
    """The permission bits npyfs shows for a source with stat src_st: its
    own less set-user-ID and set-group-ID; as_dir (an archive shown as a
    directory, the directories inside it): x added wherever r is."""
    p = stat.S_IMODE(src_st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
    return p | ((p & 0o444) >> 2) if as_dir else p


def is_shown_like(st, src):
    """st, a stat through the mount, is what npyfs shows for an entry whose
    source is src (README, "What you see in the mount"): a directory for a
    directory (its own mode) or an archive (its mode, r -> rx), a regular
    file with a file's exact mode; owner and group the source's."""
    s = os.stat(src)
    if stat.S_ISDIR(st.st_mode):
        want = shown_perm(s, not stat.S_ISDIR(s.st_mode))
    elif stat.S_ISREG(st.st_mode) and stat.S_ISREG(s.st_mode):
        want = shown_perm(s, False)
    else:
        return False
    return (stat.S_IMODE(st.st_mode) == want and st.st_uid == s.st_uid
            and st.st_gid == s.st_gid)


def is_synthesized_root(st):
    """The root of several sources (or of one .npy.gz): 0555, the mounting
    user's."""
    return (stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555
            and st.st_uid == os.getuid() and st.st_gid == os.getgid())


# errno sets, each with its justification:
# - opening an existing file for writing: npyfs must answer EROFS itself (and a
#   kernel read-only mount answers EROFS before asking the daemon).
OPEN_WRITE_ERRNOS = {errno.EROFS}
# - namespace changes (create, mkdir, unlink, rename, ...): EROFS from npyfs or a
#   read-only mount; EACCES when the kernel checks the directory's mode for a
#   user without write permission (default_permissions); EPERM is what some VFS paths return for
#   operations the filesystem refuses (e.g. link, chmod on a non-owner).
#   ENOSYS (handler missing) is NOT accepted: the daemon should say EROFS.
MUTATE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


# ------------------------------------------------------ remote sources ---
# Servers (nginx, s3rver, testserver.py), network namespaces with delay and
# bandwidth caps, and mounts of URLs, for the remote-source tests: defined in
# remote_servers.py (which the benchmark imports too).
from remote_servers import (fault_server, http_server, netns, remote,  # noqa: E402,F401
                            remote_module, remote_mount, s3_server, sigv4_server)
