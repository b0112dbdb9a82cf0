"""Errors with one clear line for the user. The CLI prints ``str(err)`` and exits with ``exit_code``."""

from __future__ import annotations


class LuopanError(Exception):
    exit_code = 1


class ConfigError(LuopanError):
    """A run file or preset is invalid. Message: ``file:line: key: what is wrong (did you mean ...?)``."""

    exit_code = 2


class UnknownComponentError(ConfigError):
    pass


class DuplicateComponentError(LuopanError):
    exit_code = 2


class PluginLoadError(LuopanError):
    """A plugin failed to import and a run needs one of its components (or strict mode is on)."""

    exit_code = 2


class MissingDependencyError(LuopanError):
    """An optional dependency is missing; the message says which extra to install."""

    exit_code = 2


class ConfigErrors(ConfigError):
    """Several problems found at once (``luopan validate`` reports every one): one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
