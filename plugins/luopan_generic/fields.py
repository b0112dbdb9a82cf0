"""Field mapping: how one row becomes a prompt, a target, choices.

A mapping is either a **template** (any string with ``{{`` or ``{%``: Jinja2, rendered to text in
luopan_mcq's sandbox, with the row's columns as variables) or a **field name**: a column, or a dotted path
into nested records (``choices.text``, ``answers.0``), whose value is taken as stored (a list stays a list,
a number a number). A ``*`` step maps the rest of the path over a list: ``question.choices.*.text`` is the
``text`` of every record in the list ``question.choices`` (ARC's layout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from luopan.plugins import nearest
from luopan.prompts import PromptTemplate, TemplateRenderError


class FieldError(Exception):
    """A row lacks what a mapping reads. The message names the mapping (parameter) and the column."""


def is_template(source: str) -> bool:
    return "{{" in source or "{%" in source


class RowField:
    """One parameter's mapping from a row to a value; ``name`` (the parameter) is used in error messages."""

    def __init__(self, name: str, source: str, *, template: bool | None = None) -> None:
        self.name = name
        self.source = source
        self.is_template = is_template(source) if template is None else template
        self._template: PromptTemplate | None = None
        self._path: tuple[str, ...] = ()
        if self.is_template:
            self._template = PromptTemplate(name, source)
        else:
            if not source.strip():
                raise ValueError(f"'{name}': empty field name")
            self._path = tuple(source.split("."))

    @property
    def variables(self) -> frozenset[str]:
        """The names this mapping reads from a row: a template's variables, or a field path's first step."""
        if self._template is not None:
            return self._template.variables
        return frozenset({self._path[0]})

    def __call__(self, row: Mapping[str, Any]) -> Any:
        """The value for ``row``: text for a template, the stored value for a field name."""
        if self._template is not None:
            try:
                return self._template.render(row)
            except TemplateRenderError as exc:
                raise FieldError(f"{exc}{_columns_hint(row, str(exc))}") from None
        try:
            return row[self.source]  # the common case, and column names that hold a dot
        except KeyError:
            pass
        value: Any = row
        for i, part in enumerate(self._path):
            if part == "*" and i > 0:
                return self._map(value, i, row)
            value = _step(value, part)
            if value is _MISSING:
                where = ".".join(self._path[: i + 1])
                if i == 0:
                    hint = nearest(part, [str(k) for k in row])
                    cols = f" (did you mean '{hint}'?)" if hint else _columns(row)
                    raise FieldError(f"field '{self.name}': no column '{part}'{cols}")
                raise FieldError(f"field '{self.name}': '{self.source}' has no '{where}'")
        return value

    def _map(self, value: Any, i: int, row: Mapping[str, Any]) -> list[Any]:
        """``a.*.b``: the rest of the path (after the ``*`` at position ``i``) applied to each item of ``a``."""
        where = ".".join(self._path[:i])
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise FieldError(f"field '{self.name}': '{where}' is not a list, so '*' cannot map over it")
        rest = self._path[i + 1 :]
        out = []
        for k, item in enumerate(value):
            for j, part in enumerate(rest):
                if part == "*":
                    raise FieldError(f"field '{self.name}': '{self.source}': only one '*' is allowed")
                item = _step(item, part)
                if item is _MISSING:
                    step = ".".join(rest[: j + 1])
                    raise FieldError(f"field '{self.name}': item {k} of '{where}' has no '{step}'")
            out.append(item)
        return out

    def text(self, row: Mapping[str, Any]) -> str:
        value = self(row)
        return value if isinstance(value, str) else str(value)


_MISSING = object()


def _step(value: Any, part: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(part, _MISSING)
    if isinstance(value, Sequence) and not isinstance(value, str) and part.lstrip("-").isdigit():
        i = int(part)
        return value[i] if -len(value) <= i < len(value) else _MISSING
    return _MISSING


def _columns(row: Mapping[str, Any]) -> str:
    names = [str(k) for k in row]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f" (columns: {shown})"


def _columns_hint(row: Mapping[str, Any], message: str) -> str:
    """For an undefined-name error: the nearest column, else the columns there are."""
    if "undefined" not in message:
        return ""
    import re

    m = re.search(r"'([^']+)' is undefined", message)
    hint = nearest(m.group(1), [str(k) for k in row]) if m else None
    return f" (did you mean '{hint}'?)" if hint else _columns(row)


def choice_index(value: Any, choices: Sequence[str]) -> int:
    """The gold choice: an integer (0-based, or a string of digits), a letter A, B, ... or a choice's text."""
    n = len(choices)
    idx: int | None = None
    if isinstance(value, bool):
        idx = None
    elif isinstance(value, int):
        idx = value
    elif isinstance(value, float) and value.is_integer():
        idx = int(value)
    elif isinstance(value, str):
        v = value.strip()
        if v.lstrip("-").isdigit():
            idx = int(v)
        elif len(v) == 1 and "A" <= v.upper() <= "Z" and v not in choices:
            idx = ord(v.upper()) - ord("A")
        elif v in choices or value in choices:
            idx = choices.index(v if v in choices else value)
    if idx is None:
        raise FieldError(
            f"field 'target_index': {value!r} is not a choice index (0..{n - 1}), a letter or one of the choices"
        )
    if not 0 <= idx < n:
        raise FieldError(f"field 'target_index': {value!r} is out of range for {n} choices")
    return idx
