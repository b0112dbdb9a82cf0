"""Generation: chat template or plain prompt, greedy or sampled, our own decode loop over the KV cache.

Why not ``model.generate``: it keeps every sequence of a batch until the longest one finishes. Here a finished
row leaves the batch at once (its KV rows are dropped, and the left padding no remaining row needs is cut away),
and waiting prompts take the freed places (continuous batching), so compute goes only to unfinished sequences.
Prompts are taken longest first so that rows prefilled together pad little. Greedy decoding gives
``model.generate(do_sample=False)``'s tokens (same forward calls, same argmax), up to the floating-point
differences that batching with padding brings in any implementation.

With ``compile: true`` on CUDA, decoding uses a static KV cache and a compiled decode step (CUDA graphs): fixed
shapes, so finished rows stay in their batch until it ends, but each step costs far less host time.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from luopan.backend_errors import InputTooLongError, describe
from luopan.tokenization import hf_chat_prompt
from luopan.types import GenerationConfig, GenerationRequest, GenerationResult

log = logging.getLogger("luopan.hf")


@dataclass
class Row:
    """One request being decoded."""

    index: int
    prompt: list[int]
    budget: int  # new tokens allowed
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)  # the completion, without a final stop token
    generated: int = 0  # tokens produced, a final stop token included
    finish: str | None = None


# ---------------------------------------------------------------- prompts


def prompt_tokens(lm: Any, r: GenerationRequest) -> list[int]:
    if r.messages is not None:
        return lm.tok_encode(hf_chat_prompt(lm.tokenizer, r.message_dicts(), lm.chat_template))
    return lm.tok_encode(r.prompt or "")


def _seed(cfg: GenerationConfig, prompt: list[int]) -> int:
    # a pure function of (seed, prompt): a sampled answer does not depend on which requests share its batch
    h = hashlib.blake2b(repr((cfg.seed or 0, prompt)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") & ((1 << 63) - 1)


# ---------------------------------------------------------------- sampling and stopping


def pick(logits: torch.Tensor, cfg: GenerationConfig, rows: Sequence[Row]) -> list[int]:
    """Next tokens for (rows, V) logits."""
    if cfg.temperature <= 0:
        return logits.argmax(dim=-1).tolist()
    x = logits.float() / cfg.temperature
    if cfg.top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        cum = torch.softmax(sorted_x, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_x, dim=-1) >= cfg.top_p  # keep the smallest set reaching top_p
        sorted_x = sorted_x.masked_fill(drop, float("-inf"))
        x = torch.full_like(x, float("-inf")).scatter(-1, order, sorted_x)
    probs = torch.softmax(x, dim=-1).cpu()
    return [int(torch.multinomial(probs[i], 1, generator=row.generator).item()) for i, row in enumerate(rows)]


class Stopper:
    def __init__(self, lm: Any, cfg: GenerationConfig, ignore_eos: bool) -> None:
        self.tok = lm.tokenizer
        self.stop_ids = set() if ignore_eos else set(lm.stop_token_ids)
        self.stops = [s for s in cfg.stop if s]
        # enough tokens to hold the longest stop string even when a character takes several byte tokens
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 4

    def update(self, row: Row, token: int) -> None:
        row.generated += 1
        if token in self.stop_ids:
            row.finish = "stop"
            return
        row.tokens.append(token)
        if self.stops:
            tail = self.tok.decode(row.tokens[-self.window :], skip_special_tokens=True)
            if any(s in tail for s in self.stops):
                row.finish = "stop"
                return
        if len(row.tokens) >= row.budget:
            row.finish = "length"

    def text(self, row: Row) -> str:
        text = self.tok.decode(row.tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        return text[:cut] if cut >= 0 else text


# ---------------------------------------------------------------- the KV cache as plain tensors


def _layers(cache: Any) -> list[Any]:
    return list(getattr(cache, "layers", []))


def _resizable(lm: Any, cache: Any) -> bool:
    """Whether rows can be merged and padding cut by editing the cache's tensors (full-attention layers)."""
    if any(t != "full_attention" for t in (lm.layer_types or [])):
        return False
    layers = _layers(cache)
    return bool(layers) and all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers)


def _select(cache: Any, keep: list[int], device: Any) -> None:
    idx = torch.tensor(keep, device=device)
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(idx)
        return
    for layer in _layers(cache):
        layer.keys, layer.values = layer.keys[idx], layer.values[idx]


def _crop_left(cache: Any, n: int) -> None:
    for layer in _layers(cache):
        layer.keys, layer.values = layer.keys[:, :, n:], layer.values[:, :, n:]


def _left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
    if n == 0:
        return t
    pad = torch.zeros((*t.shape[:2], n, t.shape[3]), dtype=t.dtype, device=t.device)
    return torch.cat([pad, t], dim=2)


