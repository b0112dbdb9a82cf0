"""Hostile inputs and a failing machine: secrets echoed by a server, hostile run files, names that would
escape the output folder or overwrite each other, a damaged cache, unwritable folders, a full disk, Ctrl-C
during start-up. Each must end in one line naming the file or key (exit code 2), never a traceback, never a
secret in any file or stream, never a silently changed score."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-hardening-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
ORG = "org-secret-5a4b3c2d1e0f"


def luopan(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess: what a user sees on both streams, and the exit code."""
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "luopan.cli", *args], capture_output=True, text=True,
                          env=full, timeout=timeout, cwd=cwd)


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], err[-3000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-3000:]
    for n in needles:
        assert n in err, (n, err)
    return err


def fake_run(tmp_path: Path, *, name: str = "r", models: list | None = None, datasets: list | None = None,
             run: dict | None = None) -> Path:
    cfg = {
        "run": {"name": name, "output_dir": str(tmp_path / "out"), **(run or {})},
        "models": models or [{"preset": "fake"}],
        "datasets": datasets or [{"preset": "demo_mcq"}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


# ---------------------------------------------------------------- secrets echoed by a server


class _EchoingHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint whose error bodies echo the request's headers, as some gateways do.
    The user message picks the status: 'status 400', 'status 401', 'status 429', 'status 500'; else an answer."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        text = " ".join(m.get("content", "") for m in body.get("messages", []))
        echoed = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
        for status in (400, 401, 429, 500):
            if f"status {status}" in text:
                payload = {"error": {"message": f"request refused, headers were {echoed}", "type": "echo",
                                     "code": status}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Echo-Authorization", self.headers.get("Authorization", ""))
                self.end_headers()
                self.wfile.write(data)
                return
        answer = {"id": "c1", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "B"},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def echoing_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_key_echoed_in_error_bodies_is_in_no_file_and_no_stream(tmp_path, echoing_server):
    data = tmp_path / "qs.jsonl"
    questions = [f"Question {i}: status {s}" for i, s in enumerate((400, 401, 429, 500))] + ["Question 4: fine"]
    data.write_text("".join(json.dumps({"q": q, "a": "B"}) + "\n" for q in questions), encoding="utf-8")
    datasets = [{"name": f"qs{i}", "loader": "files", "mode": "generate", "evaluator": "exact_match",
                 "params": {"path": str(data), "prompt": "q", "target": "a"}, "limit": 5} for i in range(2)]
    # variable names without KEY/TOKEN in them: only what the backend registered can redact them
    env = {"HARDENING_CRED": KEY, "HARDENING_ORG": ORG, "LUOPAN_STATE_DIR": str(tmp_path / "state")}
    models = [{"name": "api", "backend": "openai", "kind": "chat",
               "params": {"base_url": echoing_server, "model": "m", "api_key_env": "HARDENING_CRED",
                          "extra_headers": {"X-Org": "env:HARDENING_ORG"}, "max_retries": 1,
                          "retry_max_wait": 0.1}}]
    path = fake_run(tmp_path, models=models, datasets=datasets)
    r = luopan("run", str(path), "--no-progress", env=env)
    assert r.returncode == 1, r.stderr[-3000:]
    texts = {"stdout": r.stdout, "stderr": r.stderr}
    assert "headers were" in r.stderr  # the server's message is shown, with the secrets masked
    files = [f for f in (tmp_path / "out").rglob("*") if f.is_file()]
    names = {f.name for f in files}
    assert {"run.log", "summary.md", "summary.json", "qs0.json", "requests.sqlite"} <= names, names
    results = json.loads((tmp_path / "out" / "r" / "results" / "api" / "qs0.json").read_text())
    assert results["error"] and results["failed_items"]
    for f in files:
        texts[str(f)] = f.read_bytes().decode("utf-8", "replace")
    for where, text in texts.items():
        assert KEY not in text, where
        assert ORG not in text, where
        assert KEY[3:-3] not in text, where  # not even most of it


# ---------------------------------------------------------------- hostile run files


def test_an_alias_bomb_is_refused_in_a_second(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nmodels: *a9\ndatasets: *a9\n", encoding="utf-8")
    t0 = time.monotonic()
    err = one_line_error(luopan("validate", str(path), timeout=30), str(path), "aliases")
    assert time.monotonic() - t0 < 10, err  # one second of work; the rest is interpreter start-up


def test_a_self_referencing_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("models: &m [*m]\ndatasets: []\n", encoding="utf-8")
    r = luopan("validate", str(path), timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(path) in r.stderr, r.stderr[-2000:]


def test_a_run_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("models:\n  - preset: fake\n    description: caf\xe9\n".encode("latin-1"))
    one_line_error(luopan("validate", str(path)), f"{path}:3", "not UTF-8", "0xe9")


@pytest.mark.parametrize("doc", [
    "models: !!python/object/apply:os.system ['true']\ndatasets: [{preset: demo_mcq}]\n",
    "models:\n  - !!python/object:argparse.Namespace {preset: fake}\ndatasets: [{preset: demo_mcq}]\n",
    "models: !!python/tuple [{preset: fake}]\ndatasets: [{preset: demo_mcq}]\n",
    "models: [{preset: fake}]\ndatasets: !!set {a: null}\n",
])
def test_python_tags_are_refused_on_every_kind_of_node(tmp_path, doc):
    path = tmp_path / "tags.yaml"
    path.write_text(doc, encoding="utf-8")
    r = luopan("validate", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "tag" in r.stderr and str(path) in r.stderr, r.stderr


@pytest.mark.parametrize("entry, needle", [
    ("shards: 1000000000", "shards"),
    ("repeats: 100000000", "repeats"),
    ("shards: 5000", "shards"),  # within the bound, but more than the dataset's questions
])
def test_huge_shards_and_repeats_are_refused_at_once(tmp_path, entry, needle):
    path = tmp_path / "big.yaml"
    path.write_text(f"run: {{output_dir: {tmp_path / 'out'}}}\nmodels: [{{preset: fake, kind: chat}}]\n"
                    f"datasets:\n  - {{preset: demo_qa, {entry}, generation: {{temperature: 0.7}}}}\n",
                    encoding="utf-8")
    t0 = time.monotonic()
    one_line_error(luopan("run", str(path), "--dry-run", "--no-progress", timeout=60), needle)
    assert time.monotonic() - t0 < 30


def test_repeats_times_samples_beyond_the_bound_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(f"run: {{output_dir: {tmp_path / 'out'}}}\nmodels: [{{preset: fake, kind: chat}}]\n"
                    f"datasets:\n  - {{preset: cmmlu, repeats: 10000, generation: {{temperature: 0.7}}}}\n",
                    encoding="utf-8")
    one_line_error(luopan("run", str(path), "--dry-run", timeout=120), "repeats: 10000", "requests")


# ---------------------------------------------------------------- names: no escape, no silent overwrite


@pytest.mark.parametrize("name", ["../../x", "/tmp/luopan-escape", "a/b", "..", "x\x00y", "n" * 300])
def test_a_run_name_must_be_one_plain_folder(tmp_path, name):
    (tmp_path / "inner").mkdir()
    path = tmp_path / "inner" / "r.yaml"
    path.write_text(json.dumps({"run": {"name": name, "output_dir": str(tmp_path / "inner" / "out")},
                                "models": [{"preset": "fake"}], "datasets": [{"preset": "demo_mcq"}]}),
                    encoding="utf-8")
    r = luopan("run", str(path), "--no-progress")
    one_line_error(r, "run.name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inner"]
    assert not (tmp_path / "inner" / "out").exists()


def test_the_name_flag_is_checked_too(tmp_path):
    path = fake_run(tmp_path)
    one_line_error(luopan("run", str(path), "--no-progress", "--name", "../x"), "--name")
    assert not (tmp_path / "x").exists()


def test_two_model_labels_that_share_a_file_name_are_an_error(tmp_path):
    path = fake_run(tmp_path, models=[{"preset": "fake", "name": "a/b"}, {"preset": "fake", "name": "a_b"}])
    one_line_error(luopan("run", str(path), "--no-progress"), "models[1]", "'a_b'", "'a/b'")
    assert not (tmp_path / "out").exists()


def test_two_dataset_labels_that_share_a_file_name_are_an_error(tmp_path):
    path = fake_run(tmp_path, datasets=[{"preset": "demo_mcq", "name": "x y"}, {"preset": "demo_mcq", "name": "x:y"}])
    one_line_error(luopan("validate", str(path)), "datasets[1]", "x_y")


def test_a_model_name_longer_than_a_file_name_is_an_error(tmp_path):
    path = fake_run(tmp_path, models=[{"preset": "fake", "name": "m" * 300}])
    one_line_error(luopan("run", str(path), "--no-progress"), "models[0]", "longer than")


# ---------------------------------------------------------------- a failing machine


def _fake_cmmlu(tmp_path: Path, **run) -> Path:
    return fake_run(tmp_path, datasets=[{"preset": "cmmlu", "subsets": ["agronomy", "anatomy"],
                                         "limit_per_subset": 5}], run=run)


def test_a_corrupt_cache_names_the_file_and_what_to_do(tmp_path):
    path = _fake_cmmlu(tmp_path)
    assert luopan("run", str(path), "--no-progress").returncode == 0
    cache = tmp_path / "out" / "cache" / "requests.sqlite"
    for f in cache.parent.glob("requests.sqlite-*"):
        f.unlink()
    cache.write_bytes(b"this is not a database at all " * 100)
    for cmd in (("run", str(path), "--no-progress"), ("run", str(path), "--dry-run")):
        one_line_error(luopan(*cmd), str(cache), "move it aside", "asked again")


def test_a_truncated_cache_names_the_file(tmp_path):
    path = _fake_cmmlu(tmp_path)
    assert luopan("run", str(path), "--no-progress").returncode == 0
    cache = tmp_path / "out" / "cache" / "requests.sqlite"
    assert luopan("run", str(path), "--no-progress").returncode == 0  # checkpointed on close
    data = cache.read_bytes()
    for f in cache.parent.glob("requests.sqlite-*"):
        f.unlink()
    cache.write_bytes(data[:100])
    one_line_error(luopan("run", str(path), "--no-progress"), str(cache))


def test_a_foreign_database_is_not_taken_for_a_cache(tmp_path):
    cache = tmp_path / "other.sqlite"
    db = sqlite3.connect(cache)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    path = _fake_cmmlu(tmp_path, cache=str(cache))
    one_line_error(luopan("run", str(path), "--no-progress"), str(cache), "not a luopan request cache")
    db = sqlite3.connect(cache)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["people"]


def test_a_cache_entry_of_the_wrong_shape_is_asked_again_and_counted(tmp_path):
    path = _fake_cmmlu(tmp_path)
    assert luopan("run", str(path), "--no-progress").returncode == 0
    out = tmp_path / "out" / "r"
    before = (out / "predictions" / "fake" / "cmmlu.jsonl").read_bytes()
    cache = tmp_path / "out" / "cache" / "requests.sqlite"
    db = sqlite3.connect(cache)
    keys = [k for (k,) in db.execute("SELECT key FROM responses ORDER BY key LIMIT 6")]
    bad = ['{"text": "A"}', "[0.0]", '[0.0, 1, "x"]', "not json", '["a", 1, 2]', "[0.0, 7, 3]"]
    for k, v in zip(keys, bad):
        db.execute("UPDATE responses SET value = ? WHERE key = ?", (v, k))
    db.commit()
    db.close()
    (out / "run.log").unlink()
    assert luopan("run", str(path), "--no-progress").returncode == 0
    assert (out / "predictions" / "fake" / "cmmlu.jsonl").read_bytes() == before  # the same predictions
    events = [json.loads(x) for x in (out / "run.log").read_text().splitlines()]
    (invalid,) = [e for e in events if e["event"] == "cache_entries_invalid"]
    assert invalid["count"] == 6
    db = sqlite3.connect(cache)
    assert all(db.execute("SELECT value FROM responses WHERE key = ?", (k,)).fetchone()[0].startswith("[")
               for k in keys)  # asked again and written back


def test_an_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    path = fake_run(tmp_path, run={"output_dir": str(tmp_path / "afile")})
    one_line_error(luopan("run", str(path), "--no-progress"), str(tmp_path / "afile"), "not a folder")


def test_cache_pointing_at_a_folder(tmp_path):
    path = fake_run(tmp_path, run={"cache": "/etc"})
    one_line_error(luopan("run", str(path), "--no-progress"), "/etc", "is a folder")
    assert not Path("/etc/requests.sqlite").exists()


def test_nul_bytes_in_paths(tmp_path):
    path = fake_run(tmp_path, run={"output_dir": str(tmp_path / "o\x00ut")})
    one_line_error(luopan("run", str(path), "--no-progress"), "NUL")


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a read-only folder by dropping to another uid")
def test_a_read_only_output_folder(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    path = fake_run(tmp_path, run={"output_dir": str(out)})
    # a read-only bind mount: even root cannot write there
    ro = tmp_path / "ro_mnt"
    ro.mkdir()
    code = (f"mount --bind {out} {ro} && mount -o remount,bind,ro {ro} && "
            f"{sys.executable} -m luopan.cli run {path} --no-progress --output-dir {ro}")
    r = subprocess.run(["unshare", "-m", "sh", "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ))
    one_line_error(r, str(ro), "read-only")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="mounts a read-only folder")
@pytest.mark.parametrize("existing", [False, True])
def test_a_read_only_cache_folder(tmp_path, existing):
    """The outputs are writable, the cache's folder is not (a new cache, or one that a run made before)."""
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    path = fake_run(tmp_path, run={"cache": str(cache_dir / "requests.sqlite")})
    if existing:
        assert luopan("run", str(path), "--no-progress").returncode == 0
    code = (f"mount --bind {cache_dir} {cache_dir} && mount -o remount,bind,ro {cache_dir} && "
            f"{sys.executable} -m luopan.cli run {path} --no-progress --name second")
    r = subprocess.run(["unshare", "-m", "sh", "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ))
    one_line_error(r, str(cache_dir))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="mounts a small tmpfs")
def test_a_full_disk_names_the_file_and_leaves_no_temporary_files(tmp_path):
    """A 1 MiB file system: the cache fills it mid-run; the error says the disk is full (not a ROLLBACK
    message), and no ``.tmp`` file is left behind."""
    small = tmp_path / "small"
    small.mkdir()
    path = fake_run(tmp_path, datasets=[{"preset": "cmmlu"}], run={"output_dir": str(small)})
    code = (f"mount -t tmpfs -o size=1m tmpfs {small} && "
            f"{sys.executable} -m luopan.cli run {path} --no-progress; echo rc=$?; "
            f"find {small} -name '*.tmp*' | head")
    r = subprocess.run(["unshare", "-m", "sh", "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ))
    err = r.stderr.strip()
    assert "rc=2" in r.stdout, (r.stdout, err[-3000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-3000:]
    assert "disk is full" in err and str(small) in err, err
    assert ".tmp" not in r.stdout.replace("rc=2", ""), r.stdout


_SIGINT_AT_IMPORT = """
import os, signal, sys
_target = os.environ.get("LUOPAN_TEST_SIGINT_AT")


class _InterruptAt:
    def find_spec(self, name, path=None, target=None):
        global _target
        if _target and name == _target:
            _target = None
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered while this module is being imported
        return None


if _target:
    sys.meta_path.insert(0, _InterruptAt())
"""


@pytest.mark.parametrize("module", ["typing", "pluggy", "argparse", "yaml", "pydantic", "structlog", "sqlite3",
                                    "rich"])
def test_ctrl_c_during_any_import_of_start_up_is_one_line(tmp_path, module):
    """Ctrl-C while luopan's start-up imports ``module`` (made exact by an import hook that interrupts the
    process at that import): one line and exit code 130, never a traceback."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SIGINT_AT_IMPORT, encoding="utf-8")
    path = fake_run(tmp_path, datasets=[{"preset": "cmmlu", "limit": 3}])
    script = str(Path(sys.executable).parent / "luopan")  # the console script a user types
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
               LUOPAN_TEST_SIGINT_AT=module)
    r = subprocess.run([script, "run", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    if module in sys.stdlib_module_names and r.returncode == 0:
        return  # imported before luopan's code starts (by the interpreter's own start-up): nothing to interrupt
    if module == "rich":  # drawn bars only: a run whose stderr is not a terminal never imports rich
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
        return
    assert r.returncode == 130 and r.stderr.strip().startswith("interrupted"), (r.returncode, r.stderr[-2000:])


def test_ctrl_c_at_random_moments_of_start_up_is_one_line(tmp_path):
    """Ctrl-C at moments through start-up and planning. A signal that lands before luopan's ``main`` starts (the
    interpreter's own ``site`` set-up, then the console script importing the two small modules that hold
    ``main``: milliseconds, more on a busy machine) is Python's to report; from ``main`` on, every import
    included (see the test above), it is one line and exit code 130."""
    path = fake_run(tmp_path, datasets=[{"preset": "cmmlu"}])
    env = dict(os.environ)
    script = str(Path(sys.executable).parent / "luopan")
    ours = 0
    for delay in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5):
        p = subprocess.Popen([script, "run", str(path), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        before_main = ("init_import_site" in err or (p.returncode == -signal.SIGINT and not err)
                       or err.rstrip().endswith('from luopan.cli import main\nKeyboardInterrupt'))
        if before_main:
            continue  # the interpreter or the console script had not reached luopan's main yet
        ours += 1
        assert "Traceback" not in err, (delay, err[-3000:])
        if p.returncode != 0:
            assert p.returncode == 130 and "interrupted" in err, (delay, p.returncode, err)
    assert ours >= 3  # most moments fall in luopan's own start-up and planning


# ---------------------------------------------------------------- limit and n count questions


def _first_winogrande_questions(n: int) -> list[dict]:
    data = Path(os.environ.get("LUOPAN_DATA", REPO.parent / "shared" / "datasets")) / "winogrande" / "winogrande.jsonl"
    with open(data, encoding="utf-8") as fh:
        return [json.loads(next(fh)) for _ in range(n)]


@pytest.mark.parametrize("limit_key", ["limit", "limit_per_subset"])
def test_a_limit_counts_questions_on_winogrande_as_lm_eval_does(tmp_path, limit_key):
    """WinoGrande has one sample per option (two per question): a limit of 7 scores the file's first 7
    questions (lm-eval's --limit 7) and every result and summary says n = 7."""
    path = fake_run(tmp_path, datasets=[{"preset": "winogrande", limit_key: 7}])
    r = luopan("run", str(path), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "out" / "r"
    result = json.loads((out / "results" / "fake" / "winogrande.json").read_text())
    assert sum(s["n"] for s in result["subsets"]) == 7
    preds = [json.loads(x) for x in (out / "predictions" / "fake" / "winogrande.jsonl").read_text().splitlines()]
    assert len(preds) == 14
    # the file's first 7 questions, both options of each, in order
    expected = [(opt, q["continuation"]) for q in _first_winogrande_questions(7) for opt in q["context_options"]]
    assert [(p["prompt"].strip(), p["choices"][0].strip()) for p in preds] == expected
    assert "| 7 |" in (out / "summary.md").read_text()
    assert ",7," in (out / "summary.csv").read_text()


def test_shards_never_split_a_question(tmp_path):
    path = fake_run(tmp_path, datasets=[{"preset": "winogrande", "limit": 7, "shards": 3}])
    assert luopan("run", str(path), "--no-progress").returncode == 0
    out = tmp_path / "out" / "r"
    ns = []
    for f in sorted((out / "results" / "fake").glob("winogrande.shard*.json")):
        ns.append(sum(s["n"] for s in json.loads(f.read_text())["subsets"]))
    assert ns == [3, 3, 1]
    merged = json.loads((out / "summary.json").read_text())["units"][0]
    assert sum(s["n"] for s in merged["subsets"]) == 7
