"""Log-likelihood scoring, computed once per shared piece of text.

Tokenization follows lm-eval (``whole = tok(context + continuation)``, ``context_enc = tok(context)``,
``continuation_enc = whole[len(context_enc):]``, trailing whitespace of the context moved to the continuation), so
scores are comparable. Where tokens merge across the boundary (``whole`` does not start with ``context_enc``) that
split is meaningless, so the continuation is tokenized on its own after the exact context tokens.

The work is organised as a tree, and each node is computed once:

* **prefix**: the leading part of the context that many requests share (``LoglikelihoodRequest.prefix``, the
  few-shot block). The cached part is the longest run of tokens that ``tok(prefix)`` and ``tok(context)`` share,
  so it is always exactly the context's own first tokens whatever the tokenizer does at the boundary. Its KV
  cache is computed once per distinct prefix (and kept for the next calls), then expanded along the batch
  dimension.
* **segment**: one distinct context (after the prefix) with the continuations of every request that shares it (a
  question's options). The context tokens and each continuation's tokens are laid out in one row; a custom
  attention mask lets each continuation see the context and itself only, with position ids restarting after the
  context. When the continuations are single tokens (A/B/C/D) the row is just the context: one forward pass
  scores every option.
* only the positions whose next token is scored go through the vocabulary projection and log-softmax: the decoder
  runs without its LM head and the gathered hidden states are projected afterwards.

Segments are sorted by length and batched so that padding stays small. A self-check at first use compares this
path with a plain full forward pass; a model that ignores custom masks falls back to the plain path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from luopan.backend_errors import InputTooLongError, describe
from luopan.tokenization import common_prefix_length, split_pair
from luopan.types import LoglikelihoodRequest, LoglikelihoodResult

log = logging.getLogger("luopan.hf")


@dataclass
class Encoded:
    ctx: list[int]
    cont: list[int]
    prefix: tuple[int, ...] = ()  # tokens of ctx computed once and shared (a prefix of ctx)


@dataclass
class Segment:
    prefix: tuple[int, ...]
    suffix: list[int]  # ctx after the prefix (at least one token)
    branches: dict[tuple[int, ...], int] = field(default_factory=dict)  # cont[:-1] -> start offset in tokens
    tokens: list[int] = field(default_factory=list)
    branch_of: list[int] = field(default_factory=list)  # 0: context; b >= 1: the b-th continuation
    offset: list[int] = field(default_factory=list)  # position after the prefix
    members: list[tuple[int, list[int]]] = field(default_factory=list)  # (request index, continuation)


# ---------------------------------------------------------------- tokenization


def encode_pair(lm: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """``(context tokens, continuation tokens)`` by lm-eval's rule (:func:`luopan.tokenization.split_pair`)."""
    return split_pair(
        context,
        continuation,
        encode=lm.tok_encode,
        encode_plain=lambda text: list(lm.tokenizer.encode(text, add_special_tokens=False)),
        prefix_token_id=lm.prefix_token_id,
    )


def encode_requests(lm: Any, requests: Sequence[LoglikelihoodRequest], reuse_prefix: bool) -> list[Encoded]:
    out: list[Encoded] = []
    prefix_tokens: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        ctx, cont = encode_pair(lm, r.context, r.continuation)
        n = len(ctx) + len(cont) - 1
        if n > lm.max_length:
            raise InputTooLongError(
                f"hf backend: request {i} (context {describe(r.context)}, continuation {describe(r.continuation)}) "
                f"is {n} tokens long, more than max_length {lm.max_length}; it is not truncated: shorten the "
                f"prompt (fewer shots) or raise max_length if the model allows it"
            )
        enc = Encoded(ctx, cont)
        p = r.prefix
        if reuse_prefix and p and r.context.startswith(p):
            if p not in prefix_tokens:
                prefix_tokens[p] = lm.tok_encode(p)
            ptoks = prefix_tokens[p]
            # the cached part must be exactly the context's first tokens: take the tokens the prefix and the
            # context share (the prefix's last token often differs: "\n\n" alone is one token, but "\n" + "\n..."
            # inside the context); what is left is computed with the rest of the context
            k = min(common_prefix_length(ptoks, ctx), len(ctx) - 1)
            if k > 0:
                enc.prefix = tuple(ctx[:k])
        out.append(enc)
    return out


# ---------------------------------------------------------------- layout


