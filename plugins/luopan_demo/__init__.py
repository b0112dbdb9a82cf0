"""luopan's own small demo benchmark (written for luopan, no third-party data) and a short-answer evaluator."""

from luopan import hookimpl


@hookimpl
def luopan_register_datasets(register):
    register(
        "demo",
        "luopan_demo.dataset:DemoDataset",
        params="luopan_demo.dataset:DemoParams",
        description="luopan's embedded demo: Chinese and English multiple choice and short answers",
    )


@hookimpl
def luopan_register_evaluators(register):
    register(
        "short_answer",
        "luopan_demo.short_answer:ShortAnswer",
        params="luopan_demo.short_answer:ShortAnswerParams",
        description="normalised exact or contained match against one or more reference answers",
    )
