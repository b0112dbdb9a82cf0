"""A run's output folder: where each unit's predictions and results go, writing them, reading them back.

Layout: ``<out>/predictions/<model>/<dataset>[.shardKofN].jsonl`` (one record per sample; ``question`` names the
question a sample belongs to where a question spans several samples: paired comparisons pair questions) and
``<out>/results/<model>/<dataset>[.shardKofN].json`` (a :class:`~luopan.components.UnitResult`). Folder and file
names are :func:`luopan.files.safe_name` of the labels; the run config refuses labels that would share one.
Every write is atomic and redacted (:func:`luopan.files.atomic_write`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from luopan.components import UnitResult
from luopan.files import atomic_write, safe_name
from luopan.types import ConversationResult
from luopan.units import Unit, UnitSpec, question_key


def prediction_files(out: str | Path, model: str, dataset: str) -> list[Path]:
    """The prediction files of ``model`` on ``dataset`` in the run folder ``out``: the unit's own file, or else
    its shards in shard order (``shard2of12`` before ``shard10of12``); empty when there are none."""
    folder = Path(out) / "predictions" / safe_name(model)
    name = safe_name(dataset)
    whole = folder / f"{name}.jsonl"
    if whole.is_file():
        return [whole]
    return sorted(folder.glob(f"{name}.shard*of*.jsonl"),
                  key=lambda f: int(f.name[len(name) + len(".shard"):].split("of", 1)[0] or 0))


class RunOutputs:
    """Paths and writers of one run's output folder ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def unit_path(self, kind: str, unit: Unit | UnitSpec, suffix: str) -> Path:
        spec = unit.spec if isinstance(unit, Unit) else unit
        name = safe_name(spec.dataset) + ("" if spec.n_shards == 1 else f".shard{spec.shard + 1}of{spec.n_shards}")
        return self.out / kind / safe_name(spec.model) / f"{name}{suffix}"

    def predictions(self, unit: Unit | UnitSpec) -> list[dict[str, Any]]:
        """A finished unit's per-sample records; empty for a unit that wrote none (it failed)."""
        path = self.unit_path("predictions", unit, ".jsonl")
        if not path.is_file():
            return []
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

    def write_predictions(self, unit: Unit, outputs: Sequence[Any], scored: Sequence[Any],
                          answers: Sequence[Any] | None = None) -> None:
        """One record per sample. ``outputs`` are the raw results (``output``: the text as generated);
        ``answers`` what was scored, where a reasoning model's thinking was cut off (``answer``, and
        ``answer_turns`` for a conversation, written only where they differ from the raw text)."""
        lines = []
        requests = unit.requests if unit.mode == "generate" else [None] * len(unit.samples)
        answers = answers if answers is not None else outputs
        for i, (s, out, ans, sc, req) in enumerate(zip(unit.samples, outputs, answers, scored, requests)):
            rec: dict[str, Any] = {"id": s.id, "subset": s.subset, "prompt": s.prompt, "target": s.target}
            if s.meta and (q := question_key(s)) != s.id:  # one question of several samples (options, rotations)
                rec["question"] = q
            if unit.mode == "likelihood":
                rec["choices"] = s.choices
                rec["logprobs"] = [o.logprob for o in out]
            else:
                req = unit.last_requests.get(i, req)  # a multi-turn sample: its whole conversation
                if req.messages is not None:  # what a chat model really received
                    rec["messages"] = req.message_dicts()
                rec["output"] = out.text
                if ans is not out and ans.text != out.text:
                    rec["answer"] = ans.text
                if isinstance(out, ConversationResult):
                    rec["turns"] = out.texts
                    if ans is not out and ans.texts != out.texts:
                        rec["answer_turns"] = ans.texts
            rec["prediction"] = sc.prediction
            rec["score"] = sc.score
            if sc.extra:
                rec["extra"] = sc.extra
            lines.append(orjson.dumps(rec))
        atomic_write(self.unit_path("predictions", unit, ".jsonl"), b"\n".join(lines) + (b"\n" if lines else b""))

    def write_result(self, unit: Unit | UnitSpec, result: UnitResult) -> None:
        atomic_write(self.unit_path("results", unit, ".json"), json.dumps(asdict(result), ensure_ascii=False, indent=2))
