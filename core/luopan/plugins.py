"""Plugin loading and the typed component registry.

Plugins are discovered through the ``luopan`` entry-point group; luopan's own plugins are registered there
too, exactly like a third-party package's. A plugin that fails to import is recorded (name, distribution,
traceback) and does not break unrelated commands: naming one of its components raises the original error.
``LUOPAN_STRICT_PLUGINS=1`` makes any load failure fatal; ``LUOPAN_DISABLE_PLUGINS=a,b`` skips plugins.
"""

from __future__ import annotations

import difflib
import importlib
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from luopan import hookspecs
from luopan.errors import DuplicateComponentError, PluginLoadError, UnknownComponentError

ENTRY_POINT_GROUP = "luopan"
KINDS = ("backend", "dataset", "evaluator", "summarizer", "runner")
PRESET_KINDS = ("model", "dataset", "run")
#: the class (in :mod:`luopan.components`) every component of a kind must be an instance of
KIND_TYPES = {"backend": "Backend", "dataset": "Dataset", "evaluator": "Evaluator", "summarizer": "Summarizer",
              "runner": "Runner"}
REGISTRATION_HOOKS = {
    "backend": "luopan_register_backends",
    "dataset": "luopan_register_datasets",
    "evaluator": "luopan_register_evaluators",
    "summarizer": "luopan_register_summarizers",
    "runner": "luopan_register_runners",
}


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin."""

    name: str
    distribution: str
    version: str
    module: str
    error: str | None = None
    exception: BaseException | None = None
    traceback: str | None = None
    components: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Component:
    """A registered backend, dataset, evaluator, summarizer or runner.

    ``target`` and ``params_target`` are the factory and its pydantic options model, or ``"module:attr"``
    strings imported on first use: a plugin registers by name and only the components a command uses are
    imported (``luopan plugins`` imports them all, to report the broken ones)."""

    kind: str
    name: str
    target: Callable[..., Any] | str
    params_target: type | str | None
    description: str
    plugin: PluginInfo

    @property
    def factory(self) -> Callable[..., Any]:
        if isinstance(self.target, str):
            self.target = self._import(self.target)
        return self.target

    @property
    def params(self) -> type | None:
        if isinstance(self.params_target, str):
            self.params_target = self._import(self.params_target)
        return self.params_target

    def _import(self, ref: str) -> Any:
        module, _, attr = ref.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.plugin.error is None:
                self.plugin.error, self.plugin.exception = f"{ref}: {error}", exc
            raise PluginLoadError(
                f"{self.kind} '{self.name}' comes from plugin '{self.plugin.name}' ({self.plugin.distribution}), "
                f"whose {ref} failed to load: {error}"
            ) from exc
        return obj

    def resolve(self) -> None:
        """Import a lazily registered factory and options model now (raises :class:`PluginLoadError`)."""
        _ = self.factory, self.params

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate options with the component's pydantic model; returns the normalised dict."""
        model = self.params
        if model is None:
            if params:
                raise TypeError(f"{self.kind} '{self.name}' takes no parameters, got {sorted(params)}")
            return {}
        return model.model_validate(params).model_dump()  # type: ignore[attr-defined]

    def build(self, params: dict[str, Any]) -> Any:
        """Validate ``params`` and build the component (the factory is imported first: its error is the one shown)."""
        _ = self.factory
        return self.create(self.validate_params(params))

    def create(self, validated: dict[str, Any]) -> Any:
        """Build the component from already validated options, and check that it is of its kind's type
        (a backend factory must return a :class:`~luopan.components.Backend`, and so on).

        The factory receives the validated params object (an instance of the registered pydantic model): a
        component class gets it through its ``from_params`` classmethod (the base classes' default passes its
        fields as keyword arguments to ``__init__``), any other factory is called with it. A component registered
        without ``params`` takes no options: its factory is called with none."""
        from luopan import components

        factory = self.factory
        model = self.params
        params = model.model_validate(validated) if model is not None else None  # type: ignore[attr-defined]
        if isinstance(factory, type) and issubclass(factory, components.Component):
            obj = factory.from_params(params)
        else:
            obj = factory(params) if params is not None else factory()
        expected = getattr(components, KIND_TYPES[self.kind])
        if not isinstance(obj, expected):
            raise PluginLoadError(
                f"{self.kind} '{self.name}' from plugin '{self.plugin.name}' ({self.plugin.distribution}) built a "
                f"{type(obj).__module__}.{type(obj).__qualname__}, which is not a luopan.{KIND_TYPES[self.kind]}"
            )
        return obj


