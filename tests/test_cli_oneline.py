"""The one-line command line, through the real CLI in a subprocess: presets by name, OpenCompass-style dataset
names, --print-config giving a run file that validates and plans identically, and what a misplaced name is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = str(Path(sys.executable).parent / "luopan")


def luopan(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=dict(os.environ))


def _plan_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if not ln.startswith("plan:")]


def test_a_one_liner_and_its_printed_config_plan_identically(tmp_path):
    args = ["--model", "fake", "--dataset", "cmmlu_gen,mmlu_ppl", "--limit-per-subset", "1",
            "--shots", "2", "--name", "one"]
    printed = luopan("run", *args, "--print-config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "run.yaml").write_text(printed.stdout, encoding="utf-8")
    assert luopan("validate", "run.yaml", cwd=tmp_path).returncode == 0
    a = luopan("run", *args, "--dry-run", cwd=tmp_path)
    b = luopan("run", "run.yaml", "--dry-run", cwd=tmp_path)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert _plan_lines(a.stdout) == _plan_lines(b.stdout)
    assert "fake/cmmlu_gen: mode=generate subsets=67 samples=67" in a.stdout
    assert "fake/mmlu_ppl: mode=likelihood subsets=57 samples=57" in a.stdout


def test_a_dataset_name_where_a_run_file_goes_says_what_it_is(tmp_path):
    r = luopan("run", "cmmlu", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'cmmlu' is a dataset preset" in r.stderr
    assert "luopan run --model smollm2-135m-instruct --dataset cmmlu --limit-per-subset 1" in r.stderr


def test_one_line_errors_are_one_line(tmp_path):
    for args, needle in ((["--model", "fake"], "needs --model and --dataset"),
                         (["--model", "fake", "--dataset", "cmmluu"], "did you mean 'cmmlu'"),
                         (["x.yaml", "--model", "fake", "--dataset", "cmmlu"], "not both")):
        r = luopan("run", *args, cwd=tmp_path)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_reuse_is_accepted_and_automatic(tmp_path):
    args = ["--model", "fake", "--dataset", "demo_mcq", "--name", "r", "--no-progress"]
    assert luopan("run", *args, cwd=tmp_path).returncode == 0
    r = luopan("run", *args, "-r", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0 and "to_run=0" in r.stdout


@pytest.mark.slow  # a real model: SmolLM2-135M-Instruct through hf, two benchmarks
def test_smollm2_on_two_benchmarks_in_one_line(tmp_path):
    args = ["--model", "smollm2-135m-instruct", "--dataset", "arc_easy,cmmlu_ppl", "--limit", "3", "--name", "smol"]
    printed = luopan("run", *args, "--print-config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "smol.yaml").write_text(printed.stdout, encoding="utf-8")
    assert luopan("validate", "smol.yaml", cwd=tmp_path).returncode == 0
    plans = [luopan("run", *a, "--dry-run", cwd=tmp_path) for a in (args, ["smol.yaml"])]
    assert all(p.returncode == 0 for p in plans) and _plan_lines(plans[0].stdout) == _plan_lines(plans[1].stdout)
    r = luopan("run", *args, "--no-progress", cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "outputs" / "smol"
    for ds in ("arc_easy", "cmmlu_ppl"):
        res = json.loads((out / "results" / "smollm2-135m-instruct" / f"{ds}.json").read_text())
        assert res["error"] is None and sum(s["n"] for s in res["subsets"]) == 3, ds
    assert json.loads((out / "results" / "smollm2-135m-instruct" / "cmmlu_ppl.json").read_text())[
        "provenance"]["mode"] == "likelihood"


def test_debug_shows_the_log_on_the_console_and_full_tracebacks(tmp_path):
    r = luopan("run", "--model", "fake", "--dataset", "demo_mcq", "--name", "d", "--debug", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "run_start" in r.stderr and "unit_finish unit=fake/demo_mcq" in r.stderr  # readable lines
    assert (tmp_path / "outputs" / "d" / "run.log").read_text().count('"event": "unit_finish"') == 1  # and the file
    r = luopan("run", "--model", "fake", "--dataset", "cmmluu", "--debug", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" in r.stderr and "did you mean 'cmmlu'" in r.stderr


def test_relative_outputs_go_under_the_working_folder(tmp_path):
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "x.yaml").write_text(
        "run: {name: rel}\nmodels: [{preset: fake}]\ndatasets: [{preset: demo_mcq}]\n", encoding="utf-8")
    assert luopan("run", "examples/x.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    assert (tmp_path / "outputs" / "rel" / "summary.md").is_file()
    assert not (tmp_path / "examples" / "outputs").exists()


def test_dry_run_costs_are_totalled_per_currency(tmp_path):
    models = ("models:\n"
              "  - {name: usd, backend: openai, kind: chat, params: {base_url: 'http://127.0.0.1:9/v1', model: a,\n"
              "     api_key_env: null, price: {prompt: 1.0, completion: 2.0, currency: USD}}}\n"
              "  - {name: cny, backend: openai, kind: chat, params: {base_url: 'http://127.0.0.1:9/v1', model: b,\n"
              "     api_key_env: null, price: {prompt: 1.0, completion: 2.0, currency: CNY}}}\n")
    (tmp_path / "c.yaml").write_text(models + "datasets: [{preset: demo_qa, limit: 3}]\n", encoding="utf-8")
    r = luopan("run", "c.yaml", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    total = next(ln for ln in r.stdout.splitlines() if ln.startswith("estimate for the whole run"))
    assert " USD" in total and " CNY" in total  # never one sum of two currencies
