"""The openai backend's likelihood path end to end, against a correct echo-logprobs server.

``echo_server.EchoServer`` answers ``/v1/completions`` with ``echo=True, logprobs=1`` as OpenAI's legacy API
does, computed by SmolLM2-135M-Instruct with the very weights the ``hf`` backend loads. One run scores real
questions with both backends (the ``openai`` one through that server, the ``hf`` one in process) and every
choice's log-probability must agree.

Why they may differ, and by how much:

* the numbers: the same float32 weights on the same CPU, but the ``hf`` backend scores a question's choices in
  one packed, padded forward pass with a custom attention mask (and a cached few-shot prefix) while the server
  runs one plain forward pass per request, so float32 sums are reduced in other orders. Measured: at most
  2.3e-5 over the 120 choices below (a letter, or a whole answer of many tokens; -0.8 to -54). ``ATOL`` =
  2e-3, about a hundred times that, yet far below what a client mistake costs: scoring each token by the wrong
  position, or a token counted on the wrong side of the boundary, moves a sum by a whole token's
  log-probability, typically units (a near-certain token is the exception: the token counts checked exactly in
  ``test_a_token_across_the_boundary_counts_as_continuation`` cover it).
* the tokens: the server tokenizes context + continuation together and the client sums every token that
  reaches into the continuation; the ``hf`` backend tokenizes the context alone (lm-eval's rule, trailing
  whitespace moved to the continuation) and, where a token merges across the boundary, the continuation on its
  own. Where the two differ the scores legitimately differ, so the test tokenizes each pair both ways and
  holds only the pairs tokenized alike to ``ATOL`` (all 120 below: SmolLM2's tokenizer merges nothing across
  "答案：", "Answer:" or " " boundaries). ``test_a_token_across_the_boundary_counts_as_continuation`` builds
  such merges on purpose and checks the client's sum against the model directly.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import yaml
from echo_server import EchoServer, load_smollm2

from luopan.cli import main
from luopan.errors import ConfigError
from luopan.types import LoglikelihoodRequest
from luopan_openai.backend import PROBE, PROBE_MIN_MEAN, OpenAIBackend

pytestmark = pytest.mark.slow

ATOL = 2e-3
CMMLU_SUBJECTS = ["agronomy", "world_religions"]
MMLU_SUBJECTS = ["world_religions", "high_school_geography"]
N = 5


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2()


@pytest.fixture(scope="module")
def echo(smollm2):
    with EchoServer(*smollm2) as server:
        yield server


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("LUOPAN_STATE_DIR", str(tmp_path / "state"))


def _text_choices(folder: Path) -> Path:
    """Real questions whose choices are full texts (continuations of many tokens): the first CMMLU agronomy
    questions (Chinese, right after "答案：") and the first ARC-Easy ones (after "Answer:" and a space)."""
    import csv
    import os

    root = Path(os.environ["LUOPAN_DATA"])
    rows = []
    with open(root / "cmmlu" / "test" / "agronomy.csv", encoding="utf-8") as fh:
        for r in list(csv.DictReader(fh))[:N]:
            rows.append({"q": f"题目：{r['Question']}\n答案：", "choices": [r[c] for c in "ABCD"],
                         "gold": "ABCD".index(r["Answer"])})
    with open(root / "arc" / "ARC-Easy-Test.jsonl", encoding="utf-8") as fh:
        for line in fh.read().splitlines()[:N]:
            r = json.loads(line)
            labels = [c["label"] for c in r["question"]["choices"]]
            rows.append({"q": f"Question: {r['question']['stem']}\nAnswer:",
                         "choices": [" " + c["text"] for c in r["question"]["choices"]],
                         "gold": labels.index(r["answerKey"])})
    path = folder / "text_choices.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_run(folder: Path, base_url: str) -> Path:
    cfg = {
        "run": {"name": "lik", "output_dir": str(folder / "out")},
        "models": [
            {"name": "api", "backend": "openai", "kind": "base",
             "params": {"base_url": base_url, "model": "smollm2", "api_key_env": None, "max_concurrency": 4}},
            {"name": "hf", "preset": "smollm2-135m-instruct", "kind": "base"},
        ],
        "datasets": [
            {"preset": "cmmlu", "subsets": CMMLU_SUBJECTS, "limit_per_subset": N, "mode": "likelihood"},
            {"preset": "mmlu", "subsets": MMLU_SUBJECTS, "limit_per_subset": N, "mode": "likelihood", "shots": 1},
            {"name": "text", "loader": "files", "mode": "likelihood",
             "params": {"path": str(_text_choices(folder)), "prompt": "q", "choices": "choices",
                        "target_index": "gold", "target_delimiter": ""}},
        ],
    }
    path = folder / "lik.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def _predictions(folder: Path, model: str, dataset: str) -> list[dict]:
    path = folder / "out" / "lik" / "predictions" / model / f"{dataset}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _same_tokens(lm, context: str, continuation: str) -> bool:
    """Whether the tokens the client sums (those of context + continuation that reach past the context) are the
    ones the hf backend scores (its split of the pair), after the same context tokens."""
    from luopan_hf.likelihood import encode_pair

    whole = lm.tokenizer(context + continuation, return_offsets_mapping=True)
    ids, offs = whole["input_ids"], whole["offset_mapping"]
    n_ctx = sum(1 for _, e in offs if e <= len(context))
    ctx, cont = encode_pair(lm, context, continuation)
    return ids[n_ctx:] == cont and ids[:n_ctx] == ctx


def test_echo_logprobs_match_the_hf_backend(tmp_path, echo, smollm2):
    from luopan_hf.model import wrap_model

    lm = wrap_model(*smollm2)
    before = dict(echo.stats)
    t0 = time.monotonic()
    assert main(["run", str(_write_run(tmp_path, echo.base_url)), "--no-progress"]) == 0  # the probe passed
    elapsed = time.monotonic() - t0

    diffs, merged, mismatched = [], [], []
    n_choices = agree = n_questions = 0
    for dataset in ("cmmlu", "mmlu", "text"):
        api, hf = _predictions(tmp_path, "api", dataset), _predictions(tmp_path, "hf", dataset)
        assert [p["id"] for p in api] == [p["id"] for p in hf] and api
        for a, h in zip(api, hf):
            n_questions += 1
            agree += a["prediction"] == h["prediction"]
            for choice, la, lh in zip(a["choices"], a["logprobs"], h["logprobs"]):
                n_choices += 1
                assert math.isfinite(la) and la < 0
                d = abs(la - lh)
                if _same_tokens(lm, a["prompt"], choice):
                    diffs.append(d)
                    if d > ATOL:
                        mismatched.append((a["id"], choice, la, lh))
                else:
                    merged.append((a["id"], choice, round(la, 4), round(lh, 4)))
    busy, tokens = echo.stats["busy_s"] - before["busy_s"], echo.stats["tokens"] - before["tokens"]
    report = (f"{n_choices} choices of {n_questions} questions in {elapsed:.0f} s (server: {tokens:.0f} tokens in "
              f"{busy:.0f} s); same tokens: {len(diffs)}, "
              f"max |diff| {max(diffs):.2e}; tokenized differently at the boundary: {len(merged)} {merged}")
    print(report)
    assert not mismatched, f"{mismatched}\n{report}"
    assert len(merged) <= n_choices // 4, report
    assert agree == n_questions, report
    # one request per choice, plus the probe
    assert echo.stats["requests"] - before["requests"] == n_choices + 1


def test_probe_passes_here_and_refuses_shifted_logprobs(echo, smollm2):
    import openai

    client = openai.OpenAI(base_url=echo.base_url, api_key="EMPTY", max_retries=0)
    r = client.completions.create(model="smollm2", prompt=PROBE, echo=True, logprobs=1, max_tokens=1,
                                  temperature=0.0)
    lp = r.choices[0].logprobs
    n = r.usage.prompt_tokens
    assert len(lp.tokens) == n + 1 and lp.text_offset[n] == len(PROBE) and lp.token_logprobs[0] is None
    assert "".join(lp.tokens[:n]) == PROBE and r.choices[0].text == PROBE + lp.tokens[n]
    later = lp.token_logprobs[n // 2 : n]
    assert sum(later) / len(later) > -1.0 > PROBE_MIN_MEAN  # counting is easy when scored correctly

    with EchoServer(*smollm2, shifted=True) as wrong:
        b = OpenAIBackend(base_url=wrong.base_url, model="smollm2", api_key_env=None)
        try:
            with pytest.raises(ConfigError, match="do not score each token given the tokens before it"):
                b.loglikelihood([LoglikelihoodRequest("The capital of France is", " Paris")])
        finally:
            b.close()


@pytest.mark.parametrize("check", [True, False])
def test_a_server_without_logprobs_is_a_clear_error(smollm2, check):
    with EchoServer(*smollm2, omit_logprobs=True) as server:
        b = OpenAIBackend(base_url=server.base_url, model="smollm2", api_key_env=None, logprobs_check=check)
        try:
            with pytest.raises(ConfigError, match="returned no prompt logprobs for echo=True"):
                b.loglikelihood([LoglikelihoodRequest("The capital of France is", " Paris")])
        finally:
            b.close()
        assert server.stats["requests"] == 1  # not retried


def test_a_token_across_the_boundary_counts_as_continuation(echo, smollm2):
    """Pairs whose joint tokenization merges across the boundary (or splits a character into byte tokens): the
    backend must sum exactly the joint tokens that reach into the continuation, each given all tokens before it,
    which is computed here from the model directly."""
    import torch

    model, tok = smollm2
    pairs = [("The capital of Fr", "ance is Paris."), ("Hello wor", "ld"), ("1, 2, 3, 4, 1", "5, 16"),
             ("答", "案：B"), ("题目：土", "地"), ("Question: 2+2=?\nAnswer:", " 4"),
             ("Thank you very mu", "ch!"), ("It is rain", "ing today")]
    b = OpenAIBackend(base_url=echo.base_url, model="smollm2", api_key_env=None, logprobs_check=False)
    try:
        got = b.loglikelihood([LoglikelihoodRequest(c, x) for c, x in pairs])
    finally:
        b.close()
    straddling = 0
    for (context, continuation), r in zip(pairs, got):
        enc = tok(context + continuation, return_offsets_mapping=True)
        ids, offs = enc["input_ids"], enc["offset_mapping"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        scored = [k for k in range(1, len(ids)) if offs[k][1] > len(context)]
        straddling += any(offs[k][0] < len(context) for k in scored)
        want = sum(float(logp[k - 1, ids[k]]) for k in scored)
        greedy = all(int(logp[k - 1].argmax()) == ids[k] for k in scored)
        assert r.n_tokens == len(scored), (context, continuation)
        assert r.logprob == pytest.approx(want, abs=1e-4), (context, continuation)
        assert r.is_greedy == greedy
    assert straddling >= 4  # the pairs do merge across the boundary
