"""The code sandbox contains what generated code may do, scores it as a failure with a clear reason, and the
run goes on: after each hostile program a correct one still passes.

Each hostile program runs between two correct ones in one ``run_many`` call (2 workers), as in a real
evaluation. Which layer contains what depends on the machine: the tests read ``Sandbox.layers`` and assert
the OS-level layers (network, mount and pid namespaces; a uid of its own as root) wherever they are
available, which on this project's machines (root, unprivileged user namespaces allowed) is always.

Further down: wrong answers that try to forge a pass (the verdict is the tests' process's, never the
solution's), and cleanup when luopan itself is killed (kill -9, SIGTERM, Ctrl-C), disk quotas and the sweep of
folders left by dead runs. Those tests look only for their own processes and folders (a marker in the
processes' command lines, a folder of their own), since other jobs run sandboxes on the same machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from luopan.components import EvalContext
from luopan.types import GenerationResult, Sample
from luopan_code import sandbox as sandbox_module
from luopan_code.evaluator import CodePass
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
    # the memory limit stops it, not the clock: a generous timeout, as touching 512 MB of fresh pages can take
    # seconds on a busy virtual machine
    sb = Sandbox(Limits(timeout=30, memory_mb=512, processes=16), isolation=sandbox.isolation)
    bad = contained(sb, """
        chunks = []
        while True:
            chunks.append(bytearray(32 * 1024 * 1024))
        """, status="failed", reason="MemoryError")
    assert bad.seconds < 30


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


# ---------------------------------------------------------------- the verdict is the tests' own
#
# A wrong answer must not pass, whatever it does in its own process: the tests run in another process
# (another uid as root) and judge what comes back as plain data; the verdict is that process's exit status.
# These go through the evaluator, so the same tests also run against the earlier design (one process with
# an end-of-tests marker printed into stdout), where each of them passed a wrong answer.

ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
ADD_REFERENCE = "def add(a, b):\n    return a + b\n"
HALF_TESTS = "assert abs(half(3) - 1.5) < 1e-6\n"
HALF_REFERENCE = "def half(x):\n    return x / 2\n"
#: the earlier design appended ``os.write(1, b'\\n<32 hex digits>\\n')`` to the program: a wrong answer read
#: it from its own source (``__file__`` or ``sys.argv[0]``), printed it and exited with 0
FORGE = """
import os, re, sys
def _forge(*_, found=re.findall(r"[0-9a-f]{{32}}", open({source}).read()), os=os):
    os.write(1, ("\\n%s\\n" % (found[-1] if found else "")).encode())
    os._exit(0)
