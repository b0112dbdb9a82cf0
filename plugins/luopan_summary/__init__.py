"""The default summarizer: score per subset, per category and overall (naive and weighted), with counts."""

from luopan import hookimpl


@hookimpl
def luopan_register_summarizers(register):
    register(
        "default",
        "luopan_summary.default:DefaultSummarizer",
        description="per subset, per category and overall, models as columns",
    )
