"""Shared state for limits that must hold across processes and machines (an API's requests per minute).

A backend that paces itself (the ``openai`` backend's rate limiter) keeps its schedule in a small dict per
scope. On one machine, a file under ``flock`` shares it between processes. A runner that spreads replicas over
several machines installs a :class:`SharedState` in each worker process before building the backend
(:func:`use_shared_state`): every update of the schedule then runs atomically in one place for the whole run
(the ``ray`` runner: a Ray actor), so the limit holds across the cluster, not per host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = ["SharedState", "shared_state", "use_shared_state"]

T = TypeVar("T")


class SharedState(Protocol):
    def apply(self, key: str, fn: Callable[[dict[str, Any]], T]) -> T:
        """Run ``fn`` on the state of ``key`` (a dict it may change; empty the first time), atomically with
        respect to every other ``apply`` of the run, and return its result. ``fn`` must be picklable."""
        ...


_shared: SharedState | None = None


def use_shared_state(state: SharedState | None) -> None:
    """Install (or, with None, remove) this process's shared state."""
    global _shared
    _shared = state


def shared_state() -> SharedState | None:
    """The shared state a runner installed in this process, if any."""
    return _shared
