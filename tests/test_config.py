"""The run file: validated before anything runs, one-line errors with file, line, key and nearest name."""

from __future__ import annotations

import pytest

from luopan.cli import main

GOOD = """\
run:
  output_dir: {out}
models:
  - preset: fake
datasets:
  - loader: toy
    params: {{subsets: 2, per_subset: 3}}
"""


def write(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text.format(out=tmp_path / "outputs"), encoding="utf-8")
    return p


def err_of(capsys, tmp_path, text, *cmd):
    p = write(tmp_path, text)
    code = main([*(cmd or ("validate",)), str(p)])
    err = capsys.readouterr().err.strip()
    return code, err, p


def test_valid_file_validates(toy_registry, tmp_path, capsys):
    code, _, p = err_of(capsys, tmp_path, GOOD)
    assert code == 0


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (GOOD.replace("  output_dir:", "  outptu_dir:"), 2, "unknown key 'outptu_dir' (did you mean 'output_dir'?)"),
        (GOOD.replace("    params:", "    parmas:"), 7, "unknown key 'parmas' (did you mean 'params'?)"),
        (GOOD + "    shots: five\n", 8, "datasets[0].shots: Input should be a valid integer"),
        (GOOD + "    limit_per_subset: 0\n", 8, "datasets[0].limit_per_subset"),
        (GOOD + "    mode: perplexity\n", 8, "datasets[0].mode"),
        (GOOD.replace("preset: fake", "backend: fak"), 4, "unknown backend 'fak' (did you mean 'fake'?)"),
        (GOOD.replace("preset: fake", "preset: faek"), 4, "unknown model preset 'faek' (did you mean 'fake'?)"),
        (GOOD.replace("loader: toy", "loader: tyo"), 6, "unknown dataset 'tyo' (did you mean 'toy'?)"),
        (GOOD.replace("per_subset: 3", "per_subest: 3"), 7,
         "dataset 'toy': unknown key 'per_subest' (did you mean 'per_subset'?)"),
        (GOOD + "    evaluator: toy_acuracy\n", 8, "unknown evaluator 'toy_acuracy' (did you mean 'toy_accuracy'?)"),
        (GOOD.replace("models:\n  - preset: fake\n", "models: []\n"), 3, "models: List should have at least 1 item"),
        (GOOD + "extra_section: 1\n", 8, "unknown key 'extra_section'"),
        (GOOD.replace("output_dir: {out}", "output_dir: {out}\n  runner: lcoal"), 3,
         "unknown runner 'lcoal' (did you mean 'local'?)"),
    ],
)
def test_bad_input_gives_one_line_with_file_line_and_key(toy_registry, tmp_path, capsys, text, line, expected):
    code, err, p = err_of(capsys, tmp_path, text)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert f"{p}:{line}:" in err, err
    assert expected in err, err


def test_yaml_syntax_error_names_the_line(toy_registry, tmp_path, capsys):
    code, err, p = err_of(capsys, tmp_path, GOOD + "  - [unclosed\n")
    assert code == 2 and f"{p}:" in err and "invalid YAML" in err


def test_config_never_executes_code(toy_registry, tmp_path, capsys):
    marker = tmp_path / "pwned"
    text = GOOD + f"    description: !!python/object/apply:os.system ['touch {marker}']\n"
    code, err, _ = err_of(capsys, tmp_path, text)
    assert code == 2
    assert not marker.exists()


def test_duplicate_keys_are_an_error(toy_registry, tmp_path, capsys):
    code, err, p = err_of(capsys, tmp_path, GOOD + "    shots: 1\n    shots: 2\n")
    assert code == 2 and f"{p}:9" in err and "appears twice" in err


def test_two_models_with_one_name_is_an_error(toy_registry, tmp_path, capsys):
    code, err, p = err_of(capsys, tmp_path, GOOD.replace("  - preset: fake\n", "  - preset: fake\n  - preset: fake\n"))
    assert code == 2 and "named 'fake'" in err


def test_preset_fields_are_overridden_and_params_merged(toy_registry, tmp_path):
    from luopan.config import load_run

    reg = toy_registry
    reg.add_preset("dataset", "toy_small", {"loader": "toy", "params": {"subsets": 5, "per_subset": 2}, "shots": 1},
                   "test")
    p = write(tmp_path, GOOD.replace("loader: toy\n    params: {{subsets: 2, per_subset: 3}}",
                                     "preset: toy_small\n    params: {{per_subset: 4}}"))
    cfg = load_run(str(p), reg)
    d = cfg.datasets[0]
    assert d.params["subsets"] == 5 and d.params["per_subset"] == 4 and d.shots == 1
    assert d.label == "toy_small" and d.preset == "toy_small"


def test_unknown_subset_names_the_nearest(toy_registry, tmp_path, capsys):
    code, err, p = err_of(capsys, tmp_path, GOOD + "    subsets: [s0, s9x]\n", "run", "--dry-run")
    assert code == 2 and "unknown subset 's9x'" in err


def test_run_preset_by_name(toy_registry, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toy_registry.add_preset("run", "toyrun", {"models": [{"preset": "fake"}], "datasets": [{"loader": "toy"}]}, "t")
    assert main(["run", "toyrun", "--dry-run"]) == 0
    assert "fake/toy" in capsys.readouterr().out
    assert main(["run", "toyrn", "--dry-run"]) == 2
    assert "did you mean 'toyrun'" in capsys.readouterr().err
