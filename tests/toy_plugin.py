"""A tiny in-process dataset and evaluator for kernel tests (no files, no real model).

Kernel tests register this module with ``load_registry(extra_plugins=[("toy", toy_plugin)])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from luopan import hookimpl
from luopan.components import Dataset, EvalContext, Evaluator
from luopan.types import Sample, ScoredSample


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subsets: int = 3
    per_subset: int = 5
    template: str = "Q{i} of {s}: pick one.\nAnswer:"


class ToyDataset(Dataset):
    default_evaluator = "toy_accuracy"

    def __init__(self, subsets: int = 3, per_subset: int = 5, template: str = "") -> None:
        self.n_subsets, self.per_subset, self.template = subsets, per_subset, template

    def subsets(self) -> list[str]:
        return [f"s{j}" for j in range(self.n_subsets)]

    def load(self, subset: str, *, shots: int = 0) -> list[Sample]:
        prefix = "".join(f"Example {k}.\n" for k in range(shots))
        return [
            Sample(f"{subset}/{i}", subset, prefix + self.template.format(i=i, s=subset), i % 4,
                   choices=[" A", " B", " C", " D"], prefix=prefix)
            for i in range(self.per_subset)
        ]

    def categories(self) -> dict[str, list[str]]:
        return {"even": [s for s in self.subsets() if int(s[1:]) % 2 == 0]}

    def fingerprint(self) -> str:
        return "toy-v1"

    def describe(self) -> dict[str, Any]:
        return {"template": self.template}


class ToyAccuracy(Evaluator):
    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        out = []
        for s, o in zip(samples, outputs):
            if ctx.mode == "likelihood":
                pred = max(range(len(o)), key=lambda k: o[k].logprob)
            else:
                pred = next((k for k, c in enumerate("ABCD") if c in o.text), None)
            out.append(ScoredSample(s.id, s.subset, float(pred == s.target), pred))
        return out


@hookimpl
def luopan_register_datasets(register):
    register("toy", ToyDataset, params=ToyParams, description="toy dataset (kernel tests)")


@hookimpl
def luopan_register_evaluators(register):
    register("toy_accuracy", ToyAccuracy, description="toy accuracy (kernel tests)")
