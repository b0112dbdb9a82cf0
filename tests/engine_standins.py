"""Stand-ins for the vLLM and LMDeploy engines, for the boundary tests only.

vLLM and LMDeploy need CUDA and are not installed on luopan's machines: their engines have never run here. These
stand-ins replace only the engine objects, at the interface the libraries document (class and field names as in
``vllm/sampling_params.py``, ``vllm/outputs.py``, ``vllm/entrypoints/llm.py``, ``lmdeploy/api.py``,
``lmdeploy/messages.py``, ``lmdeploy/pipeline.py``): unknown keyword arguments are errors, as they are for the
real dataclasses. The "model" behind them is a fixed toy distribution (:func:`toy_logprobs`) so the tests can
compute every expected number by hand; it says nothing about the real engines' numbers.

The tokenizer is real: a small byte-level BPE built with ``tokenizers`` and loaded through transformers'
``AutoTokenizer``, as both engines load a model folder's tokenizer.
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The capital of France is Paris.",
    "Question: what is 2 + 2?\nAnswer: 4",
    "以下是关于农学的单项选择题，请直接给出正确答案的选项。",
    "hello world, a reply of some tokens",
]


def make_model_folder(folder: Path) -> Path:
    """A Hugging Face model folder: a real tokenizer (BOS added by default, a ChatML-like chat template),
    config.json and a placeholder weights file (the stand-in engines never read weights)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, show_progress=False, special_tokens=["<s>", "</s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 256)
    return folder


def toy_logprobs(prev: int, vocab: int) -> list[float]:
    """log P(next token | previous token): a fixed, causal toy distribution over the vocabulary."""
    scores = [((prev * 31 + v * 17) % 13) / 3.0 for v in range(vocab)]
    m = max(scores)
    lse = m + math.log(sum(math.exp(s - m) for s in scores))
    return [s - lse for s in scores]


def toy_completion(tokenizer: Any, prompt_ids: list[int]) -> list[int]:
    """What the toy engines "generate" for a prompt."""
    return list(tokenizer.encode(f" reply {len(prompt_ids)} tokens\nQuestion: more", add_special_tokens=False))


# ---------------------------------------------------------------- vLLM


@dataclass
class SamplingParams:
    """vllm.SamplingParams: the documented fields this backend may set (others would be an error here)."""

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool = True


class LLM:
    """vllm.LLM's constructor arguments, get_tokenizer() and generate(prompts, sampling_params, use_tqdm)."""

    ARGS = {
        "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code", "tensor_parallel_size",
        "dtype", "quantization", "revision", "tokenizer_revision", "seed", "gpu_memory_utilization",
        "swap_space", "cpu_offload_gb", "enforce_eager", "max_model_len", "enable_prefix_caching",
        "distributed_executor_backend", "kv_cache_memory_bytes",
    }
    instances: list[LLM] = []

    def __init__(self, model: str, **kwargs: Any) -> None:
        unknown = set(kwargs) - self.ARGS
        if unknown:
            raise TypeError(f"LLM() got unexpected keyword arguments {sorted(unknown)}")
        from transformers import AutoTokenizer

        self.model = model
        self.kwargs = kwargs
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.calls: list[tuple[list[Any], Any]] = []
        LLM.instances.append(self)

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(self, prompts: Any, sampling_params: Any = None, *, use_tqdm: bool = True) -> list[RequestOutput]:
        prompts = prompts if isinstance(prompts, list) else [prompts]
        self.calls.append((prompts, sampling_params))
        vocab = len(self.tokenizer)
        out = []
        for i, p in enumerate(prompts):
            sp = sampling_params[i] if isinstance(sampling_params, list) else sampling_params
            ids = list(p["prompt_token_ids"])
            plp = None
            if sp.prompt_logprobs is not None:
                plp = [None]
                for pos in range(1, len(ids)):
                    row = toy_logprobs(ids[pos - 1], vocab)
                    order = sorted(range(vocab), key=lambda v: -row[v])
                    entry = {v: Logprob(row[v], order.index(v) + 1) for v in order[: sp.prompt_logprobs]}
                    entry[ids[pos]] = Logprob(row[ids[pos]], order.index(ids[pos]) + 1)
                    plp.append(entry)
            toks = toy_completion(self.tokenizer, ids)[: sp.max_tokens]
            text = self.tokenizer.decode(toks, skip_special_tokens=sp.skip_special_tokens)
            finish = "length"
            stops = [sp.stop] if isinstance(sp.stop, str) else (sp.stop or [])
            hits = [text.find(s) for s in stops if s in text]
            if hits:  # documented: the returned output does not contain the stop strings
                text, finish = text[: min(hits)], "stop"
            out.append(RequestOutput(str(i), None, ids, plp, [CompletionOutput(0, text, toks, None, None, finish)]))
        return out


def install_vllm(monkeypatch: Any) -> types.ModuleType:
    mod = types.ModuleType("vllm")
    mod.LLM = LLM  # type: ignore[attr-defined]
    mod.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    LLM.instances = []
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


# ---------------------------------------------------------------- LMDeploy


@dataclass
class GenerationConfig:
    """lmdeploy.GenerationConfig: documented fields and the checks of its __post_init__."""

    n: int = 1
    max_new_tokens: int = 512
    do_sample: bool = False
    top_p: float = 1.0
    top_k: int = 50
    min_p: float = 0.0
    temperature: float = 0.8
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    random_seed: int | None = None
    stop_words: list[str] | None = None
    bad_words: list[str] | None = None
    stop_token_ids: list[int] | None = None
    bad_token_ids: list[int] | None = None
    min_new_tokens: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    logprobs: int | None = None
    response_format: dict | None = None
    logits_processors: list | None = None
    output_logits: str | None = None
    output_last_hidden_state: str | None = None
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        assert type(self.n) is int and self.n > 0
        assert 0 <= self.top_p <= 1
        assert self.top_k >= 0
        assert 0 <= self.temperature <= 2
        assert 0 <= self.min_p <= 1


@dataclass
class TurbomindEngineConfig:
    dtype: str = "auto"
    model_format: str | None = None
    tp: int = 1
    session_len: int | None = None
    max_batch_size: int | None = None
    cache_max_entry_count: float = 0.8
    cache_block_seq_len: int = 64
    enable_prefix_caching: bool = False
    quant_policy: int = 0
    download_dir: str | None = None
    revision: str | None = None
    max_prefill_token_num: int = 8192

    def __post_init__(self) -> None:
        assert self.dtype in ["auto", "float16", "bfloat16"]
        assert self.tp >= 1
        assert self.cache_max_entry_count > 0
        assert self.quant_policy in (0, 4, 8)


@dataclass
class PytorchEngineConfig:
    dtype: str = "auto"
    tp: int = 1
    session_len: int | None = None
    max_batch_size: int | None = None
    cache_max_entry_count: float = 0.8
    block_size: int = 64
    enable_prefix_caching: bool = False
    download_dir: str | None = None
    revision: str | None = None
    quant_policy: int = 0
    model_format: str | None = None

    def __post_init__(self) -> None:
        assert self.dtype in ["auto", "float16", "bfloat16"]
        assert 0 < self.cache_max_entry_count < 1
        assert self.quant_policy in (0, 4, 8)


@dataclass
class Response:
    text: str
    generate_token_len: int
    input_token_len: int
    finish_reason: str | None = None
    token_ids: list[int] = field(default_factory=list)
    logprobs: Any = None
    index: int = 0


class Pipeline:
    """lmdeploy.pipeline(...)'s object: __call__(prompts, gen_config, do_preprocess=...) and get_ppl(input_ids)."""

    instances: list[Pipeline] = []

    def __init__(self, model_path: str, backend_config: Any = None, chat_template_config: Any = None,
                 log_level: str = "WARNING", **kwargs: Any) -> None:
        from transformers import AutoTokenizer

        self.model_path = model_path
        self.backend_config = backend_config
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.calls: list[tuple[Any, Any, dict[str, Any]]] = []
        self.ppl_calls: list[list[list[int]]] = []
        Pipeline.instances.append(self)

    def __call__(self, prompts: Any, gen_config: Any = None, **kwargs: Any) -> Any:
        single = isinstance(prompts, str)
        prompts = [prompts] if single else prompts
        self.calls.append((prompts, gen_config, kwargs))
        assert kwargs.get("do_preprocess") is False, "only unprocessed prompts are modelled here"
        out = []
        for i, text in enumerate(prompts):
            gc = gen_config[i] if isinstance(gen_config, list) else gen_config
            ids = list(self.tokenizer.encode(text))  # lmdeploy encodes with the tokenizer's special tokens
            toks, finish = [], "length"
            for t in toy_completion(self.tokenizer, ids)[: gc.max_new_tokens]:
                piece = self.tokenizer.decode([t])
                toks.append(t)
                if any(w in piece for w in gc.stop_words or []):  # stop words match per token
                    finish = "stop"
                    if not gc.include_stop_str_in_output:
                        toks.pop()
                    break
            text_out = self.tokenizer.decode(toks, skip_special_tokens=gc.skip_special_tokens)
            out.append(Response(text_out, len(toks), len(ids), finish, toks, index=i))
        return out[0] if single else out

    def get_ppl(self, input_ids: Any) -> list[float]:
        """Per sequence: the mean cross-entropy of the tokens after the first."""
        seqs = [input_ids] if isinstance(input_ids[0], int) else input_ids
        self.ppl_calls.append([list(s) for s in seqs])
        vocab = len(self.tokenizer)
        result = []
        for s in seqs:
            assert len(s) > 1
            nll = -sum(toy_logprobs(s[p - 1], vocab)[s[p]] for p in range(1, len(s)))
            result.append(nll / (len(s) - 1))
        return result


def pipeline(model_path: str, backend_config: Any = None, chat_template_config: Any = None,
             log_level: str = "WARNING", max_log_len: int | None = None, **kwargs: Any) -> Pipeline:
    return Pipeline(model_path, backend_config, chat_template_config, log_level, **kwargs)


def install_lmdeploy(monkeypatch: Any) -> types.ModuleType:
    mod = types.ModuleType("lmdeploy")
    mod.pipeline = pipeline  # type: ignore[attr-defined]
    mod.GenerationConfig = GenerationConfig  # type: ignore[attr-defined]
    mod.TurbomindEngineConfig = TurbomindEngineConfig  # type: ignore[attr-defined]
    mod.PytorchEngineConfig = PytorchEngineConfig  # type: ignore[attr-defined]
    Pipeline.instances = []
    monkeypatch.setitem(sys.modules, "lmdeploy", mod)
    return mod
