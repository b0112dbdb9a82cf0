"""An API server that cannot be reached is said so on the console as it happens and fails the unit within
about half a minute with one line naming the URL, through the real CLI in a subprocess: a closed port, a port
that accepts connections and never answers, and a server that comes up after the first refused attempt (the
run then completes). In-process: the "no answer yet" deadline stops applying once the server has answered."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from faultproxy import ProxyThread  # tools/faultproxy.py
from luopan.types import GenerationConfig, GenerationRequest
from luopan_openai.backend import OpenAIBackend, UnreachableError, host_port, public_url

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, noted, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Silent:
    """Accepts connections on 127.0.0.1 and holds them without ever answering, for at most ``limit_s``."""

    def __init__(self, limit_s: float = 120.0) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._limit = time.monotonic() + limit_s
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        held: list[socket.socket] = []
        try:
            while not self._stop.is_set() and time.monotonic() < self._limit:
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                self.accepted += 1
                held.append(conn)
        finally:
            for c in held:
                c.close()
            self.sock.close()

    def __enter__(self) -> Silent:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def write_run(folder: Path, base_url: str, *, n: int = 5, **params) -> Path:
    data = folder / "questions.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"q": f"Question {i}: which letter? A, B, C or D.", "a": "The answer is B."}) + "\n")
    cfg = {
        "run": {"name": "r", "output_dir": str(folder / "out")},
        "models": [{"name": "api", "backend": "openai", "kind": "chat",
                    "params": {"base_url": base_url, "model": "mock-model", "api_key_env": None, **params}}],
        "datasets": [{"name": "qs", "loader": "files", "params": {"path": str(data), "prompt": "q", "target": "a"},
                      "mode": "generate", "evaluator": "exact_match", "generation": {"max_new_tokens": 16}}],
    }
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Cli:
    """``luopan run FILE --no-progress`` in a subprocess; stderr lines are kept with the second they came."""

    def __init__(self, path: Path, tmp: Path) -> None:
        env = dict(os.environ, LUOPAN_STATE_DIR=str(tmp / "state"), PYTHONUNBUFFERED="1")
        self.start = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "luopan.cli", "run", str(path), "--no-progress"],
                                     cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic() - self.start, line.rstrip("\n")))

    def wait_for(self, text: str, within: float) -> float | None:
        """Seconds from the start until a stderr line containing ``text`` (None if none within ``within``)."""
        while time.monotonic() - self.start < within:
            for t, line in list(self.lines):
                if text in line:
                    return t
            if self.proc.poll() is not None and not self._reader.is_alive():
                return None
            time.sleep(0.1)
        return None

    def finish(self, timeout: float) -> tuple[int, float, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"luopan still running after {timeout} s; stderr so far:\n{self.stderr}")
        elapsed = time.monotonic() - self.start
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.read()
        return self.proc.returncode, elapsed, self.stderr

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)


def unit_error(tmp: Path) -> str:
    return json.loads((tmp / "out" / "r" / "results" / "api" / "qs.json").read_text())["error"]


def assert_one_failure_line(err: str, url: str, why: str) -> str:
    failed = [line for line in err.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1, err
    assert failed[0].startswith(f"FAILED api/qs: cannot reach {url}: {why}"), err
    assert "no request has been answered" in failed[0] and "check base_url" in failed[0]
    assert not [line for line in err.splitlines() if line.startswith("  ")], err  # no per-item listing
    return failed[0][len("FAILED api/qs: "):]


def test_closed_port_fails_in_half_a_minute_naming_the_url(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    cli = Cli(write_run(tmp_path, url), tmp_path)
    seen = cli.wait_for(f"connection refused to 127.0.0.1:{port}", within=30)
    assert seen is not None and seen < 30, cli.stderr  # on the console as it happens
    rc, elapsed, err = cli.finish(timeout=90)
    assert rc == 1, err
    assert elapsed < 60, (elapsed, err)
    line = assert_one_failure_line(err, url, "connection refused")
    assert unit_error(tmp_path) == line
    status = [line for line in err.splitlines() if line.startswith("luopan: retrying")]
    assert status and all("giving up in" in s or "giving up at" in s for s in status), err
    assert len(status) <= 12, err  # repeated every few seconds, not once per retry of every request


def test_silent_server_is_reported_and_fails_naming_the_url(tmp_path):
    with Silent(limit_s=120) as srv:
        url = f"http://127.0.0.1:{srv.port}/v1"
        cli = Cli(write_run(tmp_path, url, timeout=15), tmp_path)
        seen = cli.wait_for(f"no answer yet from 127.0.0.1:{srv.port}", within=30)
        assert seen is not None and seen < 30, cli.stderr
        rc, elapsed, err = cli.finish(timeout=90)
    assert srv.accepted >= 5  # the requests were sent and held
    assert rc == 1, err
    assert elapsed < 60, (elapsed, err)
    line = assert_one_failure_line(err, url, "no answer within 15 s")
    assert "raise timeout" in line
    assert unit_error(tmp_path) == line


def test_server_that_comes_up_after_a_refused_attempt_completes(tmp_path):
    # the deadline counts from the first attempt until the first answer: a server that starts late (within
    # unreachable_after) is waited for, and the run completes as if nothing happened
    port = free_port()
    cli = Cli(write_run(tmp_path, f"http://127.0.0.1:{port}/v1"), tmp_path)
    seen = cli.wait_for(f"connection refused to 127.0.0.1:{port}", within=20)
    assert seen is not None, cli.stderr
    with ProxyThread(None, port=port) as proxy:
        rc, elapsed, err = cli.finish(timeout=60)
        assert proxy.stats.received >= 5
    assert rc == 0, err
    assert elapsed < 30, (elapsed, err)
    preds = (tmp_path / "out" / "r" / "predictions" / "api" / "qs.jsonl").read_text().splitlines()
    assert len(preds) == 5 and all(json.loads(p)["output"].startswith("The answer is ") for p in preds)


# ---------------------------------------------------------------- in process: the deadline's scope
def requests(n: int) -> list[GenerationRequest]:
    cfg = GenerationConfig(max_new_tokens=8)
    return [GenerationRequest(messages=(("user", f"Question {i}?"),), config=cfg) for i in range(n)]


def backend(base_url: str, **params) -> OpenAIBackend:
    b = OpenAIBackend(base_url=base_url, model="mock-model", api_key_env=None, **params)
    b.kind = "chat"
    return b


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LUOPAN_STATE_DIR", str(tmp_path / "state"))


def test_after_a_first_answer_dropped_connections_are_retried_as_usual():
    with ProxyThread(None, seed=3) as proxy:
        b = backend(proxy.base_url, unreachable_after=0.5, max_retries=30, retry_max_wait=0.1, max_concurrency=4)
        shown: list[str] = []
        b.status = shown.append
        try:
            assert len(b.generate(requests(1))) == 1  # answered: the server is there
            proxy.configure(fault_rate=0.5, faults=["drop"])
            time.sleep(0.6)  # past unreachable_after: it no longer applies
            out = b.generate(requests(20))
        finally:
            b.close()
        assert len(out) == 20 and all(o.text.startswith("The answer is ") for o in out)
        assert proxy.stats.faults.get("drop", 0) >= 3 and b.stats["retried"] >= 3


def test_no_answer_ever_fails_every_request_with_one_error():
    with ProxyThread(None, fault_rate=1.0, faults=["drop"]) as proxy:
        b = backend(proxy.base_url, unreachable_after=1.0, max_retries=0, max_concurrency=4)
        shown: list[str] = []
        b.status = shown.append
        t0 = time.monotonic()
        try:
            with pytest.raises(UnreachableError) as info:
                list(b.stream("generate", requests(6)))
            assert time.monotonic() - t0 < 10
            # the next unit for this model: the deadline has passed and nothing was ever answered, so its
            # first failed attempt ends it (a server that has come up meanwhile would answer instead)
            t1 = time.monotonic()
            with pytest.raises(UnreachableError):
                list(b.stream("generate", requests(6)))
            assert time.monotonic() - t1 < 1
        finally:
            b.close()
        # max_retries: 0 does not cut the deadline short: connection failures before any answer are retried
        assert proxy.stats.received > 4
        msg = str(info.value)
        assert msg.startswith(f"cannot reach {proxy.base_url}: connection dropped (every attempt for 1 s;"), msg
        assert any(f"connection dropped by 127.0.0.1:{proxy.port}" in s for s in shown), shown
        assert shown[-1] == ""  # cleared when the stream ends


def test_hosts_and_urls_in_messages():
    assert host_port("https://api.example.com/v1") == "api.example.com:443"
    assert host_port("http://localhost/v1") == "localhost:80"
    assert host_port("http://[::1]:8000/v1") == "[::1]:8000"
    assert public_url("https://user:secret@api.example.com/v1?k=secret") == "https://api.example.com/v1"
