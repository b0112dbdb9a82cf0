"""Config checks for needle datasets, before anything runs."""

from __future__ import annotations

from typing import Any

from luopan.config import generation_config
from luopan.errors import ConfigError


def check_answer_budget(config: Any, source: str) -> None:
    """Each model's ``max_new_tokens`` on a needle dataset must fit in the tokens the grid keeps free for the
    answer (``answer_tokens``): otherwise a cell at the edge of the window would have its answer cut short."""
    for ds in config.datasets:
        if ds.loader != "needle":
            continue
        budget = int(ds.params.get("answer_tokens", 32))
        for model in config.models:
            n = generation_config(model, ds).max_new_tokens
            if n > budget:
                raise ConfigError(
                    f"{source}: dataset '{ds.label}': model '{model.label}' may generate {n} tokens but the grid "
                    f"keeps {budget} free for the answer; set the dataset's generation.max_new_tokens <= {budget} "
                    f"or params.answer_tokens >= {n}")
