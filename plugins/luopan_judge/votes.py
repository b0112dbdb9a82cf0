"""Votes from files: pairwise judgments by people (or by another annotator) that feed the same aggregation as
the judge's battles.

Formats (``format: auto`` tells them apart by their fields):

- ``csv`` / ``jsonl`` / ``json`` records with ``model_a``, ``model_b``, ``winner`` and optionally ``annotator``
  (or ``judge``), ``question_id`` (or ``question``, ``uid``, ``instruction``: an id or the question's text) and
  ``turn`` (default 1). ``winner`` is ``model_a`` / ``model_b`` / ``tie`` (``tie (bothbad)`` too), ``A`` /
  ``B`` / ``C``, or a model's name. FastChat's MT-Bench human judgments and Chatbot Arena's battle logs use these
  fields.
- AlpacaEval ``annotations.json``: ``generator_1``, ``generator_2``, ``preference`` (1: the first wins, 2: the
  second, 1.5: tie; continuous preferences are kept as fractional outcomes), ``annotator``, ``instruction``.

Errors name the file, the record and the field.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from luopan.data import find_data, read_jsonl
from luopan.errors import ConfigError


class VotesSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a votes file (csv, jsonl, json) or AlpacaEval annotations.json")
    format: Literal["auto", "csv", "jsonl", "json", "alpaca_eval"] = "auto"
    name: str | None = Field(default=None, description="the source's label in tables (default: 'votes')")
    models: dict[str, str] = Field(default_factory=dict, description="model name in the file -> model label in the run")
    annotators: list[str] | None = Field(default=None, description="keep only these annotators")


@dataclass(frozen=True)
class Vote:
    question: str
    turn: int
    model_a: str
    model_b: str
    outcome: float  # for model_a: 1 won, 0 lost, 0.5 tie (fractional for continuous preferences)
    annotator: str
    source: str


_TIE = {"tie", "tie (bothbad)", "tie(bothbad)", "both_bad", "bothbad", "draw", "c", "equal", "平局"}
_cache: dict[tuple[str, float, str], list[Vote]] = {}


def _records(path: Path, fmt: str) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if fmt == "csv" or (fmt == "auto" and suffix in (".csv", ".tsv")):
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    if fmt == "jsonl" or (fmt == "auto" and suffix == ".jsonl"):
        return list(read_jsonl(path, what="votes"))
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of vote records")
    return data


def _outcome(winner: Any, a: str, b: str, where: str) -> float:
    w = str(winner).strip()
    low = w.lower()
    if low in ("model_a", "a", "1") or w == a:
        return 1.0
    if low in ("model_b", "b", "2") or w == b:
        return 0.0
    if low in _TIE or low == "0.5":
        return 0.5
    raise ConfigError(f"{where}: winner: '{w}' is not model_a, model_b, tie, A, B, C or one of the two models")


def load_votes(spec: VotesSpec) -> list[Vote]:
    path = find_data(spec.path, what="votes")
    key = (str(path), path.stat().st_mtime, spec.model_dump_json())
    if key in _cache:
        return _cache[key]
    records = _records(path, spec.format)
    source = spec.name or "votes"
    out: list[Vote] = []
    for n, r in enumerate(records):
        where = f"{path}: record {n}"
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: expected an object")
        if spec.format == "alpaca_eval" or (spec.format == "auto" and "generator_1" in r and "preference" in r):
            try:
                a, b, pref = str(r["generator_1"]), str(r["generator_2"]), r["preference"]
                question = str(r["instruction"])
            except KeyError as exc:
                raise ConfigError(f"{where}: missing field {exc}") from None
            if pref is None:
                continue  # AlpacaEval leaves failed annotations empty
            try:
                outcome = min(1.0, max(0.0, 2.0 - float(pref)))
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: preference: '{pref}' is not a number in [1, 2]") from None
            annotator = str(r.get("annotator") or "alpaca_eval")
            turn = 1
        else:
            missing = [f for f in ("model_a", "model_b", "winner") if f not in r]
            if missing:
                raise ConfigError(f"{where}: missing field(s) {', '.join(missing)} (a vote needs model_a, model_b, "
                                  f"winner)")
            a, b = str(r["model_a"]), str(r["model_b"])
            outcome = _outcome(r["winner"], a, b, where)
            question = str(next((r[k] for k in ("question_id", "question", "uid", "instruction") if k in r), n))
            annotator = str(r.get("annotator") or r.get("judge") or "annotator")
            try:
                turn = int(r.get("turn") or 1)
            except ValueError:
                raise ConfigError(f"{where}: turn: '{r.get('turn')}' is not a number") from None
        if spec.annotators is not None and annotator not in spec.annotators:
            continue
        out.append(Vote(question, turn, spec.models.get(a, a), spec.models.get(b, b), outcome, annotator, source))
    if not out:
        raise ConfigError(f"{path}: no votes" + (f" by annotators {spec.annotators}" if spec.annotators else ""))
    _cache[key] = out
    return out


def discrete(outcome: float) -> float:
    """A (possibly continuous) outcome as a win (1), loss (0) or tie (0.5), for agreement rates."""
    return 1.0 if outcome > 2 / 3 else 0.0 if outcome < 1 / 3 else 0.5