def build_segments(encoded: Sequence[Encoded], group_contexts: bool) -> list[Segment]:
    segments: dict[Any, Segment] = {}
    for i, e in enumerate(encoded):
        key: Any = (e.prefix, tuple(e.ctx)) if group_contexts else i
        seg = segments.get(key)
        if seg is None:
            suffix = e.ctx[len(e.prefix) :]
            seg = Segment(
                e.prefix,
                suffix,
                tokens=list(suffix),
                branch_of=[0] * len(suffix),
                offset=list(range(len(suffix))),
            )
            segments[key] = seg
        if len(e.cont) > 1:
            body = tuple(e.cont[:-1])
            if body not in seg.branches:
                seg.branches[body] = len(seg.tokens)
                b = len(seg.branches)
                seg.tokens.extend(body)
                seg.branch_of.extend([b] * len(body))
                seg.offset.extend(range(len(seg.suffix), len(seg.suffix) + len(body)))
        seg.members.append((i, e.cont))
    return list(segments.values())


def _scored_positions(seg: Segment, cont: list[int]) -> list[int]:
    """Index in ``seg.tokens`` of the token whose next-token distribution scores each continuation token."""
    first = len(seg.suffix) - 1
    if len(cont) <= 1:
        return [first][: len(cont)]
    start = seg.branches[tuple(cont[:-1])]
    return [first] + list(range(start, start + len(cont) - 1))


# ---------------------------------------------------------------- model calls


def _decoder(model: Any) -> Any:
    get = getattr(model, "get_decoder", None)
    dec = get() if callable(get) else None
    return dec if dec is not None else model.base_model


def project(lm: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Hidden states (n, H) -> log-probabilities (n, V) in float32, as the model's own head would give them."""
    model = lm.model
    logits = model.get_output_embeddings()(hidden)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    scale = getattr(cfg, "logit_scale", None)  # Cohere multiplies
    if isinstance(scale, (int, float)) and scale not in (0, 1):
        logits = logits * scale
    scaling = getattr(cfg, "logits_scaling", None)  # Granite divides
    if isinstance(scaling, (int, float)) and scaling not in (0, 1):
        logits = logits / scaling
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits.float(), dim=-1)


