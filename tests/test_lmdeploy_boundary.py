"""The lmdeploy backend up to the engine boundary. **LMDeploy never ran here**: it needs CUDA and is not installed
on luopan's machines. Only the engine objects are replaced, by stand-ins of ``lmdeploy.pipeline``,
``TurbomindEngineConfig``, ``PytorchEngineConfig`` and ``GenerationConfig`` following LMDeploy's documented
interface (tests/engine_standins.py); these tests check what luopan sends (engine config, prompts rendered with the
Hugging Face chat template, generation config, token ids for ``get_ppl``) and how it reads what comes back
(``Response`` texts and token counts, perplexities turned into log-likelihoods). They say nothing about LMDeploy's
own numbers."""

from __future__ import annotations

import pytest
from engine_standins import install_lmdeploy, make_model_folder, toy_completion, toy_logprobs

from luopan.errors import MissingDependencyError
from luopan.tokenization import split_pair
from luopan.types import GenerationConfig, GenerationRequest, LoglikelihoodRequest

pytestmark = pytest.mark.boundary


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("toy-model"))


def _backend(folder, monkeypatch, **kw):
    install_lmdeploy(monkeypatch)
    from luopan_lmdeploy.backend import LMDeployBackend

    b = LMDeployBackend(path=str(folder), **kw)
    b.load()
    return b


@pytest.fixture
def backend(folder, monkeypatch):
    return _backend(folder, monkeypatch, tp=2, session_len=4096, cache_max_entry_count=0.5, quant_policy=8)


def test_turbomind_and_pytorch_engine_configs(folder, monkeypatch, backend):
    cfg = backend.pipe.backend_config
    assert type(cfg).__name__ == "TurbomindEngineConfig"
    assert (cfg.tp, cfg.session_len, cfg.cache_max_entry_count, cfg.quant_policy) == (2, 4096, 0.5, 8)
    assert backend.pipe.model_path == str(folder)
    pt = _backend(folder, monkeypatch, engine="pytorch", dtype="bfloat16").pipe.backend_config
    assert type(pt).__name__ == "PytorchEngineConfig" and pt.dtype == "bfloat16"


def test_generation_request_and_result_translation(backend):
    tok = backend.tokenizer
    reqs = [
        GenerationRequest(messages=(("user", "What is 2 + 2?"),),
                          config=GenerationConfig(max_new_tokens=40, stop=("\nQuestion:",))),
        GenerationRequest(prompt="Question: 1 + 1?\nAnswer:",
                          config=GenerationConfig(max_new_tokens=3, temperature=0.7, top_p=0.9, seed=5)),
    ]
    got = backend.generate(reqs)
    prompts, configs, kwargs = backend.pipe.calls[-1]
    assert kwargs["do_preprocess"] is False  # LMDeploy's own template registry not applied on top
    rendered = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}],
                                       add_generation_prompt=True, tokenize=False)
    # the tokenizer adds BOS itself, so the template's leading BOS is left to LMDeploy: one BOS, as on the hf path
    assert prompts[0] == rendered[len("<s>"):]
    assert tok.encode(prompts[0]) == tok.encode(rendered, add_special_tokens=False)
    assert prompts[1] == "Question: 1 + 1?\nAnswer:"
    c0, c1 = configs
    assert (c0.max_new_tokens, c0.do_sample, c0.stop_words, c0.include_stop_str_in_output) == (40, False, ["\nQuestion:"], True)
    assert (c1.max_new_tokens, c1.do_sample, c1.temperature, c1.top_p, c1.top_k, c1.random_seed) == (3, True, 0.7, 0.9, 0, 5)
    ids0 = tok.encode(prompts[0])
    full = tok.decode(toy_completion(tok, ids0), skip_special_tokens=True)
    assert got[0].text == full[: full.index("\nQuestion:")] and got[0].finish_reason == "stop"
    assert got[0].prompt_tokens == len(ids0)
    assert got[1].completion_tokens == 3 and got[1].finish_reason == "length"


def test_a_leading_bos_string_stays_when_the_tokenizer_does_not_add_one(backend, monkeypatch):
    # SmolLM2's BOS string is <|im_start|>, which its tokenizer never adds: it must stay in the text
    monkeypatch.setattr(backend, "_tokenizer_adds_bos", lambda: False)
    text = backend.prompt_text(GenerationRequest(messages=(("user", "hi"),)))
    assert text.startswith("<s><|im_start|>user")


REQUESTS = [
    LoglikelihoodRequest("The capital of France is", " Paris"),
    LoglikelihoodRequest("The capital of France is", " a city"),
    LoglikelihoodRequest("Question: what is 2 + 2?\nAnswer: ", "4"),
    LoglikelihoodRequest("", "hello world"),
    LoglikelihoodRequest("hello", ""),
]


def test_likelihood_from_get_ppl(backend):
    tok = backend.tokenizer
    got = backend.loglikelihood(REQUESTS)
    (sent,) = backend.pipe.ppl_calls[-1:]
    assert len(sent) == len({tuple(s) for s in sent}), "each distinct sequence is scored once"
    vocab = len(tok)
    for r, g in zip(REQUESTS, got):
        ctx, cont = split_pair(r.context, r.continuation, encode=lambda t: tok.encode(t),
                               encode_plain=lambda t: tok.encode(t, add_special_tokens=False),
                               prefix_token_id=tok.bos_token_id)
        if not cont:
            assert (g.logprob, g.n_tokens) == (0.0, 0)
            continue
        seq = ctx + cont
        assert seq in sent
        expected = sum(toy_logprobs(seq[len(ctx) + j - 1], vocab)[t] for j, t in enumerate(cont))
        assert g.logprob == pytest.approx(expected, abs=1e-9)
        assert g.n_tokens == len(cont)
        assert g.is_greedy is False  # get_ppl gives no per-token logits: never claimed


def test_identity_names_backend_engine_and_kv_policy(folder):
    from luopan_lmdeploy.backend import LMDeployBackend

    ident = LMDeployBackend(path=str(folder)).identity()
    assert ident["backend"] == "lmdeploy" and ident["engine"].endswith(" turbomind") and ident["weights"]
    assert LMDeployBackend(path=str(folder), quant_policy=4).identity() != ident
    assert LMDeployBackend(path=str(folder), engine="pytorch").identity() != ident


def test_without_lmdeploy_installed_the_error_says_which_extra(folder, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lmdeploy", None)
    from luopan_lmdeploy.backend import LMDeployBackend

    with pytest.raises(MissingDependencyError, match=r"pip install 'luopan\[lmdeploy\]'"):
        LMDeployBackend(path=str(folder)).load()
