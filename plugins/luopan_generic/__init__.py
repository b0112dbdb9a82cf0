"""The no-code dataset path: the ``files`` loader (local files, save_to_disk folders, the Hugging Face hub,
mapped to samples by templates) and the ``exact_match`` and ``number_match`` evaluators.

This module only registers; the code lives in :mod:`luopan_generic.dataset`, :mod:`luopan_generic.readers`,
:mod:`luopan_generic.fields`, :mod:`luopan_generic.evaluators` and :mod:`luopan_generic.numbers`.
"""

from typing import Any

from luopan import hookimpl


@hookimpl
def luopan_register_datasets(register: Any) -> None:
    register(
        "files",
        "luopan_generic.dataset:FilesDataset",
        params="luopan_generic.dataset:FilesParams",
        description="any benchmark in jsonl/json/csv/parquet files or a datasets folder, mapped by templates",
    )


@hookimpl
def luopan_register_evaluators(register: Any) -> None:
    register(
        "exact_match",
        "luopan_generic.evaluators:ExactMatch",
        params="luopan_generic.evaluators:ExactMatchParams",
        description="normalised exact match of the output against the target (or any of a list)",
    )
    register(
        "number_match",
        "luopan_generic.evaluators:NumberMatch",
        params="luopan_generic.evaluators:NumberMatchParams",
        description="GSM8K-style numeric answers: strict '#### N' / 'The answer is N', and the last number",
    )