def prefix_state(lm: Any, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The per-layer (key, value) of ``prefix``, computed once and kept for the next calls (least recently used
    evicted)."""
    cache = lm.prefix_cache
    if prefix in cache:
        cache.move_to_end(prefix)
        return cache[prefix]
    from transformers import DynamicCache

    dc = DynamicCache(config=lm.model.config)
    ids = torch.tensor([prefix], device=lm.device)
    dec = _decoder(lm.model)
    dec(input_ids=ids, use_cache=True, **lm.cache_kw(dec, dc))
    kv = [(layer.keys, layer.values) for layer in dc.layers]
    cache[prefix] = kv
    while len(cache) > lm.prefix_cache_size:
        cache.popitem(last=False)
    return kv


def _expand_cache(lm: Any, kv: list[tuple[torch.Tensor, torch.Tensor]], rows: int) -> Any:
    from transformers import DynamicCache

    dc = DynamicCache(config=lm.model.config)
    for i, (k, v) in enumerate(kv):
        dc.update(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1), i)
    return dc


def _layer_kinds(lm: Any) -> list[str]:
    return sorted(set(lm.layer_types)) if lm.layer_types else ["full_attention"]


def _masks(lm: Any, q_off: torch.Tensor, q_branch: torch.Tensor, plen: int, kept: dict[str, int]) -> Any:
    """Boolean attention masks (rows, 1, L, kept + L), True where a query may attend, one per layer kind.

    ``q_off``/``q_branch``: (rows, L) offsets after the prefix and branch ids (-1: padding). ``kept[kind]``:
    how many prefix tokens (the last ones) that kind's cache holds."""
    qo, qb = q_off[:, :, None], q_branch[:, :, None]
    ko, kb = q_off[:, None, :], q_branch[:, None, :]
    own = ((kb == 0) | (kb == qb)) & (ko <= qo) & (kb >= 0)
    eye = torch.eye(q_off.shape[1], dtype=torch.bool, device=q_off.device)[None]
    own = own | eye  # padding rows see themselves: no fully masked row, no NaN
    out = {}
    for kind in _layer_kinds(lm):
        window = lm.sliding_window if kind == "sliding_attention" else None
        new = own if window is None else own & (qo - ko < window)
        n = kept.get(kind, 0)
        if n:
            pk = torch.arange(plen - n, plen, device=q_off.device)[None, None, :]  # absolute key positions
            pre = (qo + plen - pk) >= 0
            if window is not None:
                pre = pre & ((qo + plen - pk) < window)
            pre = pre.expand(q_off.shape[0], -1, -1)
            m = torch.cat([pre, new], dim=-1)
        else:
            m = new
        m = m[:, None]
        if lm.attn_impl not in ("sdpa", "flex_attention"):
            m = torch.zeros(m.shape, dtype=lm.dtype, device=m.device).masked_fill(
                ~m, torch.finfo(lm.dtype).min
            )
        out[kind] = m
    if lm.layer_types and len(out) > 1:
        return out
    return next(iter(out.values()))


def _kept(lm: Any, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, int]:
    kinds = lm.layer_types or ["full_attention"] * len(kv)
    kept: dict[str, int] = {}
    for kind, (k, _) in zip(kinds, kv):
        kept[kind] = int(k.shape[-2])
    return kept


@torch.inference_mode()
def run_segments(
    lm: Any, segs: Sequence[Segment], encoded: Sequence[Encoded], results: list[LoglikelihoodResult | None]
) -> None:
    """One forward pass for ``segs`` (all with the same prefix); fills ``results`` for their members."""
    dev = lm.device
    prefix = segs[0].prefix
    plen = len(prefix)
    rows, width = len(segs), max(len(s.tokens) for s in segs)
    ids = torch.full((rows, width), lm.pad_token_id, dtype=torch.long)
    off = torch.zeros((rows, width), dtype=torch.long)
    branch = torch.full((rows, width), -1, dtype=torch.long)
    for r, s in enumerate(segs):
        n = len(s.tokens)
        ids[r, :n] = torch.tensor(s.tokens)
        off[r, :n] = torch.tensor(s.offset)
        branch[r, :n] = torch.tensor(s.branch_of)
    ids, off, branch = ids.to(dev), off.to(dev), branch.to(dev)
    cache = None
    kept: dict[str, int] = {}
    if plen:
        kv = prefix_state(lm, prefix)
        kept = _kept(lm, kv)
        cache = _expand_cache(lm, kv, rows)
    mask = _masks(lm, off, branch, plen, kept)
    dec = _decoder(lm.model)
    out = dec(
        input_ids=ids,
        attention_mask=mask,
        position_ids=off + plen,
        use_cache=cache is not None,
        **lm.cache_kw(dec, cache),
    )
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    # every (row, position) whose next-token distribution is needed, once
    where: dict[tuple[int, int], int] = {}
    plan: list[tuple[int, list[int], list[int]]] = []  # (request, positions' slots, targets)
    for r, s in enumerate(segs):
        for req, cont in s.members:
            slots = []
            for p in _scored_positions(s, cont):
                slots.append(where.setdefault((r, p), len(where)))
            plan.append((req, slots, cont))
    if where:
        idx = torch.tensor(list(where.keys()), device=dev)
        logp = project(lm, hidden[idx[:, 0], idx[:, 1]])
        greedy = logp.argmax(dim=-1).tolist()
        flat_slots = [sl for _, slots, _ in plan for sl in slots]
        flat_targets = [t for _, _, cont in plan for t in cont]
        picked = (
            logp[torch.tensor(flat_slots, device=dev), torch.tensor(flat_targets, device=dev)]
            .double()
            .tolist()
        )
    else:
        greedy, picked = [], []
    k = 0
    for req, slots, cont in plan:
        n = len(cont)
        lp = sum(picked[k : k + n])
        is_greedy = all(greedy[sl] == t for sl, t in zip(slots, cont))
        results[req] = LoglikelihoodResult(float(lp), bool(is_greedy), n)
        k += n


@torch.inference_mode()
def run_plain(
    lm: Any, batch: Sequence[int], encoded: Sequence[Encoded], results: list[LoglikelihoodResult | None]
) -> None:
    """The plain computation, one full sequence per request (fallback for models that ignore custom masks)."""
    dev = lm.device
    seqs = [(encoded[i].ctx + encoded[i].cont)[:-1] for i in batch]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), lm.pad_token_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        att[r, : len(s)] = 1
    logits = lm.model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits
    for r, i in enumerate(batch):
        e = encoded[i]
        n = len(e.cont)
        if n == 0:
            results[i] = LoglikelihoodResult(0.0, True, 0)
            continue
        start = len(e.ctx) - 1
        logp = torch.log_softmax(logits[r, start : start + n].float(), dim=-1)
        tgt = torch.tensor(e.cont, device=dev)
        lp = logp.gather(-1, tgt[:, None]).double().sum().item()
        results[i] = LoglikelihoodResult(float(lp), bool((logp.argmax(-1) == tgt).all().item()), n)


