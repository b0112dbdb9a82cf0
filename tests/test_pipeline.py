"""Plan and execution: output layout, provenance, failures, the cache and resume after kill -9."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from luopan.cli import main

HERE = Path(__file__).parent


def run_yaml(tmp_path: Path, *, name="r1", model="{preset: fake}", params="{subsets: 3, per_subset: 4}",
             extra="", out=None) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(
        f"run: {{output_dir: {out or tmp_path / 'outputs'}, name: {name}}}\n"
        f"models:\n  - {model}\n"
        f"datasets:\n  - loader: toy\n    params: {params}\n{extra}",
        encoding="utf-8",
    )
    return p


def test_output_layout(toy_registry, tmp_path, capsys):
    assert main(["run", str(run_yaml(tmp_path)), "--no-progress"]) == 0
    out = tmp_path / "outputs" / "r1"
    for rel in ("config.yaml", "predictions/fake/toy.jsonl", "results/fake/toy.json", "summary.md", "summary.csv",
                "summary.json", "run.log"):
        assert (out / rel).is_file(), rel
    preds = [json.loads(x) for x in (out / "predictions/fake/toy.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and {"id", "prompt", "logprobs", "prediction", "score"} <= set(preds[0])
    events = [json.loads(x)["event"] for x in (out / "run.log").read_text().splitlines()]
    assert events[0] == "run_start" and "unit_finish" in events and events[-1] == "run_finish"
    assert "| toy | overall (mean) | accuracy | 12 |" in capsys.readouterr().out


def test_provenance_in_every_result(toy_registry, tmp_path):
    assert main(["run", str(run_yaml(tmp_path, extra="    shots: 2\n    sample_seed: 7\n    limit_per_subset: 2\n")),
                 "--no-progress"]) == 0
    res = json.loads((tmp_path / "outputs/r1/results/fake/toy.json").read_text())
    prov = res["provenance"]
    assert prov["luopan_version"]
    assert prov["plugins"]["fake"]["distribution"] == "luopan" and prov["plugins"]["fake"]["version"]
    assert prov["backend"] == {"backend": "fake", "seed": 0, "version": 1}
    assert prov["dataset"]["fingerprint"] == "toy-v1" and "template" in prov["dataset"]
    assert prov["seed"] == 0 and prov["sample_seed"] == 7 and prov["shots"] == 2
    assert prov["started_at"] <= prov["finished_at"]  # millisecond stamps: a fast unit can start and end in one


def test_seeded_sampling_is_reproducible_and_seed_dependent(toy_registry, tmp_path):
    ids = []
    for seed, name in ((1, "a"), (1, "b"), (2, "c")):
        p = run_yaml(tmp_path, name=name, params="{subsets: 1, per_subset: 30}",
                     extra=f"    limit_per_subset: 5\n    sample_seed: {seed}\n")
        assert main(["run", str(p), "--no-progress"]) == 0
        lines = (tmp_path / f"outputs/{name}/predictions/fake/toy.jsonl").read_text().splitlines()
        ids.append([json.loads(x)["id"] for x in lines])
    assert ids[0] == ids[1] and ids[0] != ids[2] and len(ids[0]) == 5


def test_failed_unit_exits_nonzero_and_shows_in_summary(toy_registry, tmp_path, capsys):
    p = tmp_path / "f.yaml"
    p.write_text(
        f"run: {{output_dir: {tmp_path / 'outputs'}, name: f}}\n"
        "models:\n  - {preset: fake}\n  - {name: flaky, backend: fake, params: {seed: 3, fail_if_prompt_contains: 'of s1'}}\n"
        "datasets:\n  - {loader: toy}\n",
        encoding="utf-8",
    )
    assert main(["run", str(p), "--no-progress"]) == 1
    cap = capsys.readouterr()
    assert "FAILED flaky/toy: RuntimeError: fake backend told to fail" in cap.err
    summary = (tmp_path / "outputs/f/summary.md").read_text()
    assert "- flaky on toy FAILED: RuntimeError: fake backend told to fail" in summary  # in full, never cut
    assert re.search(r"\| toy \| overall \(mean\) \| accuracy \| 15 \| \d+\.\d\d ± \d+\.\d\d \| ERROR",
                     summary)  # the good model still scored, with its interval
    res = json.loads((tmp_path / "outputs/f/results/flaky/toy.json").read_text())
    assert res["error"].startswith("RuntimeError: fake backend told to fail")


def test_dry_run_prints_plan_and_runs_nothing(toy_registry, tmp_path, capsys):
    log = tmp_path / "calls.log"
    p = run_yaml(tmp_path, model=f"{{backend: fake, params: {{calls_log: {log}}}}}")
    assert main(["run", str(p), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "fake/toy: mode=likelihood subsets=3 samples=12 requests=48 cached=0 to_run=48" in out
    assert not log.exists() and not (tmp_path / "outputs" / "r1").exists()


def test_shards_split_a_unit_and_merge_in_the_summary(toy_registry, tmp_path, capsys):
    p = run_yaml(tmp_path, extra="    shards: 3\n")
    assert main(["run", str(p), "--no-progress"]) == 0
    out = tmp_path / "outputs/r1"
    assert len(list((out / "results/fake").glob("toy.shard*of3.json"))) == 3
    assert "| toy | overall (weighted) | accuracy | 12 |" in (out / "summary.md").read_text()


def test_run_finish_hooks_read_predictions_and_add_tables_through_the_public_api(tmp_path, capsys):
    import toy_plugin

    from luopan import hookimpl
    from luopan.components import SummaryTable
    from luopan.plugins import load_registry, reset_registry

    seen: dict[str, int] = {}

    class Report:
        @staticmethod
        @hookimpl
        def luopan_run_finish(run, results):
            for unit in run.units:  # shards included: each reads its own file
                seen[unit.id] = len(run.predictions(unit))
            right = sum(r["score"] for u in run.units for r in run.predictions(u))
            run.add_tables([SummaryTable("Hook table", ["right"], [[right]])])

    reset_registry(load_registry(extra_plugins=[("toy", toy_plugin), ("toy_report", Report)]))
    try:
        assert main(["run", str(run_yaml(tmp_path, extra="    shards: 2\n")), "--no-progress"]) == 0
    finally:
        reset_registry(None)
    assert sorted(seen.values()) == [6, 6] and len(seen) == 2
    summary = (tmp_path / "outputs/r1/summary.md").read_text()
    assert "Hook table" in summary and "| toy | overall (weighted) |" in summary
    right = sum(json.loads(x)["score"] for f in (tmp_path / "outputs/r1/predictions/fake").glob("toy.shard*.jsonl")
                for x in f.read_text().splitlines())
    assert right > 0 and f"| {right:.2f} |" in summary.split("Hook table")[1]


def test_merge_shards_weights_each_metric_by_the_items_that_report_it():
    from luopan.components import UnitResult
    from luopan.pipeline import merge_shards

    a = UnitResult("m", "d", "accuracy", [{"subset": "x", "n": 4, "score": 0.5,
                                           "metrics": {"strict": 0.25, "judge": 1.0}, "metric_n": {"judge": 1}}])
    b = UnitResult("m", "d", "accuracy", [{"subset": "x", "n": 2, "score": 1.0, "metrics": {"strict": 1.0}},
                                          {"subset": "y", "n": 1, "score": 0.0, "metrics": {}}])
    c = UnitResult("m", "d", "accuracy", [{"subset": "x", "n": 0, "score": None, "metrics": {}, "unscored": 3}])
    (r,) = merge_shards([a, b, c])
    x = next(s for s in r.subsets if s["subset"] == "x")
    assert x["n"] == 6 and x["unscored"] == 3
    assert x["score"] == pytest.approx((0.5 * 4 + 1.0 * 2) / 6)
    assert x["metrics"]["strict"] == pytest.approx((0.25 * 4 + 1.0 * 2) / 6)
    assert x["metrics"]["judge"] == 1.0  # reported by one item of shard a only: not averaged with zeros
    assert x["metric_n"] == {"judge": 1}
    assert a.subsets[0]["n"] == 4  # the shards themselves are left as they were
    assert [s["subset"] for s in r.subsets] == ["x", "y"]


# ------------------------------------------------------------------ cache


def served(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_rerun_sends_no_request_twice(toy_registry, tmp_path):
    log = tmp_path / "calls.log"
    p = run_yaml(tmp_path, model=f"{{backend: fake, params: {{calls_log: {log}}}}}")
    assert main(["run", str(p), "--no-progress"]) == 0
    assert len(served(log)) == 48
    assert main(["run", str(p), "--no-progress"]) == 0
    assert len(served(log)) == 48  # all 48 answers came from the cache


def test_changed_template_reruns_exactly_the_affected_requests(toy_registry, tmp_path):
    log = tmp_path / "calls.log"
    model = f"{{backend: fake, params: {{calls_log: {log}}}}}"
    assert main(["run", str(run_yaml(tmp_path, model=model)), "--no-progress"]) == 0
    # 2 more questions per subset: only their 3 x 2 x 4 = 24 requests are new
    assert main(["run", str(run_yaml(tmp_path, model=model, params="{subsets: 3, per_subset: 6}")),
                 "--no-progress"]) == 0
    assert len(served(log)) == 48 + 24
    # a changed template changes every prompt: all 72 rerun
    assert main(["run", str(run_yaml(tmp_path, model=model,
                                     params="{subsets: 3, per_subset: 6, template: 'New {i} {s}:'}")),
                 "--no-progress"]) == 0
    assert len(served(log)) == 72 + 72


def test_changed_generation_parameter_reruns_generation(toy_registry, tmp_path):
    log = tmp_path / "calls.log"
    model = f"{{backend: fake, kind: chat, params: {{calls_log: {log}}}, generation: {{max_new_tokens: 16}}}}"
    assert main(["run", str(run_yaml(tmp_path, model=model)), "--no-progress"]) == 0
    assert len(served(log)) == 12  # chat model: one generation per sample
    assert main(["run", str(run_yaml(tmp_path, model=model)), "--no-progress"]) == 0
    assert len(served(log)) == 12
    model2 = model.replace("max_new_tokens: 16", "max_new_tokens: 17")
    assert main(["run", str(run_yaml(tmp_path, model=model2)), "--no-progress"]) == 0
    assert len(served(log)) == 24
    # a different backend identity (seed) never reuses another backend's answers
    model3 = model.replace("params: {", "params: {seed: 5, ")
    assert main(["run", str(run_yaml(tmp_path, model=model3)), "--no-progress"]) == 0
    assert len(served(log)) == 36


RUNNER = """
import sys
sys.path.insert(0, {tests!r})
import toy_plugin
from luopan.plugins import load_registry, reset_registry
reset_registry(load_registry(extra_plugins=[("toy", toy_plugin)]))
from luopan.cli import main
sys.exit(main(["run", sys.argv[1], "--no-progress"]))
"""


def _subprocess_run(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER.format(tests=str(HERE)), str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _results(out: Path) -> tuple[list[dict], list[dict]]:
    preds = [json.loads(x) for x in (out / "predictions/fake/toy.jsonl").read_text().splitlines()]
    res = json.loads((out / "results/fake/toy.json").read_text())
    return preds, res["subsets"]


def test_kill_9_then_rerun_resumes_without_resending_and_matches_uninterrupted(tmp_path):
    chunk, total = 20, 3 * 40 * 4
    log = tmp_path / "calls.log"
    model = f"{{backend: fake, params: {{calls_log: {log}, delay_s: 0.03, chunk_size: {chunk}}}}}"
    cfg = run_yaml(tmp_path, name="killed", model=model, params="{subsets: 3, per_subset: 40}")
    proc = _subprocess_run(cfg)
    deadline = time.monotonic() + 60
    while len(served(log)) < total // 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(served(log))
    assert 0 < before < total

    db = sqlite3.connect(tmp_path / "outputs/cache/requests.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cached = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    db.close()
    # what was lost: the chunk in flight and the answers of the last tenth of a second (commits are at most ten
    # a second: here a chunk arrives every 0.03 s, so up to four wait for the next commit)
    assert before - cached <= 5 * chunk, (before, cached)

    proc = _subprocess_run(cfg)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    calls = served(log)
    assert len(set(calls)) == total  # every request answered
    assert len(calls) - total == before - cached  # only what the cache lacked was sent again

    clean = tmp_path / "clean"
    clean_log = tmp_path / "clean.log"
    cfg2 = run_yaml(tmp_path, name="clean", model=model.replace(str(log), str(clean_log)),
                    params="{subsets: 3, per_subset: 40}", out=clean)
    proc = _subprocess_run(cfg2)
    assert proc.wait(timeout=120) == 0
    assert _results(tmp_path / "outputs/killed") == _results(clean / "clean")


def test_a_failure_loses_nothing_already_computed(toy_registry, tmp_path):
    log = tmp_path / "calls.log"
    flaky = f"{{backend: fake, params: {{calls_log: {log}, chunk_size: 4, fail_if_prompt_contains: 'of s2'}}}}"
    assert main(["run", str(run_yaml(tmp_path, model=flaky)), "--no-progress"]) == 1
    assert len(served(log)) == 32  # subsets s0 and s1 answered and cached before s2 failed
    fixed = f"{{backend: fake, params: {{calls_log: {log}, chunk_size: 4}}}}"
    assert main(["run", str(run_yaml(tmp_path, model=fixed)), "--no-progress"]) == 0
    assert len(served(log)) == 48  # only s2's 16 requests were sent again


def test_secrets_never_reach_the_log_or_outputs(toy_registry, tmp_path, monkeypatch):
    secret = "sk-luopan-test-SECRET-0123456789"
    monkeypatch.setenv("MY_SERVICE_API_KEY", secret)
    p = run_yaml(tmp_path, model=f"{{preset: fake, system_prompt: 'uses {secret} by mistake'}}")
    assert main(["run", str(p), "--no-progress"]) == 0
    from luopan.runlog import redact

    assert redact(None, "", {"api_key": "abc12345678", "note": f"key={secret}"}) == {"api_key": "***",
                                                                                     "note": "key=***"}
    for f in (tmp_path / "outputs").rglob("*"):
        if f.is_file() and f.suffix in (".log", ".json", ".jsonl", ".md", ".csv", ".yaml"):
            assert secret not in f.read_text(encoding="utf-8", errors="replace"), f


def test_fewer_collections_raises_and_restores_the_gc_thresholds():
    import gc

    from luopan._gc import THRESHOLDS, fewer_collections

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with fewer_collections():
            assert gc.get_threshold() == THRESHOLDS
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(500_000, 10, 10)  # a caller's higher thresholds are never lowered
        with fewer_collections():
            assert gc.get_threshold() == (500_000, 10, 10)
        gc.set_threshold(0)  # nor is a disabled collector turned on
        with fewer_collections():
            assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)


def test_auto_shards_are_sized_from_the_plans_request_counts():
    from luopan.planning import SHARD_REQUESTS, auto_shards
    from luopan.types import Sample

    def groups(n: int, options: int) -> list[list[Sample]]:
        return [[Sample(f"q{i}", "s", "p", 0, choices=[" A"] * options)] for i in range(n)]

    assert auto_shards(groups(100, 4), "likelihood", 1) == 1  # small: one shard
    big = groups(11_582, 4)  # CMMLU: 46,328 requests
    assert auto_shards(big, "likelihood", 1) == -(-46_328 // SHARD_REQUESTS) == 3
    assert auto_shards(big, "likelihood", 2) == 4  # a multiple of the replicas: each gets an equal share
    assert auto_shards(big, "generate", 1) == 1  # one request per question when generating
    assert auto_shards(groups(3, 4), "likelihood", 8) == 3  # never more shards than questions


def test_shards_auto_in_a_run_file(tmp_path):
    import yaml

    from luopan.pipeline import Run
    from luopan.plugins import load_registry

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "run": {"output_dir": str(tmp_path / "out"), "name": "r"},
        "models": [{"preset": "fake", "resources": {"replicas": 2}}],
        "datasets": [{"preset": "demo_mcq", "shards": "auto"}]}), encoding="utf-8")
    from luopan.config import load_run

    reg = load_registry()
    run = Run(load_run(path, reg), reg, progress=False)
    units = run.plan()
    assert [u.n_shards for u in units] == [2, 2]  # small, but one shard per replica
    results = run.execute()
    assert all(r.error is None for r in results)
