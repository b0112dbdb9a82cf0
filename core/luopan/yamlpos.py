"""YAML loading that remembers where each key sits, so errors can name the file and line.

Only the safe loader is used (libyaml's ``CSafeLoader`` where PyYAML has it, ~30x faster): a config never
executes code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from luopan.errors import ConfigError

Path_ = tuple[Any, ...]
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Located:
    """Parsed YAML data plus the line (1-based) of every mapping key and sequence item by path."""

    def __init__(self, data: Any, lines: dict[Path_, int], source: str) -> None:
        self.data = data
        self.lines = lines
        self.source = source

    def line(self, path: Path_) -> int | None:
        """The line of ``path`` or of its nearest located ancestor."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def where(self, path: Path_) -> str:
        line = self.line(path)
        return f"{self.source}:{line}" if line else self.source


def _construct(node: yaml.Node, loader: Any, path: Path_, lines: dict[Path_, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ConfigError(f"{loader.name}:{key_node.start_mark.line + 1}: mapping keys must be scalars")
            if key in out:
                raise ConfigError(f"{loader.name}:{key_node.start_mark.line + 1}: key '{key}' appears twice")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, loader, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            items.append(_construct(item, loader, path + (i,), lines))
        return items
    return loader.construct_object(node, deep=True)


def load_located(text: str, source: str) -> Located:
    loader = _Loader(text)
    loader.name = source
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        data = _construct(node, loader, (), lines) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from exc
    finally:
        loader.dispose()
    return Located(data, lines, source)


def load_located_file(path: str | Path) -> Located:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    return load_located(text, str(p))