@torch.inference_mode()
def token_logprobs(lm: Any, texts: Sequence[str]) -> list[list[float]]:
    """Each text's per-token log-probabilities, scored after the model's start token (one forward pass per text;
    a text longer than ``max_length`` keeps its first tokens). For membership signals (Min-K%), not the hot path."""
    out: list[list[float]] = []
    for text in texts:
        ctx, cont = encode_pair(lm, "", text)
        cont = cont[: max(0, lm.max_length - len(ctx))]
        if not cont:
            out.append([])
            continue
        ids = torch.tensor([(ctx + cont)[:-1]], device=lm.device)
        logits = lm.model(input_ids=ids).logits[0, len(ctx) - 1 :]
        logp = torch.log_softmax(logits.float(), dim=-1)
        tgt = torch.tensor(cont, device=logp.device)
        out.append(logp.gather(-1, tgt[:, None])[:, 0].double().tolist())
    return out


# ---------------------------------------------------------------- entry point


def score_requests(
    lm: Any,
    requests: Sequence[LoglikelihoodRequest],
    *,
    group_contexts: bool = True,
    reuse_prefix: bool = True,
) -> list[LoglikelihoodResult]:
    if not requests:
        return []
    if lm.packed_ok is None:
        lm.packed_ok = self_check(lm)
    encoded = encode_requests(lm, requests, reuse_prefix and lm.packed_ok)
    results: list[LoglikelihoodResult | None] = [None] * len(requests)
    if not lm.packed_ok:
        order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i].ctx) + len(encoded[i].cont)))
        k = 0
        while k < len(order):
            n = lm.rows_per_batch(len(encoded[order[k]].ctx) + len(encoded[order[k]].cont))
            run_plain(lm, order[k : k + n], encoded, results)
            k += n
        return results  # type: ignore[return-value]

    segments = build_segments(encoded, group_contexts)
    by_prefix: dict[tuple[int, ...], list[Segment]] = {}
    for s in segments:
        by_prefix.setdefault(s.prefix, []).append(s)
    for prefix, segs in by_prefix.items():
        segs.sort(key=lambda s: -len(s.tokens))
        k = 0
        while k < len(segs):
            n = lm.rows_per_batch(len(prefix) + len(segs[k].tokens))
            run_segments(lm, segs[k : k + n], encoded, results)
            k += n
    for i, r in enumerate(results):
        if r is None:  # an empty continuation
            results[i] = LoglikelihoodResult(0.0, True, 0)
    return results  # type: ignore[return-value]


def self_check(lm: Any) -> bool:
    """Whether the packed, prefix-reusing path gives the plain forward pass's numbers on this model."""
    vocab = int(lm.model.get_output_embeddings().weight.shape[0])
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(10, min(vocab, 1000), (14,), generator=g).tolist()
    ctx, a, b = toks[:8], toks[8:11], toks[11:14]
    enc = [Encoded(ctx, a, tuple(ctx[:4])), Encoded(ctx, b, tuple(ctx[:4])), Encoded(ctx[:6], a[:1])]
    fast: list[LoglikelihoodResult | None] = [None] * 3
    plain: list[LoglikelihoodResult | None] = [None] * 3
    try:
        for prefix in ((), tuple(ctx[:4])):
            segs = [s for s in build_segments(enc, True) if s.prefix == prefix]
            run_segments(lm, segs, enc, fast)
        run_plain(lm, [0, 1, 2], enc, plain)
    except Exception as exc:  # an architecture that rejects custom masks or explicit caches
        log.warning("hf backend: packed likelihood path unavailable (%s); using plain forward passes", exc)
        return False
    tol = 1e-3 if lm.dtype == torch.float32 else 0.1
    diffs = [abs(f.logprob - p.logprob) for f, p in zip(fast, plain) if f is not None and p is not None]
    ok = len(diffs) == 3 and max(diffs) <= tol * max(1.0, max(abs(p.logprob) for p in plain if p) / 10)
    if not ok:
        log.warning(
            "hf backend: packed likelihood path disagrees with a plain forward pass (%s); using plain "
            "forward passes",
            diffs,
        )
    return ok
