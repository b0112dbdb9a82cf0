"""The vllm backend up to the engine boundary. **vLLM never ran here**: it needs CUDA and is not installed on
luopan's machines. Only the engine object is replaced, by stand-ins of ``vllm.LLM`` and ``vllm.SamplingParams``
following vLLM's documented interface (tests/engine_standins.py); these tests check what luopan sends to it
(token ids, chat template, sampling parameters, stop strings) and how it reads what comes back (texts, token
counts, prompt logprobs). They say nothing about vLLM's own numbers."""

from __future__ import annotations

import pytest
from engine_standins import install_vllm, make_model_folder, toy_completion, toy_logprobs

from luopan.errors import MissingDependencyError
from luopan.tokenization import split_pair
from luopan.types import GenerationConfig, GenerationRequest, LoglikelihoodRequest

pytestmark = pytest.mark.boundary


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("toy-model"))


@pytest.fixture
def backend(folder, monkeypatch):
    install_vllm(monkeypatch)
    from luopan_vllm.backend import VLLMBackend

    b = VLLMBackend(path=str(folder), tensor_parallel_size=2, max_model_len=512, dtype="bfloat16",
                    gpu_memory_utilization=0.5, seed=7)
    b.load()
    return b


def test_engine_arguments(backend, folder):
    llm = backend.llm
    assert llm.model == str(folder)
    assert llm.kwargs["tensor_parallel_size"] == 2 and llm.kwargs["max_model_len"] == 512
    assert llm.kwargs["dtype"] == "bfloat16" and llm.kwargs["gpu_memory_utilization"] == 0.5
    assert llm.kwargs["seed"] == 7 and "quantization" not in llm.kwargs


def _expected(tok, context, continuation):
    """lm-eval's split with the tokenizer, and the toy model's log-likelihood of the continuation by hand."""
    ctx, cont = split_pair(
        context, continuation, encode=lambda t: tok.encode(t),
        encode_plain=lambda t: tok.encode(t, add_special_tokens=False), prefix_token_id=tok.bos_token_id,
    )
    seq = ctx + cont
    vocab = len(tok)
    lp, greedy = 0.0, True
    for j, t in enumerate(cont):
        row = toy_logprobs(seq[len(ctx) + j - 1], vocab)
        lp += row[t]
        greedy = greedy and max(range(vocab), key=lambda v: row[v]) == t
    return ctx, cont, lp, greedy


REQUESTS = [
    LoglikelihoodRequest("The capital of France is", " Paris"),
    LoglikelihoodRequest("The capital of France is ", "Paris."),  # trailing space moves to the continuation
    LoglikelihoodRequest("Question: what is 2 + 2?\nAnswer:", " 4"),
    LoglikelihoodRequest("", "hello world"),
    LoglikelihoodRequest("hello", ""),
]


def test_likelihood_request_and_result_translation(backend):
    got = backend.loglikelihood(REQUESTS)
    prompts, params = backend.llm.calls[-1]
    assert params.max_tokens == 1 and params.temperature == 0.0 and params.prompt_logprobs == 1
    tok = backend.tokenizer
    sent = iter(prompts)
    for r, g in zip(REQUESTS, got):
        ctx, cont, lp, greedy = _expected(tok, r.context, r.continuation)
        if not cont:  # nothing to score: never sent
            assert (g.logprob, g.is_greedy, g.n_tokens) == (0.0, True, 0)
            continue
        assert next(sent)["prompt_token_ids"] == ctx + cont
        assert g.n_tokens == len(cont)
        assert g.logprob == pytest.approx(lp, abs=1e-9)
        assert g.is_greedy == greedy


def _greedy_request(tok) -> LoglikelihoodRequest:
    """A request whose continuation is the toy model's top-1 token (so the greedy flag is checked both ways)."""
    ctx = tok.encode("hello world")
    row = toy_logprobs(ctx[-1], len(tok))
    for v in sorted(range(len(tok)), key=lambda v: -row[v]):
        text = tok.decode([v])
        if text and tok.encode("hello world" + text)[len(ctx):] == [v] and not text[:1].isspace():
            return LoglikelihoodRequest("hello world", text)
    raise AssertionError("no round-tripping top token")


def test_greedy_flag_from_the_top_ranked_prompt_logprob(backend):
    r = _greedy_request(backend.tokenizer)
    g = backend.loglikelihood([r])[0]
    assert g.is_greedy and g.logprob == pytest.approx(_expected(backend.tokenizer, r.context, r.continuation)[2])


def test_generation_request_and_result_translation(backend):
    tok = backend.tokenizer
    greedy = GenerationConfig(max_new_tokens=40, stop=("\nQuestion:",))
    sampled = GenerationConfig(max_new_tokens=3, temperature=0.7, top_p=0.9, seed=3)
    reqs = [
        GenerationRequest(messages=(("system", "Be brief."), ("user", "What is 2 + 2?")), config=greedy),
        GenerationRequest(prompt="Question: what is 2 + 2?\nAnswer:", config=sampled),
    ]
    got = backend.generate(reqs)
    prompts, params = backend.llm.calls[-1]
    # the chat template rendered as the hf backend renders it; BOS written by the template is not doubled
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "What is 2 + 2?"}],
                                   add_generation_prompt=True, tokenize=False)
    assert text.startswith("<s><|im_start|>system")
    assert prompts[0]["prompt_token_ids"] == tok.encode(text, add_special_tokens=False)
    assert prompts[1]["prompt_token_ids"] == tok.encode("Question: what is 2 + 2?\nAnswer:")
    p0, p1 = params
    assert (p0.temperature, p0.top_p, p0.max_tokens, p0.stop, p0.seed, p0.n) == (0.0, 1.0, 40, ["\nQuestion:"], None, 1)
    assert (p1.temperature, p1.top_p, p1.max_tokens, p1.stop, p1.seed) == (0.7, 0.9, 3, None, 3)
    full = tok.decode(toy_completion(tok, prompts[0]["prompt_token_ids"]), skip_special_tokens=True)
    assert got[0].text == full[: full.index("\nQuestion:")] and got[0].finish_reason == "stop"
    assert got[0].prompt_tokens == len(prompts[0]["prompt_token_ids"])
    assert got[0].completion_tokens == len(toy_completion(tok, prompts[0]["prompt_token_ids"]))
    assert got[1].completion_tokens == 3 and got[1].finish_reason == "length"


def test_prompt_longer_than_max_model_len_is_an_error(backend):
    from luopan.errors import ConfigError

    with pytest.raises(ConfigError, match="request 0 .*max_model_len 512"):
        backend.generate([GenerationRequest(prompt="hello world " * 400)])


def test_identity_names_backend_weights_and_options(folder):
    from luopan_vllm.backend import VLLMBackend

    ident = VLLMBackend(path=str(folder)).identity()
    assert ident["backend"] == "vllm" and ident["weights"] and ident["engine"].startswith("vllm ")
    assert VLLMBackend(path=str(folder), tensor_parallel_size=4).identity() != ident
    assert VLLMBackend(path=str(folder), chat_template="{{x}}").identity() != ident


def test_without_vllm_installed_the_error_says_which_extra(folder, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as on a machine without vLLM
    from luopan_vllm.backend import VLLMBackend

    with pytest.raises(MissingDependencyError, match=r"pip install 'luopan\[vllm\]'"):
        VLLMBackend(path=str(folder)).load()
