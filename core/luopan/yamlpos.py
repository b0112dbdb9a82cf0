"""YAML loading that remembers where each key sits, so errors can name the file and line.

Only the safe loader is used (libyaml's ``CSafeLoader`` where PyYAML has it, ~30x faster): a config never
executes code. Hostile files are refused with one line: a tag other than YAML's own (``!!python/...``) on any
node, aliases that expand past :data:`MAX_NODES` nodes ("billion laughs") or refer to themselves, files larger
than :data:`MAX_BYTES`, and text that is not UTF-8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from luopan.errors import ConfigError

Path_ = tuple[Any, ...]
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: nodes a run file may expand to, aliases counted at every use (real run files have a few hundred)
MAX_NODES = 100_000
#: the largest run file read (real ones are a few KiB)
MAX_BYTES = 8 * 1024 * 1024
_PLAIN_TAGS = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}


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


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0
        self.active: set[int] = set()  # the collection nodes being built: an alias to one of them is a loop


def _construct(node: yaml.Node, loader: Any, path: Path_, lines: dict[Path_, int], budget: _Budget) -> Any:
    budget.nodes += 1
    if budget.nodes > MAX_NODES:
        raise ConfigError(f"{loader.name}:{node.start_mark.line + 1}: the file expands to more than {MAX_NODES:,} "
                          f"values (aliases are counted at every use); a run file needs far fewer")
    lines.setdefault(path, node.start_mark.line + 1)
    plain = _PLAIN_TAGS.get(type(node))
    if plain is not None:
        if node.tag != plain:
            raise ConfigError(f"{loader.name}:{node.start_mark.line + 1}: tag '{node.tag}' is not allowed in a run "
                              f"file (only plain YAML: mappings, lists, strings, numbers, booleans, null)")
        if id(node) in budget.active:
            raise ConfigError(f"{loader.name}:{node.start_mark.line + 1}: an alias refers to a value that contains "
                              f"it (a loop)")
        budget.active.add(id(node))
        try:
            return _construct_collection(node, loader, path, lines, budget)
        finally:
            budget.active.discard(id(node))
    return loader.construct_object(node, deep=True)


def _construct_collection(node: yaml.Node, loader: Any, path: Path_, lines: dict[Path_, int], budget: _Budget) -> Any:
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
            out[key] = _construct(value_node, loader, path + (key,), lines, budget)
        return out
    items = []
    for i, item in enumerate(node.value):
        lines[path + (i,)] = item.start_mark.line + 1
        items.append(_construct(item, loader, path + (i,), lines, budget))
    return items


def load_located(text: str, source: str) -> Located:
    loader = _Loader(text)
    loader.name = source
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        data = _construct(node, loader, (), lines, _Budget()) if node is not None else None
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
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_BYTES // (1024 * 1024)} MiB; a run file is a few KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          f"save the file as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ConfigError(f"{p}:{line}: a NUL byte; a run file is text")
    return load_located(text, str(p))
