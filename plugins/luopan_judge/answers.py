"""The ``answers`` backend: a model whose answers were generated before (MT-Bench's ``model_answer/*.jsonl``,
Arena-Hard's answer files, AlpacaEval's ``model_outputs.json``), served as given predictions: no inference.

A request is matched to its answer by the sample id it carries (:attr:`GenerationRequest.sample_id`: MT-Bench's
``question_id``, Arena-Hard's ``uid``, AlpacaEval's row index), else by the text of its first user turn. The turn
is the number of user messages in the request, so multi-turn datasets (MT-Bench) get the file's second answer for
their second turn. A question the file has no answer for is a failed request naming the file and the question,
never an empty answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from luopan.components import Backend
from luopan.data import find_data, read_jsonl
from luopan.errors import ConfigError
from luopan.types import FailedResult, GenerationRequest, GenerationResult

Format = Literal["auto", "mt_bench", "arena_hard", "alpaca_eval", "records"]


class AnswersParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="an answer file, or a folder holding <model>.jsonl / <model>/model_outputs.json")
    model: str | None = Field(default=None, description="the model's name in the folder (and in its records)")
    format: Format = Field(default="auto", description="auto: from the records' fields")
    choice: int = Field(default=0, ge=0, description="MT-Bench files: which of a record's choices")
    chunk_size: int = Field(default=4096, ge=1)


def _locate(path: str, model: str | None) -> Path:
    p = find_data(path, what="answers backend")
    if p.is_file():
        return p
    if model is None:
        raise ConfigError(f"answers backend: '{p}' is a folder; name the model (params.model) whose answers to read")
    for cand in (p / f"{model}.jsonl", p / model / "model_outputs.json", p / f"{model}.json",
                 p / model / "model_outputs.jsonl"):
        if cand.is_file():
            return cand
    names = sorted({f.stem for f in p.glob("*.json*")} | {d.name for d in p.iterdir() if (d / "model_outputs.json").is_file()})
    from luopan.plugins import nearest

    hint = nearest(model, names)
    raise ConfigError(f"answers backend: no answers of model '{model}' in {p}"
                      + (f" (did you mean '{hint}'?)" if hint else f"; found: {', '.join(names[:12]) or 'none'}"))


def _read_records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return list(read_jsonl(path))
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of answer records")
    return data


def detect_format(record: dict[str, Any]) -> str:
    if "choices" in record and ("question_id" in record or "uid" in record):
        return "mt_bench"
    if "messages" in record and "uid" in record:
        return "arena_hard"
    if "instruction" in record and "output" in record:
        return "alpaca_eval"
    return "records"


def _content(c: Any) -> str:
    """A turn's text: a string, or Arena-Hard's ``{"answer": ...}`` / FastChat's ``{"content": ...}``."""
    if isinstance(c, dict):
        for k in ("answer", "content", "text"):
            if k in c:
                return _content(c[k])
    return "" if c is None else str(c)


def parse_records(records: Sequence[dict[str, Any]], fmt: str, *, choice: int = 0, source: str = "") -> tuple[
        dict[str, list[str]], dict[str, list[str]], str | None]:
    """``(answers by id, answers by first-turn text, model name)``; each answer a list of turns."""
    by_id: dict[str, list[str]] = {}
    by_text: dict[str, list[str]] = {}
    model: str | None = None
    for n, r in enumerate(records):
        if not isinstance(r, dict):
            raise ConfigError(f"{source}: record {n}: expected an object")
        f = detect_format(r) if fmt == "auto" else fmt
        text = None
        if f == "mt_bench":
            choices = r.get("choices") or []
            if len(choices) <= choice:
                raise ConfigError(f"{source}: record {n}: no choice {choice}")
            turns = [_content(t) for t in choices[choice].get("turns", [])]
            rid = r.get("question_id", r.get("uid"))
            model = model or r.get("model_id") or r.get("model")
        elif f == "arena_hard":
            msgs = r.get("messages") or []
            turns = [_content(m.get("content")) for m in msgs if m.get("role") == "assistant"]
            users = [_content(m.get("content")) for m in msgs if m.get("role") == "user"]
            text = users[0] if users else None
            rid = r.get("uid")
            model = model or r.get("model")
        elif f == "alpaca_eval":
            turns = [_content(r.get("output"))]
            text = r.get("instruction")
            rid = n
            model = model or r.get("generator")
        else:
            rid = next((r[k] for k in ("question_id", "uid", "id") if k in r), n)
            if "turns" in r:
                turns = [_content(t) for t in r["turns"]]
            else:
                key = next((k for k in ("answer", "output", "response", "completion", "prediction") if k in r), None)
                if key is None:
                    raise ConfigError(f"{source}: record {n}: no answer field (answer, output, response, turns)")
                turns = [_content(r[key])]
            text = r.get("question") or r.get("instruction") or r.get("prompt")
        by_id[str(rid)] = turns
        if isinstance(text, str):
            by_text.setdefault(text.strip(), turns)
    return by_id, by_text, model


class AnswersBackend(Backend):
    kind = "chat"
    capabilities = frozenset({"generate"})

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The answer file of this model, found like any data path (nothing is read)."""
        try:
            _locate(params.path, params.model)
        except ConfigError as exc:
            return [str(exc)]
        return []

    def __init__(self, path: str, model: str | None = None, format: str = "auto", choice: int = 0,
                 chunk_size: int = 4096) -> None:
        self.file = _locate(path, model)
        self.model = model
        self.format = format
        self.choice = choice
        self.chunk_size = chunk_size
        self._by_id: dict[str, list[str]] | None = None
        self._by_text: dict[str, list[str]] = {}

    def identity(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.file.read_bytes()).hexdigest()
        return {"backend": "answers", "model": self.model, "file": self.file.name, "sha256": digest,
                "choice": self.choice}

    def load(self) -> None:
        if self._by_id is None:
            by_id, by_text, name = parse_records(_read_records(self.file), self.format, choice=self.choice,
                                                 source=str(self.file))
            self._by_id, self._by_text = by_id, by_text
            if self.model is None:
                self.model = name

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | FailedResult]:  # type: ignore[override]
        self.load()
        assert self._by_id is not None
        out: list[GenerationResult | FailedResult] = []
        for r in requests:
            users = [c for role, c in (r.messages or ()) if role == "user"] if r.messages else [r.prompt or ""]
            turn = max(1, len(users)) - 1
            turns = self._by_id.get(str(r.sample_id)) if r.sample_id is not None else None
            if turns is None and users:
                turns = self._by_text.get(users[0].strip())
            if turns is None:
                out.append(FailedResult(f"{self.file}: no answer for question {r.sample_id!r}"))
            elif turn >= len(turns):
                out.append(FailedResult(f"{self.file}: question {r.sample_id!r} has {len(turns)} answer turn(s), "
                                        f"turn {turn + 1} was asked"))
            else:
                text = turns[turn]
                out.append(GenerationResult(text, None, None, "stop"))
        return out
