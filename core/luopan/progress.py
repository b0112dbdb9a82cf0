"""A progress bar per unit with rate, ETA and token counts (rich), silent when disabled or not a terminal.

rich is imported only when a bar will really be drawn, so batch runs and pipes pay nothing for it.
"""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._p: Any = None
        self._tokens: dict[int, int] = {}
        self._next = 0
        self._status_task: int | None = None
        self._last_status = ""
        self._last_status_at = 0.0
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._p = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[tokens]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> Progress:
        if self._p is not None:
            self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def add(self, name: str, total: int, completed: int = 0) -> int:
        if self._p is None:
            self._next += 1
            return self._next
        tid = self._p.add_task(name, total=total, completed=completed, rate="", tokens="")
        self._tokens[tid] = 0
        return tid

    def advance(self, task: int, n: int, usage: dict[str, int] | None = None) -> None:
        if self._p is None:
            return
        if usage:
            self._tokens[task] += usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        t = self._p._tasks.get(task)
        speed = t.speed if t is not None and t.speed else None
        rate = f"{speed * 60:.0f} req/min" if speed else ""
        tokens = f"{self._tokens[task]} tok" if self._tokens[task] else ""
        self._p.update(task, advance=n, rate=rate, tokens=tokens)

    def status(self, message: str) -> None:
        """A backend's word on what it is doing now (retries, connection failures), shown as it happens: a line
        under the bars, or, without bars, on stderr (each distinct message at most every 5 seconds). An empty
        message clears the line. Not thread-safe: call it from the thread that runs the backend's ``stream``."""
        import time

        if self._p is not None:
            if not message:
                if self._status_task is not None:
                    self._p.remove_task(self._status_task)  # cleared: the row goes
                    self._status_task = None
                return
            if self._status_task is None:
                self._status_task = self._p.add_task("", total=None, rate="", tokens="")
            self._p.update(self._status_task, description=f"[yellow]{message}")
            return
        if not message:
            return
        now = time.monotonic()
        if message == self._last_status and now - self._last_status_at < 5.0:
            return
        self._last_status, self._last_status_at = message, now
        print(f"luopan: {message}", file=sys.stderr, flush=True)

    def finish(self, task: int) -> None:
        if self._p is None:
            return
        t = self._p._tasks.get(task)
        if t is not None and t.total is not None:
            self._p.update(task, completed=t.total)
