"""The openai backend against luopan's fault-injecting proxy in mock mode (fast, no model): retries, rate
limits shared by all workers, per-request failures and resume, the key never written, dry-run estimates.
The same paths against a real server (llama.cpp) are in test_openai_server.py."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from faultproxy import ProxyThread  # tools/faultproxy.py
from luopan.cli import main
from luopan_openai.backend import continuation_logprob, cut_at_stop, retry_after
from luopan_openai.limiter import RateLimiter
from luopan_openai.tokens import estimate_tokens

SECRET = "sk-luopan-secret-0a1b2c3d4e5f6789"


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LUOPAN_STATE_DIR", str(tmp_path / "state"))  # rate-limit schedules of this test only


@pytest.fixture
def proxy():
    with ProxyThread(None, seed=1, retry_after=0.05, stall_s=3.0) as p:
        yield p


def write_questions(folder: Path, n: int) -> Path:
    path = folder / "questions.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"q": f"Question {i}: which letter? A, B, C or D.", "a": "The answer is B."}) + "\n")
    return path


def write_run(folder: Path, base_url: str, *, n: int = 20, name: str = "r", **params) -> Path:
    data = write_questions(folder, n)
    cfg = {
        "run": {"name": name, "output_dir": str(folder / "out")},
        "models": [{"name": "api", "backend": "openai", "kind": "chat",
                    "params": {"base_url": base_url, "model": "mock-model", "api_key_env": None, **params}}],
        "datasets": [{"name": "qs", "loader": "files", "params": {"path": str(data), "prompt": "q", "target": "a"},
                      "mode": "generate", "evaluator": "exact_match", "generation": {"max_new_tokens": 16}}],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def predictions(folder: Path, name: str = "r") -> list[dict]:
    path = folder / "out" / name / "predictions" / "api" / "qs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def result(folder: Path, name: str = "r") -> dict:
    return json.loads((folder / "out" / name / "results" / "api" / "qs.json").read_text())


def test_generation_usage_and_cache(tmp_path, proxy, capsys):
    price = {"prompt": 2.0, "completion": 8.0, "currency": "CNY"}
    path = write_run(tmp_path, proxy.base_url, n=12, max_concurrency=4, price=price)
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "CNY" in capsys.readouterr().out  # the dry run prices the plan
    assert main(["run", str(path), "--no-progress"]) == 0
    preds = predictions(tmp_path)
    assert len(preds) == 12 and all(p["output"].startswith("The answer is ") for p in preds)
    usage = result(tmp_path)["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    expected = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1e6
    assert usage["cost"] == pytest.approx(expected) and usage["currency"] == "CNY"
    assert "prompt tokens" in capsys.readouterr().out  # the summary's usage note
    assert proxy.stats.received == 12
    assert main(["run", str(path), "--no-progress"]) == 0  # rerun: everything cached, nothing sent
    assert proxy.stats.received == 12


def test_missing_key_is_an_error_before_any_request(tmp_path, proxy, capsys, monkeypatch):
    monkeypatch.delenv("LUOPAN_TEST_UNSET_VAR", raising=False)
    path = write_run(tmp_path, proxy.base_url, n=3, api_key_env="LUOPAN_TEST_UNSET_VAR")
    assert main(["run", str(path), "--no-progress"]) == 2  # found before the run starts, like every config problem
    err = capsys.readouterr().err
    assert "LUOPAN_TEST_UNSET_VAR" in err and "not set" in err
    monkeypatch.setenv("LUOPAN_TEST_UNSET_VAR", "  ")
    assert main(["run", str(path), "--no-progress"]) == 2
    assert proxy.stats.received == 0


def test_key_never_written_anywhere(tmp_path, proxy, capsys, monkeypatch):
    # a variable name without KEY/TOKEN in it: the backend itself must register the value for redaction
    monkeypatch.setenv("PROXY_CRED", SECRET)
    proxy.configure(fault_rate=0.3, faults=["429", "500", "malformed"])
    path = write_run(tmp_path, proxy.base_url, n=20, api_key_env="PROXY_CRED",
                     extra_headers={"X-Api-Token": "env:PROXY_CRED"}, max_retries=10)
    assert main(["run", str(path), "--no-progress"]) == 0
    assert proxy.stats.last_auth_present
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    files = [f for f in (tmp_path / "out").rglob("*") if f.is_file()]
    assert any(f.name == "run.log" for f in files) and any(f.suffix == ".sqlite" for f in files)
    for f in files:
        assert SECRET.encode() not in f.read_bytes(), f


def test_faults_lose_nothing_and_change_no_score(tmp_path, proxy):
    clean = tmp_path / "clean"
    clean.mkdir()
    assert main(["run", str(write_run(clean, proxy.base_url, n=40)), "--no-progress"]) == 0
    proxy.reset_stats()
    proxy.configure(fault_rate=0.2)  # every kind: 429 + Retry-After, 500, stall, malformed, empty, drop
    faulty = tmp_path / "faulty"
    faulty.mkdir()
    path = write_run(faulty, proxy.base_url, n=40, timeout=1.0, max_concurrency=8, max_retries=12,
                     retry_max_wait=0.2)
    assert main(["run", str(path), "--no-progress"]) == 0
    stats = proxy.stats
    assert sum(stats.faults.values()) >= 4 and len([k for k, v in stats.faults.items() if v]) >= 3
    a, b = predictions(clean), predictions(faulty)
    assert [p["id"] for p in b] == [p["id"] for p in a] and len({p["id"] for p in b}) == 40
    assert [p["output"] for p in b] == [p["output"] for p in a]
    assert result(faulty)["subsets"] == result(clean)["subsets"]


def test_failed_items_listed_and_only_they_rerun(tmp_path, proxy, capsys):
    proxy.configure(fault_rate=0.4, faults=["500"])
    path = write_run(tmp_path, proxy.base_url, n=20, max_retries=0)
    assert main(["run", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    res = result(tmp_path)
    failed = res["failed_items"]
    assert 0 < len(failed) < 20 and res["error"].startswith(f"{len(failed)} of 20 samples failed")
    assert all(item["error"].startswith("HTTP 500") for item in failed)
    # the same error on several samples is one line: how many, the first ids, the error
    assert f"  {len(failed)} samples ({failed[0]['id']}, " in err and ": HTTP 500" in err
    assert "retries only what failed" in err
    proxy.configure(fault_rate=0.0)
    proxy.reset_stats()
    assert main(["run", str(path), "--no-progress"]) == 0
    assert proxy.stats.received == len(failed)  # exactly the failed ones were sent again
    assert len(predictions(tmp_path)) == 20


def test_rate_limit_shared_by_all_workers(tmp_path):
    # the proxy accepts at most 10 requests in any 1-second window; luopan is told 480/min = 8/s. A 1-second
    # window leaves no room for scheduling jitter: requests held up by a busy CPU arrive bunched, and 9.5/s
    # failed that way on a loaded machine. The 25% margin absorbs a 0.25 s stall; at real 60-second windows
    # luopan's own 1% margin suffices. Unlimited, 8 workers would send all 25 at once.
    with ProxyThread(None, rpm=10, window_s=1.0) as p:
        path = write_run(tmp_path, p.base_url, n=25, rpm=480, max_concurrency=8)
        t0 = time.monotonic()
        assert main(["run", str(path), "--no-progress"]) == 0
        elapsed = time.monotonic() - t0
        stats = p.stats
    assert stats.rate_limited == 0 and stats.received == 25
    assert stats.max_in_window(1.0) <= 10
    assert elapsed >= 24 * 60 / 480


def _reserve_many(directory: str, n: int, out) -> None:  # in a child process
    lim = RateLimiter("shared-scope", rpm=600, directory=Path(directory))
    slots = []
    for _ in range(n):
        lim.reserve()
        slots.append(lim.last_slot)
    out.put(slots)


def test_limiter_is_shared_across_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_reserve_many, args=(str(tmp_path), 6, q)) for _ in range(3)]
    for pr in procs:
        pr.start()
    slots = sorted(s for _ in procs for s in q.get(timeout=60))
    for pr in procs:
        pr.join(timeout=30)
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert len(slots) == 18 and min(gaps) >= 0.1 - 1e-3  # one schedule: 18 distinct slots 0.1 s apart


def test_limiter_pause_holds_every_worker(tmp_path):
    import asyncio

    lim = RateLimiter("pause-scope", directory=tmp_path)
    lim.pause(0.3)
    t0 = time.monotonic()
    asyncio.run(lim.acquire())
    assert time.monotonic() - t0 >= 0.28
    unshared = RateLimiter("pause-scope", rpm=60, shared=False)
    assert unshared.reserve() == 0.0  # a per-worker limiter does not see the shared schedule


def test_token_limit_spaces_large_requests(tmp_path):
    lim = RateLimiter("tpm-scope", tpm=6000, directory=tmp_path)
    assert lim.reserve(6000) <= 0.01  # a full minute's bucket is available at once
    assert lim.reserve(600) >= 5.9  # then 600 tokens need 6 s of refill


def test_dry_run_estimates_the_puyu_example(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("INTERNLM_API_KEY", raising=False)  # a dry run needs no key and sends nothing
    example = Path(__file__).resolve().parents[1] / "examples" / "puyu_cmmlu.yaml"
    out = tmp_path / "out"
    assert main(["run", str(example), "--dry-run", "--output-dir", str(out)]) == 0
    assert not out.exists()  # a dry run writes nothing
    printed = capsys.readouterr().out
    assert "puyu-internlm2.5/cmmlu: mode=generate subsets=67 samples=67 requests=67" in printed
    assert ">= 6.7 min at the rate limit" in printed and "prompt tokens" in printed


def test_retry_after_headers():
    def exc(headers):
        return SimpleNamespace(response=SimpleNamespace(headers=headers))

    assert retry_after(exc({"retry-after": "3"})) == 3.0
    assert retry_after(exc({"retry-after-ms": "250", "retry-after": "1"})) == 0.25
    assert retry_after(exc({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) is None
    assert retry_after(exc({})) is None


def test_continuation_logprob_from_echo():
    # "The capital is Paris": tokens and offsets as a correct server echoes them
    lp = SimpleNamespace(
        tokens=["The", " capital", " is", " Par", "is", "."],
        text_offset=[0, 3, 11, 14, 18, 20],
        token_logprobs=[None, -5.0, -1.0, -2.0, -0.5, -3.0],
        top_logprobs=[None, {" capital": -5.0}, {" is": -1.0}, {" Par": -2.0}, {"is": -0.5}, {".": -3.0}],
    )
    usage = SimpleNamespace(prompt_tokens=5)
    r = continuation_logprob(lp, usage, context_len=len("The capital is"), text_len=len("The capital is Paris"))
    assert r.logprob == pytest.approx(-2.5) and r.n_tokens == 2 and r.is_greedy
    lp.top_logprobs[3] = {" Lon": -0.1, " Par": -2.0}
    assert not continuation_logprob(lp, usage, 14, 20).is_greedy
    # a token straddling the boundary counts as continuation
    r = continuation_logprob(lp, usage, context_len=len("The capital is P"), text_len=20)
    assert r.n_tokens == 2


def test_stop_strings_and_token_estimates():
    assert cut_at_stop("A. yes\nQuestion: next", ["Question:", "\n"]) == "A. yes"
    assert cut_at_stop("no stop here", []) == "no stop here"
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd" * 10) == 10
    assert estimate_tokens("中国的首都") == 5


def test_offsets_that_are_not_positions_fall_back_to_the_context_echo():
    from luopan_openai.backend import logprob_after_common_prefix, offsets_usable

    # vLLM-style: a BOS echoed as "<s>" and offsets summing decoded token lengths (a byte piece is "\ufffd")
    text = "中国的首都是北京"
    joint = SimpleNamespace(tokens=["<s>", "中国", "的", "\ufffd", "\ufffd", "是", "北京"],
                            text_offset=[0, 3, 5, 6, 7, 8, 9],
                            token_logprobs=[None, -3.0, -1.0, -2.0, -0.1, -0.5, -1.5],
                            top_logprobs=None)
    assert not offsets_usable(joint, text, 7)
    ctx = SimpleNamespace(tokens=["<s>", "中国", "的", "\ufffd", "\ufffd", "是", "上海"],
                          text_offset=[0, 3, 5, 6, 7, 8, 9], token_logprobs=[None, -3.0, -1.0, -2.0, -0.1, -0.5, -9.0],
                          top_logprobs=None)
    r = logprob_after_common_prefix(joint, 7, (ctx, 6))  # the context "中国的首都是" is 6 prompt tokens
    assert r.logprob == pytest.approx(-1.5) and r.n_tokens == 1
    # correct character offsets pass the check
    ok = SimpleNamespace(tokens=["The", " capital", " is", " Paris"], text_offset=[0, 3, 11, 14])
    assert offsets_usable(ok, "The capital is Paris", 4)
