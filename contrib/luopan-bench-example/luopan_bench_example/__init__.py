"""An example third-party benchmark for luopan (unit conversions). This module only registers; the code is in
:mod:`luopan_bench_example.dataset`."""

from __future__ import annotations

from typing import Any

from luopan import hookimpl


@hookimpl
def luopan_register_datasets(register: Any) -> None:
    from luopan_bench_example.dataset import UnitConversion, UnitConversionParams

    register("unit_conversion", UnitConversion, params=UnitConversionParams,
             description="unit conversions (example community benchmark): multiple choice or short answer")


@hookimpl
def luopan_register_evaluators(register: Any) -> None:
    from luopan_bench_example.dataset import WithinTolerance, WithinToleranceParams

    register("within_tolerance", WithinTolerance, params=WithinToleranceParams,
             description="the answer's last number equals the reference within a relative tolerance")


@hookimpl
def luopan_register_presets(register: Any) -> None:
    register("dataset", "units_mcq", {
        "description": "unit conversions, 24 four-option questions (luopan-bench-example)",
        "loader": "unit_conversion",
        "params": {"form": "mcq"},
    })
    register("dataset", "units_qa", {
        "description": "unit conversions, 24 short-answer questions, 1% tolerance (luopan-bench-example)",
        "loader": "unit_conversion",
        "params": {"form": "qa"},
        "mode": "generate",
        "evaluator": "within_tolerance",
        "generation": {"max_new_tokens": 32, "stop": ["\n"]},
    })
