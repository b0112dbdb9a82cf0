"""Running untrusted generated code: one separate, limited process per program.

Every program runs in its own process started through :mod:`luopan_code._launcher` (single-threaded, so it
can set things up that ``preexec_fn`` must not do in a threaded parent). The layers, outermost first:

``namespaces`` (needs root, or unprivileged user namespaces):
    a new **network namespace** (only a loopback device, down: every connection fails with "Network is
    unreachable", to 127.0.0.1 as to the internet), a new **mount namespace** in which every mount is
    read-only and only the program's throwaway work folder is writable, a new **pid namespace** (when the
    program ends or is killed, the kernel kills every process it left behind, in any session or process
    group). As root the program also runs as a **uid of its own** (one per concurrent
    program, reserved with a lock file), so ``RLIMIT_NPROC`` really bounds its processes (root is exempt
    from that limit) and it can signal or trace no other process; every process of that uid is killed
    after the run.
``process`` (the fallback when namespaces are unavailable):
    the same process limits, plus a Python-level prelude that refuses sockets and writes outside the work
    folder. Code that calls the C library directly (ctypes) gets around it: it is a guard, not a wall.

Always: ``python -I`` (no environment variables, no user site, no current folder on the path), a minimal
environment (``HOME`` and ``TMPDIR`` in the work folder), a new session (its own process group, killed as a
whole on timeout), a wall-clock timeout, ``RLIMIT_CPU``, ``RLIMIT_AS`` (memory), ``RLIMIT_NPROC``,
``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``, ``RLIMIT_CORE=0``, stdin from /dev/null, stdout and stderr into files
capped by ``RLIMIT_FSIZE``, and the work folder deleted afterwards.

A program passes when it exits with 0 **and** prints the random marker appended after its tests: a program
that calls ``exit(0)`` before its tests run fails.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger("luopan.code")  # stdlib only: this module also runs outside luopan (tests as nobody)

Isolation = Literal["auto", "namespaces", "process"]
Status = Literal["passed", "failed", "timeout", "error"]

_LAUNCHER = str(Path(__file__).with_name("_launcher.py"))
SETUP_FAILED = 97  # the launcher's exit code when a layer could not be set up
#: uids handed to sandboxed programs when running as root (reserved one at a time with a lock file)
UID_BASE = 2_100_000_000
UID_COUNT = 4096
_UID_LOCKS = Path(tempfile.gettempdir()) / "luopan-sandbox-uids"
_TAIL = 4000  # characters of stdout / stderr kept


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-program limits."""

    timeout: float = 10.0  #: wall-clock seconds
    cpu: int | None = None  #: CPU seconds per process (default: the timeout rounded up, plus 1)
    memory_mb: int = 512  #: address space (RLIMIT_AS)
    processes: int = 16  #: processes and threads (RLIMIT_NPROC) of the program's uid
    file_mb: int = 16  #: the largest file it may write, stdout and stderr included (RLIMIT_FSIZE)
    open_files: int = 256  #: RLIMIT_NOFILE

    def rlimits(self, nproc: int) -> dict[str, int]:
        mb = 1024 * 1024
        cpu = self.cpu if self.cpu is not None else int(self.timeout) + 2
        return {
            "RLIMIT_CPU": cpu,
            "RLIMIT_AS": self.memory_mb * mb,
            "RLIMIT_NPROC": nproc,
            "RLIMIT_FSIZE": self.file_mb * mb,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_CORE": 0,
        }


@dataclass(slots=True)
class ExecResult:
    """The outcome of one program. ``reason`` is one line saying why it failed ("" when it passed)."""

    status: Status
    reason: str
    seconds: float
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    uid: int | None = None  #: the uid it ran as, when the sandbox gave it one of its own

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(slots=True)
class _Mode:
    name: Literal["namespaces", "process"]
    run_as_uids: bool  # root: a uid of its own per program
    userns: bool  # unprivileged: a user namespace first
    layers: dict[str, str] = field(default_factory=dict)


class SandboxError(RuntimeError):
    """The sandbox could not be set up as asked (``isolation: namespaces`` where namespaces are missing)."""


