"""Outputs are pure functions of (seed, request): the same request always gets the same answer."""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from luopan.components import Backend
from luopan.types import GenerationRequest, GenerationResult, LoglikelihoodRequest, LoglikelihoodResult


class FakeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    delay_s: float = Field(default=0.0, ge=0, description="sleep per call (to test interruption)")
    fail_if_prompt_contains: str | None = Field(default=None, description="raise on such a prompt (tests)")
    exit_if_prompt_contains: str | None = Field(default=None, description="end the whole process on such a "
                                                "prompt, as a crashing worker does (tests)")
    chunk_size: int = Field(default=4096, ge=1)
    calls_log: str | None = Field(default=None, description="append one line per request served (tests)")


def _h(*parts: str) -> int:
    return zlib.crc32("\x00".join(parts).encode())


class FakeBackend(Backend):
    capabilities = frozenset({"loglikelihood", "generate"})

    def __init__(self, seed: int = 0, delay_s: float = 0.0, fail_if_prompt_contains: str | None = None,
                 chunk_size: int = 4096, calls_log: str | None = None,
                 exit_if_prompt_contains: str | None = None) -> None:
        self.seed = seed
        self.exit_on = exit_if_prompt_contains
        self.delay_s = delay_s
        self.fail = fail_if_prompt_contains
        self.chunk_size = chunk_size
        self.calls_log = calls_log

    def identity(self) -> dict[str, Any]:
        return {"backend": "fake", "seed": self.seed, "version": 1}

    @property
    def _watched(self) -> bool:
        """Whether a test asked for anything per call (a failure, a delay, a log, an exit)."""
        return self.fail is not None or bool(self.delay_s) or bool(self.calls_log) or self.exit_on is not None

    def _served(self, texts: Sequence[str]) -> None:
        if not self._watched:
            return
        if self.exit_on is not None and any(self.exit_on in t for t in texts):
            import os

            os._exit(3)
        if self.fail is not None:
            for t in texts:
                if self.fail in t:
                    raise RuntimeError(f"fake backend told to fail on a prompt containing {self.fail!r}")
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.calls_log:
            with open(self.calls_log, "a", encoding="utf-8") as fh:
                fh.writelines(f"{_h(t):08x}{len(t):x}\n" for t in texts)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        if self._watched:  # the requests' texts are built only for a test that watches them
            self._served([r.context + "\x01" + r.continuation for r in requests])
        seed = f"{self.seed}\x00".encode()
        out = []
        last_ctx, head = None, 0
        for r in requests:  # _h(seed, context, continuation), the context's part computed once per question
            if r.context != last_ctx:
                last_ctx, head = r.context, zlib.crc32(f"{r.context}\x00".encode(), zlib.crc32(seed))
            h = zlib.crc32(r.continuation.encode(), head)
            out.append(LoglikelihoodResult(-(h % 10_000) / 1000.0, False, len(r.continuation)))
        return out

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        texts = [r.prompt if r.prompt is not None else repr(r.messages) for r in requests]
        self._served(texts)
        out = []
        for t, r in zip(texts, requests):
            h = _h(str(self.seed), t, repr(r.config.as_key()))
            letter = "ABCD"[h % 4]
            text = f"答案是 {letter}" if h % 2 else f"The answer is ({letter})."
            out.append(GenerationResult(text[: r.config.max_new_tokens * 4], len(t), len(text), "stop"))
        return out
