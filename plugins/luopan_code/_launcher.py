"""The sandbox launcher: the first process of every sandboxed run (stdlib only, started as ``python -I -S``
by :mod:`luopan_code.sandbox`, which imports it as the top-level module ``_launcher``).

It runs single-threaded, so it can safely do what ``subprocess``'s ``preexec_fn`` must not do in a threaded
parent: enter new namespaces, mount, set resource limits, drop privileges. Its one argument is a JSON object
(see ``Sandbox._config``); the run's folder holds ``job.json`` (the tests) and the solution.

Processes, with namespaces (``namespaces: true``)::

    launcher (the host's mount and network namespaces: it can clean up)
      └ init: pid 1 of a new pid namespace, in new mount and network namespaces
          ├ the solution: a fresh interpreter (``_stub.py``) under its own uid
          └ the tests: a fork of init (``_harness.py``) under another uid of its own

Without namespaces (``process``) the launcher is init itself, and a child subreaper.

The verdict is the tests' exit status. Init writes one JSON line to its stdout (the launcher's, a file only
the parent reads): ``{"tests": [how, code], "solution": [how, code] | null, "setup": error | null}`` with
``how`` ``exit`` or ``signal``. The solution gets its two pipe ends as fds 3 and 4, /dev/null and its own two
output files, nothing else; the tests' fds, the report and the setup-error pipe never reach it.

Cleanup: the launcher dies with the thread that started it (``PR_SET_PDEATHSIG``: SIGTERM), and on SIGTERM,
SIGINT, SIGHUP or its own backstop (SIGALRM, some seconds after the timeout) it kills everything it started
and removes the run's folder; on SIGUSR1 (the parent stopping the run) it kills everything and leaves the
folder to the parent. Init dies with the launcher (SIGKILL), and with init the whole pid namespace;
the work folder is a size-limited tmpfs inside the mount namespace, gone with it.

Exit status: 0 when init reported, ``SETUP_FAILED`` (with a ``luopan-sandbox:`` line on stderr) when a layer
could not be set up, ``128 + N`` when init died of signal N.
"""

import _signal as signal  # not the signal package: it imports enum (3 ms per run)
import ctypes
import fcntl
import os
import resource
import sys

import _harness

SETUP_FAILED = 97

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
SYS_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442}
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGUSR1)

try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc: ask (slow: find_library may run ldconfig)
    import ctypes.util

    _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class _State:
    base: str = ""
    children: list = []  # what to kill when aborting: init, or (process) the solution and the tests
    subreaper = False


def _fail(msg: str) -> None:
    os.write(2, f"luopan-sandbox: setup failed: {msg}\n".encode())
    os._exit(SETUP_FAILED)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        _fail(f"{what}: {os.strerror(err)} (errno {err})")


def _prctl(option: int, value: int) -> None:
    _libc.prctl(option, value, 0, 0, 0)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mount(src, target: str, fstype, flags: int, what: str, data: str | None = None) -> None:
    _check(_libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
                       data and data.encode()), what)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _readonly_tree() -> None:
    """Every mount read-only, recursively (nothing propagates to the host)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE, "make / private")
    nr = SYS_MOUNT_SETATTR.get(os.uname().machine)
    done = False
    if nr is not None:
        attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
        AT_FDCWD = -100
        rc = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(AT_FDCWD), b"/", ctypes.c_uint(AT_RECURSIVE),
                           ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
        done = rc == 0
    if not done:  # kernels before 5.12: remount each mount point read-only, outermost first
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh]
        for mp in sorted(set(points), key=len):
            _libc.mount(None, mp.encode(), None, ctypes.c_ulong(MS_REMOUNT | MS_BIND | MS_RDONLY), None)


def _work_tmpfs(cfg: dict) -> None:
    """The work folder: a tmpfs of ``disk_mb`` MiB of this mount namespace (it vanishes with it), holding the
    solution's main.py, owned by the solution's uid."""
    work, uid = cfg["work"], cfg["solution"].get("uid")
    opts = f"size={int(cfg['disk_mb'])}m,nr_inodes={int(cfg['inodes'])},mode=0700"
    if uid is not None:
        opts += f",uid={uid},gid={uid}"
    _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, "mount the work folder (tmpfs)", opts)
    with open(os.path.join(cfg["base"], "main.py"), "rb") as fh:
        source = fh.read()
    path = os.path.join(work, "main.py")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, source)
    finally:
        os.close(fd)
    if uid is not None:
        os.chown(path, uid, uid)


def _bind_interpreter(prefix: str, target: str) -> None:
    """The interpreter's installation, read-only at ``target``: the dropped uids may not be allowed to walk
    to the real one (pyenv under /root, mode 700)."""
    _mount(prefix, target, None, MS_BIND | MS_REC, "bind the interpreter")
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
           "make the interpreter read-only")


def _limits(rlimits: dict) -> None:
    for name, value in rlimits.items():
        # CPU: SIGXCPU at the soft limit (a clear reason), SIGKILL a second later if it is ignored
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(getattr(resource, name), (value, hard))


def _drop(uid) -> None:
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _default_signals() -> None:
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _high(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)


def _child_failed(err_w: int, who: str, exc: BaseException) -> None:
    try:
        os.write(err_w, f"luopan-sandbox: setup failed: {who}: {type(exc).__name__}: {exc}\n".encode())
    finally:
        os._exit(SETUP_FAILED)


# ---------------------------------------------------------------- the two processes


def _solution(cfg: dict, files: dict, rfd: int, wfd: int, err_w: int, parent: int) -> None:
    """The solution's process: its limits, its uid, fds 0-4 only, then a fresh interpreter on ``_stub.py``."""
    try:
        _default_signals()
        os.setsid()
        r, w = _high(rfd), _high(wfd)
        null = os.open("/dev/null", os.O_RDONLY)
        for src, dst in ((null, 0), (files["solution.out"], 1), (files["solution.err"], 2), (r, 3), (w, 4)):
            os.dup2(src, dst)
        os.chdir(cfg["work"])
        sol = cfg["solution"]
        _limits(sol["rlimits"])
        _drop(sol.get("uid"))
        _prctl(PR_SET_NO_NEW_PRIVS, 1)  # no setuid binary can give privileges back
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
        if os.getppid() != parent:
            os._exit(SETUP_FAILED)  # the supervisor died before the line above
        argv = sol["argv"]
        os.execve(argv[0], argv, sol["env"])  # every other fd is close-on-exec
    except BaseException as exc:
        _child_failed(err_w, "solution", exc)


