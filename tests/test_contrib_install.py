"""A community benchmark installed with pip: contrib/luopan-bench-example goes into a throwaway virtual
environment that sees this environment's packages (luopan itself, pip, setuptools) through a ``.pth`` file, and
that environment's python lists it and runs it through ``luopan run`` — the core names it nowhere and does not
change to admit it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "contrib" / "luopan-bench-example"
CLI = "import sys; from luopan.cli import main; sys.exit(main(sys.argv[1:]))"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kw)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("contrib") / "venv"
    # No pip of its own (3.11 would also put an old setuptools in it). ``--system-site-packages`` is no help:
    # from inside a virtual environment it names the *base* interpreter's site-packages, where luopan is not
    # installed. The packages of the environment running the tests are added explicitly instead.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    here = sysconfig.get_paths()
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    site.mkdir(parents=True, exist_ok=True)
    # site.addsitedir, not a bare path: the parent's own .pth files (luopan's editable install) are read too
    (site / "_luopan_test_parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys([here["purelib"], here["platlib"]])),
        encoding="utf-8")
    import setuptools

    major = int(setuptools.__version__.split(".")[0])
    assert major >= 77, (f"setuptools {setuptools.__version__} here cannot build the package (its PEP 639 licence "
                         f"needs >= 77): pip install 'setuptools>=77' (the dev extra asks for it)")
    # a copy of the package, so the build leaves nothing (build/, *.egg-info) in the repository
    src = venv.parent / "src"
    import shutil

    shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)])
    return python


def test_the_core_does_not_know_the_package():
    core = REPO / "core" / "luopan"
    for f in list(core.glob("*.py")) + [core / "registry.yaml"]:
        text = f.read_text(encoding="utf-8")
        assert "unit_conversion" not in text and "bench_example" not in text, f


@pytest.mark.slow  # ~30 s on 2 busy cores: a venv, a wheel build, four luopan processes
def test_installed_package_is_listed_with_its_distribution(venv_python):
    out = _run([str(venv_python), "-c", CLI, "list", "datasets"]).stdout
    line = next(x for x in out.splitlines() if x.strip().startswith("unit_conversion"))
    assert "[bench_example, luopan-bench-example]" in line
    out = _run([str(venv_python), "-c", CLI, "list", "evaluators"]).stdout
    assert "within_tolerance" in out
    which = _run([str(venv_python), "-c", CLI, "which", "units_mcq"]).stdout
    assert "luopan-bench-example" in which or "bench_example" in which
    # the global environment, where it is not installed, does not see it
    assert "unit_conversion" not in _run([sys.executable, "-c", CLI, "list", "datasets"]).stdout


@pytest.mark.slow
def test_installed_package_runs_through_luopan_run(venv_python, tmp_path):
    run = tmp_path / "units.yaml"
    run.write_text(
        f"run: {{output_dir: {tmp_path / 'out'}, name: u}}\n"
        "models:\n  - preset: fake\n  - {preset: fake, name: fake-chat, kind: chat}\n"
        "datasets:\n  - preset: units_mcq\n    shots: 1\n  - preset: units_qa\n",
        encoding="utf-8",
    )
    _run([str(venv_python), "-c", CLI, "run", str(run), "--no-progress"])
    out = tmp_path / "out" / "u"
    mcq = json.loads((out / "results" / "fake" / "units_mcq.json").read_text())
    assert mcq["error"] is None and mcq["metric"] == "accuracy"
    assert [s["subset"] for s in mcq["subsets"]] == ["length", "mass", "time", "volume"]
    assert sum(s["n"] for s in mcq["subsets"]) == 20  # 24 questions, one per kind used as the example
    assert mcq["provenance"]["plugins"]["bench_example"]["distribution"] == "luopan-bench-example"
    qa = json.loads((out / "results" / "fake-chat" / "units_qa.json").read_text())
    assert qa["error"] is None and qa["metric"] == "within_tolerance"
    assert sum(s["n"] for s in qa["subsets"]) == 24
    preds = [json.loads(x) for x in (out / "predictions" / "fake" / "units_mcq.jsonl").read_text().splitlines()]
    assert preds[0]["prompt"].startswith("Question: How many centimetres are in 3 metres?\nA. ")
    summary = (out / "summary.md").read_text()
    assert "units_mcq" in summary and "units_qa" in summary
