"""Prompt templates: Jinja2 strings from a run file, rendered in a sandbox (a config never executes code).

Every dataset loader that takes templates from a run file (``mcq_csv``, ``files``, ``code``, third-party ones)
uses :class:`PromptTemplate`, and :func:`validate_template` in its pydantic params, so templates behave alike.

A benchmark renders two templates per question (the base-model prompt and the chat prompt): 23,000 renders
for CMMLU. ``jinja2.Template.render`` builds a fresh context on every call, about 20 µs on a 2-core machine,
0.5 s for CMMLU, more than reading its CSVs. Most prompt templates are plain text around variables, so a
template that is only text and ``{{ name }}``, ``{{ name[0] }}`` or ``{{ name.strip() }}`` is rendered by
``str.format_map`` (about 1 µs); any other template goes through Jinja. Both give the same text, which
tests/test_prompts.py checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from luopan.errors import ConfigError

__all__ = ["PromptTemplate", "TemplateRenderError", "validate_template"]

# Immutable sandbox: no private attributes, and no changing lists or dicts (the variables are shared);
# keep_trailing_newline: a description such as "...\n\n" must keep its final newline (lm-eval sets it too);
# StrictUndefined: a misspelt variable is an error, never an empty string in every prompt.
_ENV = ImmutableSandboxedEnvironment(keep_trailing_newline=True, undefined=StrictUndefined, autoescape=False)

_Render = Callable[[Mapping[str, Any]], str]


class TemplateRenderError(ConfigError):
    """A template failed on some variables: an undefined name, a sandbox violation, a failing filter."""


class PromptTemplate:
    """One sandboxed Jinja2 template; ``name`` (the parameter it came from) is used in error messages."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        try:
            ast = _ENV.parse(source)
            self._template = _ENV.from_string(source)
        except TemplateError as exc:
            raise ValueError(f"template '{name}' does not compile: {exc}") from None
        #: the names the template reads from its variables
        self.variables: frozenset[str] = frozenset(meta.find_undeclared_variables(ast))
        # a template that reads a global (range, dict, ...) is Jinja's business
        plain = None if self.variables & _ENV.globals.keys() else _plain_pieces(ast)
        self._pieces = plain
        self._only = plain[0] if plain is not None and len(plain) == 1 and isinstance(plain[0], str) else None

    @property
    def is_plain(self) -> bool:
        """Text and variable lookups only: rendered without Jinja's per-call machinery."""
        return self._pieces is not None

    def render(self, variables: Mapping[str, Any]) -> str:
        """The text for ``variables``; raises :class:`TemplateRenderError` naming the template."""
        try:
            if self._only is not None:
                return self._only.format_map(variables)
            if self._pieces is not None:
                return "".join(
                    [p.format_map(variables) if isinstance(p, str) else p(variables) for p in self._pieces]
                )
            return self._template.render(variables)
        except KeyError as exc:  # the plain path's lookups
            raise TemplateRenderError(f"template '{self.name}': '{exc.args[0]}' is undefined") from None
        except (IndexError, TypeError, AttributeError) as exc:
            raise TemplateRenderError(f"template '{self.name}': {type(exc).__name__}: {exc}") from None
        except TemplateError as exc:  # Jinja's: undefined name, sandbox violation, ...
            raise TemplateRenderError(f"template '{self.name}': {type(exc).__name__}: {exc}") from None


def validate_template(name: str, source: str | None) -> str | None:
    """Pydantic helper: compile ``source`` so a syntax error shows at config validation, with its key."""
    if source is not None:
        PromptTemplate(name, source)
    return source


def _plain_pieces(ast: nodes.Template) -> list[str | _Render] | None:
    """A template of text, ``{{ name }}``, ``{{ name[<int>] }}`` and ``{{ name.strip() }}``, as pieces.

    Runs of text and lookups become one ``str.format_map`` pattern (``format(value, "")`` is ``str(value)``
    for the strings, numbers and lists templates print); each ``.strip()`` is a function between two runs.
    Any other node: None, and the template is rendered by Jinja.
    """
    pieces: list[str | _Render] = []
    pattern: list[str] = []
    for statement in ast.body:
        if not isinstance(statement, nodes.Output):
            return None
        for node in statement.nodes:
            if isinstance(node, nodes.TemplateData):
                pattern.append(node.data.replace("{", "{{").replace("}", "}}"))
            elif isinstance(node, nodes.Name) and node.ctx == "load":
                pattern.append("{" + node.name + "}")
            elif (
                isinstance(node, nodes.Getitem)
                and isinstance(node.node, nodes.Name)
                and isinstance(node.arg, nodes.Const)
                and type(node.arg.value) is int
                and node.arg.value >= 0
            ):
                pattern.append(f"{{{node.node.name}[{node.arg.value}]}}")
            elif (
                isinstance(node, nodes.Call)
                and isinstance(node.node, nodes.Getattr)
                and isinstance(node.node.node, nodes.Name)
                and node.node.attr == "strip"
                and not (node.args or node.kwargs or node.dyn_args or node.dyn_kwargs)
            ):
                pieces += ["".join(pattern), _strip(node.node.node.name)]
                pattern = []
            else:
                return None
    pieces.append("".join(pattern))
    return [p for p in pieces if p != ""] or [""]


def _strip(name: str) -> _Render:
    def strip(variables: Mapping[str, Any]) -> str:
        return variables[name].strip()  # not a string: AttributeError, reported with the template's name

    return strip
