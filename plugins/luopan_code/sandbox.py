"""Running untrusted generated code against trusted tests, in separate, limited processes.

Every run starts :mod:`luopan_code._launcher` (single-threaded, so it can set up what ``preexec_fn`` must
not do in a threaded parent), which starts two processes:

- **the solution** (untrusted): a fresh ``python -I -S`` that loads the solution as ``__main__`` and then
  answers calls (``luopan_code/_stub.py``);
- **the tests** (trusted: the benchmark's tests and, for HumanEval, the prompt's helper functions): a fork
  of the launcher that runs them and calls the solution's functions over two pipes (``_harness.py``).

Values from the solution are decoded into plain builtin data (or handles on its other objects) in the tests'
process, so comparisons, ``abs()`` and the rest run on real builtins there. The verdict is the tests'
process's exit status, reported by the launcher in a file only this process reads: nothing the solution
prints, writes or does to itself can make it pass.

The layers, outermost first:

``namespaces`` (needs root, or unprivileged user namespaces):
    a new **pid namespace** (its init, pid 1, is the launcher's child; when it ends, the kernel kills every
    process in it), a new **network namespace** (only a loopback device, down: every connection fails with
    "Network is unreachable"), a new **mount namespace** in which every mount is read-only and the
    solution's work folder is a size-limited **tmpfs** (``disk_mb``) that vanishes with the namespace. As
    root the solution and the tests each run as a **uid of their own** (reserved with lock files), so
    ``RLIMIT_NPROC`` really bounds the solution's processes and it can neither signal, trace nor read the
    tests' process; every process of both uids is killed after the run.
``process`` (the fallback when namespaces are unavailable):
    the same limits, a Python-level guard refusing sockets and writes outside the work folder (ctypes gets
    around it), and both processes under the caller's uid: the solution *can* reach the tests' process
    there, so the verdict is only as safe as the caller's uid is unprivileged and the solution well-behaved.

Always: ``python -I``, a minimal environment (``HOME`` and ``TMPDIR`` in the work folder), a wall-clock
timeout, ``RLIMIT_CPU``, ``RLIMIT_AS``, ``RLIMIT_NPROC``, ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``,
``RLIMIT_CORE=0``, stdin from /dev/null, output into files capped by ``RLIMIT_FSIZE``. The launcher dies
with the thread that started it (``PR_SET_PDEATHSIG``) and then kills everything and removes the run's
folder; it also has a timeout of its own. Folders left by a luopan process that died anyway (``kill -9``
of the launcher too) are removed by the next sandbox started on the machine (their lock file is free).
"""

from __future__ import annotations

import ast
import dataclasses
import errno
import fcntl
import functools
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
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger("luopan.code")  # stdlib only: this module also runs outside luopan (tests as nobody)

Isolation = Literal["auto", "namespaces", "process"]
Status = Literal["passed", "failed", "timeout", "error"]

