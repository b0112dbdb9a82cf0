"""The code sandbox contains what generated code may do, scores it as a failure with a clear reason, and the
run goes on: after each hostile program a correct one still passes.

Each hostile program runs between two correct ones in one ``run_many`` call (2 workers), as in a real
evaluation. Which layer contains what depends on the machine: the tests read ``Sandbox.layers`` and assert
the OS-level layers (network, mount and pid namespaces; a uid of its own as root) wherever they are
available, which on this project's machines (root, unprivileged user namespaces allowed) is always.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from luopan_code.sandbox import UID_BASE, UID_COUNT, Limits, Sandbox

REPO = Path(__file__).resolve().parents[1]
GOOD = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n"
TIMEOUT = 3.0


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    sb = Sandbox(Limits(timeout=TIMEOUT, memory_mb=512, processes=16))
    print("sandbox layers here:", sb.layers)
    return sb


@pytest.fixture(scope="module")
def namespaces(sandbox: Sandbox) -> Sandbox:
    if sandbox.mode.name != "namespaces":
        pytest.skip(f"namespaces unavailable here: {sandbox.layers.get('namespaces')}")
    return sandbox


def contained(sb: Sandbox, program: str, *, status: str = "failed", reason: str | tuple[str, ...] = ""):
    """Run ``program`` between two correct programs; it fails as expected and the others pass."""
    t0 = time.perf_counter()
    before, bad, after = sb.run_many([GOOD, textwrap.dedent(program), GOOD], workers=2)
    elapsed = time.perf_counter() - t0
    assert before.passed and after.passed, (before, after)
    assert bad.status == status, bad
    reasons = (reason,) if isinstance(reason, str) else reason
    assert any(r in bad.reason for r in reasons), bad
    assert elapsed < sb.limits.timeout + 15, f"the run took {elapsed:.1f}s"
    return bad


def test_the_layers_in_use_are_probed_and_named(sandbox):
    layers = sandbox.layers
    assert {"process", "limits", "network", "filesystem", "processes"} <= set(layers)
    if os.geteuid() == 0 or shutil.which("unshare"):
        # this project's machines: root with every capability, or user namespaces allowed
        assert sandbox.mode.name == "namespaces", layers
        assert "network namespace" in layers["network"] and "read-only" in layers["filesystem"]


def test_a_correct_program_passes_and_a_wrong_one_fails_with_its_assertion(sandbox):
    ok, wrong = sandbox.run_many([GOOD, "def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5\n"])
    assert ok.passed and ok.reason == ""
    assert wrong.status == "failed" and wrong.reason == "AssertionError: assert add(2, 3) == 5"


# ---------------------------------------------------------------- time


def test_an_infinite_loop_is_killed_at_the_timeout(sandbox):
    bad = contained(sandbox, "while True:\n    pass\n", status="timeout", reason="timed out after 3s")
    assert bad.seconds < TIMEOUT + 3


def test_a_sleeping_program_is_killed_at_the_timeout(sandbox):
    contained(sandbox, "import time\ntime.sleep(3600)\n", status="timeout", reason="timed out")


def test_cpu_time_is_limited_even_with_a_long_wall_clock(sandbox):
    sb = Sandbox(Limits(timeout=30, cpu=1), isolation=sandbox.isolation)
    bad = contained(sb, "while True:\n    pass\n", reason="SIGXCPU")
    assert bad.seconds < 25


# ---------------------------------------------------------------- processes


def test_a_fork_bomb_is_stopped_by_the_process_limit(namespaces):
    bad = contained(namespaces, """
        import os
        while True:
            os.fork()
        """, reason=("BlockingIOError", "Resource temporarily unavailable", "timed out"))
    assert bad.status in ("failed", "timeout")


def test_the_process_limit_really_holds(namespaces):
    bad = contained(namespaces, """
        import os, sys, time
        n = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(600)
                    os._exit(0)
                n += 1
        except OSError as exc:
            print("forked", n, exc.errno)
            sys.exit(3)
        """, reason="exit code 3")
    forked = int(bad.stdout.split("forked")[1].split()[0])
    assert forked < namespaces.limits.processes, bad.stdout


def test_a_persistent_fork_bomb_that_escapes_its_session_is_killed_entirely(namespaces):
    bad = contained(namespaces, """
        import os, time
        while True:
            try:
                if os.fork() == 0:
                    os.setsid()
            except OSError:
                time.sleep(0.01)
        """, status="timeout", reason="timed out")
    if namespaces.mode.run_as_uids:  # root: nothing of its uid survives (pid namespace, then the sweep)
        assert bad.uid is not None and UID_BASE <= bad.uid < UID_BASE + UID_COUNT
        assert _live_processes(bad.uid) == []


def _live_processes(uid: int) -> list[str]:
    """Live processes (not zombies) of ``uid``, after a short grace for ones being reaped."""
    for _ in range(50):
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] not in ("Z", "X"):
                found.append(f"{entry.name} {fields['State'].strip()}")
        if not found:
            return []
        time.sleep(0.1)
    return found


# ---------------------------------------------------------------- memory and output


def test_a_huge_allocation_fails_with_memory_error(sandbox):
    contained(sandbox, "x = bytearray(64 * 1024 ** 3)\n", reason="MemoryError")


def test_growing_memory_stops_at_the_limit(sandbox):
    bad = contained(sandbox, """
        chunks = []
        while True:
            chunks.append(bytearray(32 * 1024 * 1024))
        """, status="failed", reason="MemoryError")
    assert bad.seconds < TIMEOUT


def test_flooding_the_output_is_cut_by_the_file_size_limit(sandbox):
    sb = Sandbox(Limits(timeout=20, file_mb=1), isolation=sandbox.isolation)
    bad = contained(sb, "while True:\n    print('x' * 4096)\n", reason="File too large")
    assert len(bad.stdout) <= 4000


def test_exiting_with_zero_before_the_tests_is_a_failure(sandbox):
    contained(sandbox, "import sys\nsys.exit(0)\nassert False\n", reason="before its tests finished")
    contained(sandbox, "import os\nos._exit(0)\n", reason="before its tests finished")


# ---------------------------------------------------------------- network


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.5)
    yield srv
    srv.close()


def test_a_connection_to_a_local_listener_fails(sandbox, listener):
    port = listener.getsockname()[1]
    # the listener is really there: a connection from outside the sandbox gets through
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        conn, _ = listener.accept()
        conn.close()
    bad = contained(sandbox, f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {port}), timeout=3)
        s.sendall(b"stolen")
        """, reason="Network is unreachable")
    with pytest.raises(socket.timeout):
        listener.accept()  # nothing from the sandbox arrived
    if sandbox.mode.name == "namespaces":
        assert "OSError: [Errno 101]" in bad.reason


