"""Paired comparison end to end with the fake backend: ``luopan compare`` on one and on two run folders, the
run file's ``compare:`` section, the comparability hash (``version``) and its warnings, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from luopan import stats
from luopan.cli import main

A, B = "fake-a", "fake-b"
MODELS = [{"name": A, "backend": "fake", "params": {"seed": 0}}, {"name": B, "backend": "fake", "params": {"seed": 3}}]


def write_run(tmp_path: Path, name: str, *, models=None, datasets=None, compare=None) -> Path:
    doc = {"run": {"name": name, "output_dir": str(tmp_path / "out")}, "models": models or MODELS,
           "datasets": datasets or [{"loader": "toy", "params": {"subsets": 3, "per_subset": 30}}]}
    if compare is not None:
        doc["compare"] = compare
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def run(tmp_path: Path, name: str, **kw) -> Path:
    assert main(["run", str(write_run(tmp_path, name, **kw)), "--no-progress"]) == 0
    return tmp_path / "out" / name


def scores(folder: Path, model: str, dataset: str = "toy") -> dict[str, float]:
    lines = (folder / "predictions" / model / f"{dataset}.jsonl").read_text().splitlines()
    return {r["id"]: r["score"] for r in map(json.loads, lines)}


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, err)


def test_compare_two_models_of_one_run_against_direct_computation(toy_registry, tmp_path, capsys):
    out = run(tmp_path, "r")
    capsys.readouterr()
    assert main(["compare", str(out), "--out", str(tmp_path / "cmp")]) == 0
    md = capsys.readouterr().out
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert (tmp_path / "cmp" / "compare.md").read_text() in md
    [c] = report["comparisons"]
    assert (c["baseline"], c["model"]) == (A, B)  # the run's first model is the baseline
    [row] = c["datasets"]
    a, b = scores(out, A), scores(out, B)
    assert row["n"] == len(a) == 90 and row["binary"] and row["test"] == "mcnemar_exact"
    assert row["baseline_score"] == pytest.approx(100 * sum(a.values()) / 90)
    assert row["model_score"] == pytest.approx(100 * sum(b.values()) / 90)
    assert row["difference"] == pytest.approx(row["model_score"] - row["baseline_score"])
    base_right = [i for i in a if a[i] == 1.0 and b[i] == 0.0]
    model_right = [i for i in a if a[i] == 0.0 and b[i] == 1.0]
    assert row["discordant"] == {"baseline_right": base_right, "model_right": model_right}
    scipy_stats = pytest.importorskip("scipy.stats")
    k = len(base_right) + len(model_right)
    assert row["p"] == pytest.approx(scipy_stats.binomtest(len(model_right), k, 0.5).pvalue if k else 1.0)
    assert row["p_holm"] == row["p"]  # one dataset: nothing to correct
    lo, hi = row["ci"]
    assert lo <= row["difference"] <= hi
    ours = stats.paired_bootstrap(list(a.values()), [b[i] for i in a], resamples=1000,
                                  seed=stats.seed_of(0, "toy", A, B))
    assert [lo, hi] == pytest.approx([100 * ours.ci[0], 100 * ours.ci[1]])  # seeded: reproducible
    assert row["comparable"] and row["warnings"] == []
    assert f"| toy | accuracy | 90 | {row['baseline_score']:.2f} | {row['model_score']:.2f} |" in md
    if base_right:
        assert f"toy: {A} right, {B} wrong on {len(base_right)}: {base_right[0]}" in md


def test_holm_across_datasets_and_the_baseline_option(toy_registry, tmp_path, capsys):
    datasets = [{"name": f"toy{i}", "loader": "toy", "params": {"subsets": 2, "per_subset": 20 + 5 * i}}
                for i in range(3)]
    out = run(tmp_path, "r", datasets=datasets)
    capsys.readouterr()
    assert main(["compare", str(out), "--baseline", B, "--out", str(out)]) == 0
    [c] = json.loads((out / "compare.json").read_text())["comparisons"]
    assert (c["baseline"], c["model"]) == (B, A)
    ps = [r["p"] for r in c["datasets"]]
    assert [r["p_holm"] for r in c["datasets"]] == pytest.approx(stats.holm(ps))
    assert [r["dataset"] for r in c["datasets"]] == ["toy0", "toy1", "toy2"]


def test_two_runs_with_different_shots_and_generation_settings_warn(toy_registry, tmp_path, capsys):
    ds = {"loader": "toy", "params": {"subsets": 2, "per_subset": 15}, "mode": "generate"}
    first = run(tmp_path, "first", models=[MODELS[0]], datasets=[ds])
    second = run(tmp_path, "second", models=[{**MODELS[1], "generation": {"max_new_tokens": 7}}],
                 datasets=[{**ds, "shots": 2}])
    same = run(tmp_path, "same", models=[MODELS[1]], datasets=[ds])
    capsys.readouterr()
    assert main(["compare", str(first), str(second)]) == 0
    cap = capsys.readouterr()
    assert "| toy | accuracy | 30 |" in cap.out and "DIFFER: shots, generation settings, prompt" in cap.out
    [warning] = cap.err.strip().splitlines()
    assert warning.startswith(f"warning: toy: {A} and {B} ran it with different settings (shots: 0 vs 2; ")
    assert "; generation settings: max_new_tokens 256 vs 7; " in warning  # 256: the default
    assert "prompt: 30 of 30 questions were asked differently" in warning
    # the version column of each run's summary says the same: different hashes
    v1 = json.loads((first / "results" / A / "toy.json").read_text())["version"]
    v2 = json.loads((second / "results" / B / "toy.json").read_text())["version"]
    v3 = json.loads((same / "results" / B / "toy.json").read_text())["version"]
    assert v1 != v2 and v1 == v3 and len(v1) == 6
    assert f"| {v1} |" in (first / "summary.md").read_text()
    # same settings: no warning, and a model compared with itself differs by exactly nothing
    assert main(["compare", str(first), str(same)]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and "| same |" in cap.out
    assert main(["compare", str(same), str(same)]) == 0
    out = capsys.readouterr().out
    assert f"{B}@B vs {B}@A (baseline)" in out and "| +0.00 | [+0.00, +0.00] | 1.000 (McNemar) |" in out


def test_a_question_of_several_samples_counts_once(tmp_path, capsys):
    """WinoGrande asks each question as one sample per option: the comparison pairs questions, as the scores."""
    out = run(tmp_path, "w", datasets=[{"preset": "winogrande", "limit": 7}])
    capsys.readouterr()
    preds = [json.loads(x) for x in (out / "predictions" / A / "winogrande.jsonl").read_text().splitlines()]
    assert len(preds) == 14 and len({p["question"] for p in preds}) == 7
    assert main(["compare", str(out), "--out", str(out)]) == 0
    [row] = json.loads((out / "compare.json").read_text())["comparisons"][0]["datasets"]
    assert row["n"] == 7


def test_compare_section_in_the_run_file(toy_registry, tmp_path, capsys):
    models = MODELS + [{"name": "fake-c", "backend": "fake", "params": {"seed": 5}}]
    out = run(tmp_path, "r", models=models, compare={"baseline": "fake-c", "resamples": 500, "seed": 3})
    cap = capsys.readouterr()
    report = json.loads((out / "compare.json").read_text())
    assert [(c["baseline"], c["model"]) for c in report["comparisons"]] == [("fake-c", A), ("fake-c", B)]
    assert report["resamples"] == 500 and report["seed"] == 3
    assert "### fake-a vs fake-c (baseline)" in cap.out and (out / "compare.md").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["compare"]["models"] == [A, B]
    # the same comparison from the command line
    assert main(["compare", str(out), "--baseline", "fake-c", "--resamples", "500", "--seed", "3"]) == 0
    assert capsys.readouterr().out == (out / "compare.md").read_text()
    # compare: true compares every model with the first
    out = run(tmp_path, "t", compare=True)
    assert [c["model"] for c in json.loads((out / "compare.json").read_text())["comparisons"]] == [B]


@pytest.mark.parametrize("section,needle", [
    ({"baseline": "fake-z"}, "compare.baseline: no evaluated model is named 'fake-z' (did you mean"),
    ({"models": ["fake-a", "nope"]}, "compare.models[1]: no evaluated model is named 'nope'"),
    ({"basline": "fake-a"}, "compare.basline: unknown key 'basline' (did you mean 'baseline'?)"),
    ({"resamples": 5}, "compare.resamples: Input should be greater than or equal to 100"),
])
def test_compare_section_is_validated(toy_registry, tmp_path, capsys, section, needle):
    code = main(["validate", str(write_run(tmp_path, "v", compare=section))])
    err = capsys.readouterr().err
    one_line_error(code, err, needle)
    assert "v.yaml:" in err


def test_compare_section_needs_two_models(toy_registry, tmp_path, capsys):
    code = main(["validate", str(write_run(tmp_path, "v", models=[MODELS[0]], compare=True))])
    one_line_error(code, capsys.readouterr().err, "compare: needs two evaluated models")


def test_bad_input_is_one_line_and_exit_2(toy_registry, tmp_path, capsys):
    out = run(tmp_path, "r", models=[MODELS[0]])
    other = run(tmp_path, "o", models=[MODELS[1]], datasets=[{"name": "elsewhere", "loader": "toy"}])
    s0 = run(tmp_path, "s0", models=[MODELS[1]], datasets=[{"loader": "toy", "subsets": ["s0"]}])
    s1 = run(tmp_path, "s1", models=[MODELS[0]], datasets=[{"loader": "toy", "subsets": ["s1"]}])
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    cases = [
        (["compare", str(tmp_path / "missing")], "missing: no such run folder"),
        (["compare", str(tmp_path / "empty"), str(out)], "not a finished luopan run (no summary.json)"),
        (["compare", str(out)], "only one model (fake-a) to compare; give a second run folder"),
        (["compare", str(out), str(other)], "have no dataset in common"),
        (["compare", str(s1), str(s0)], "answered no question in common (fake-b: toy: no question answered by both)"),
        (["compare", str(out), str(other), "--baseline", "fake"], "--baseline fake: no such model in"),
        (["compare", str(out), str(s0), "--resamples", "0"], "--resamples 0: must be at least 1"),
    ]
    for argv, needle in cases:
        code = main(argv)
        cap = capsys.readouterr()
        one_line_error(code, cap.err, needle)
        assert cap.out == ""


def test_the_real_command_line(tmp_path):
    """In a subprocess: what a user sees (no traceback, one line, exit 2), and --help."""
    r = subprocess.run([sys.executable, "-m", "luopan.cli", "compare", str(tmp_path / "nowhere")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such run folder"
    r = subprocess.run([sys.executable, "-m", "luopan.cli", "compare", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--baseline MODEL" in r.stdout and "McNemar" in r.stdout


def test_summary_notes_overlapping_intervals_and_different_settings(toy_registry, tmp_path, capsys):
    models = [MODELS[0], {**MODELS[1], "generation": {"max_new_tokens": 9}}]
    out = run(tmp_path, "r", models=models,
              datasets=[{"loader": "toy", "params": {"subsets": 2, "per_subset": 10}, "mode": "generate"}])
    md = (out / "summary.md").read_text()
    assert "toy: the 95% intervals of the top models overlap" in md
    assert "toy: the models ran it with different settings (version fake-a " in md
    data = json.loads((out / "summary.json").read_text())
    [table] = data["tables"]
    assert table["columns"][-1] == "version" and len(table["stats"]) == len(table["rows"])
    overall = table["rows"].index(next(r for r in table["rows"] if r[1] == "overall (mean)"))
    cell = table["stats"][overall][A]
    assert set(cell) == {"n", "se", "ci", "method", "version"} and cell["n"] == 20
    assert table["rows"][overall][-1] == " / ".join(dict.fromkeys(c["version"] for c in table["stats"][overall].values()))
