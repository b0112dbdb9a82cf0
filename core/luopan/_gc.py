"""Fewer garbage-collector passes while a run holds its plan in memory.

A big run keeps hundreds of thousands of long-lived objects (samples, requests, cache keys, results). With
CPython's default thresholds (a young collection every 700 allocations, a full one whenever the survivors
grow by a quarter) the collector walks them again and again: a quarter of a fast run's time. luopan's own
data has no reference cycles, so collecting every 100,000 allocations loses nothing but that time (the same
remedy as mypy's and Instagram's); cycles made by libraries are still collected, only less often.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (100_000, 20, 20)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the collector's thresholds for the block (never lower them); the previous ones come back after."""
    before = gc.get_threshold()
    if before[0] and before[0] < THRESHOLDS[0]:
        gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