def _merge(a: Any, mask_a: torch.Tensor, b: Any, mask_b: torch.Tensor) -> torch.Tensor:
    """Append cache ``b``'s rows to cache ``a`` (in place), right-aligned; returns the merged 2D mask."""
    ta, tb = mask_a.shape[1], mask_b.shape[1]
    width = max(ta, tb)
    for la, lb in zip(_layers(a), _layers(b)):
        la.keys = torch.cat([_left_pad(la.keys, width - ta), _left_pad(lb.keys, width - tb)], dim=0)
        la.values = torch.cat([_left_pad(la.values, width - ta), _left_pad(lb.values, width - tb)], dim=0)
    z = mask_a.new_zeros
    return torch.cat(
        [
            torch.cat([z((mask_a.shape[0], width - ta)), mask_a], 1),
            torch.cat([z((mask_b.shape[0], width - tb)), mask_b], 1),
        ],
        0,
    )


# ---------------------------------------------------------------- decode loops


def _forward(lm: Any, cache: Any, **kw: Any) -> torch.Tensor:
    out = lm.model(**kw, use_cache=True, logits_to_keep=1, **lm.cache_kw(lm.model, cache))
    return out.logits[:, -1, :]


def _prefill(lm: Any, rows: Sequence[Row]) -> tuple[Any, torch.Tensor, torch.Tensor]:
    from transformers import DynamicCache

    width = max(len(r.prompt) for r in rows)
    ids = torch.full((len(rows), width), lm.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt)
        mask[i, width - len(r.prompt) :] = 1
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=lm.model.config)
    logits = _forward(lm, cache, input_ids=ids, attention_mask=mask, position_ids=pos)
    return cache, mask, logits