def test_public_addresses_and_name_resolution_fail(sandbox):
    contained(sandbox, """
        import socket
        socket.create_connection(("1.1.1.1", 80), timeout=3)
        """, reason="Network is unreachable")
    contained(sandbox, """
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", ("8.8.8.8", 53))
        """, reason="Network is unreachable")
    contained(sandbox, """
        import socket
        socket.getaddrinfo("pypi.org", 443)
        """, reason=("gaierror", "Network is unreachable", "name resolution"))


def test_the_network_namespace_has_no_interface_up(namespaces):
    bad = contained(namespaces, """
        import socket
        names = [n for _, n in socket.if_nameindex()]
        up = open("/sys/class/net/lo/operstate").read().strip() if "lo" in names else "none"
        print(names, up)
        raise SystemExit(5)
        """, reason="exit code 5")
    assert "['lo']" in bad.stdout


# ---------------------------------------------------------------- file system


def test_writing_outside_the_sandbox_fails(sandbox, tmp_path):
    target = tmp_path / "escape.txt"
    contained(sandbox, f"open({str(target)!r}, 'w').write('escaped')\n",
              reason=("Read-only file system", "Permission denied", "not allowed"))
    assert not target.exists()


def test_writing_into_the_repository_fails(sandbox):
    target = REPO / f"sandbox-escape-{secrets.token_hex(4)}.txt"
    readme = REPO / "README.md"
    before = readme.read_bytes()
    try:
        contained(sandbox, f"open({str(target)!r}, 'w').write('escaped')\n",
                  reason=("Read-only file system", "Permission denied", "not allowed"))
        contained(sandbox, f"open({str(readme)!r}, 'a').write('escaped')\n",
                  reason=("Read-only file system", "Permission denied", "not allowed"))
        assert not target.exists() and readme.read_bytes() == before
    finally:
        target.unlink(missing_ok=True)


