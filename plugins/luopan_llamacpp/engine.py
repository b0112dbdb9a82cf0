"""llama.cpp in process: loading, tokenization, log-likelihoods and generation.

**Log-likelihoods** are computed here from llama.cpp's logits, not taken from llama-cpp-python's ``echo=True``
completion logprobs, which are shifted by one position (llama-cpp-python issue #1983: token i is scored with the
logits that predict token i+1). A request's score is ``sum_j log_softmax(logits[p_j])[cont_j]`` where ``p_j`` is
the position whose next-token distribution predicts continuation token ``j``: the last context token for the
first, then the continuation's own tokens. Logits are requested from llama_decode only at those positions.

The tokens are split exactly as the hf backend splits them (:func:`luopan.tokenization.split_pair`, lm-eval's
rule), with llama.cpp's own tokenizer and the same BOS rule. Requests are grouped by context and the contexts
sorted as token sequences, so consecutive contexts share their longest common prefix (a subject's few-shot block,
a question's options): llama.cpp keeps the KV cache of the tokens already evaluated, the prefix they share is kept
and only the rest is decoded. Each distinct context is evaluated once; its options add only their own tokens (none
for single-token answers such as " A").

**Generation** renders the chat template stored in the GGUF (or ``chat_template``) with llama-cpp-python's
``Jinja2ChatFormatter``, the same Jinja settings as transformers' ``apply_chat_template`` (sandbox, trim_blocks,
lstrip_blocks, loop controls), tokenizes it with the BOS rule above and decodes token by token over the same KV
cache (a prompt's prefix shared with what is cached is not evaluated again): arg-max at temperature 0, otherwise
temperature then top-p then a seeded draw, as the hf backend samples (llama.cpp's own sampler chain applies top-p
before the temperature). It stops at an end-of-generation token, a stop string (the text is cut before it) or
``max_new_tokens``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from luopan import models
from luopan.backend_errors import InputTooLongError, describe
from luopan.deps import require
from luopan.errors import ConfigError
from luopan.tokenization import bos_rule, common_prefix_length, split_pair
from luopan.types import (
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from luopan_llamacpp.backend import WHO

log = logging.getLogger("luopan.llamacpp")


class Engine:
    """A loaded ``llama_cpp.Llama`` and the KV-cache bookkeeping of the likelihood path."""

    def __init__(self, backend: Any) -> None:
        self.lib = require("llama_cpp", extra="llamacpp", component="backend 'llamacpp'")
        gguf = models.ensure_gguf(backend.resolved, backend.gguf_file, who=WHO)
        self.backend = backend
        self.llm = self.lib.Llama(
            model_path=str(gguf),
            n_ctx=backend.n_ctx,
            n_batch=backend.n_batch,
            n_ubatch=backend.n_batch,
            n_threads=backend.n_threads,
            n_threads_batch=backend.n_threads,
            n_gpu_layers=backend.n_gpu_layers,
            flash_attn=backend.flash_attn,
            seed=backend.seed,
            logits_all=False,
            verbose=False,
        )
        llm = self.llm
        self.n_ctx = int(llm.n_ctx())
        self.n_batch = int(llm.n_batch)
        self.n_vocab = int(llm.n_vocab())
        self.vocab = self.lib.llama_model_get_vocab(llm.model)
        self.bos_id = int(llm.token_bos())
        self.eos_id = int(llm.token_eos())
        self.bos_text = self._token_text(self.bos_id)
        self.eos_text = self._token_text(self.eos_id)
        self.prefix_token_id = self.bos_id if self.bos_id >= 0 else self.eos_id
        self.add_bos_token = backend.add_bos_token
        self.chat_template = backend.chat_template or llm.metadata.get("tokenizer.chat_template")
        self._formatter: Any = None
        self._batch = self.lib.llama_batch_init(self.n_batch, 0, 1)
        self.past: list[int] | None = []  # tokens in the KV cache of sequence 0 (None: unknown, clear first)
        #: keep the cached tokens a context shares with the previous one: bit-identical results on SmolLM2's Q4_1
        #: GGUF; on Gemma-3's Q4_K_M llama.cpp's CPU kernels round differently with the size of a decode call
        #: (measured: up to 0.16 nats per continuation), see docs/configuration.md
        self.reuse_prefix = backend.reuse_prefix
        log.info("llama.cpp model loaded: %s (n_ctx %d, %d threads, %d GPU layers)", gguf, self.n_ctx,
                 backend.n_threads, backend.n_gpu_layers)

    def close(self) -> None:
        if self._batch is not None:
            self.lib.llama_batch_free(self._batch)
            self._batch = None
        self.llm.close()

    # ------------------------------------------------------------ tokenization (the hf backend's rules)
    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.lib.llama_vocab_get_text(self.vocab, token).decode("utf-8", errors="replace")

    def tok_encode(self, text: str) -> list[int]:
        """Token ids of plain text: special tokens (BOS) by ``add_bos_token`` when set, else by the GGUF
        tokenizer's rule, except that a text already starting with the BOS string gets no second one. Special
        tokens written in the text are parsed, as transformers does."""
        add = bos_rule(text, self.bos_text, self.add_bos_token)
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True if add is None else add, special=True))

    def encode_plain(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return split_pair(context, continuation, encode=self.tok_encode, encode_plain=self.encode_plain,
                          prefix_token_id=self.prefix_token_id)

    # ------------------------------------------------------------ the KV cache of sequence 0
    def _memory(self) -> Any:
        return self.lib.llama_get_memory(self.llm.ctx)

    def _truncate(self, n: int) -> None:
        """Keep the first ``n`` evaluated tokens. A cache that cannot drop a tail (some sliding-window layouts)
        is cleared instead, and the next context is evaluated from its start."""
        assert self.past is not None
        if n >= len(self.past):
            return
        if n > 0 and self.lib.llama_memory_seq_rm(self._memory(), 0, n, -1):
            del self.past[n:]
            return
        self.lib.llama_memory_clear(self._memory(), True)
        self.past = []

    def _decode(self, tokens: Sequence[int], start: int, want: Sequence[int]) -> dict[int, np.ndarray]:
        """Evaluate ``tokens`` at positions ``start...``; return the logits at the indices ``want`` (into
        ``tokens``), float32 arrays of the vocabulary size."""
        lib, ctx, b = self.lib, self.llm.ctx, self._batch
        wanted = set(want)
        out: dict[int, np.ndarray] = {}
        for off in range(0, len(tokens), self.n_batch):
            chunk = tokens[off : off + self.n_batch]
            b.n_tokens = len(chunk)
            for j, t in enumerate(chunk):
                b.token[j] = t
                b.pos[j] = start + off + j
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = 0
                b.logits[j] = (off + j) in wanted
            rc = lib.llama_decode(ctx, b)
            if rc != 0:
                raise RuntimeError(f"{WHO}: llama_decode returned {rc}")
            for j in range(len(chunk)):
                if off + j in wanted:
                    ptr = lib.llama_get_logits_ith(ctx, j)
                    out[off + j] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        return out

    def _context_logits(self, ctx: list[int]) -> np.ndarray:
        """The logits after ``ctx`` (which predict the first continuation token); ``ctx`` stays in the cache.
        The tokens it shares with what is cached are not evaluated again (at least its last one is, for its
        logits)."""
        if self.past is None:
            self.lib.llama_memory_clear(self._memory(), True)
            self.past = []
        keep = common_prefix_length(self.past, ctx) if self.reuse_prefix else 0
        keep = min(keep, len(ctx) - 1)
        self._truncate(keep)
        keep = len(self.past)
        rest = ctx[keep:]
        logits = self._decode(rest, keep, [len(rest) - 1])[len(rest) - 1]
        self.past = list(ctx)
        return logits

    def _branch_logits(self, ctx_len: int, body: list[int]) -> list[np.ndarray]:
        """The logits after each token of ``body`` evaluated right after the cached context; removed again."""
        assert self.past is not None and len(self.past) == ctx_len
        got = self._decode(body, ctx_len, range(len(body)))
        self.past.extend(body)
        self._truncate(ctx_len)
        return [got[i] for i in range(len(body))]

    # ------------------------------------------------------------ log-likelihoods
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        encoded: list[tuple[list[int], list[int]]] = []
        for i, r in enumerate(requests):
            ctx, cont = self.split(r.context, r.continuation)
            n = len(ctx) + len(cont) - 1
            if n > self.n_ctx:
                raise InputTooLongError(
                    f"{WHO}: request {i} (context {describe(r.context)}, continuation {describe(r.continuation)}) "
                    f"is {n} tokens long, more than n_ctx {self.n_ctx}; it is not truncated: shorten the prompt "
                    f"(fewer shots) or raise n_ctx"
                )
            encoded.append((ctx, cont))
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(encoded):
            groups.setdefault(tuple(ctx), []).append(i)
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        for ctx_key in sorted(groups):  # sorted token sequences: neighbours share their longest prefixes
            ctx = list(ctx_key)
            first = self._context_logits(ctx)
            first_stats = _log_softmax_stats(first)
            for i in groups[ctx_key]:
                cont = encoded[i][1]
                if not cont:
                    results[i] = LoglikelihoodResult(0.0, True, 0)
                    continue
                rows = [(first, first_stats)]
                if len(cont) > 1:
                    if self.past != ctx:  # the cache could not drop the previous branch and was cleared
                        self._context_logits(ctx)
                    rows += [(x, _log_softmax_stats(x)) for x in self._branch_logits(len(ctx), cont[:-1])]
                lp = 0.0
                greedy = True
                for (logits, (lse, top)), t in zip(rows, cont):
                    lp += float(logits[t]) - lse
                    greedy = greedy and top == t
                results[i] = LoglikelihoodResult(lp, greedy, len(cont))
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------ generation
    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        if not self.chat_template:
            raise ConfigError(f"{WHO}: the GGUF holds no chat template; set chat_template or use kind: base")
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=self.chat_template, eos_token=self.eos_text, bos_token=self.bos_text,
                add_generation_prompt=True,
            )
        return self._formatter(messages=list(messages)).prompt

    def prompt_tokens(self, r: GenerationRequest) -> list[int]:
        if r.messages is not None:
            return self.tok_encode(self.chat_prompt(r.message_dicts()))
        return self.tok_encode(r.prompt or "") or [self.prefix_token_id]  # an empty prompt: start from BOS/EOS

    def _is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def _text(self, tokens: list[int], errors: str = "replace") -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors=errors)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out: list[GenerationResult] = []
        for i, r in enumerate(requests):
            toks = self.prompt_tokens(r)
            if len(toks) >= self.n_ctx:
                what = describe(r.prompt) if r.prompt is not None else describe(repr(r.message_dicts()))
                raise InputTooLongError(
                    f"{WHO}: request {i} (prompt {what}) is {len(toks)} tokens long, no room left under n_ctx "
                    f"{self.n_ctx}; it is not truncated: shorten the prompt or raise n_ctx"
                )
            out.append(self._generate_one(toks, r.config))
        return out

    def _generate_one(self, prompt: list[int], cfg: GenerationConfig) -> GenerationResult:
        budget = min(cfg.max_new_tokens, self.n_ctx - len(prompt))
        stops = [s for s in cfg.stop if s]
        window = 4 * max((len(s) for s in stops), default=0) + 4
        rng = np.random.default_rng(_seed(cfg, prompt, self.backend.seed)) if cfg.temperature > 0 else None
        tokens: list[int] = []
        generated = 0
        finish = "length"
        logits = self._context_logits(prompt) if budget > 0 else None
        while logits is not None:
            t = _pick(logits, cfg, rng)
            generated += 1
            if self._is_eog(t):
                finish = "stop"
                break
            tokens.append(t)
            if stops and any(s in self._text(tokens[-window:], "ignore") for s in stops):
                finish = "stop"
                break
            if len(tokens) >= budget:
                break
            assert self.past is not None
            logits = self._decode([t], len(self.past), [0])[0]
            self.past.append(t)
        text = self._text(tokens)
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        return GenerationResult(text[:cut] if cut >= 0 else text, len(prompt), generated, finish)


def _pick(logits: np.ndarray, cfg: GenerationConfig, rng: np.random.Generator | None) -> int:
    """The next token: arg-max at temperature 0; else temperature, then top-p (the smallest set of tokens whose
    probability reaches top_p), then a draw, as the hf backend samples."""
    if rng is None:
        return int(logits.argmax())
    x = logits.astype(np.float64) / cfg.temperature
    p = np.exp(x - x.max())
    p /= p.sum()
    if cfg.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        sp = p[order]
        keep = (np.cumsum(sp) - sp) < cfg.top_p
        q = np.zeros_like(p)
        q[order[keep]] = sp[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))


def _log_softmax_stats(logits: np.ndarray) -> tuple[float, int]:
    """(log-sum-exp in float64, arg-max) of one row of logits."""
    x = logits.astype(np.float64)
    m = float(x.max())
    return m + float(np.log(np.exp(x - m).sum())), int(x.argmax())


def _seed(cfg: GenerationConfig, prompt: list[int], default: int) -> int:
    # a pure function of (seed, prompt): a sampled answer does not depend on which requests come before it
    seed = cfg.seed if cfg.seed is not None else default
    h = hashlib.blake2b(repr((seed, prompt)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")