"""
WRONG_ADD = "def add(a, b):\n    return a - b\n"
ATTACKS = {
    # an object equal to everything
    "always_equal": ("""
        def add(a, b):
            class Yes:
                def __eq__(self, other):
                    return True
                __hash__ = object.__hash__
            return Yes()
        """, ADD_TESTS, ADD_REFERENCE),
    # the same from an int subclass (it travels as the plain int it is)
    "int_subclass_equal_to_everything": ("""
        class Yes(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def add(a, b):
            return Yes(0)
        """, ADD_TESTS, ADD_REFERENCE),
    # builtins patched for the tolerance check
    "abs_replaced": ("""
        import builtins
        builtins.abs = lambda x: 0.0
        def half(x):
            return 42.0
        """, HALF_TESTS, HALF_REFERENCE),
    "abs_shadowed_by_a_global": ("""
        def abs(x):
            return 0.0
        def half(x):
            return 42.0
        """, HALF_TESTS, HALF_REFERENCE),
    # the marker read from its own file, printed, exit 0: directly, from atexit, from sys.excepthook
    "marker_from_file": (FORGE.format(source="__file__") + WRONG_ADD + "_forge()\n", ADD_TESTS, ADD_REFERENCE),
    "marker_from_argv": (FORGE.format(source="sys.argv[0]") + WRONG_ADD + "_forge()\n", ADD_TESTS, ADD_REFERENCE),
    "marker_from_atexit": (FORGE.format(source="__file__") + WRONG_ADD + "import atexit\natexit.register(_forge)\n",
                           ADD_TESTS, ADD_REFERENCE),
    "marker_from_excepthook": (FORGE.format(source="__file__") + WRONG_ADD + "sys.excepthook = _forge\n",
                               ADD_TESTS, ADD_REFERENCE),
}


def _score(answer: str, tests: str, reference: str):
    sample = Sample("t/0", "t", "", tests, meta={"problem": "t/0", "tests": tests, "reference": reference})
    [scored] = CodePass(timeout=10).score([sample], [GenerationResult(textwrap.dedent(answer))],
                                          EvalContext("generate", "m", "t"))
    return scored


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_wrong_answer_cannot_forge_a_pass(attack):
    answer, tests, reference = ATTACKS[attack]
    scored = _score(answer, tests, reference)
    assert scored.score == 0.0 and scored.extra["status"] == "failed", scored.extra
    assert scored.extra["reason"], scored.extra


def test_the_right_answers_to_the_same_tests_pass():
    assert _score(ADD_REFERENCE, ADD_TESTS, ADD_REFERENCE).score == 1.0
    assert _score(HALF_REFERENCE, HALF_TESTS, HALF_REFERENCE).score == 1.0


def test_humaneval_helpers_are_the_prompts_not_the_answers():
    """HumanEval/32 checks ``find_zero`` with the prompt's own ``poly``: an answer that redefines ``poly`` to
    return 0 (and a "root" of 0.0) must fail; the canonical solution passes."""
    from luopan_code.dataset import CodeDataset

    sample = CodeDataset(benchmark="humaneval").load("humaneval")[32]
    fake = "```python\ndef poly(xs, x):\n    return 0.0\n\n\ndef find_zero(xs):\n    return 0.0\n```"
    always = ("```python\ndef find_zero(xs):\n    class Zero(float):\n        def __eq__(self, other):\n"
              "            return True\n    return Zero(0.0)\n```")
    scored = CodePass(timeout=20).score([sample] * 3, [GenerationResult(t) for t in
                                                       (fake, always, sample.meta["reference"])],
                                        EvalContext("generate", "m", "humaneval"))
    assert [s.score for s in scored] == [0.0, 0.0, 1.0], [s.extra["reason"] for s in scored]
    assert [s.extra["how"] for s in scored] == ["function", "function", "completion"]


def test_a_solution_that_prints_a_sandbox_error_is_a_failure_not_a_sandbox_error(sandbox):
    """A sandbox error fails the whole unit: only the sandbox may report one, never the solution's output."""
    res = sandbox.run("import sys\nsys.stderr.write('luopan-sandbox: setup failed: nothing\\n')\nsys.exit(97)\n")
    assert res.status == "failed" and res.reason == "luopan-sandbox: setup failed: nothing", res


def job(solution: str, tests: str = "", **kw):
    return sandbox_module.Job(textwrap.dedent(solution), textwrap.dedent(tests), **kw)


@pytest.mark.parametrize("ending", [
    "import os\n    os._exit(0)",
    "import sys\n    sys.exit(0)",
    "import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)",
    "raise KeyboardInterrupt",
    "import os\n    os.close(4)\n    return a + b",
])
def test_a_solution_that_ends_during_the_tests_fails(sandbox, ending):
    res = sandbox.run(job(f"def add(a, b):\n    {ending}\n", ADD_TESTS, expose=("add",)))
    assert res.status == "failed" and res.returncode == 3 and res.reason, res  # 3: the solution went away


def test_garbage_on_the_pipe_fails(sandbox):
    res = sandbox.run(job("""
        import os, time
        os.write(4, (5).to_bytes(4, "big") + b"hello")
        time.sleep(5)
        """, ADD_TESTS))
    assert res.status == "failed" and res.returncode == 2 and "invalid message" in res.reason, res
    res = sandbox.run(job("""
        import json, os
        data = json.dumps(["ready"]).encode()
        os.write(4, len(data).to_bytes(4, "big") + data)
        reply = json.dumps(["ok", ["x", 1]]).encode()  # an unknown tag
        while True:
            os.read(3, 1 << 16)
            os.write(4, len(reply).to_bytes(4, "big") + reply)
        """, ADD_TESTS))
    assert res.status == "failed" and res.returncode == 2 and "the solution sent" in res.reason, res


def test_the_solution_cannot_signal_trace_or_read_the_tests(namespaces):
    if not namespaces.mode.run_as_uids:
        pytest.skip("not root: both processes share the caller's uid (the tests' process is not dumpable)")
    res = namespaces.run(job("""
        import ctypes, os, signal
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        me = os.getpid()
        for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me):
            outcome = []
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                    outcome.append("signalled")
                except OSError as exc:
                    outcome.append(exc.errno)
            outcome.append(libc.ptrace(16, pid, 0, 0) == 0 or ctypes.get_errno())  # PTRACE_ATTACH
            try:
                open(f"/proc/{pid}/mem", "rb").read(1)
                outcome.append("read")
            except OSError as exc:
                outcome.append(exc.errno)
            print(pid, outcome, flush=True)
        def add(a, b):
            return a - b
        """, ADD_TESTS))
    assert res.status == "failed" and res.reason == "AssertionError: assert add(2, 3) == 5", res
    lines = dict(line.split(" ", 1) for line in res.stdout.strip().splitlines())
    assert set(lines) >= {"1", "3"}, res.stdout  # init and the tests' process
    for pid, outcome in lines.items():
        assert outcome in ("[1, 1, 1, 13]", "[1, 1, 1, 2]"), (pid, outcome)  # EPERM, EPERM, EPERM, EACCES/ENOENT


def test_objects_of_the_solution_reach_the_tests_as_handles(sandbox):
    res = sandbox.run(job("""
        class Node:
            def __init__(self, value):
                self.value = value
                self.left = None
            def __len__(self):
                return 1 if self.left is None else 1 + len(self.left)
        def depth(node):
            return 0 if node is None else 1 + depth(node.left)
        def count(n):
            yield from range(n)
        class Bad(ValueError):
            pass
        def boom():
            raise Bad("no")
        def big():
            return 3 ** 5000, b"\\x00\\xff", {1: (2, frozenset({3})), "x": [None, 1.5, 2j]}, float("inf")
        """, """
        root = Node(1)
        root.left = Node(2)
        root.left.left = Node(3)
        assert depth(root) == 3 and len(root) == 3 and root.left.value == 2
        assert list(count(3)) == [0, 1, 2] and sum(count(4)) == 6
        one = Node(1)
        assert one == one and one != Node(1) and one != 1 and not (one == 1)
        for operation in (lambda: one + 1, lambda: abs(one), lambda: one < one):
            try:
                operation()
            except TypeError:
                pass
            else:
                raise AssertionError("a handle has no arithmetic nor ordering")
        try:
            boom()
        except ValueError as exc:
            assert "no" in str(exc)
        else:
            raise AssertionError("the solution's exception was lost")
        assert big() == (3 ** 5000, b"\\x00\\xff", {1: (2, frozenset({3})), "x": [None, 1.5, 2j]}, float("inf"))
        assert type(big()[2]["x"][1]) is float
        """))
    assert res.passed, res


def test_exposed_names_win_over_builtins_and_the_prelude(sandbox):
    """MBPP task 126 defines ``sum``; HumanEval's prompt defines helpers the answer may not replace."""
    res = sandbox.run(job("def sum(a, b):\n    return 6\n", "assert sum(10, 15) == 6\n", expose=("sum",)))
    assert res.passed, res
    prelude = "def helper(x):\n    return 2 * x\n\n\ndef f(x):\n    '''Doc.'''\n"
    tests = "assert helper(f(3)) == 12\n"
    good = sandbox.run(job(prelude + "    return 2 * x\n", tests, prelude=prelude, expose=("f",)))
    bad = sandbox.run(job(prelude + "\ndef helper(x):\n    return 12\ndef f(x):\n    return 0\n", tests,
                          prelude=prelude, expose=("f",)))
    missing = sandbox.run(job("x = 1\n", tests, prelude=prelude, expose=("f",)))
    assert good.passed and not bad.passed and not missing.passed, (good, bad, missing)
    assert missing.reason == "NameError: name 'f' is not defined", missing


# ---------------------------------------------------------------- cleanup, whatever happens to luopan


@pytest.fixture
def host_tmp():
    """A run folder of this test's own, traversable by the sandbox's uids like /tmp itself."""
    d = Path(tempfile.mkdtemp(prefix="luopan-sbx-test-"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _marked(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in Path(entry.path, "cmdline").read_bytes():
                continue
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _marking_programs(marker: str) -> list[str]:
    """Programs that start children (one in a session of its own) with ``marker`` in their command line,
    then sleep or spin; the marker is split in two so no other process's command line holds it."""
    head, tail = marker[:8], marker[8:]
    spawn = (f"import subprocess, sys\n"
             f"for new_session in (False, True):\n"
             f"    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {head!r} + {tail!r}],\n"
             f"                     start_new_session=new_session)\n")
    return [spawn + "import time\ntime.sleep(600)\n", spawn + "while True:\n    pass\n"]


LUOPAN_STAND_IN = r"""
import json, sys
from luopan_code.sandbox import Limits, Sandbox
tmpdir, isolation, programs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sb = Sandbox(Limits(timeout=120), isolation=isolation, tmpdir=tmpdir)
sb.mode
sb.run_many(programs, workers=2)
"""


@pytest.mark.parametrize("isolation", ["namespaces", "process"])
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_programs_die_and_their_folders_go_with_luopan(sandbox, host_tmp, isolation, how):
    """luopan (a stand-in running ``run_many``) killed with -9, terminated, or interrupted (Ctrl-C) while two
    programs run with a 120 s timeout: within seconds no process of theirs is left and no folder."""
    if isolation == "namespaces" and sandbox.mode.name != "namespaces":
        pytest.skip("namespaces unavailable here")
    marker = f"luopan-kill-test-{secrets.token_hex(8)}"
    stand_in = subprocess.Popen([sys.executable, "-c", LUOPAN_STAND_IN, str(host_tmp), isolation,
                                 json.dumps(_marking_programs(marker))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _until(lambda: len(_marked(marker)) >= 4, 60), (stand_in.poll(), _marked(marker))
        assert any(p.name.startswith("luopan-code-") for p in host_tmp.iterdir())
        t0 = time.monotonic()
        stand_in.send_signal(getattr(signal, how))
        stand_in.wait(timeout=15)
        gone = _until(lambda: not _marked(marker) and not list(host_tmp.iterdir()), 10)
        elapsed = time.monotonic() - t0
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
        for pid in _marked(marker):  # leave nothing behind, whatever the outcome
            os.kill(pid, signal.SIGKILL)
    _, err = stand_in.communicate()
    assert gone, (_marked(marker), list(host_tmp.iterdir()))
    assert elapsed < 10, elapsed
    if how == "SIGINT":
        assert "KeyboardInterrupt" in err, err


def test_a_program_writing_in_a_loop_stops_at_its_disk_quota(namespaces, host_tmp):
    sb = Sandbox(Limits(timeout=30, disk_mb=8, file_mb=4), isolation="namespaces", tmpdir=host_tmp)
    sizes: list[int] = []
    done = threading.Event()

    def watch() -> None:  # the host folder's size while the program runs
        while not done.is_set():
            total = 0
            for root, _, files in os.walk(host_tmp):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(root, name)).st_size
                    except OSError:
                        pass
            sizes.append(total)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        res = sb.run(textwrap.dedent("""
            import os
            written = 0
            try:
                for i in range(256):  # 256 MiB at most, 1 MiB a file, here and in TMPDIR
                    folder = "." if i % 2 else os.environ["TMPDIR"]
                    with open(os.path.join(folder, f"f{i}"), "wb") as fh:
                        fh.write(b"x" * (1 << 20))
                    written += 1 << 20
            finally:
                print("written", written, flush=True)
            """))
    finally:
        done.set()
        watcher.join()
    assert res.status == "failed" and "No space left on device" in res.reason, res
    assert int(res.stdout.split()[1]) <= 8 << 20, res.stdout
    assert max(sizes) < 1 << 20, max(sizes)  # nothing of it on the host's disk
    assert list(host_tmp.iterdir()) == []


def test_folders_of_dead_runs_are_swept_at_the_next_start(host_tmp):
    stale = host_tmp / "luopan-code-stale"  # its luopan died: the lock is free
    (stale / "work").mkdir(parents=True)
    (stale / "lock").touch()
    (stale / "work" / "data").write_bytes(b"x" * 1000)
    live = host_tmp / "luopan-code-live"  # another run's, in use
    live.mkdir()
    fd = os.open(live / "lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    unrelated = host_tmp / "luopan-code-nolock"  # not a folder this sandbox made
    unrelated.mkdir()
    try:
        sb = Sandbox(Limits(timeout=5), isolation="process", tmpdir=host_tmp)
        assert sb.run("print('ok')").passed
        assert not stale.exists() and live.exists() and unrelated.exists()
    finally:
        os.close(fd)


def test_the_launcher_kills_everything_at_a_deadline_of_its_own(namespaces, host_tmp, monkeypatch):
    """Were the parent's own timeout to fail, the launcher stops the run itself some seconds later."""
    real_wait = sandbox_module._wait_exit
    monkeypatch.setattr(sandbox_module, "_BACKSTOP", 1.0)
    monkeypatch.setattr(sandbox_module, "_wait_exit", lambda pid, t: real_wait(pid, 60 if t == 1.5 else t))
    marker = f"luopan-backstop-test-{secrets.token_hex(8)}"
    sb = Sandbox(Limits(timeout=1.5), isolation="namespaces", tmpdir=host_tmp)
    t0 = time.monotonic()
    res = sb.run(_marking_programs(marker)[0])
    elapsed = time.monotonic() - t0
    assert res.status == "error" and "exit status 142" in res.reason, res  # 128 + SIGALRM
    assert elapsed < 10, elapsed
    assert _until(lambda: not _marked(marker), 5), _marked(marker)
    assert list(host_tmp.iterdir()) == []