def test_deleting_or_renaming_outside_the_sandbox_fails(sandbox, tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("original")
    contained(sandbox, f"import os\nos.remove({str(victim)!r})\n",
              reason=("Read-only file system", "Permission denied", "not allowed"))
    contained(sandbox, f"import os\nos.rename({str(victim)!r}, {str(victim) + '.moved'!r})\n",
              reason=("Read-only file system", "Permission denied", "not allowed"))
    assert victim.read_text() == "original"


@pytest.fixture
def open_dir():
    """A folder anyone may write to: only the read-only mount stops the sandbox here, not permissions."""
    d = Path(tempfile.mkdtemp(prefix="luopan-open-"))
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_folder_anyone_may_write_to_is_read_only_inside(namespaces, open_dir):
    target = open_dir / "escape.txt"
    contained(namespaces, f"open({str(target)!r}, 'w').write('escaped')\n", reason="Read-only file system")
    contained(namespaces, "open('/tmp/luopan-escape.txt', 'w').write('escaped')\n", reason="Read-only file system")
    contained(namespaces, "open('/dev/shm/luopan-escape', 'w').write('escaped')\n", reason="Read-only file system")
    assert not target.exists() and not Path("/tmp/luopan-escape.txt").exists()
    assert not Path("/dev/shm/luopan-escape").exists()


def test_low_level_writes_are_stopped_by_the_os(namespaces, open_dir):
    # the C library through ctypes: a Python-level guard would miss this
    target = open_dir / "raw.txt"
    contained(namespaces, f"""
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = libc.open({str(target).encode()!r}, 0o101, 0o644)  # O_WRONLY | O_CREAT
        assert fd >= 0, "errno %d" % ctypes.get_errno()
        """, reason="errno 30")
    assert not target.exists()


def test_the_work_folder_is_writable_and_thrown_away(sandbox):
    res = sandbox.run(textwrap.dedent("""
        import os, tempfile
        open("scratch.txt", "w").write("ok")
        with tempfile.NamedTemporaryFile(dir=None) as fh:
            fh.write(b"tmp")
        assert open("scratch.txt").read() == "ok"
        assert os.environ["HOME"] == os.getcwd() == os.environ["TMPDIR"]
        print(os.getcwd())
        """))
    assert res.passed, res
    workdir = res.stdout.strip().splitlines()[0]
    assert not os.path.exists(workdir)


def test_the_program_runs_as_a_uid_of_its_own_when_the_harness_is_root(namespaces):
    if not namespaces.mode.run_as_uids:
        pytest.skip("not root: the program keeps the caller's uid inside a user namespace")
    res = namespaces.run("import os\nprint(os.getuid(), os.getpid())\n")
    assert res.passed, res
    uid, pid = map(int, res.stdout.split())
    assert UID_BASE <= uid < UID_BASE + UID_COUNT and pid == 2  # pid 1: the namespace's init


# ---------------------------------------------------------------- the whole run goes on


def test_a_run_mixing_every_hostile_program_goes_on(sandbox, tmp_path):
    hostile = [
        "while True:\n    pass\n",
        "x = bytearray(64 * 1024 ** 3)\n",
        "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)\n",
        f"open({str(tmp_path / 'x')!r}, 'w').write('x')\n",
        "import sys\nsys.exit(0)\n",
    ]
    if sandbox.mode.name == "namespaces":
        hostile.append("import os\nwhile True:\n    os.fork()\n")
    programs = [p for h in hostile for p in (h, GOOD)]
    results = sandbox.run_many(programs, workers=2)
    assert [r.passed for r in results] == [False, True] * len(hostile), [r.reason for r in results]
    assert all(r.reason for r in results[::2])


# ---------------------------------------------------------------- the fallbacks


def test_the_process_fallback_still_guards_the_simple_cases(tmp_path, listener):
    sb = Sandbox(Limits(timeout=TIMEOUT), isolation="process")
    assert sb.mode.name == "process" and "guard" in sb.layers["network"]
    port = listener.getsockname()[1]
    contained(sb, f"import socket\nsocket.create_connection(('127.0.0.1', {port}))\n", reason="unreachable")
    contained(sb, f"open({str(tmp_path / 'x')!r}, 'w')\n", reason="not allowed")
    contained(sb, "while True:\n    pass\n", status="timeout", reason="timed out")
    contained(sb, "x = bytearray(64 * 1024 ** 3)\n", reason="MemoryError")
    assert not (tmp_path / "x").exists()


NOBODY_SCRIPT = r"""
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("sbx", sys.argv[1])
sbx = importlib.util.module_from_spec(spec); sys.modules["sbx"] = sbx; spec.loader.exec_module(sbx)
sb = sbx.Sandbox(sbx.Limits(timeout=3))
out = {"mode": sb.mode.name, "userns": sb.mode.userns, "uid": os.getuid()}
progs = {
    "good": "assert 1 + 1 == 2",
    "net": "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)",
    "write": "open(%r, 'w').write('x')" % sys.argv[2],
    "loop": "while True: pass",
    "fork": "import os\nwhile True: os.fork()",
}
for name, prog in progs.items():
    r = sb.run(prog)
    out[name] = [r.status, r.reason]
out["after"] = sb.run("assert True").status
print(json.dumps(out))
"""


def test_the_unprivileged_path_works_for_an_ordinary_user():
    """As an ordinary user (nobody, run through setpriv) with the system python: a user namespace instead of
    a uid of its own; the same containment."""
    system_python = "/usr/bin/python3"
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.access(system_python, os.X_OK):
        pytest.skip("needs root (to become nobody), setpriv and a system python")
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-Urnmp",
                            "--fork", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unprivileged user namespaces are not allowed here")
    shared = Path(tempfile.mkdtemp(prefix="luopan-nobody-"))
    try:
        os.chmod(shared, 0o777)  # nobody may write here: the sandbox must still refuse
        sandbox_py = Path(sys.modules[Sandbox.__module__].__file__)
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", system_python, "-I", "-c",
             NOBODY_SCRIPT, str(sandbox_py), str(shared / "escape.txt")],
            capture_output=True, text=True, timeout=120, cwd="/",
        )
        escaped = (shared / "escape.txt").exists()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uid"] == 65534 and out["mode"] == "namespaces" and out["userns"] is True, out
    assert out["good"][0] == "passed" and out["after"] == "passed", out
    assert out["net"] == ["failed", "OSError: [Errno 101] Network is unreachable"], out
    assert out["write"][0] == "failed" and "Read-only file system" in out["write"][1], out
    assert out["loop"][0] == "timeout", out
    assert out["fork"][0] in ("failed", "timeout"), out
    assert not escaped