_HERE = Path(__file__).resolve().parent
#: how the launcher starts: its folder on the path, so its modules are cached as bytecode like any module
_BOOT = f"import sys; sys.path.insert(0, {str(_HERE)!r}); import _launcher; _launcher.main()"
SETUP_FAILED = 97  # the launcher's exit code when a layer could not be set up
#: uids handed to sandboxed processes when running as root (reserved one at a time with a lock file)
UID_BASE = 2_100_000_000
UID_COUNT = 4096
_UID_LOCKS = Path(tempfile.gettempdir()) / "luopan-sandbox-uids"
_PREFIX = "luopan-code-"  # the run folders; a free ``lock`` file inside marks one whose luopan died
_TAIL = 4000  # characters of stdout / stderr kept
_GRACE = 2.0  # seconds the launcher gets to stop the run after SIGUSR1 before SIGKILL
_BACKSTOP = 5.0  # the launcher kills everything itself this long after the timeout


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-program limits (each of the solution's and the tests' processes gets them)."""

    timeout: float = 10.0  #: wall-clock seconds
    cpu: int | None = None  #: CPU seconds per process (default: the timeout rounded down, plus 2)
    memory_mb: int = 512  #: address space (RLIMIT_AS)
    processes: int = 16  #: processes and threads (RLIMIT_NPROC) of the program's uid
    file_mb: int = 16  #: the largest file it may write, stdout and stderr included (RLIMIT_FSIZE)
    open_files: int = 256  #: RLIMIT_NOFILE
    disk_mb: int = 64  #: the work folder's size (a tmpfs with namespaces; ``process``: RLIMIT_FSIZE only)

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


@dataclass(frozen=True, slots=True)
class Job:
    """A solution and the tests that judge it.

    ``solution`` is untrusted and runs alone in its process. ``tests`` (trusted) run in another process with
    ``prelude`` (trusted code run first, e.g. HumanEval's prompt: its imports and helper functions); the
    solution's module-level names they use are bound to its values (plain data) or handles (functions,
    classes, other objects). A name the prelude or the builtins define stays theirs unless ``expose`` lists
    it (the function under test: HumanEval's entry point, MBPP's ``sum``). With no tests the job passes when
    the solution loads without an error.
    """

    solution: str
    tests: str = ""
    prelude: str = ""
    expose: tuple[str, ...] = ()


@dataclass(slots=True)
class ExecResult:
    """The outcome of one program. ``reason`` is one line saying why it failed ("" when it passed)."""

    status: Status
    reason: str
    seconds: float
    returncode: int | None = None  #: the tests' exit status (0: they ran to their end); None if unknown
    stdout: str = ""  #: the solution's
    stderr: str = ""  #: the solution's
    tests_output: str = ""  #: the tests' stdout and stderr (a failed test's traceback)
    uid: int | None = None  #: the uid the solution ran as, when the sandbox gave it one of its own
    tests_uid: int | None = None  #: the uid the tests ran as

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(slots=True)
class _Mode:
    name: Literal["namespaces", "process"]
    run_as_uids: bool  # root: a uid of its own per process
    userns: bool  # unprivileged: a user namespace first
    layers: dict[str, str] = field(default_factory=dict)


class SandboxError(RuntimeError):
    """The sandbox could not be set up as asked (``isolation: namespaces`` where namespaces are missing)."""


class _Cancelled(Exception):
    pass


def as_job(program: str | Job) -> Job:
    """A plain program is a job without tests: it passes when it runs to its end without an error."""
    return program if isinstance(program, Job) else Job(program)


def defined_names(code: str) -> tuple[str, ...]:
    """The functions and classes ``code`` defines at its top level (to ``expose`` them to the tests)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old code, say
            tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return ()
    return tuple(node.name for node in tree.body
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


class Sandbox:
    """Runs solutions against tests in separate, limited processes; see the module docstring for the layers.

    ``isolation``: ``auto`` (namespaces when they work here, else the process fallback, said in
    :attr:`layers`), ``namespaces`` (an error when they do not work) or ``process``. ``tmpdir``: where the run
    folders go (default: the system's temporary folder; as root, the sandbox's uids must be able to walk
    through it and its parents, mode 711 or more, or the namespaces probe fails).
    """

    def __init__(self, limits: Limits | None = None, *, isolation: Isolation = "auto",
                 python: str | None = None, tmpdir: str | os.PathLike | None = None) -> None:
        self.limits = limits or Limits()
        self.isolation = isolation
        self.python = os.path.realpath(python or sys.executable)
        self.tmpdir = Path(tmpdir or tempfile.gettempdir())
        self._mode: _Mode | None = None
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._running: dict[subprocess.Popen, threading.Event | None] = {}

    # ------------------------------------------------------------ set-up
    @property
    def mode(self) -> _Mode:
        with self._lock:
            if self._mode is None:
                _sweep_stale(self.tmpdir)
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

    def _common_layers(self) -> dict[str, str]:
        return {
            "process": "the solution in a process of its own (python -I), the tests in another; a wall-clock "
                       "timeout, after which everything the run started is killed",
            "limits": self._limits_text(),
            "verdict": "the tests' exit status, reported by the launcher; the solution's results reach the "
                       "tests as plain data or handles, compared there on real builtins",
            "cleanup": "the launcher dies with the thread that started it (PR_SET_PDEATHSIG), kills what it "
                       "started and removes the run's folder, and has its own timeout; folders of dead runs "
                       "are removed by the next sandbox started",
        }

    def _process_mode(self) -> _Mode:
        mode = _Mode("process", run_as_uids=False, userns=False)
        mode.layers.update(self._common_layers())
        mode.layers.update({
            "network": "Python guard: socket connect/bind/send refused (ctypes gets around it)",
            "filesystem": "Python guard: open/os.open for writing, and file removal/renaming, refused "
                          "outside the work folder (ctypes gets around it); the work folder is on the host's "
                          f"disk, each file at most {self.limits.file_mb} MiB (RLIMIT_FSIZE), no total quota",
            "processes": (f"RLIMIT_NPROC = the user's current processes + {self.limits.processes}"
                          + (": not enforced, root is exempt" if os.geteuid() == 0 else
                             " (shared with the user's other processes)")
                          + "; the launcher is a child subreaper and kills what the solution left behind"),
            "user": "the caller's uid for both processes: the solution can signal the tests' process (a kill "
                    "fails the run) and, where the uid is privileged, reach into it: the verdict is not "
                    "protected against a hostile solution",
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
facts["tmpfs"] = any(line.split()[1] == os.getcwd() and line.split()[2] == "tmpfs" for line in open("/proc/self/mounts"))
print(json.dumps(facts))
"""
        try:
            res = self._run(Job(probe), mode, Limits(timeout=30), None)
        finally:
            shutil.rmtree(outside, ignore_errors=True)
        if res.status != "passed":
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
        if facts.get("pid") != 2:  # pid 1 is the namespace's init, the solution pid 2
            bad.append("not in a pid namespace")
        if mode.run_as_uids and facts.get("uid") == 0:
            bad.append("still root")
        if not facts.get("tmpfs"):
            bad.append("the work folder is not a tmpfs")
        if bad:
            return False, f"{mode.name}: " + ", ".join(bad)
        mode.layers.update(self._common_layers())
        mode.layers.update({
            "network": "new network namespace: no interface up, every connection fails (probed)",
            "filesystem": "new mount namespace: every mount read-only (probed); the work folder a tmpfs of "
                          f"{self.limits.disk_mb} MiB of its own, gone with the namespace",
            "processes": "new pid namespace: everything the run started dies with it",
            "proc": ("a /proc of its own: the host's processes are not listed" if facts.get("procs", 99) <= 4
                     else "the host's /proc: other processes' command lines are readable"),
        })
        if mode.run_as_uids:
            mode.layers["user"] = (f"a uid of its own for the solution and another for the tests ({UID_BASE}+, "
                                   f"not root): RLIMIT_NPROC = {self.limits.processes} is enforced, the "
                                   "solution cannot signal, trace or read the tests, both are swept after the run")
        else:
            mode.layers["user"] = ("the caller's uid inside a user namespace for both processes: RLIMIT_NPROC "
                                   f"counts the user's other processes too (set to their number + "
                                   f"{self.limits.processes}); the tests' process is not dumpable (the solution "
                                   "cannot trace or read it) but the solution can kill it (the run fails)")
        return True, ""

    # ------------------------------------------------------------ running
    def run(self, program: str | Job, *, timeout: float | None = None) -> ExecResult:
        """Run one program or job; never raises for anything the program does."""
        limits = self.limits if timeout is None else dataclasses.replace(self.limits, timeout=timeout)
        return self._run(as_job(program), self.mode, limits, None)

    def run_many(self, programs: Sequence[str | Job], *, workers: int = 2,
                 progress: Callable[[int], None] | None = None) -> list[ExecResult]:
        """Run programs ``workers`` at a time; results in the order given. An exception here (Ctrl-C's
        KeyboardInterrupt) kills the running programs at once and starts no more."""
        mode = self.mode  # probe once, before the threads start
        jobs = [as_job(p) for p in programs]
        cancel = threading.Event()

        def one(job: Job) -> ExecResult:
            r = self._run(job, mode, self.limits, cancel)
            if progress:
                progress(1)
            return r

        if workers <= 1 or len(jobs) <= 1:
            return [one(j) for j in jobs]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="luopan-code")
        try:
            futures = [pool.submit(one, j) for j in jobs]
            return [f.result() for f in futures]
        except BaseException:
            self._cancel(cancel)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _cancel(self, cancel: threading.Event) -> None:
        """Stop the programs started under ``cancel`` now (their launchers clean up) and start no more."""
        with self._start_lock:
            cancel.set()
            for proc, ev in self._running.items():
                if ev is cancel:
                    _signal(proc.pid, signal.SIGUSR1)

    def _run(self, job: Job, mode: _Mode, limits: Limits, cancel: threading.Event | None) -> ExecResult:
        base, lock_fd = _new_base(self.tmpdir)
        uids: list[int] = []
        uid_locks: list[int] = []
        proc = None
        timed_out = False
        rc = None
        try:
            work = base / "work"
            work.mkdir()
            ns = mode.name == "namespaces"
            _write_private(base / "main.py" if ns else work / "main.py", job.solution)
            _write_private(base / "job.json", json.dumps({"tests": job.tests, "prelude": job.prelude,
                                                          "expose": list(job.expose)}))
            if mode.run_as_uids:
                uids, uid_locks = _reserve_uids(2)
            cfg = self._config(mode, limits, base, work, uids)
            t0 = time.perf_counter()
            with open(base / "report.json", "wb") as report, open(base / "launcher.err", "wb") as err:
                with self._start_lock:
                    if cancel is not None and cancel.is_set():
                        raise _Cancelled
                    proc = subprocess.Popen(
                        [self.python, "-I", "-S", "-c", _BOOT, json.dumps(cfg)],
                        stdin=subprocess.DEVNULL, stdout=report, stderr=err, cwd=base,
                        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, start_new_session=True,
                    )
                    self._running[proc] = cancel
            try:
                timed_out = _wait_exit(proc.pid, limits.timeout)
            finally:
                try:
                    # still running (the timeout, Ctrl-C): SIGUSR1 has the launcher kill everything it started
                    if _wait_exit(proc.pid, 0):
                        _signal(proc.pid, signal.SIGUSR1)
                        _wait_exit(proc.pid, _GRACE)
                finally:
                    # not reaped yet (a zombie at worst), so its pid still names its process group: kill the
                    # group, whatever is left there (init follows the launcher: PR_SET_PDEATHSIG)
                    _kill_group(proc.pid)
                    rc = proc.wait()
                    with self._start_lock:
                        self._running.pop(proc, None)
            seconds = time.perf_counter() - t0
            verdict = _read_json(base / "report.json")
            if uids and (rc != 0 or verdict is None):
                _sweep_uids(uids)  # the namespace may still be dying: nothing of its uids may outlive the run
            res = _verdict(timed_out, rc, verdict, _tail(base / "launcher.err"), _tail(base / "solution.out"),
                           _tail(base / "solution.err"), _tail(base / "tests.log"), seconds, limits)
        except _Cancelled:
            res = ExecResult("error", "cancelled", 0.0)
        finally:
            for fd in uid_locks:
                os.close(fd)
            shutil.rmtree(base, ignore_errors=True)
            os.close(lock_fd)
        if uids:
            res.uid, res.tests_uid = uids
        return res

    def _stub(self, mode: _Mode) -> str:
        stub = _stub_source()
        return _PRELUDE + stub if mode.name == "process" else stub

    def _config(self, mode: _Mode, limits: Limits, base: Path, work: Path, uids: list[int]) -> dict:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        python = self.python
        cfg: dict = {"parent": os.getpid(), "base": str(base), "work": str(work),
                     "namespaces": mode.name == "namespaces", "userns": mode.userns,
                     "disk_mb": limits.disk_mb, "inodes": 4096 + 64 * limits.disk_mb,
                     "backstop": limits.timeout + _BACKSTOP}
        if mode.run_as_uids:
            # the interpreter's folder, bound read-only inside the run's folder: the dropped uids may not be
            # allowed to walk to the real one (pyenv under /root, mode 700)
            prefix = _install_prefix(python)
            target = base / "py"
            target.mkdir()
            cfg["bind_interpreter"] = [prefix, str(target)]
            python = str(target / os.path.relpath(python, prefix))
            env["LD_LIBRARY_PATH"] = str(target / "lib")  # an absolute RUNPATH would point at the real one
            nproc = limits.processes
        else:
            nproc = _user_tasks() + limits.processes
        rlimits = limits.rlimits(nproc)
        cfg["solution"] = {"uid": uids[0] if uids else None, "env": env, "rlimits": rlimits,
                           "argv": [python, "-I", "-S", "-B", "-X", "utf8", "-c", self._stub(mode)]}
        cfg["tests"] = {"uid": uids[1] if uids else None, "rlimits": rlimits}
        return cfg


@functools.cache
def _stub_source() -> str:
    return (_HERE / "_stub.py").read_text(encoding="utf-8")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _new_base(tmpdir: Path) -> tuple[Path, int]:
    """A run folder and the lock held while it is in use (a free lock marks a dead luopan's folder)."""
    base = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=tmpdir))
    os.chmod(base, 0o711)  # the dropped uids can walk through to what is theirs, not list the rest
    tmp = base / ".lock"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(tmp, base / "lock")  # only a locked lock file is ever called "lock"
    return base, fd


def _sweep_stale(tmpdir: Path) -> None:
    """Remove the run folders of sandboxes whose luopan process died (their lock is free)."""
    try:
        entries = list(os.scandir(tmpdir))
    except OSError:
        return
    uid = os.geteuid()
    for entry in entries:
        if not entry.name.startswith(_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            fd = os.open(os.path.join(entry.path, "lock"), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
            log.info("code sandbox: removed %s, left by a luopan process that died", entry.path)
        finally:
            os.close(fd)


def _install_prefix(python: str) -> str:
    """The folder holding the interpreter's bin/ and lib/ (``sys.base_prefix`` for this interpreter)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return os.path.realpath(sys.base_prefix)
    return str(Path(python).resolve().parent.parent)


def _reserve_uids(n: int) -> tuple[list[int], list[int]]:
    """``n`` uids no other sandboxed program (of any process on this machine) is using now, and their locks."""
    _UID_LOCKS.mkdir(mode=0o700, exist_ok=True)
    uids: list[int] = []
    fds: list[int] = []
    start = secrets.randbelow(UID_COUNT)
    for i in range(UID_COUNT):
        uid = UID_BASE + (start + i) % UID_COUNT
        fd = os.open(_UID_LOCKS / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        uids.append(uid)
        fds.append(fd)
        if len(uids) == n:
            _sweep_uids(uids)  # leftovers of a crashed run, if any
            return uids, fds
    for fd in fds:
        os.close(fd)
    raise SandboxError(f"fewer than {n} of the {UID_COUNT} sandbox uids are free")


def _uid_pids(uids: Sequence[int]) -> list[int]:
    """The live processes of ``uids`` (zombies, already dead, excluded)."""
    pids = []
    wanted = set(uids)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"State:") and line.split()[1] in (b"Z", b"X"):
                        break
                    if line.startswith(b"Uid:"):
                        if int(line.split()[1]) in wanted:
                            pids.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue
    return pids


def _sweep_uids(uids: Sequence[int]) -> None:
    """SIGKILL every process of ``uids`` (sandbox uids: nothing else runs as them), until none is left."""
    for _ in range(100):
        pids = _uid_pids(uids)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    log.warning("code sandbox: processes of uids %s survived 100 SIGKILL rounds", list(uids))


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


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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


def _killed(sig: int) -> str:
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    what = _SIGNALS.get(sig)
    return f"killed by {name}" + (f" ({what})" if what and what != "killed" else "")


def _verdict(timed_out: bool, rc: int | None, report: dict | None, launcher_err: str, stdout: str, stderr: str,
             tests_log: str, seconds: float, limits: Limits) -> ExecResult:
    tests = report.get("tests") if report else None
    code = tests[1] if isinstance(tests, list) and len(tests) == 2 and tests[0] == "exit" else None

    def result(status: Status, reason: str) -> ExecResult:
        return ExecResult(status, reason, round(seconds, 4), code, stdout, stderr, tests_log)

    if timed_out:
        return result("timeout", f"timed out after {limits.timeout:g}s (wall clock)")
    if report is None or not isinstance(tests, list) or len(tests) != 2:
        line = next((ln.strip() for ln in launcher_err.splitlines() if "luopan-sandbox:" in ln), "")
        return result("error", line or f"the sandbox's launcher ended without a verdict (exit status {rc})")
    if report.get("setup"):
        return result("error", str(report["setup"]).splitlines()[0])
    if code == 0:
        return result("passed", "")
    if tests[0] == "signal":
        return result("failed", f"the tests' process was {_killed(tests[1])}")
    if code == 3:  # the solution's process ended (or closed its pipe) before the tests finished
        return result("failed", _solution_ended(report.get("solution"), stderr))
    if code == 2:  # not a valid message
        line = next((ln for ln in reversed(tests_log.splitlines()) if ln.startswith("luopan-harness:")), "")
        return result("failed", line[len("luopan-harness: "):].strip()[:300] or "the solution broke the protocol")
    return result("failed", _last_error(tests_log) or f"the tests exited with {code}")


def _solution_ended(solution: list | None, stderr: str) -> str:
    if not isinstance(solution, list) or len(solution) != 2:
        return "the solution stopped answering the tests (it closed its pipe)"
    how, code = solution
    if how == "signal":
        return _killed(code)
    if code == 0:
        return "exited with 0 before its tests finished"
    return _last_error(stderr) or f"exit code {code}"


def _last_error(stderr: str) -> str:
    """The exception line of a traceback (``AssertionError``, ``MemoryError``, ...); a bare
    ``AssertionError`` gets the failing source line."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return ""
    # the last line that is not part of a traceback's body (frames and source lines are indented): the
    # output of processes killed while writing (a fork bomb's) may end in the middle of one
    ends = [i for i, ln in enumerate(lines) if not ln[0].isspace() and not ln.startswith("Traceback (")]
    end = ends[-1] if ends else len(lines) - 1
    last = lines[end].strip()
    if last == "AssertionError":
        frames = [i for i, ln in enumerate(lines[:end]) if ln.lstrip().startswith('File "')]
        if frames and frames[-1] + 1 < end:
            return f"AssertionError: {lines[frames[-1] + 1].strip()}"[:300]
    return last[:300]


#: the ``process`` fallback: guards installed before the solution loads (bypassable: not a real wall)
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
"""
