"""Multiple-choice benchmarks read from CSV files (CMMLU, C-Eval, MMLU) and the ``accuracy`` evaluator.

This module only registers; the code lives in :mod:`luopan_mcq.dataset`, :mod:`luopan_mcq.accuracy` and
:mod:`luopan_mcq.extract`.
"""

from typing import Any

from luopan import hookimpl


@hookimpl
def luopan_register_datasets(register: Any) -> None:
    register(
        "mcq_csv",
        "luopan_mcq.dataset:McqCsvDataset",
        params="luopan_mcq.dataset:McqCsvParams",
        description="multiple-choice questions from per-subject CSV files (CMMLU, C-Eval, MMLU layouts)",
    )


@hookimpl
def luopan_register_evaluators(register: Any) -> None:
    register(
        "accuracy",
        "luopan_mcq.accuracy:AccuracyEvaluator",
        description="multiple-choice accuracy: argmax log-likelihood, or the option named in generated text",
    )
