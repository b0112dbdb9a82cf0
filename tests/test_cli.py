"""The command line: list, which, plugins, --help, and what a broken plugin cannot break."""

from __future__ import annotations

import subprocess
import sys

from luopan.cli import main


def test_help_does_not_load_plugins():
    r = subprocess.run([sys.executable, "-c", "import sys, luopan.cli as c\n"
                        "try: c.main(['--help'])\nexcept SystemExit: pass\n"
                        "print('luopan_fake' in sys.modules, 'torch' in sys.modules)"],
                       capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "False False"


def test_import_luopan_imports_no_model_library():
    r = subprocess.run([sys.executable, "-c", "import sys, luopan, luopan.pipeline, luopan.config\n"
                        "print(sorted(m for m in ('torch', 'transformers', 'openai', 'lmdeploy') if m in sys.modules))"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stderr


def test_list_each_kind(toy_registry, capsys):
    for kind, expected in (("backends", "fake"), ("datasets", "toy"), ("evaluators", "toy_accuracy"),
                           ("summarizers", "default"), ("runners", "local"), ("presets", "cmmlu")):
        assert main(["list", kind]) == 0
        assert expected in capsys.readouterr().out, kind


def test_which_gives_one_answer(toy_registry, capsys):
    assert main(["which", "fake"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("backend 'fake': plugin 'fake' (distribution luopan")
    assert any(line.startswith("model preset 'fake': registry.yaml:") for line in out)
    assert main(["which", "cmmlu"]) == 0
    assert capsys.readouterr().out.strip().startswith("dataset preset 'cmmlu': registry.yaml:")
    assert main(["which", "cmmluu"]) == 2
    assert "did you mean 'cmmlu'" in capsys.readouterr().err


def test_plugins_lists_name_distribution_and_status(toy_registry, capsys):
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fake = next(ln for ln in lines if ln.startswith("fake "))
    assert "luopan" in fake and " ok " in fake and "backend:fake" in fake