def _tests(cfg: dict, job: dict, files: dict, rfd: int, wfd: int, err_w: int, parent: int) -> None:
    """The tests' process: a fork of this one (trusted code, no fresh interpreter needed), its limits, its
    own uid, not dumpable (the solution may not trace it, whatever its uid), then the harness."""
    try:
        _default_signals()
        os.setsid()
        r, w, e = _high(rfd), _high(wfd), _high(err_w)
        null = os.open("/dev/null", os.O_RDONLY)
        for src, dst in ((null, 0), (files["tests.log"], 1), (files["tests.log"], 2), (r, 3), (w, 4), (e, 5)):
            os.dup2(src, dst)
        os.closerange(6, 65536)
        os.chdir("/")
        t = cfg["tests"]
        _limits(t["rlimits"])
        _drop(t.get("uid"))
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_DUMPABLE, 0)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(SETUP_FAILED)
        bound = cfg.get("bind_interpreter")
        if bound:  # import the standard library through the bound copy: the uid may not reach the real one
            prefix, target = bound

            def moved(paths: list) -> list:
                return [target + p[len(prefix):] if isinstance(p, str) and p.startswith(prefix) else p
                        for p in paths]

            sys.path[:] = moved(sys.path)
            for module in list(sys.modules.values()):  # packages already imported find submodules here
                path = getattr(module, "__path__", None)
                if isinstance(path, list):
                    path[:] = moved(path)
            sys.path_importer_cache.clear()
        sys.dont_write_bytecode = True
    except BaseException as exc:
        _child_failed(err_w, "tests", exc)
    rc = 1
    try:
        os.close(5)  # set up: the launcher stops waiting for setup errors
        rc = _harness.run(3, 4, job)
    finally:  # whatever happens, this fork never returns into the launcher's code
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except BaseException:
                pass
        os._exit(rc)


def _describe(status):
    if status is None:
        return None
    if os.WIFSIGNALED(status):
        return ["signal", os.WTERMSIG(status)]
    return ["exit", os.waitstatus_to_exitcode(status)]


def _supervise(cfg: dict, job: dict, files: dict) -> None:
    """Start the solution and the tests, wait for the tests, report both."""
    req_r, req_w = os.pipe()  # tests -> solution
    rep_r, rep_w = os.pipe()  # solution -> tests
    err_r, err_w = os.pipe()  # setup errors of both (close-on-exec: the solution's closes at its exec)
    me = os.getpid()
    sol = os.fork()  # first: its interpreter takes longest to start (and it is pid 2 in the namespace)
    if sol == 0:
        _solution(cfg, files, req_r, rep_w, err_w, me)
    _State.children.append(sol)
    tests = os.fork()
    if tests == 0:
        _tests(cfg, job, files, rep_r, req_w, err_w, me)
    _State.children.append(tests)
    for fd in (req_r, req_w, rep_r, rep_w, err_w):
        os.close(fd)
    setup = b""
    while True:  # until the solution has exec'd and the tests are set up (or either failed)
        chunk = os.read(err_r, 4096)
        if not chunk:
            break
        setup += chunk
    os.close(err_r)
    statuses = {}
    ended = False
    while tests not in statuses:
        pid, status = os.waitpid(-1, 0)
        statuses[pid] = status
        if pid != tests and (pid == sol or ended) and tests not in statuses:
            # the solution ended before the tests did: what it left (holding its pipe, perhaps) goes too,
            # so the tests see the pipe close
            ended = True
            _kill_solution(cfg.get("namespaces"), tests)
    tests_rc = _describe(statuses[tests])
    if sol not in statuses and tests_rc == ["exit", 3]:
        # the tests saw the solution's pipe close: it is ending, and its exit status says why
        for _ in range(200):
            pid, status = os.waitpid(sol, os.WNOHANG)
            if pid:
                statuses[sol] = status
                break
            signal.sigtimedwait([signal.SIGCHLD], 0.005)
    report = {"tests": tests_rc, "solution": _describe(statuses.get(sol)),
              "setup": setup.decode("utf-8", "replace").strip() or None}
    os.write(1, (_harness.dumps(report) + "\n").encode())