@dataclass
class Command:
    """A subcommand a plugin adds to the ``luopan`` command line (:func:`luopan.hookspecs.luopan_register_commands`)."""

    name: str
    help: str
    configure: Callable[[Any], None]
    run: Callable[[Any, Any], int]  # run(args, registry) -> exit code
    plugin: PluginInfo


@dataclass
class Preset:
    kind: str
    name: str
    fields: dict[str, Any]
    source: str  # "registry.yaml:12" or "plugin <name> (<dist>)"


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return found[0] if found else None


class Registry:
    """Components by kind and name, presets by kind and name, and the plugins they came from."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Component]] = {k: {} for k in KINDS}
        self.presets: dict[str, dict[str, Preset]] = {k: {} for k in PRESET_KINDS}
        self.plugins: list[PluginInfo] = []
        self.catalogue: dict[str, Any] = {}  # registry.yaml's plugin index
        self.conflicts: dict[tuple[str, str], tuple[Component, str]] = {}  # names registered twice
        self.commands: dict[str, Command] = {}  # subcommands plugins add to the command line
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)

    # ------------------------------------------------------------ registration
    def add(self, kind: str, name: str, factory: Callable[..., Any] | str, *, plugin: PluginInfo,
            params: type | str | None = None, description: str = "") -> None:
        """Register a component. ``factory`` and ``params`` may be ``"module:attr"`` strings, imported on
        first use, so that loading the registry imports no plugin's heavy modules."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"plugin {plugin.name} ({plugin.distribution}) registered a {kind} without a name")
        for what, ref in (("factory", factory), ("params", params)):
            if isinstance(ref, str) and (ref.count(":") != 1 or not all(ref.split(":"))):
                raise ValueError(f"plugin {plugin.name} ({plugin.distribution}): {kind} '{name}': {what} "
                                 f"{ref!r} is not 'module:attr'")
        existing = self.components[kind].get(name) or self.conflicts.get((kind, name), (None,))[0]
        if existing is not None:
            # neither wins: using the name is an error naming both distributions
            msg = (
                f"{kind} '{name}' is registered twice: by plugin '{existing.plugin.name}' "
                f"(distribution {existing.plugin.distribution}) and by plugin '{plugin.name}' "
                f"(distribution {plugin.distribution}); uninstall or disable one "
                f"(LUOPAN_DISABLE_PLUGINS={plugin.name})"
            )
            if _strict():
                raise DuplicateComponentError(msg + " [LUOPAN_STRICT_PLUGINS=1]")
            self.components[kind].pop(name, None)
            self.conflicts[(kind, name)] = (existing, msg)
            return
        self.components[kind][name] = Component(kind, name, factory, params, description or "", plugin)
        plugin.components.append((kind, name))

    def add_preset(self, kind: str, name: str, fields: dict[str, Any], source: str) -> None:
        if kind not in PRESET_KINDS:
            raise ValueError(f"{source}: preset kind must be one of {PRESET_KINDS}, got {kind!r}")
        existing = self.presets[kind].get(name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{kind} preset '{name}' is defined twice: in {existing.source} and in {source}"
            )
        self.presets[kind][name] = Preset(kind, name, dict(fields), source)

    def add_command(self, name: str, *, help: str, configure: Callable[[Any], None],
                    run: Callable[[Any, Any], int], plugin: PluginInfo) -> None:
        """Register a command-line subcommand; a name already taken (built in or by another plugin) is a conflict."""
        from luopan.cli import BUILTIN_COMMANDS

        if not isinstance(name, str) or not name or name.startswith("-"):
            raise ValueError(f"plugin {plugin.name} ({plugin.distribution}) registered a command named {name!r}")
        other = self.commands.get(name)
        if name in BUILTIN_COMMANDS or other is not None:
            owner = "luopan itself" if other is None else f"plugin '{other.plugin.name}' ({other.plugin.distribution})"
            msg = (f"command '{name}' of plugin '{plugin.name}' ({plugin.distribution}) is already a command of "
                   f"{owner}; it is not added")
            if _strict():
                raise DuplicateComponentError(msg + " [LUOPAN_STRICT_PLUGINS=1]")
            self.conflicts[("command", name)] = (None, msg)  # type: ignore[assignment]
            return
        self.commands[name] = Command(name, help, configure, run, plugin)

    def register_plugin(self, module: ModuleType | object, info: PluginInfo) -> None:
        """Register one plugin object and call its registration hooks with a ``register`` bound to it."""
        self.pm.register(module, name=info.name)
        self.plugins.append(info)
        for kind, hook_name in REGISTRATION_HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is module:
                    impl.function(register=self._registrar(kind, info))
        for impl in self.pm.hook.luopan_register_presets.get_hookimpls():
            if impl.plugin is module:
                impl.function(
                    register=lambda kind, name, fields, _i=info: self.add_preset(
                        kind, name, fields, f"plugin {_i.name} ({_i.distribution})"
                    )
                )
        for impl in self.pm.hook.luopan_register_commands.get_hookimpls():
            if impl.plugin is module:
                impl.function(register=lambda name, *, help, configure, run, _i=info: self.add_command(
                    name, help=help, configure=configure, run=run, plugin=_i))

    def forget_plugin(self, module: object | None, info: PluginInfo) -> None:
        """Undo a plugin's partial registration after it failed; keep it listed as failed."""
        if module is not None and self.pm.is_registered(module):
            self.pm.unregister(module)
        for kind, name in info.components:
            self.components[kind].pop(name, None)
        for name in [n for n, c in self.commands.items() if c.plugin is info]:
            del self.commands[name]
        info.components.clear()
        if info not in self.plugins:
            self.plugins.append(info)

    def _registrar(self, kind: str, info: PluginInfo) -> Callable[..., None]:
        def register(name: str, factory: Callable[..., Any] | str, *, params: type | str | None = None,
                     description: str = "") -> None:
            self.add(kind, name, factory, plugin=info, params=params, description=description)

        return register

    def resolve_all(self) -> None:
        """Import every lazily registered component; a failure marks its plugin failed (``luopan plugins``)."""
        for comps in self.components.values():
            for comp in comps.values():
                try:
                    comp.resolve()
                except PluginLoadError:
                    pass

    # ------------------------------------------------------------ look-up
    def get(self, kind: str, name: str) -> Component:
        comp = self.components[kind].get(name)
        if comp is not None:
            return comp
        if (kind, name) in self.conflicts:
            raise DuplicateComponentError(self.conflicts[(kind, name)][1])
        failed = self.failed_provider(kind, name)
        if failed is not None:
            raise PluginLoadError(
                f"{kind} '{name}' comes from plugin '{failed.name}' ({failed.distribution}), "
                f"which failed to load: {failed.error}"
            ) from failed.exception
        hint = nearest(name, self.components[kind])
        msg = f"unknown {kind} '{name}'"
        msg += f" (did you mean '{hint}'?)" if hint else f"; known: {', '.join(sorted(self.components[kind]))}"
        broken = [p for p in self.plugins if not p.ok]
        if broken:
            msg += "; note: plugins that failed to load: " + ", ".join(f"{p.name} ({p.error})" for p in broken)
        raise UnknownComponentError(msg)

    def failed_provider(self, kind: str, name: str) -> PluginInfo | None:
        """The failed plugin that would have provided ``name``: by the registry.yaml index or its entry-point name."""
        for p in self.plugins:
            if p.ok:
                continue
            provides = self.catalogue.get(p.name, {}).get("provides", {}).get(kind + "s", [])
            if name in provides or name == p.name:
                return p
        return None

    def preset(self, kind: str, name: str) -> Preset:
        p = self.presets[kind].get(name)
        if p is None:
            hint = nearest(name, self.presets[kind])
            raise UnknownComponentError(
                f"unknown {kind} preset '{name}'" + (f" (did you mean '{hint}'?)" if hint else "")
            )
        return p

    def components_view(self) -> RegistryComponents:
        """This registry as :class:`luopan.components.Components` (what evaluators get in ``ctx.components``)."""
        view = self.__dict__.get("_view")
        if view is None:
            view = self.__dict__["_view"] = RegistryComponents(self)
        return view

    def which(self, name: str) -> list[str]:
        """Where ``name`` is defined: one line per definition (component or preset)."""
        out = []
        for kind in KINDS:
            c = self.components[kind].get(name)
            if c is not None:
                out.append(
                    f"{kind} '{name}': plugin '{c.plugin.name}' (distribution {c.plugin.distribution} "
                    f"{c.plugin.version}, module {c.plugin.module})"
                )
        for kind in PRESET_KINDS:
            p = self.presets[kind].get(name)
            if p is not None:
                out.append(f"{kind} preset '{name}': {p.source}")
        for p in self.plugins:
            if p.name == name:
                state = "loaded" if p.ok else f"FAILED: {p.error}"
                out.append(f"plugin '{name}': distribution {p.distribution} {p.version}, module {p.module} ({state})")
        return out


