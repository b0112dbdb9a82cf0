"""Before anything loads: every problem of every model and dataset entry that would stop the run, at once.

Each component class says what it needs (:meth:`luopan.components.Component.preflight`: packages, keys, data
and model files, devices); the kernel adds the data folders. ``luopan validate``, the start of ``luopan run``
(a dry run lists them as warnings and plans anyway) and ``luopan.evaluate`` call :func:`check_run`, which raises
:class:`~luopan.errors.ConfigErrors` listing every problem, one line each with its fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from luopan.config import RunConfig
from luopan.data import data_scope
from luopan.errors import ConfigErrors, LuopanError
from luopan.plugins import Registry


def _default_evaluator(reg: Registry, loader: str) -> str | None:
    """The evaluator a loader's samples are scored with when the entry names none (its class's default)."""
    try:
        return getattr(reg.get("dataset", loader).factory, "default_evaluator", None)
    except LuopanError:
        return None


def _component_problems(reg: Registry, kind: str, name: str, params: dict[str, Any], *,
                        quiet_invalid: bool = False) -> list[str]:
    """``quiet_invalid``: options that do not validate are not reported here (a loader's default evaluator, whose
    options the run validates when it builds it)."""
    from pydantic import ValidationError

    from luopan.components import Component

    try:
        comp = reg.get(kind, name)
        factory = comp.factory
        model = comp.params
    except LuopanError as exc:
        return [str(exc)]
    if not (isinstance(factory, type) and issubclass(factory, Component)):
        return []
    try:
        obj = model.model_validate(params) if model is not None else None  # type: ignore[attr-defined]
    except ValidationError as exc:
        return [] if quiet_invalid else [f"{kind} '{name}': {exc.errors()[0]['msg']}"]
    try:
        return list(factory.preflight(obj))
    except LuopanError as exc:
        return [str(exc)]
    except Exception as exc:  # a plugin's check must not hide the others' problems
        return [f"{kind} '{name}': its check failed: {type(exc).__name__}: {exc}"]


def data_folder_problems() -> list[str]:
    problems = []
    for p in [p for p in os.environ.get("LUOPAN_DATA", "").split(os.pathsep) if p]:
        if not Path(p).is_dir():
            problems.append(f"LUOPAN_DATA: the folder {p} does not exist; set LUOPAN_DATA to the folder holding the "
                            f"benchmark data (e.g. export LUOPAN_DATA=/path/to/datasets)")
    return problems


def run_warnings(config: RunConfig, reg: Registry) -> list[str]:
    """What is allowed but probably not meant: a model entry without ``kind`` whose model ships a chat
    template (it is scored as a base model, by likelihood)."""
    from luopan.components import Backend

    out = []
    for i, m in enumerate(config.models):
        if m.kind_given or m.role == "judge":
            continue
        try:
            comp = reg.get("backend", m.backend)
            cls, model = comp.factory, comp.params
            if not (isinstance(cls, type) and issubclass(cls, Backend)):
                continue
            ships = cls.ships_chat_template(model.model_validate(m.params) if model is not None else None)
        except Exception:  # a hint, never a failure
            continue
        if ships:
            out.append(f"{config.source}: models[{i}] '{m.label}' has no 'kind' and its tokenizer has a chat "
                       f"template: it will be scored as a base model (likelihood); add 'kind: chat' to generate "
                       f"with the template, or 'kind: base' to keep this and silence the warning")
    return out


def run_problems(config: RunConfig, reg: Registry, data_dirs: Sequence[Path]) -> list[str]:
    """Every problem found before loading anything: per entry, prefixed with where it is in the run file."""
    from luopan.config import runner_params

    problems = data_folder_problems()
    for p in _component_problems(reg, "runner", config.run.runner, runner_params(config.run)):
        problems.append(f"{config.source}: run.runner '{config.run.runner}': {p}")
    with data_scope(data_dirs):
        for i, m in enumerate(config.models):
            for p in _component_problems(reg, "backend", m.backend, m.params):
                problems.append(f"{config.source}: models[{i}] '{m.label}' (backend {m.backend}): {p}")
        for i, d in enumerate(config.datasets):
            for p in _component_problems(reg, "dataset", d.loader, d.params):
                problems.append(f"{config.source}: datasets[{i}] '{d.label}' (loader {d.loader}): {p}")
            evaluator = d.evaluator or _default_evaluator(reg, d.loader)
            if evaluator:
                for p in _component_problems(reg, "evaluator", evaluator, d.evaluator_params,
                                             quiet_invalid=not d.evaluator):
                    problems.append(f"{config.source}: datasets[{i}] '{d.label}' (evaluator {evaluator}): {p}")
    return list(dict.fromkeys(problems))


def check_run(config: RunConfig, reg: Registry, data_dirs: Sequence[Path], *,
              earlier: Sequence[str] = ()) -> list[str]:
    """Raise :class:`ConfigErrors` listing every problem (``earlier``: those found while resolving the run file,
    reported first); return the warnings (for the caller to show)."""
    problems = list(earlier) + run_problems(config, reg, data_dirs)
    if problems:
        raise ConfigErrors(problems)
    return run_warnings(config, reg)


def environment_problems(reg: Registry) -> dict[str, list[str]]:
    """Per plugin: why its components cannot work in this environment (``luopan plugins``)."""
    from luopan.components import Component

    out: dict[str, list[str]] = {}
    for kind, comps in reg.components.items():
        for name, comp in comps.items():
            try:
                factory = comp.factory
            except LuopanError:
                continue  # listed as a load failure already
            if isinstance(factory, type) and issubclass(factory, Component):
                try:
                    found = factory.environment()
                except Exception as exc:
                    found = [f"its check failed: {type(exc).__name__}: {exc}"]
                for p in found:
                    out.setdefault(comp.plugin.name, []).append(f"{kind} '{name}': {p}")
    return out
