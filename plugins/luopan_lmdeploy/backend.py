"""The ``lmdeploy`` backend: ``lmdeploy.pipeline`` in process, TurboMind or PyTorch engine.

Requests are translated as follows (LMDeploy's documented interface: ``pipeline(model_path,
backend_config=TurbomindEngineConfig(...) | PytorchEngineConfig(...))``, ``pipe(prompts, gen_config=...,
do_preprocess=False)`` returning ``Response(text, generate_token_len, input_token_len, finish_reason, ...)``, and
``pipe.get_ppl(input_ids)`` returning, per sequence, the mean cross-entropy of its tokens after the first):

* **chat template**: rendered by luopan with the model's Hugging Face tokenizer (``apply_chat_template``, or
  ``chat_template``), exactly as the hf backend renders it, and sent with ``do_preprocess=False`` so that
  LMDeploy's own template registry is not applied on top. LMDeploy encodes the text with the tokenizer's special
  tokens, so where the tokenizer adds BOS by itself, a BOS string the template wrote first is removed from the
  text (not sent twice). This BOS handling follows LMDeploy's tokenizer wrapper as read, not as run.
* **generation**: ``GenerationConfig(max_new_tokens, do_sample=temperature > 0, temperature, top_p, top_k=0,
  random_seed, stop_words, include_stop_str_in_output=True)``; LMDeploy matches stop words per token, so luopan
  cuts the returned text before the first stop string itself, as the hf backend does (a stop string spanning
  several tokens ends the text, though the engine may generate on to ``max_new_tokens``).
* **likelihood**: the tokens are split with the tokenizer and the hf backend's rules; with ``NLL(s) = get_ppl(s)
  * (len(s) - 1)`` the score is ``-(NLL(context + continuation) - NLL(context))``, each distinct context scored
  once. ``get_ppl`` gives no per-token logits, so ``is_greedy`` is always False for this backend.

GGUF presets are refused with a clear error: LMDeploy loads Hugging Face (or its own quantized AWQ/GPTQ) folders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from luopan import models
from luopan.components import Backend
from luopan.deps import cuda_engine_problems, gpu_count_problem, require
from luopan.errors import ConfigError
from luopan.tokenization import hf_chat_prompt, hf_encode, hf_prefix_token_id, split_pair
from luopan.types import GenerationRequest, GenerationResult, LoglikelihoodRequest, LoglikelihoodResult

WHO = "lmdeploy backend"
GGUF_REFUSED = (
    "GGUF weights cannot be loaded by LMDeploy; give `path` a Hugging Face model folder or hub "
    "id (or an LMDeploy AWQ/GPTQ folder), or run this preset with backend llamacpp or hf"
)


class LMDeployParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Hugging Face model folder, hub id, or pkg:<python_package>")
    revision: str | None = None
    trust_remote_code: bool = False
    chat_template: str | None = Field(default=None, description="a Jinja chat template replacing the tokenizer's")
    add_bos_token: bool | None = Field(default=None, description="as for the hf backend (likelihood tokens)")
    gguf_file: str | None = Field(default=None, description="not supported: an error naming the alternatives")
    engine: Literal["turbomind", "pytorch"] = Field(default="turbomind", description="LMDeploy's inference engine")
    dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    tp: int = Field(default=1, ge=1, description="GPUs for tensor parallelism")
    session_len: int | None = Field(default=None, ge=1, description="max tokens of a sequence (default: the model's)")
    cache_max_entry_count: float = Field(default=0.8, gt=0, le=1, description="share of free GPU memory for KV cache")
    quant_policy: Literal[0, 4, 8] = Field(default=0, description="KV-cache quantization: 0 none, 4 or 8 bits")
    model_format: str | None = Field(default=None, description="hf, awq, gptq (turbomind) or fp8 (pytorch)")
    max_batch_size: int | None = Field(default=None, ge=1)
    enable_prefix_caching: bool = False
    seed: int = Field(default=0, description="sampling seed when a request sets none")
    chunk_size: int = Field(default=4096, ge=1, description="requests per backend call (cached after each)")

    @field_validator("gguf_file")
    @classmethod
    def _no_gguf(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError(GGUF_REFUSED)
        return v


def engine_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lmdeploy")
    except metadata.PackageNotFoundError:
        return "not installed"


class LMDeployBackend(Backend):
    """``lmdeploy.pipeline`` in this process (CUDA). Both capabilities for either kind."""

    capabilities = frozenset({"loglikelihood", "generate"})

    def __init__(self, path: str, revision: str | None = None, trust_remote_code: bool = False,
                 chat_template: str | None = None, add_bos_token: bool | None = None, gguf_file: str | None = None,
                 engine: str = "turbomind", dtype: str = "auto", tp: int = 1, session_len: int | None = None,
                 cache_max_entry_count: float = 0.8, quant_policy: int = 0, model_format: str | None = None,
                 max_batch_size: int | None = None, enable_prefix_caching: bool = False, seed: int = 0,
                 chunk_size: int = 4096) -> None:
        if gguf_file is not None:
            raise ConfigError(f"{WHO}: {GGUF_REFUSED}")
        self.path = path
        self.resolved = models.resolve(path, who=WHO)
        self.revision = revision
        self.trust_remote_code = trust_remote_code
        self.chat_template = chat_template
        self.add_bos_token = add_bos_token
        self.engine = engine
        self.dtype = dtype
        self.tp = tp
        self.session_len = session_len
        self.cache_max_entry_count = cache_max_entry_count
        self.quant_policy = quant_policy
        self.model_format = model_format
        self.max_batch_size = max_batch_size
        self.enable_prefix_caching = enable_prefix_caching
        self.seed = seed
        self.chunk_size = chunk_size
        self.pipe: Any = None
        self.tokenizer: Any = None
        self._gen_config: Any = None  # lmdeploy.GenerationConfig

    @classmethod
    def environment(cls) -> list[str]:
        return cuda_engine_problems("lmdeploy", extra="lmdeploy")

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The package, a CUDA GPU (as many as ``tp``) and the model's folder; nothing is loaded."""
        problems = cls.environment()
        try:
            resolved = models.resolve(params.path, who=WHO)
            if resolved.local is not None:
                models.weight_files(resolved, None, who=WHO)
        except ConfigError as exc:
            problems.append(str(exc))
        problems += gpu_count_problem("tp", params.tp)
        return problems

    def identity(self) -> dict[str, Any]:
        local = self.resolved.local
        weights = models.fingerprint(models.weight_files(self.resolved, None, who=WHO)) if local is not None \
            else f"hub:{self.revision or 'main'}"
        ident: dict[str, Any] = {
            "backend": "lmdeploy",
            "path": self.path,
            "revision": self.revision,
            "weights": weights,
            "engine": f"lmdeploy {engine_version()} {self.engine}",
            "dtype": self.dtype,
        }
        if self.quant_policy:
            ident["quant_policy"] = self.quant_policy  # a quantized KV cache changes the numbers
        if self.model_format is not None:
            ident["model_format"] = self.model_format
        if self.tp != 1:
            ident["tp"] = self.tp
        if self.chat_template is not None:
            ident["chat_template"] = hashlib.sha256(self.chat_template.encode()).hexdigest()[:16]
        if self.add_bos_token is not None:
            ident["add_bos_token"] = self.add_bos_token
        if self.session_len is not None:
            ident["session_len"] = self.session_len
        if self.seed != 0:
            ident["seed"] = self.seed
        return ident

    # ------------------------------------------------------------ life cycle
    def source(self) -> str:
        return str(self.resolved.local) if self.resolved.local is not None else self.resolved.name

    def engine_config_kwargs(self) -> dict[str, Any]:
        """The ``TurbomindEngineConfig`` / ``PytorchEngineConfig`` arguments."""
        kwargs: dict[str, Any] = {
            "dtype": self.dtype,
            "tp": self.tp,
            "session_len": self.session_len,
            "cache_max_entry_count": self.cache_max_entry_count,
            "quant_policy": self.quant_policy,
            "enable_prefix_caching": self.enable_prefix_caching,
        }
        if self.revision is not None:
            kwargs["revision"] = self.revision
        if self.model_format is not None:
            kwargs["model_format"] = self.model_format
        if self.max_batch_size is not None:
            kwargs["max_batch_size"] = self.max_batch_size
        return kwargs

    def load(self) -> None:
        if self.pipe is not None:
            return
        lmdeploy = require("lmdeploy", extra="lmdeploy", component="backend 'lmdeploy'")
        transformers = require("transformers", extra="lmdeploy", component="backend 'lmdeploy'")
        config_class = lmdeploy.TurbomindEngineConfig if self.engine == "turbomind" else lmdeploy.PytorchEngineConfig
        self._gen_config = lmdeploy.GenerationConfig
        self.pipe = lmdeploy.pipeline(self.source(), backend_config=config_class(**self.engine_config_kwargs()),
                                      log_level="WARNING")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            self.source(), revision=self.revision, trust_remote_code=self.trust_remote_code
        )

    def close(self) -> None:
        if self.pipe is not None and hasattr(self.pipe, "close"):
            self.pipe.close()
        self.pipe = None

    # ------------------------------------------------------------ tokens and prompts
    def tok_encode(self, text: str) -> list[int]:
        return hf_encode(self.tokenizer, text, self.add_bos_token)

    def split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return split_pair(
            context, continuation, encode=self.tok_encode,
            encode_plain=lambda t: list(self.tokenizer.encode(t, add_special_tokens=False)),
            prefix_token_id=hf_prefix_token_id(self.tokenizer),
        )

    def prompt_text(self, r: GenerationRequest) -> str:
        """The text sent with ``do_preprocess=False``: the hf backend's rendering of the chat template (or the
        plain prompt), without a leading BOS string, which LMDeploy adds itself at the start of a sequence."""
        if r.messages is not None:
            text = hf_chat_prompt(self.tokenizer, r.message_dicts(), self.chat_template)
        else:
            text = r.prompt or ""
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and text.startswith(bos) and self._tokenizer_adds_bos():
            text = text[len(bos):]
        return text

    def _tokenizer_adds_bos(self) -> bool:
        """Whether encoding adds BOS by itself (then LMDeploy adds it too); SmolLM2's BOS string <|im_start|>, for
        one, is never added and must stay in the text."""
        ids = list(self.tokenizer.encode("a"))
        return bool(ids) and ids[0] == getattr(self.tokenizer, "bos_token_id", None)

    # ------------------------------------------------------------ requests
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        self.load()
        pairs = [self.split(r.context, r.continuation) for r in requests]
        seqs: dict[tuple[int, ...], int] = {}  # sequences to score (len >= 2) -> index in the batch
        for ctx, cont in pairs:
            if not cont:
                continue
            for s in (tuple(ctx + cont), tuple(ctx)):
                if len(s) > 1 and s not in seqs:
                    seqs[s] = len(seqs)
        for i, (ctx, cont) in enumerate(pairs):
            n = len(ctx) + len(cont)
            if self.session_len is not None and n > self.session_len:
                raise ConfigError(f"{WHO}: request {i} is {n} tokens long, more than session_len "
                                  f"{self.session_len}; it is not truncated")
        order = list(seqs)
        ppl = self.pipe.get_ppl([list(s) for s in order]) if order else []
        nll = {s: float(p) * (len(s) - 1) for s, p in zip(order, ppl)}
        results = []
        for ctx, cont in pairs:
            if not cont:
                results.append(LoglikelihoodResult(0.0, True, 0))
                continue
            whole = nll[tuple(ctx + cont)]
            before = nll.get(tuple(ctx), 0.0)  # a one-token context predicts nothing
            results.append(LoglikelihoodResult(-(whole - before), False, len(cont)))
        return results

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.load()
        prompts, configs = [], []
        for r in requests:
            cfg = r.config
            prompts.append(self.prompt_text(r))
            configs.append(self._gen_config(
                max_new_tokens=cfg.max_new_tokens,
                do_sample=cfg.temperature > 0,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                top_k=0,
                random_seed=cfg.seed if cfg.seed is not None else self.seed,
                stop_words=list(cfg.stop) or None,
                include_stop_str_in_output=True,
                skip_special_tokens=True,
            ))
        responses = self.pipe(prompts, gen_config=configs, do_preprocess=False) if prompts else []
        results = []
        for r, resp in zip(requests, responses):
            text = resp.text
            stops = [s for s in r.config.stop if s]
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            finish = resp.finish_reason
            if cut >= 0:
                text, finish = text[:cut], "stop"
            results.append(GenerationResult(text, resp.input_token_len, resp.generate_token_len, finish))
        return results
