"""luopan's own small demo benchmark (written for luopan, no third-party data) and a short-answer evaluator."""

from luopan import hookimpl


@hookimpl
def luopan_register_datasets(register):
    from luopan_demo.dataset import DemoDataset, DemoParams

    register("demo", DemoDataset, params=DemoParams,
             description="luopan's embedded demo: Chinese and English multiple choice and short answers")


@hookimpl
def luopan_register_evaluators(register):
    from luopan_demo.short_answer import ShortAnswer, ShortAnswerParams

    register("short_answer", ShortAnswer, params=ShortAnswerParams,
             description="normalised exact or contained match against one or more reference answers")
