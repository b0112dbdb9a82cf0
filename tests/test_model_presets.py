"""Every model preset in registry.yaml validates and plans offline, through the real CLI in a subprocess: one
run file with every preset as a model entry on one question of demo_mcq, ``luopan validate`` and ``luopan run
--dry-run`` (which builds each backend only for its identity: no weights are read, a hub id's is
``hub:<revision>``). The presets of open checkpoints on the Hugging Face hub are also checked field by
field."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from luopan.plugins import load_registry

SCRIPT = str(Path(sys.executable).parent / "luopan")

#: the presets of open checkpoints on the hub (backend hf, a hub id as path)
HUB_PRESETS = [
    "internlm2_5-7b-chat", "internlm2_5-7b", "internlm3-8b-instruct",
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-7b-instruct", "qwen2.5-7b", "qwen3-8b",
    "llama-3.1-8b-instruct", "llama-3.1-8b", "llama-3.2-1b-instruct", "llama-3.2-3b-instruct",
    "deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-7b",
    "glm-4-9b-chat", "glm-4-9b-chat-hf", "gemma-2-9b-it", "gemma-3-4b-it",
    "mistral-7b-instruct-v0.3", "mistral-7b-v0.3",
]
#: models that need the repository's own Python code (the rest load with transformers' own classes)
REMOTE_CODE = {"internlm2_5-7b-chat", "internlm2_5-7b", "glm-4-9b-chat"}
#: reasoning models: the card's sampling, a budget for the <think> block
REASONING = {"qwen3-8b", "deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-7b"}
GATED = ("meta-llama/", "google/", "mistralai/")
#: the pregenerated-answers presets name a folder of answer files; which model's answers to read is the user's
#: choice (params.model): here one that exists in $LUOPAN_DATA
ANSWERS_MODEL = {"mt-bench-answers": "gpt-4", "arena-hard-answers": "gpt-4-0314",
                 "alpaca-eval-answers": "gpt4_1106_preview"}


@pytest.fixture(scope="module")
def presets() -> dict[str, dict]:
    return {name: p.fields for name, p in load_registry().presets["model"].items()}


def luopan(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_every_model_preset_validates_and_plans_offline(presets, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    models = []
    for name, fields in sorted(presets.items()):
        entry: dict = {"preset": name}
        if fields.get("backend") == "answers":
            assert name in ANSWERS_MODEL, f"{name}: add a model with answers in $LUOPAN_DATA to ANSWERS_MODEL"
            entry["params"] = {"model": ANSWERS_MODEL[name]}
        key = (fields.get("params") or {}).get("api_key_env")
        if key:
            env[key] = "sk-dummy-never-sent"  # validate wants the variable set; a dry run sends nothing
        models.append(entry)
    run = {"run": {"name": "presets", "output_dir": str(tmp_path / "out")}, "models": models,
           "datasets": [{"preset": "demo_mcq", "limit": 1}]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run, sort_keys=False), encoding="utf-8")

    checked = luopan("validate", "run.yaml", cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stderr
    assert f"run.yaml: ok ({len(presets)} model(s) x 1 dataset(s))" in checked.stdout

    plan = luopan("run", "run.yaml", "--dry-run", cwd=tmp_path, env=env)
    assert plan.returncode == 0, plan.stderr
    assert "warning:" not in plan.stderr, plan.stderr
    assert f"plan: {len(presets)} unit(s)" in plan.stdout
    for name, fields in presets.items():
        mode = "generate" if fields.get("kind") == "chat" else "likelihood"
        assert f"  {name}/demo_mcq: mode={mode} subsets=1 samples=1 " in plan.stdout, (name, plan.stdout)
    assert not (tmp_path / "out" / "presets" / "predictions").exists()  # planned, nothing ran

    listed = luopan("list", "presets", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    for name, fields in presets.items():
        line = rf"^  {re.escape(name)} +{re.escape(fields['description'])}"
        assert re.search(line, listed.stdout, re.M), name


def test_every_hub_preset_is_checked_here(presets):
    hub = {name for name, p in presets.items()
           if p.get("backend") == "hf" and not p["params"]["path"].startswith("pkg:")}
    assert hub == set(HUB_PRESETS)


@pytest.mark.parametrize("name", HUB_PRESETS)
def test_hub_presets_name_an_open_checkpoint(presets, name):
    p = presets[name]
    path = p["params"]["path"]
    assert p.get("description") and p.get("kind") in ("chat", "base") and p.get("backend") == "hf"
    # a hub id (owner/repository), never a machine's folder; the preset is named after the repository
    assert re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path), path
    assert not os.path.isabs(os.path.expanduser(path)) and not path.startswith(("pkg:", "."))
    assert name == path.split("/")[1].lower()
    assert set(p["params"]) <= {"path", "trust_remote_code", "revision"}
    assert p["params"].get("trust_remote_code", False) == (name in REMOTE_CODE)
    assert p.get("hf") == {"dtype": "bfloat16"}
    assert re.search(r"\((?:reasoning )?(chat|base), ", p["description"]).group(1) == p["kind"]
    if path.startswith(GATED):
        assert "gated" in p["description"] and "huggingface-cli login" in p["description"]
    gen = p.get("generation") or {}
    if name in REASONING:
        assert gen == {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 32768}
        assert "<think>" in p["description"]
    else:
        assert not gen  # greedy, the run's budget


def test_hub_presets_identity_is_the_hub_revision(presets, tmp_path, monkeypatch):
    from luopan_hf.backend import HFBackend

    monkeypatch.chdir(tmp_path)  # a folder named like a hub id in the working directory would be used instead
    for name in HUB_PRESETS:
        p = presets[name]
        ident = HFBackend(**p["params"], **p["hf"]).identity()
        assert ident["weights"] == "hub:main" and ident["dtype"] == "bfloat16", (name, ident)
        assert ident["path"] == p["params"]["path"]
