"""Subjective evaluation: a model judges open-ended answers (pairwise or on a 1-10 scale), and an arena ranks the
models from their battles (Bradley-Terry ratings with bootstrap intervals, win rates, judge consistency).

Registers the ``answers`` backend (pregenerated answers as given predictions), the ``questions`` dataset loader
(MT-Bench, Arena-Hard, AlpacaEval layouts), the ``pairwise``, ``single_grade`` and ``cascade`` evaluators, and a
run-finish hook that writes the arena leaderboards and the judging table (``docs/subjective.md``).
"""

from typing import Any

from luopan import hookimpl


@hookimpl
def luopan_register_backends(register: Any) -> None:
    register(
        "answers",
        "luopan_judge.answers:AnswersBackend",
        params="luopan_judge.answers:AnswersParams",
        description="pregenerated answers from files (MT-Bench, Arena-Hard, AlpacaEval) as given predictions",
    )


@hookimpl
def luopan_register_datasets(register: Any) -> None:
    register(
        "questions",
        "luopan_judge.questions:QuestionsDataset",
        params="luopan_judge.questions:QuestionsParams",
        description="open-ended questions for judged evaluation: MT-Bench (2 turns), Arena-Hard, AlpacaEval",
    )


@hookimpl
def luopan_register_evaluators(register: Any) -> None:
    register(
        "pairwise",
        "luopan_judge.pairwise:Pairwise",
        params="luopan_judge.pairwise:PairwiseParams",
        description="a judge compares two models' answers (both orders); battles for the arena leaderboard",
    )
    register(
        "single_grade",
        "luopan_judge.single:SingleGrade",
        params="luopan_judge.single:SingleGradeParams",
        description="a judge rates each answer 1-10 (with the reference answer when there is one)",
    )
    register(
        "cascade",
        "luopan_judge.single:Cascade",
        params="luopan_judge.single:CascadeParams",
        description="a rule decides what it can, the judge only the rest; judge calls saved reported",
    )


@hookimpl
def luopan_validate_config(config: Any, source: str) -> None:
    from luopan_judge.checks import check_judges

    check_judges(config, source)


@hookimpl
def luopan_run_finish(run: Any, results: Any) -> None:
    from luopan_judge.arena import write_arena_reports

    write_arena_reports(run, results)
