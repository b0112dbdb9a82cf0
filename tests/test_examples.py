"""Every run file in examples/ works as shipped: ``luopan validate`` and ``luopan run --dry-run`` succeed with the
data folder set (API keys: dummy values), dry runs load no weights, and without the data folder validate says what
is missing, one line per problem, naming LUOPAN_DATA. Everything goes through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.y*ml"))
DATA = os.environ.get("LUOPAN_DATA") or str(REPO.parent / "shared" / "datasets")
#: model libraries that checking a run must not import (validate stays well under a second)
HEAVY = ("torch", "transformers", "llama_cpp", "openai", "vllm", "lmdeploy", "opencc", "math_verify")

#: runs the command line in this process after replacing the load() of every in-process engine backend with a
#: failure: a dry run that loads weights exits 3 naming the backend, and the heavy engine modules stay unimported
GUARDED = """
import sys
import luopan.components as c

ENGINES = ("luopan_hf", "luopan_llamacpp", "luopan_vllm", "luopan_lmdeploy")

def guard(cls, **kw):
    if cls.__module__.split(".")[0] in ENGINES:
        def load(self, *a, **k):
            print(f"WEIGHTS LOADED by {cls.__name__}", file=sys.stderr)
            sys.exit(3)
        cls.load = load

c.Backend.__init_subclass__ = classmethod(guard)
from luopan.cli import main
rc = main(sys.argv[2:])
loaded = [m for m in ("luopan_hf.model", "luopan_llamacpp.engine", "vllm", "lmdeploy") if m in sys.modules]
if loaded:
    print(f"ENGINE MODULES IMPORTED: {loaded}", file=sys.stderr)
    sys.exit(4)
heavy = sorted(m for m in sys.argv[1].split(",") if m and m in sys.modules)
print(f"HEAVY: {heavy}")
sys.exit(rc)
"""


def _api_key_vars() -> list[str]:
    """Every environment variable an API model preset reads its key from."""
    from luopan.plugins import load_registry

    reg = load_registry()
    names = {(p.fields.get("params") or {}).get("api_key_env") for p in reg.presets["model"].values()}
    return sorted(n for n in names if isinstance(n, str) and n)


def _env(*, data: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LUOPAN_DATA", None)
    if data:
        env["LUOPAN_DATA"] = DATA
    for name in _api_key_vars():
        env[name] = "sk-dummy-example-key"
    return env


def _luopan(args: list[str], cwd: Path, env: dict[str, str], heavy: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", GUARDED, ",".join(heavy), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_examples_are_there():
    assert len(EXAMPLES) >= 6, EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates_cheaply(example, tmp_path):
    r = _luopan(["validate", str(example)], tmp_path, _env(data=True), HEAVY)
    assert r.returncode == 0, r.stderr
    assert f"{example}: ok" in r.stdout
    assert "HEAVY: []" in r.stdout, r.stdout  # packages found, not imported
    assert "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_dry_run_plans_without_loading_weights(example, tmp_path):
    r = _luopan(["run", str(example), "--dry-run", "--output-dir", str(tmp_path / "out")], tmp_path,
                _env(data=True))
    assert r.returncode == 0, r.stderr
    assert "plan:" in r.stdout and "total:" in r.stdout, r.stdout
    assert "a real run stops here" not in r.stderr, r.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_without_data_folder_says_so_once_per_problem(example, tmp_path):
    r = _luopan(["validate", str(example)], tmp_path, _env(data=False))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert errors, r.stderr
    assert lines == errors or (lines[:-1] == errors and lines[-1].endswith("nothing was run")), r.stderr
    for line in errors:
        assert "LUOPAN_DATA is not set" in line and "export LUOPAN_DATA=" in line, line
        assert str(tmp_path) in line and str(example.parent) in line, line  # the folders searched
    assert len(set(errors)) == len(errors), r.stderr  # nothing said twice
    assert "Traceback" not in r.stderr


def test_examples_say_which_package_is_missing(tmp_path):
    """After the README's quickstart set-up (luopan[hf] only), the API and needle examples name the extra that
    is missing instead of failing at run time."""
    hide = ("openai", "tenacity", "opencc")
    script = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in hide) + GUARDED
    env = _env(data=True)
    for name, expected in (("puyu_cmmlu.yaml", ["the openai and tenacity packages are not installed: "
                                                "pip install 'luopan[api]'"]),
                           ("needle_smollm2.yaml", ["the opencc package is not installed: pip install "
                                                    "'luopan[needle]'"])):
        r = subprocess.run([sys.executable, "-c", script, "", "validate", str(REPO / "examples" / name)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 2, r.stdout + r.stderr
        for text in expected:
            assert text in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        problems = [ln for ln in lines if ln.startswith("error: ")]
        assert problems and lines == problems + ([f"{len(problems)} problems; nothing was run"]
                                                 if len(problems) > 1 else []), r.stderr