class Sandbox:
    """Runs Python programs in separate, limited processes; see the module docstring for the layers.

    ``isolation``: ``auto`` (namespaces when they work here, else the process fallback, said in
    :attr:`layers`), ``namespaces`` (an error when they do not work) or ``process``.
    """

    def __init__(self, limits: Limits | None = None, *, isolation: Isolation = "auto",
                 python: str | None = None) -> None:
        self.limits = limits or Limits()
        self.isolation = isolation
        self.python = os.path.realpath(python or sys.executable)
        self._mode: _Mode | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ set-up
    @property
    def mode(self) -> _Mode:
        with self._lock:
            if self._mode is None:
                self._mode = self._choose_mode()
                log.info("code sandbox: %s %s", self._mode.name, self._mode.layers)
            return self._mode

    @property
    def layers(self) -> dict[str, str]:
        """What contains what, as set up on this machine (probed by running a program)."""
        return dict(self.mode.layers)

    def _choose_mode(self) -> _Mode:
        if self.isolation == "process":
            return self._process_mode()
        root = os.geteuid() == 0
        candidates = [_Mode("namespaces", run_as_uids=root, userns=not root)]
        problems = []
        for mode in candidates:
            ok, why = self._probe(mode)
            if ok:
                return mode
            problems.append(why)
        if self.isolation == "namespaces":
            raise SandboxError("namespaces are not available here: " + "; ".join(problems))
        log.warning("code sandbox: falling back to process isolation: %s", "; ".join(problems))
        mode = self._process_mode()
        mode.layers["namespaces"] = "unavailable here: " + "; ".join(problems)
        return mode

    def _process_mode(self) -> _Mode:
        mode = _Mode("process", run_as_uids=False, userns=False)
        mode.layers.update({
            "process": "a separate process (python -I) in a new session, killed as a group on timeout",
            "limits": self._limits_text(),
            "network": "Python prelude: socket connect/bind/send refused (a guard: ctypes gets around it)",
            "filesystem": "Python prelude: open/os.open for writing, and file removal/renaming, refused "
                          "outside the work folder (a guard: ctypes gets around it)",
            "processes": (f"RLIMIT_NPROC = the user's current processes + {self.limits.processes}"
                          + (": not enforced, root is exempt" if os.geteuid() == 0 else
                             " (shared with the user's other processes)")),
        })
        return mode

    def _limits_text(self) -> str:
        lim = self.limits
        return (f"wall {lim.timeout:g}s, CPU {lim.rlimits(0)['RLIMIT_CPU']}s, memory {lim.memory_mb} MiB (RLIMIT_AS), "
                f"files {lim.file_mb} MiB (RLIMIT_FSIZE), {lim.open_files} open files, no core dumps")

    def _probe(self, mode: _Mode) -> tuple[bool, str]:
        """Run a program that checks each layer from the inside; the mode is used only if all hold."""
        outside = tempfile.mkdtemp(prefix="luopan-probe-")
        probe = f"""
import errno, json, os, socket
facts = {{"pid": os.getpid(), "uid": os.getuid()}}
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1); facts["net"] = "connected"
except OSError as e:
    facts["net"] = e.errno
try:
    open({os.path.join(outside, "x")!r}, "w"); facts["write_outside"] = True
except OSError as e:
    facts["write_outside"] = e.errno
open("inside.txt", "w").write("x")
facts["write_inside"] = True
facts["procs"] = sum(1 for p in os.listdir("/proc") if p.isdigit())
print(json.dumps(facts))
"""
        try:
            res = self._run(probe, mode, Limits(timeout=30), marker=False)
        finally:
            shutil.rmtree(outside, ignore_errors=True)
        if res.status == "error" or res.returncode != 0:
            return False, f"{mode.name}: {res.reason or res.stderr.strip()[-300:]}"
        try:
            facts = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return False, f"{mode.name}: probe printed {res.stdout[-200:]!r}"
        bad = []
        if facts.get("net") != errno.ENETUNREACH:
            bad.append(f"network not cut ({facts.get('net')})")
        if facts.get("write_outside") is True:
            bad.append("could write outside the work folder")
        if facts.get("pid") != 2:  # pid 1 is the namespace's init, the program pid 2
            bad.append("not in a pid namespace")
        if mode.run_as_uids and facts.get("uid") == 0:
            bad.append("still root")
        if bad:
            return False, f"{mode.name}: " + ", ".join(bad)
        mode.layers.update({
            "process": "a separate process (python -I) in a new session, killed as a group on timeout",
            "limits": self._limits_text(),
            "network": "new network namespace: no interface up, every connection fails (probed)",
            "filesystem": "new mount namespace: every mount read-only, only the work folder writable (probed)",
            "processes": "new pid namespace: everything the program started dies with it",
            "proc": ("a /proc of its own: the host's processes are not listed" if facts.get("procs", 99) <= 3
                     else "the host's /proc: other processes' command lines are readable"),
        })
        if mode.run_as_uids:
            mode.layers["user"] = (f"a uid of its own per program ({UID_BASE}+, not root): RLIMIT_NPROC "
                                   f"= {self.limits.processes} is enforced, its processes are swept after the run")
        else:
            mode.layers["user"] = ("the caller's uid inside a user namespace: RLIMIT_NPROC counts the user's "
                                   f"other processes too (set to their number + {self.limits.processes})")
        return True, ""

    # ------------------------------------------------------------ running
    def run(self, program: str, *, timeout: float | None = None) -> ExecResult:
        """Run one program; never raises for anything the program does."""
        limits = self.limits if timeout is None else dataclasses.replace(self.limits, timeout=timeout)
        return self._run(program, self.mode, limits)

    def run_many(self, programs: Sequence[str], *, workers: int = 2,
                 progress: Callable[[int], None] | None = None) -> list[ExecResult]:
        """Run programs ``workers`` at a time; results in the order given."""
        mode = self.mode  # probe once, before the threads start
        if workers <= 1 or len(programs) <= 1:
            out = []
            for p in programs:
                out.append(self._run(p, mode, self.limits))
                if progress:
                    progress(1)
            return out

        def one(p: str) -> ExecResult:
            r = self._run(p, mode, self.limits)
            if progress:
                progress(1)
            return r

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="luopan-code") as pool:
            return list(pool.map(one, programs))

    def _run(self, program: str, mode: _Mode, limits: Limits, *, marker: bool = True) -> ExecResult:
        nonce = secrets.token_hex(16)
        if marker:
            program = (program + f"\n\nimport os as _luopan_os\n_luopan_os.write(1, b'\\n{nonce}\\n')\n")
        base = Path(tempfile.mkdtemp(prefix="luopan-code-"))
        uid_lock = None
        try:
            os.chmod(base, 0o711)  # a dropped uid can walk through to its work folder, not list the others
            work = base / "work"
            work.mkdir()
            (work / "main.py").write_text(program, encoding="utf-8")
            uid = None
            if mode.run_as_uids:
                uid, uid_lock = _reserve_uid()
                for p in (work, work / "main.py"):
                    os.chown(p, uid, uid)
            cfg = self._config(mode, limits, base, work, uid)
            out_path, err_path = base / "stdout", base / "stderr"
            t0 = time.perf_counter()
            timed_out = False
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    [self.python, "-I", "-S", _LAUNCHER, json.dumps(cfg)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=work,
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, start_new_session=True,
                )
                timed_out = _wait_exit(proc.pid, limits.timeout)
                # not reaped yet (a zombie at worst), so its pid still names its process group: kill the
                # group, whatever the program left there (the pid namespace and uid sweep take the rest)
                _kill_group(proc.pid)
                rc = proc.wait()
                if uid is not None:
                    _sweep_uid(uid)
            seconds = time.perf_counter() - t0
            stdout = _tail(out_path)
            stderr = _tail(err_path)
        finally:
            if uid_lock is not None:
                os.close(uid_lock)
            shutil.rmtree(base, ignore_errors=True)
        res = _verdict(rc, timed_out, stdout, stderr, seconds, limits, nonce if marker else None)
        res.uid = uid
        return res

    def _config(self, mode: _Mode, limits: Limits, base: Path, work: Path, uid: int | None) -> dict:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        python = self.python
        cfg: dict = {"workdir": str(work), "env": env}
        if mode.name == "namespaces":
            cfg.update(netns=True, mountns=True, pidns=True, readonly=True, userns=mode.userns)
        if mode.run_as_uids:
            # the interpreter's folder, bound read-only inside the work area's parent: the dropped uid may
            # not be allowed to walk to the real one (pyenv under /root, mode 700)
            prefix = _install_prefix(python)
            target = base / "py"
            target.mkdir()
            cfg["bind_interpreter"] = [prefix, str(target)]
            python = str(target / os.path.relpath(python, prefix))
            env["LD_LIBRARY_PATH"] = str(target / "lib")  # an absolute RUNPATH would point at the real one
            cfg["run_as"] = uid
            nproc = limits.processes
        else:
            nproc = _user_tasks() + limits.processes
        cfg["rlimits"] = limits.rlimits(nproc)
        argv = [python, "-I", "-S", "-B", "-X", "utf8"]
        if mode.name == "process":
            argv += ["-c", _PRELUDE, "main.py"]
        else:
            argv.append("main.py")
        cfg["argv"] = argv
        return cfg


