"""The Python API as a notebook uses it: evaluate twice in one process with different data folders, typed
results, per-sample records on demand, results read back from a folder, errors raised (never an exit)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = r'''
import json, os, sys
import luopan

out = sys.argv[1]
a, b = sys.argv[2], sys.argv[3]
qa = {"name": "qa", "loader": "files", "mode": "generate", "evaluator": "exact_match",
      "params": {"path": "qa.jsonl", "prompt": "q", "target": "a"}}
first = luopan.evaluate(models=[{"preset": "fake", "kind": "chat"}], datasets=[qa], output_dir=out, name="a",
                        data=[a])
second = luopan.evaluate(models=[{"preset": "fake", "kind": "chat"}], datasets=[qa, "cmmlu_ppl"], output_dir=out,
                         name="b", data=[b], cache=False)
try:
    luopan.evaluate(models=["fake"], datasets=["cmmluu"], output_dir=out, name="c")
except luopan.ConfigError as exc:
    error = str(exc)
s1, s2 = first.score("fake", "qa"), second.score("fake", "qa")
back = luopan.load_results(os.path.join(out, "b"))
print(json.dumps({
    "n": [s1.n, s2.n],
    "targets_a": [p["target"] for p in first.predictions("fake", "qa")],
    "targets_b": [p["target"] for p in second.predictions("fake", "qa")],
    "ppl": [second.score("fake", "cmmlu_ppl").n, second.score("fake", "cmmlu_ppl").metric],
    "ppl_mode": json.load(open(os.path.join(out, "b", "results", "fake", "cmmlu_ppl.json")))["provenance"]["mode"],
    "back": [(s.model, s.dataset, s.value) for s in back.scores()] == [(s.model, s.dataset, s.value)
                                                                        for s in second.scores()],
    "error": error,
    "markdown": "| qa |" in second.to_markdown(),
}))
'''


def _questions(folder: Path, n: int, tag: str) -> None:
    folder.mkdir(parents=True)
    (folder / "qa.jsonl").write_text("".join(json.dumps({"q": f"{tag} {i}?", "a": f"{tag}{i}"}) + "\n"
                                             for i in range(n)), encoding="utf-8")


def test_evaluate_twice_in_one_process_with_different_data_folders(tmp_path):
    _questions(tmp_path / "a", 2, "alpha")
    _questions(tmp_path / "b", 4, "beta")
    r = subprocess.run([sys.executable, "-c", NOTEBOOK, str(tmp_path / "out"), str(tmp_path / "a"),
                        str(tmp_path / "b")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["n"] == [2, 4]
    assert got["targets_a"] == ["alpha0", "alpha1"] and got["targets_b"] == [f"beta{i}" for i in range(4)]
    assert got["ppl"][0] == 11582 and got["ppl_mode"] == "likelihood"  # the OpenCompass name picks the mode
    assert got["back"] and got["markdown"]
    assert "unknown dataset preset 'cmmluu'" in got["error"] and "did you mean 'cmmlu'" in got["error"]


def test_model_and_dataset_short_forms():
    from luopan.api import dataset_entry, model_entry

    assert model_entry("smollm2-135m-instruct") == {"preset": "smollm2-135m-instruct"}
    assert model_entry("hf:/models/qwen") == {"name": "qwen", "backend": "hf", "params": {"path": "/models/qwen"}}
    assert model_entry("llamacpp:/m/x.Q4.gguf") == {"name": "x.Q4", "backend": "llamacpp",
                                                    "params": {"path": "/m", "gguf_file": "x.Q4.gguf"}}
    assert model_entry("openai:gpt-4o")["params"] == {"model": "gpt-4o"}
    presets = ["cmmlu", "mmlu", "gsm8k"]
    assert dataset_entry("cmmlu_gen", presets) == {"preset": "cmmlu", "name": "cmmlu_gen", "mode": "generate"}
    assert dataset_entry("mmlu_ppl", presets) == {"preset": "mmlu", "name": "mmlu_ppl", "mode": "likelihood"}
    assert dataset_entry("gsm8k", presets) == {"preset": "gsm8k"}


def test_load_results_of_a_folder_that_is_not_a_run(tmp_path):
    import luopan

    with pytest.raises(luopan.ConfigError, match="not a luopan run folder|no such file"):
        luopan.load_results(tmp_path)


def test_an_opencompass_name_inside_an_entry():
    from luopan.api import dataset_entry

    assert dataset_entry({"preset": "mmlu_ppl", "limit": 2}, ["mmlu"]) == {
        "preset": "mmlu", "limit": 2, "name": "mmlu_ppl", "mode": "likelihood"}
    assert dataset_entry({"preset": "mmlu_gen", "mode": "likelihood"}, ["mmlu"])["mode"] == "likelihood"


def test_prediction_files_put_shards_in_shard_order(tmp_path):
    from luopan import prediction_files

    folder = tmp_path / "predictions" / "m"
    folder.mkdir(parents=True)
    for k in range(1, 12):
        (folder / f"d.shard{k}of11.jsonl").write_text(f'{{"id": "{k}"}}\n')
    assert [f.name for f in prediction_files(tmp_path, "m", "d")] == [f"d.shard{k}of11.jsonl" for k in range(1, 12)]
    (folder / "d.jsonl").write_text('{"id": "whole"}\n')  # the unit's own file, when it has one
    assert prediction_files(tmp_path, "m", "d") == [folder / "d.jsonl"]
    assert prediction_files(tmp_path, "m", "other") == []
