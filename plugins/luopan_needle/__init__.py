"""Needle in a haystack: long-context retrieval over a grid of context lengths x depths x seeded repeats.

Registers the ``needle`` dataset loader, the ``needle_match`` evaluator, a config check (the answer budget must
cover the models' ``max_new_tokens``) and a run-finish hook that draws the heatmaps and tables. Heavy imports
(transformers, OpenCC, matplotlib) happen only when a run uses them.
"""

from luopan import hookimpl


@hookimpl
def luopan_register_datasets(register):
    register(
        "needle",
        "luopan_needle.dataset:NeedleDataset",
        params="luopan_needle.dataset:NeedleParams",
        description="needle in a haystack: context lengths x depths x repeats, single/multi/reasoning needles",
    )


@hookimpl
def luopan_register_evaluators(register):
    register(
        "needle_match",
        "luopan_needle.evaluator:NeedleMatch",
        params="luopan_needle.evaluator:NeedleMatchParams",
        description="needle key phrases found after normalisation (fraction of needles); optional LLM judge",
    )


@hookimpl
def luopan_validate_config(config, source):
    from luopan_needle.checks import check_answer_budget

    check_answer_budget(config, source)


@hookimpl
def luopan_run_finish(run, results):
    import logging
    import sys

    if "luopan_needle.dataset" not in sys.modules:  # no needle dataset was loaded: nothing to draw
        return
    from luopan_needle.report import write_needle_reports

    try:
        write_needle_reports(run, results)
    except Exception:  # a report that cannot be drawn must not fail a run whose answers are all in
        logging.getLogger("luopan.needle").exception("needle: heatmaps and tables could not be written")