def _kill_solution(namespaces: bool, tests: int) -> None:
    """SIGKILL every process but the tests' and this one's: in the pid namespace all of them are the
    solution's; without it, this subreaper's children (the solution's orphans are reparented here)."""
    me = os.getpid()
    if namespaces:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    else:
        pids = _children_of(me)
    for pid in pids:
        if pid not in (me, tests):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# ---------------------------------------------------------------- init of the namespaces


def _init(cfg: dict, job: dict, files: dict, alive_r: int) -> None:
    _default_signals()
    _State.children = []
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the launcher, and the namespace with it
    os.set_blocking(alive_r, False)
    try:
        os.read(alive_r, 1)
        os._exit(SETUP_FAILED)  # end of file: the launcher died before the line above
    except BlockingIOError:
        pass
    os.close(alive_r)
    _prctl(PR_SET_DUMPABLE, 0)  # nothing of the solution's may trace init (nor the tests, forked from it)
    _check(_libc.unshare(ctypes.c_int(CLONE_NEWNS | CLONE_NEWNET)), "unshare")
    # a new network namespace has only a loopback device, and it is down: no route anywhere
    _readonly_tree()
    _work_tmpfs(cfg)
    if cfg.get("bind_interpreter"):
        _bind_interpreter(*cfg["bind_interpreter"])
    # a /proc of this pid namespace: the host's processes are not listed
    _libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC), None)
    _supervise(cfg, job, files)
    os._exit(0)  # pid 1 exits: the kernel kills whatever is left in the namespace


# ---------------------------------------------------------------- cleanup


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        pass
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def _kill_everything() -> None:
    """Kill what this launcher started and, as a subreaper, whatever they left behind, until none is left."""
    for pid in _State.children:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
    me = os.getpid()
    while True:
        if _State.subreaper:
            for pid in _children_of(me):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _abort(signum=None, frame=None) -> None:
    """Kill everything the launcher started and exit. On SIGUSR1 (the parent stopping the run: its timeout,
    Ctrl-C) the parent cleans up the rest; on anything else (the parent died: the thread that started the
    launcher ends only when the whole process does; the backstop; a signal from elsewhere) the launcher
    also removes the run's folder."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _kill_everything()
    if _State.base and signum != signal.SIGUSR1:
        import shutil

        shutil.rmtree(_State.base, ignore_errors=True)
    os._exit(128 + (signum or signal.SIGTERM))


def main() -> None:
    cfg = _harness.loads(sys.argv[1].encode())
    _State.base = cfg["base"]
    for sig in _SIGNALS:
        signal.signal(sig, _abort)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the parent's thread dies: clean up (see _abort)
    if os.getppid() != cfg["parent"]:
        _abort()  # the parent died before the line above
    signal.setitimer(signal.ITIMER_REAL, cfg["backstop"])  # the parent's timeout failed: clean up anyway
    with open(os.path.join(cfg["base"], "job.json"), "rb") as fh:
        job = _harness.loads(fh.read())
    files = {name: os.open(os.path.join(cfg["base"], name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
             for name in ("solution.out", "solution.err", "tests.log")}
    if not cfg.get("namespaces"):
        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # what the solution leaves behind is reparented here, and killed
        _State.subreaper = True
        try:
            _supervise(cfg, job, files)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _kill_everything()
        os._exit(0)
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(ctypes.c_int(CLONE_NEWPID | (CLONE_NEWUSER if cfg.get("userns") else 0))), "unshare")
    if cfg.get("userns"):  # unprivileged: map our own ids into the new user namespace
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    alive_r, alive_w = os.pipe()
    pid = os.fork()  # pid 1 of the new pid namespace
    if pid == 0:
        try:
            _init(cfg, job, files, alive_r)
        except BaseException as exc:
            _fail(f"{type(exc).__name__}: {exc}")
    _State.children.append(pid)
    os.close(alive_r)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    signal.setitimer(signal.ITIMER_REAL, 0)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