def _install_prefix(python: str) -> str:
    """The folder holding the interpreter's bin/ and lib/ (``sys.base_prefix`` for this interpreter)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return os.path.realpath(sys.base_prefix)
    return str(Path(python).resolve().parent.parent)


def _reserve_uid() -> tuple[int, int]:
    """A uid no other sandboxed program (of any process on this machine) is using now, and its lock."""
    _UID_LOCKS.mkdir(mode=0o700, exist_ok=True)
    start = secrets.randbelow(UID_COUNT)
    for i in range(UID_COUNT):
        uid = UID_BASE + (start + i) % UID_COUNT
        fd = os.open(_UID_LOCKS / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _sweep_uid(uid)  # leftovers of a crashed run, if any
        return uid, fd
    raise SandboxError(f"all {UID_COUNT} sandbox uids are in use")


def _uid_pids(uid: int) -> list[int]:
    """The live processes of ``uid`` (zombies, already dead, excluded)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"State:") and line.split()[1] in (b"Z", b"X"):
                        break
                    if line.startswith(b"Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue
    return pids


def _sweep_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (a sandbox uid: nothing else runs as it), until none is left."""
    for _ in range(100):
        pids = _uid_pids(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    log.warning("code sandbox: processes of uid %d survived 100 SIGKILL rounds", uid)


def _user_tasks() -> int:
    """How many tasks (processes and threads) the current user runs: RLIMIT_NPROC counts them all."""
    uid = os.getuid()
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return n


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits, without reaping it; True when ``timeout`` passed first."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return not poller.poll(max(0, int(timeout * 1000)))
        finally:
            os.close(fd)
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.005)
    return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4 * _TAIL))
            data = fh.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace")[-_TAIL:]


_SIGNALS = {
    signal.SIGXCPU: "CPU time limit",
    signal.SIGXFSZ: "file size limit (RLIMIT_FSIZE)",
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
}


def _verdict(rc: int, timed_out: bool, stdout: str, stderr: str, seconds: float, limits: Limits,
             nonce: str | None) -> ExecResult:
    def result(status: Status, reason: str) -> ExecResult:
        return ExecResult(status, reason, round(seconds, 4), rc, stdout, stderr)

    if timed_out:
        return result("timeout", f"timed out after {limits.timeout:g}s (wall clock)")
    if rc == SETUP_FAILED and "luopan-sandbox:" in stderr:
        line = next(ln for ln in stderr.splitlines() if "luopan-sandbox:" in ln)
        return result("error", line.strip())
    if rc < 0 or rc > 128:
        sig = -rc if rc < 0 else rc - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        what = _SIGNALS.get(sig)
        return result("failed", f"killed by {name}" + (f" ({what})" if what and what != "killed" else ""))
    if rc != 0:
        return result("failed", _last_error(stderr) or f"exit code {rc}")
    if nonce is not None and nonce not in stdout:
        return result("failed", "exited with 0 before its tests finished (the end-of-tests marker never printed)")
    if nonce is not None:
        stdout = stdout.replace(f"\n{nonce}\n", "\n", 1)
    return ExecResult("passed", "", round(seconds, 4), rc, stdout, stderr)


def _last_error(stderr: str) -> str:
    """The exception line of a traceback (``AssertionError``, ``MemoryError``, ...); a bare
    ``AssertionError`` gets the failing source line."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return ""
    last = lines[-1].strip()
    if last == "AssertionError":
        frames = [i for i, ln in enumerate(lines) if ln.lstrip().startswith('File "')]
        if frames and frames[-1] + 1 < len(lines) - 1:
            return f"AssertionError: {lines[frames[-1] + 1].strip()}"[:300]
    return last[:300]


#: the ``process`` fallback: guards installed before the program runs (bypassable: not a real wall)
_PRELUDE = r"""
import builtins, io, os, socket, sys
_root = os.path.realpath(os.getcwd())
def _inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else '/proc/self/fd/%d' % path)
    except (TypeError, ValueError):
        return False
    return p == _root or p.startswith(_root + os.sep) or p.startswith('/dev/')
def _deny(what):
    raise PermissionError(13, 'luopan sandbox: %s outside the work folder is not allowed' % what)
_open = builtins.open
def _guarded_open(file, mode='r', *a, **k):
    if any(c in mode for c in 'wax+') and not isinstance(file, int) and not _inside(file):
        _deny('writing')
    return _open(file, mode, *a, **k)
builtins.open = io.open = _guarded_open
_os_open = os.open
def _guarded_os_open(path, flags, *a, **k):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC) and not _inside(path):
        _deny('writing')
    return _os_open(path, flags, *a, **k)
os.open = _guarded_os_open
def _guard_paths(name):
    real = getattr(os, name)
    def guarded(*paths, **k):
        for p in paths[:2]:
            if isinstance(p, (str, bytes, os.PathLike)) and not _inside(p):
                _deny(name)
        return real(*paths, **k)
    setattr(os, name, guarded)
for _n in ('remove', 'unlink', 'rmdir', 'rename', 'replace', 'mkdir', 'makedirs', 'chmod', 'symlink', 'link'):
    _guard_paths(_n)
def _no_net(*a, **k):
    raise OSError(101, 'Network is unreachable (luopan sandbox prelude)')
for _m in ('connect', 'connect_ex', 'bind', 'sendto', 'sendmsg'):
    setattr(socket.socket, _m, _no_net)
socket.create_connection = _no_net
socket.getaddrinfo = _no_net
del _n, _m
sys.argv = sys.argv[1:]
import runpy
runpy.run_path(sys.argv[0], run_name='__main__')
"""
