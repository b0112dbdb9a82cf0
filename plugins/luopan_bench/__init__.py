"""Built-in benchmarks on the data in ``$LUOPAN_DATA`` (ARC, HellaSwag, BoolQ, PIQA, WinoGrande, TruthfulQA,
LAMBADA, BBH, GSM8K chain of thought, MATH): the ``bench`` loader (the ``files`` loader on readers for the
layouts it cannot map alone), the ``greedy_match``, ``truthfulqa_mc2`` and ``math_equiv`` evaluators. The
presets themselves live in registry.yaml; docs/benchmarks.md lists them.

This module only registers; the code lives in :mod:`luopan_bench.dataset`, :mod:`luopan_bench.sources`,
:mod:`luopan_bench.evaluators` and :mod:`luopan_bench.mathans`.
"""

from typing import Any

from luopan import hookimpl


@hookimpl
def luopan_register_datasets(register: Any) -> None:
    register(
        "bench",
        "luopan_bench.dataset:BenchDataset",
        params="luopan_bench.dataset:BenchParams",
        description="the files loader on a reader for HellaSwag, PIQA, TruthfulQA or BBH's local layout",
    )


@hookimpl
def luopan_register_evaluators(register: Any) -> None:
    register(
        "greedy_match",
        "luopan_bench.evaluators:GreedyMatch",
        description="LAMBADA: the continuation is the greedy one (acc), and the subset's perplexity",
    )
    register(
        "truthfulqa_mc2",
        "luopan_bench.evaluators:TruthfulQAMC2",
        description="TruthfulQA MC2: normalised probability mass of the true answers",
    )
    register(
        "math_equiv",
        "luopan_bench.evaluators:MathEquiv",
        description="MATH: the final answer is equivalent to the gold one (math-verify, else sympy)",
    )
