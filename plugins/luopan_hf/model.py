"""Loading: weights, tokenizer, device and dtype, and the model facts the scoring and decoding loops need."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from luopan.deps import require
from luopan.errors import ConfigError
from luopan.models import convert_gguf, load_causal_lm
from luopan.tokenization import hf_encode, hf_prefix_token_id

log = logging.getLogger("luopan.hf")

#: end-of-turn tokens of common chat families; any that the tokenizer knows as a special token stops generation
END_OF_TURN = (
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
    "<|return|>",
    "<|im_sep|>",
)
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass
class LoadedModel:
    """A loaded causal LM with what the loops need to know about it."""

    model: Any
    tokenizer: Any
    device: Any
    dtype: Any
    max_length: int
    batch_size: int | str
    add_bos_token: bool | None
    chat_template: str | None
    stop_token_ids: list[int]
    attn_impl: str
    layer_types: list[str]
    sliding_window: int | None
    compile: bool
    #: whether the packed likelihood path matches a plain forward pass on this model (None: not checked yet)
    packed_ok: bool | None = None
    #: decode over a static KV cache (set by ``compile`` on CUDA; tests and benchmarks may force it on CPU)
    static_decode: bool = False
    #: distinct shared prefixes seen recently -> per-layer (key, value) tensors, least recently used first
    prefix_cache: OrderedDict = field(default_factory=OrderedDict)
    prefix_cache_size: int = 4
    _compiled: dict[Any, Any] = field(default_factory=dict)

    def cache_kw(self, module: Any, cache: Any) -> dict[str, Any]:
        """``{name: cache}`` for ``module.forward``: transformers renamed ``past_key_values`` to ``cache``."""
        name = self._compiled.get(("cache_arg", id(module)))
        if name is None:
            import inspect

            params = inspect.signature(module.forward).parameters
            name = "cache" if "cache" in params else "past_key_values"
            self._compiled[("cache_arg", id(module))] = name
        return {name: cache}

    # ------------------------------------------------------------ tokenization (lm-eval's rules, for parity)
    def tok_encode(self, text: str) -> list[int]:
        """Token ids of plain text. BOS follows ``add_bos_token`` when set, otherwise the tokenizer's own default,
        except that a text already starting with the BOS string gets no second one (lm-eval's rule)."""
        return hf_encode(self.tokenizer, text, self.add_bos_token)

    @property
    def prefix_token_id(self) -> int:
        """Scored continuations of an empty context are conditioned on this token (BOS, else EOS)."""
        return hf_prefix_token_id(self.tokenizer)

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for t in (tok.pad_token_id, tok.eos_token_id, 0):
            if t is not None:
                return int(t)
        return 0

    def rows_per_batch(self, length: int) -> int:
        """How many sequences of ``length`` tokens go in one forward pass."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        budget = 8192 if self.device.type == "cpu" else _gpu_token_budget(self)
        return max(1, min(512, budget // max(1, length)))

    def release(self) -> None:
        self.prefix_cache.clear()
        self._compiled.clear()
        self.model = None
        import gc

        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def wrap_model(
    model: Any,
    tokenizer: Any,
    *,
    batch_size: int | str = 8,
    compile: bool = False,
    max_length: int | None = None,
    add_bos_token: bool | None = None,
) -> LoadedModel:
    """A LoadedModel around objects already in memory (benchmarks and tests with random weights)."""
    import torch

    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    layer_types = list(getattr(text_cfg, "layer_types", None) or [])
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=next(model.parameters()).device,
        dtype=next(model.parameters()).dtype if model.dtype is None else model.dtype,
        max_length=int(max_length or _model_max_length(text_cfg, tokenizer)),
        batch_size=batch_size,
        add_bos_token=add_bos_token,
        chat_template=None,
        stop_token_ids=_stop_token_ids(model, tokenizer),
        attn_impl=getattr(cfg, "_attn_implementation", None) or "eager",
        layer_types=layer_types,
        sliding_window=getattr(text_cfg, "sliding_window", None)
        if "sliding_attention" in layer_types
        else None,
        compile=bool(compile)
        and next(model.parameters()).device.type == "cuda"
        and torch.cuda.is_available(),
    )


def _gpu_token_budget(lm: LoadedModel) -> int:
    import torch

    free, _ = torch.cuda.mem_get_info(lm.device)
    cfg = lm.model.config
    hidden = getattr(cfg, "hidden_size", 2048)
    inter = getattr(cfg, "intermediate_size", 4 * hidden)
    layers = getattr(cfg, "num_hidden_layers", 24)
    kv = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", 16)
    head = getattr(cfg, "head_dim", None) or hidden // max(1, getattr(cfg, "num_attention_heads", 16))
    elt = torch.finfo(lm.dtype).bits // 8
    # activations of one layer at a time plus the KV of every layer, with a generous safety factor
    per_token = elt * (4 * hidden + 2 * inter + 2 * layers * kv * head) * 3
    return int(max(1024, min(65536, free * 0.5 // per_token)))


def _device(spec: str) -> Any:
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"hf backend: device '{spec}' asked for but CUDA is not available")
    return dev


def load_model(backend: Any) -> LoadedModel:
    torch = require("torch", extra="hf", component="backend 'hf'")
    transformers = require("transformers", extra="hf", component="backend 'hf'")
    if backend.gguf_file:
        require("gguf", extra="hf", component="backend 'hf' (gguf_file)")
    if backend.device_map is not None:
        require("accelerate", extra="hf", component="backend 'hf' (device_map)")

    device = _device(backend.device)
    dtype = getattr(torch, _DTYPES.get(backend._resolved_dtype(), "float32"))
    resolved = backend.resolved
    source = str(resolved.local) if resolved.local is not None else resolved.name
    kwargs: dict[str, Any] = {"revision": backend.revision, "trust_remote_code": backend.trust_remote_code}
    if resolved.local is not None or os.environ.get("HF_HUB_OFFLINE") == "1":
        kwargs["local_files_only"] = True
    model = tokenizer = None
    if backend.gguf_file:
        if resolved.local is None:
            kwargs["gguf_file"] = backend.gguf_file
        else:
            folder, model, tokenizer = convert_gguf(
                resolved, backend.gguf_file, who="hf backend", trust_remote_code=backend.trust_remote_code
            )
            source = str(folder)
    if tokenizer is None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    if model is None:
        model_kwargs = dict(kwargs)
        model_kwargs["dtype"] = dtype
        if backend.device_map is not None:
            model_kwargs["device_map"] = backend.device_map
        model = load_causal_lm(source, who="backend 'hf'", **model_kwargs)
    if backend.device_map is None:
        model.to(device=device, dtype=dtype)
    else:
        device = next(model.parameters()).device
    model.eval()
    model.requires_grad_(False)
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg

    max_length = backend.max_length or _model_max_length(text_cfg, tokenizer)
    attn_impl = getattr(cfg, "_attn_implementation", None) or "eager"
    layer_types = list(getattr(text_cfg, "layer_types", None) or [])
    sliding = getattr(text_cfg, "sliding_window", None) if "sliding_attention" in layer_types else None
    lm = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        max_length=int(max_length),
        batch_size=backend.batch_size,
        add_bos_token=backend.add_bos_token,
        chat_template=backend.chat_template,
        stop_token_ids=_stop_token_ids(model, tokenizer),
        attn_impl=attn_impl,
        layer_types=layer_types,
        sliding_window=sliding,
        compile=bool(backend.compile),
    )
    if lm.compile and device.type != "cuda":
        log.warning("hf backend: compile is for CUDA devices; ignored on %s", device)
    log.info(
        "hf model loaded: %s (%s, %s, attention %s, max_length %d)",
        backend.path,
        device,
        dtype,
        attn_impl,
        lm.max_length,
    )
    return lm


def _model_max_length(cfg: Any, tokenizer: Any) -> int:
    for attr in ("max_position_embeddings", "n_positions", "seq_length", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    if isinstance(v, int) and 0 < v < 10**7:
        return v
    return 2048


def _stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for v in (gen_eos, tokenizer.eos_token_id):
        if isinstance(v, int):
            ids.append(v)
        elif isinstance(v, (list, tuple)):
            ids.extend(int(x) for x in v)
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    special |= {
        str(t)
        for t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values()
        if getattr(t, "special", False)
    }
    for name in END_OF_TURN:
        if name in special:
            tid = tokenizer.convert_tokens_to_ids(name)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                ids.append(tid)
    return sorted(set(ids))