@torch.inference_mode()
def decode_dynamic(lm: Any, rows: list[Row], cfg: GenerationConfig, stopper: Stopper) -> Iterator[Row]:
    """Continuous batching over a dynamic KV cache: finished rows leave (yielded at once), waiting rows join."""
    waiting = sorted(rows, key=lambda r: -len(r.prompt))
    active: list[Row] = []
    cache = mask = None
    last: torch.Tensor | None = None  # (rows,) next input token of each active row
    while waiting or active:
        room = lm.rows_per_batch(max(len(r.prompt) + r.budget for r in (waiting or active)))
        resizable = cache is None or _resizable(lm, cache)
        if waiting and (not active or (resizable and room - len(active) >= max(1, room // 4))):
            take = waiting[: room - len(active)]
            del waiting[: len(take)]
            c, m, logits = _prefill(lm, take)
            firsts = pick(logits, cfg, take)
            for r, t in zip(take, firsts):
                stopper.update(r, t)
            t_new = torch.tensor(firsts, device=lm.device)
            if cache is None:
                cache, mask, last, active = c, m, t_new, list(take)
            else:
                mask = _merge(cache, mask, c, m)
                last = torch.cat([last, t_new])
                active = active + list(take)
        else:
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            pos = mask.sum(-1, keepdim=True) - 1
            logits = _forward(lm, cache, input_ids=last[:, None], attention_mask=mask, position_ids=pos)
            nxt = pick(logits, cfg, active)
            for r, t in zip(active, nxt):
                stopper.update(r, t)
            last = torch.tensor(nxt, device=lm.device)
        keep = [i for i, r in enumerate(active) if r.finish is None]
        if len(keep) < len(active):
            yield from (r for r in active if r.finish is not None)
            if not keep:
                active, cache, mask, last = [], None, None, None
                continue
            _select(cache, keep, lm.device)
            active = [active[i] for i in keep]
            mask, last = mask[keep], last[keep]
            if _resizable(lm, cache):
                lead = int((mask.cumsum(-1) == 0).sum(-1).min().item())  # padding columns every row has
                if lead:
                    _crop_left(cache, lead)
                    mask = mask[:, lead:]


def _static_cache(lm: Any, rows: int, length: int) -> Any:
    from transformers import StaticCache

    try:
        return StaticCache(config=lm.model.config, max_cache_len=length)
    except TypeError:  # older transformers: sizes given up front
        return StaticCache(
            config=lm.model.config,
            max_batch_size=rows,
            max_cache_len=length,
            device=lm.device,
            dtype=lm.dtype,
        )


def _decode_step(lm: Any) -> Any:
    step = lm._compiled.get("decode")
    if step is None:

        def step(cache: Any, **kw: Any) -> torch.Tensor:
            return lm.model(**kw, use_cache=True, **lm.cache_kw(lm.model, cache)).logits[:, -1, :]

        if lm.device.type == "cuda":
            step = torch.compile(step, mode="reduce-overhead", fullgraph=True, dynamic=False)
        lm._compiled["decode"] = step
    return step


@torch.inference_mode()
def decode_static(lm: Any, rows: list[Row], cfg: GenerationConfig, stopper: Stopper) -> Iterator[Row]:
    """Fixed batches over a static KV cache, decode step compiled (CUDA graphs on GPU); each batch's rows are
    yielded when it ends."""
    order = sorted(rows, key=lambda r: -len(r.prompt))
    k = 0
    while k < len(order):
        room = lm.rows_per_batch(len(order[k].prompt) + order[k].budget)
        batch = order[k : k + room]
        k += len(batch)
        width = max(len(r.prompt) for r in batch)
        total = width + max(r.budget for r in batch)
        # a bucketed cache length keeps the compiled step's shapes few
        total = min(max(total, 256), lm.max_length + width) if total <= 256 else -(-total // 256) * 256
        cache = _static_cache(lm, len(batch), total)
        ids = torch.full((len(batch), width), lm.pad_token_id, dtype=torch.long)
        valid = torch.zeros((len(batch), total), dtype=torch.bool)
        for i, r in enumerate(batch):
            ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt)
            valid[i, width - len(r.prompt) : width] = True
        ids, valid = ids.to(lm.device), valid.to(lm.device)
        pos = (valid[:, :width].long().cumsum(-1) - 1).clamp(min=0)
        logits = lm.model(
            input_ids=ids,
            attention_mask=valid[:, :width].long(),
            position_ids=pos,
            use_cache=True,
            cache_position=torch.arange(width, device=lm.device),
            **lm.cache_kw(lm.model, cache),
        ).logits[:, -1, :]
        nxt = pick(logits, cfg, batch)
        for r, t in zip(batch, nxt):
            stopper.update(r, t)
        step = _decode_step(lm)
        last = torch.tensor(nxt, device=lm.device)[:, None]
        pos = pos[:, -1:] + 1
        col = width
        while any(r.finish is None for r in batch) and col < total:
            valid[:, col] = True
            mask = valid[:, None, None, :]  # (rows, 1, 1, total): static shape for the compiled step
            if lm.attn_impl not in ("sdpa", "flex_attention"):
                mask = torch.zeros(mask.shape, dtype=lm.dtype, device=mask.device).masked_fill(
                    ~mask, torch.finfo(lm.dtype).min
                )
            logits = step(
                cache,
                input_ids=last,
                attention_mask=mask,
                position_ids=pos,
                cache_position=torch.tensor([col], device=lm.device),
            )
            nxt = pick(logits, cfg, batch)
            for r, t in zip(batch, nxt):
                if r.finish is None:
                    stopper.update(r, t)
            last = torch.tensor(nxt, device=lm.device)[:, None]
            pos = pos + 1
            col += 1
        for r in batch:
            if r.finish is None:
                r.finish = "length"
        yield from batch


# ---------------------------------------------------------------- entry point


def generate_requests(
    lm: Any, requests: Sequence[GenerationRequest], *, ignore_eos: bool = False
) -> list[GenerationResult]:
    out: list[GenerationResult | None] = [None] * len(requests)
    for i, result in iter_generate(lm, requests, ignore_eos=ignore_eos):
        out[i] = result
    return out  # type: ignore[return-value]


def iter_generate(
    lm: Any, requests: Sequence[GenerationRequest], *, ignore_eos: bool = False
) -> Iterator[tuple[int, GenerationResult]]:
    """``(request index, result)`` as each sequence finishes (continuous batching finishes them one by one), so
    the kernel caches every answer within about a second of its last token. Every prompt is checked against the
    context window before anything is decoded."""
    groups: dict[Any, list[Row]] = {}
    configs: dict[Any, GenerationConfig] = {}
    for i, r in enumerate(requests):
        toks = prompt_tokens(lm, r)
        if len(toks) >= lm.max_length:
            what = describe(r.prompt) if r.prompt is not None else describe(repr(r.message_dicts()))
            raise InputTooLongError(
                f"hf backend: request {i} (prompt {what}) is {len(toks)} tokens long, no room left under "
                f"max_length {lm.max_length}; it is not truncated: shorten the prompt"
            )
        cfg = r.config
        budget = min(cfg.max_new_tokens, lm.max_length - len(toks))
        gen = torch.Generator().manual_seed(_seed(cfg, toks)) if cfg.temperature > 0 else None
        row = Row(i, toks, budget, gen)
        # rows differing only in seed or token budget decode together: each row samples from its own generator
        # (seeded above), so repeats of a sample (seeds seed+0..n-1) share one batch; each row stops at its own
        # budget
        key = repr({**cfg.as_key(), "seed": None, "max_new_tokens": None})
        configs[key] = cfg
        groups.setdefault(key, []).append(row)
    for key, grp in groups.items():
        cfg = configs[key]
        stopper = Stopper(lm, cfg, ignore_eos)
        todo = [r for r in grp if r.budget > 0]
        for r in grp:
            if r.budget <= 0:
                r.finish = "length"
                yield r.index, GenerationResult(stopper.text(r), len(r.prompt), r.generated, r.finish)
        if todo:
            use_static = lm.static_decode or (lm.compile and lm.device.type == "cuda")
            for r in (decode_static if use_static else decode_dynamic)(lm, todo, cfg, stopper):
                yield r.index, GenerationResult(stopper.text(r), len(r.prompt), r.generated, r.finish)
