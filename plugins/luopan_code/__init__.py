"""Code generation benchmarks: the ``code`` dataset loader (HumanEval, MBPP with their standard prompts) and
the ``code_pass`` evaluator, which runs each answer against its tests in a sandbox (the answer in a process
of its own with a timeout, memory, process, file and disk limits, no network and a throwaway tmpfs, the only
writable folder; the tests in another process that judges what the answer's functions return) and reports
pass@1 and the unbiased pass@k.

This module only registers; the code lives in :mod:`luopan_code.dataset`, :mod:`luopan_code.evaluator`,
:mod:`luopan_code.sandbox`, :mod:`luopan_code.programs` and :mod:`luopan_code.passk`. See docs/code.md.
"""

from typing import Any

from luopan import hookimpl


@hookimpl
def luopan_register_datasets(register: Any) -> None:
    register(
        "code",
        "luopan_code.dataset:CodeDataset",
        params="luopan_code.dataset:CodeParams",
        description="HumanEval and MBPP problems with their standard prompts (scored by code_pass)",
    )


@hookimpl
def luopan_register_evaluators(register: Any) -> None:
    register(
        "code_pass",
        "luopan_code.evaluator:CodePass",
        params="luopan_code.evaluator:CodePassParams",
        description="runs generated code against its tests in a sandbox: pass@1 and unbiased pass@k",
    )
