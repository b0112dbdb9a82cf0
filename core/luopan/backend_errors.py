"""Errors that backends raise about a request, shared so that every backend reports them the same way."""

from __future__ import annotations

from luopan.errors import LuopanError

__all__ = ["InputTooLongError", "describe"]


class InputTooLongError(LuopanError):
    """A request does not fit the model's maximum length. Never truncated silently: the message names it."""


def describe(text: str, width: int = 60) -> str:
    """A short, one-line quote of a prompt for error messages."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width // 2] + " ... " + flat[-width // 2 :])