class RegistryComponents:
    """Builds evaluators and backends, and reads presets, from one registry (see ``EvalContext.components``)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._evaluators: dict[tuple[str, str], Any] = {}

    def evaluator(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """The evaluator ``name`` with ``params``, built once per registry and options."""
        import json

        key = (name, json.dumps(params or {}, sort_keys=True, default=str))
        ev = self._evaluators.get(key)
        if ev is None:
            ev = self._evaluators[key] = self._registry.get("evaluator", name).build(params or {})
        return ev

    def backend(self, name: str, params: dict[str, Any] | None = None) -> Any:
        return self._registry.get("backend", name).build(params or {})

    def preset(self, kind: str, name: str) -> dict[str, Any]:
        return dict(self._registry.preset(kind, name).fields)


# ---------------------------------------------------------------- loading


def _strict() -> bool:
    return os.environ.get("LUOPAN_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def _disabled() -> set[str]:
    return {s.strip() for s in os.environ.get("LUOPAN_DISABLE_PLUGINS", "").split(",") if s.strip()}


def registry_file() -> Path:
    """The reviewed catalogue shipped with luopan (``registry.yaml``); ``LUOPAN_REGISTRY`` overrides it."""
    env = os.environ.get("LUOPAN_REGISTRY")
    return Path(env) if env else Path(__file__).with_name("registry.yaml")


def load_registry(*, extra_plugins: Iterable[tuple[str, object]] = (), entry_points: bool = True,
                  registry_yaml: Path | None = None) -> Registry:
    """Load every plugin and the catalogue into a fresh :class:`Registry`.

    ``extra_plugins`` are ``(name, module_or_object)`` pairs registered after the entry points (tests use this
    to add a plugin without installing it).
    """
    reg = Registry()
    strict = _strict()
    disabled = _disabled()
    path = registry_yaml if registry_yaml is not None else registry_file()
    if path.exists():
        from luopan.catalogue import load_catalogue

        load_catalogue(reg, path)
    if entry_points:
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        seen: set[str] = set()
        for ep in eps:
            if ep.name in disabled or ep.name in seen:
                continue
            seen.add(ep.name)
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            info = PluginInfo(ep.name, dist, version, ep.value)
            module = None
            try:
                module = ep.load()
                reg.register_plugin(module, info)
            except DuplicateComponentError:
                raise  # only raised in strict mode
            except Exception as exc:  # a broken plugin must not break unrelated commands
                info.error = f"{type(exc).__name__}: {exc}"
                info.exception = exc
                info.traceback = traceback.format_exc()
                reg.forget_plugin(module, info)
                if strict:
                    raise PluginLoadError(
                        f"plugin '{ep.name}' ({dist}) failed to load: {info.error} [LUOPAN_STRICT_PLUGINS=1]"
                    ) from exc
    for name, obj in extra_plugins:
        reg.register_plugin(obj, PluginInfo(name, "<in-process>", "", getattr(obj, "__name__", repr(obj))))
    return reg


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use (not at import)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def reset_registry(reg: Registry | None = None) -> None:
    global _REGISTRY
    _REGISTRY = reg
