"""Units of work: one model x one dataset x one shard, and the question a sample belongs to.

A :class:`UnitSpec` is the plain, picklable description of a unit (labels, shard, mode): any process that holds
the registry and the run config can rebuild the unit from it and execute it
(:func:`luopan.execution.execute_spec`). A :class:`Unit` is the planned form: its samples, requests, cache keys
and what the cache already holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from luopan.config import ResolvedDataset, ResolvedModel
from luopan.types import GenerationRequest, Request, Sample


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """What identifies a unit: plain strings and integers, so it pickles and travels to any worker."""

    model: str  #: the model's label
    dataset: str  #: the dataset's label
    shard: int = 0
    n_shards: int = 1
    mode: str = "likelihood"

    @property
    def id(self) -> str:
        s = f"{self.model}/{self.dataset}"
        return s if self.n_shards == 1 else f"{s}#{self.shard + 1}of{self.n_shards}"


@dataclass
class Unit:
    """A planned unit: its samples, requests, their cache keys and the cached results found at plan time."""

    model: ResolvedModel
    dataset: ResolvedDataset
    shard: int = 0
    n_shards: int = 1
    mode: str = "likelihood"
    samples: list[Sample] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    found: dict[bytes, Any] = field(default_factory=dict)  # cached results, looked up at plan time
    #: multi-turn samples (Sample.turns): requests of turns 2+ and how many of them the cache holds (at plan
    #: time only those whose earlier turns are cached can be known); the last turn's request per sample
    later_turns: int = 0
    later_cached: int = 0
    last_requests: dict[int, GenerationRequest] = field(default_factory=dict)

    @property
    def cached(self) -> int:
        return sum(1 for k in self.keys if k in self.found)

    @property
    def spec(self) -> UnitSpec:
        return UnitSpec(self.model.label, self.dataset.label, self.shard, self.n_shards, self.mode)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def multi_turn(self) -> bool:
        return self.mode == "generate" and any(s.turns and len(s.turns) > 1 for s in self.samples)


def question_key(sample: Sample) -> str:
    """The question a sample belongs to: the options of one WinoGrande question (``meta["partial"]``), the
    rotations of a CircularEval question (``meta["circular"]``) and the repeats of a problem
    (``meta["problem"]``) are one question each; any other sample is a question of its own."""
    meta = sample.meta
    if not meta:  # most samples: a question of their own (the hot path of big runs)
        return sample.id
    for kind in ("partial", "circular"):
        g = meta.get(kind)
        if isinstance(g, dict) and "group" in g:
            return f"{kind}:{g['group']}"
    return str(meta.get("problem", sample.id))


def question_groups(samples: Sequence[Sample]) -> list[list[Sample]]:
    """``samples`` grouped by question, in order of first appearance."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(question_key(s), []).append(s)
    return list(groups.values())
