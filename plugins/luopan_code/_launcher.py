"""The sandbox launcher: the first process of every sandboxed program (stdlib only, run as ``python -I -S``).

It runs single-threaded, so it can safely do what ``subprocess``'s ``preexec_fn`` must not do in a threaded
parent: enter new namespaces, remount the file system read-only, set resource limits, drop privileges, then
``exec`` the program's interpreter. Its one argument is a JSON object (see ``luopan_code.sandbox``).

Exit status: the program's own exit code, ``128 + N`` when it died of signal N, or ``SETUP_FAILED`` (with a
``luopan-sandbox:`` line on stderr) when a requested layer could not be set up: the program never ran then.
"""

import ctypes
import json
import os
import resource
import signal
import sys

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
PR_SET_NO_NEW_PRIVS = 38

try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc: ask (slow: find_library may run ldconfig)
    import ctypes.util

    _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _fail(msg: str) -> None:
    os.write(2, f"luopan-sandbox: setup failed: {msg}\n".encode())
    os._exit(SETUP_FAILED)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        _fail(f"{what}: {os.strerror(err)} (errno {err})")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mount(src: str | None, target: str, fstype: str | None, flags: int, what: str) -> None:
    _check(_libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
                       None), what)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _readonly_tree(workdir: str) -> None:
    """Everything read-only (every mount, recursively), then the work folder bound read-write on itself."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE, "make / private")  # nothing propagates to the host
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
    _mount(workdir, workdir, None, MS_BIND | MS_REC, "bind the work folder")
    _mount(None, workdir, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, "make the work folder writable")


def _bind_interpreter(prefix: str, target: str) -> None:
    """The interpreter's installation, read-only at ``target``: the program's uid may not be allowed to walk
    to the real one (pyenv under /root, mode 700)."""
    _mount(prefix, target, None, MS_BIND | MS_REC, "bind the interpreter")
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
           "make the interpreter read-only")


def _limits(cfg: dict) -> None:
    for name, value in cfg["rlimits"].items():
        # CPU: SIGXCPU at the soft limit (a clear reason), SIGKILL a second later if it is ignored
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(getattr(resource, name), (value, hard))


def main() -> None:
    cfg = json.loads(sys.argv[1])
    workdir = cfg["workdir"]
    uid = os.getuid()
    flags = 0
    if cfg.get("userns"):
        flags |= CLONE_NEWUSER
    if cfg.get("netns"):
        flags |= CLONE_NEWNET
    if cfg.get("mountns"):
        flags |= CLONE_NEWNS
    if cfg.get("pidns"):
        flags |= CLONE_NEWPID
    if flags:
        _check(_libc.unshare(ctypes.c_int(flags)), "unshare")
    if cfg.get("userns"):  # unprivileged: map our own ids into the new user namespace
        gid = os.getgid()
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    if cfg.get("netns"):
        pass  # a new network namespace has only a loopback device, and it is down: no route anywhere
    if cfg.get("mountns") and cfg.get("readonly"):
        _readonly_tree(workdir)
    if cfg.get("bind_interpreter"):
        _bind_interpreter(*cfg["bind_interpreter"])
    if cfg.get("pidns"):
        # a new pid namespace: its pid 1 is a small init (this process, forked) that starts the program
        # as pid 2 and reaps whatever gets orphaned; when the program ends, init exits and the kernel kills
        # every process left in the namespace, whatever session or process group they moved to. (The
        # program is not pid 1 itself: pid 1 ignores signals it has no handler for, SIGXCPU included.)
        pid = os.fork()
        if pid:
            _relay(pid)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # init dies with the launcher
        if cfg.get("mountns"):  # a /proc of this namespace: the host's processes are not listed
            _libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | MS_NOEXEC), None)
        program = os.fork()
        if program:
            _init(program)
    _exec_program(cfg)


def _relay(pid: int) -> None:
    """Wait for ``pid`` and exit as it did (``128 + N`` for signal N)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: os.kill(pid, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def _init(program: int) -> None:
    """pid 1 of the namespace: reap every child; exit as the program did once it ends."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(SETUP_FAILED)
        if pid == program:
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _exec_program(cfg: dict) -> None:
    os.chdir(cfg["workdir"])
    try:
        _limits(cfg)
    except (ValueError, OSError) as exc:
        _fail(f"setrlimit: {exc}")
    run_as = cfg.get("run_as")
    if run_as is not None:
        try:
            os.setgroups([])
            os.setgid(run_as)
            os.setuid(run_as)
        except OSError as exc:
            _fail(f"drop privileges to uid {run_as}: {exc}")
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid binary can give privileges back
    # set after the uid change (which clears it): the program dies with the launcher
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1 and not cfg.get("pidns"):
        os._exit(SETUP_FAILED)  # the launcher is already gone
    argv = cfg["argv"]
    try:
        os.execve(argv[0], argv, cfg["env"])
    except OSError as exc:
        _fail(f"exec {argv[0]}: {exc}")


if __name__ == "__main__":
    main()
