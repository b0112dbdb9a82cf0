"""Data contamination checks: ``luopan contamination RUN.yaml --corpus PATH...`` (docs/contamination.md).

* n-gram overlap (lm-eval's 13-gram decontamination rule, hashed) between a run's benchmark items and a corpus,
  per item and per benchmark, with clean-subset scores beside the full ones for a finished run;
* membership signals without a corpus for local models (``--membership``): Min-K% probability and the
  option-order test.

Nothing here is imported before the command runs: the plugin only registers its command.
"""

from typing import Any

from luopan import hookimpl


def _configure(parser: Any) -> None:
    from luopan_contamination.command import configure

    configure(parser)


def _run(args: Any, registry: Any) -> int:
    from luopan_contamination.command import run

    return run(args, registry)


@hookimpl
def luopan_register_commands(register: Any) -> None:
    register("contamination", help="check a run's benchmark items for contamination: n-gram overlap with a corpus "
                                   "(--corpus), membership signals of the run's models (--membership)",
             configure=_configure, run=_run)
