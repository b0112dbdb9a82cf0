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


def test_progress_bar_shows_rate_and_eta_on_a_terminal(tmp_path):
    """Run in a pseudo-terminal, as a person would: the bar must show counts, a rate and an ETA."""
    import os
    import pty
    from pathlib import Path

    here = Path(__file__).parent
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"run: {{output_dir: {tmp_path}}}\n"
                   "models: [{backend: fake, params: {delay_s: 0.05, chunk_size: 8}}]\n"
                   "datasets: [{loader: toy, params: {subsets: 2, per_subset: 20}}]\n", encoding="utf-8")
    code = (f"import sys; sys.path.insert(0, {str(here)!r})\nimport toy_plugin\n"
            "from luopan.plugins import load_registry, reset_registry\n"
            "reset_registry(load_registry(extra_plugins=[('toy', toy_plugin)]))\n"
            f"from luopan.cli import main\nsys.exit(main(['run', {str(cfg)!r}]))\n")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=slave,
                            env=dict(os.environ, COLUMNS="160"))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode("utf-8", errors="replace")
    assert "fake/toy" in screen and "160/160" in screen
    assert "req/min" in screen and "ETA" in screen
