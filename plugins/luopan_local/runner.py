from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from luopan.components import Runner, UnitResult


class LocalRunner(Runner):
    def run(self, units: Sequence[Any], execute: Callable[[Any], UnitResult]) -> list[UnitResult]:
        # a failed unit is recorded by ``execute`` and the next one still runs
        return [execute(u) for u in units]
