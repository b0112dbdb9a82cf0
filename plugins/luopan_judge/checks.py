"""Checks of a run file before anything runs: a judging evaluator has a judge, a baseline is a model of the run."""

from __future__ import annotations

from typing import Any

from luopan.errors import ConfigError

NEED_JUDGE = ("pairwise", "single_grade", "cascade")


def check_judges(config: Any, source: str) -> None:
    models = [m.label for m in config.models if m.role != "judge"]
    for i, d in enumerate(config.datasets):
        ev = d.evaluator
        if ev not in NEED_JUDGE:
            continue
        params = d.evaluator_params or {}
        votes_only = ev == "pairwise" and params.get("judge") is False
        if not d.judges and not votes_only:
            raise ConfigError(f"datasets[{i}] '{d.label}': {ev} needs a judge: add a chat model with role: judge to "
                              f"models (or name one with the dataset's judge:)")
        if votes_only and not params.get("votes"):
            raise ConfigError(f"datasets[{i}] '{d.label}': pairwise with judge: false needs votes")
        baseline = params.get("baseline")
        if ev == "pairwise" and baseline is not None and baseline not in models:
            raise ConfigError(f"datasets[{i}] '{d.label}': pairwise: baseline '{baseline}' is not a model of this run "
                              f"(models: {', '.join(models)}); add it, e.g. with the answers backend for pregenerated "
                              f"answers")


def file_problems(prompts: str = "builtin", votes: list[Any] | tuple[Any, ...] = (), *,
                  arena: bool = False) -> list[str]:
    """What a judging evaluator's options would stop on, found before any judge is asked: a judge prompt file or a
    votes file that is not there, and numpy for the arena's Bradley-Terry ratings (pairwise)."""
    from luopan.data import find_data
    from luopan.errors import LuopanError

    problems = []
    if prompts not in ("builtin", "brief"):
        try:
            find_data(prompts, what="judge prompts")
        except LuopanError as exc:
            problems.append(str(exc))
    for spec in votes:
        try:
            find_data(spec.path, what="votes")
        except LuopanError as exc:
            problems.append(str(exc))
    if arena:
        from luopan.deps import installed

        if not installed("numpy"):
            problems.append("the arena's ratings need the numpy package, which is not installed: "
                            "pip install 'luopan[judge]'")
    return problems
