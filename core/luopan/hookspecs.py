"""Every hook of luopan, in one module. Plugins implement them with ``@luopan.hookimpl``.

Two kinds of hooks:

* **Registration hooks** (``luopan_register_*``) are called once per plugin after loading. Each receives a
  ``register`` callback; the plugin calls it once per component it provides::

      @hookimpl
      def luopan_register_backends(register):
          register("fake", make_fake_backend, params=FakeParams, description="deterministic test backend")

  ``register(name, factory, *, params=None, description="")``: ``factory(**validated_params)`` builds the
  component when a run needs it, so heavy imports belong inside the factory; ``params`` is a pydantic model
  that validates the component's options from YAML (unknown keys are an error). Either may be given as a
  ``"module:attr"`` string instead (``register("bench", "my_pkg.dataset:BenchDataset",
  params="my_pkg.dataset:BenchParams")``): it is imported only when a command uses the component, so
  installing many plugins does not slow every command down. Registering a name that another plugin already
  registered is an error naming both distributions.

* **Life-cycle hooks** are called around a run. All implementations are called; exceptions propagate.

Implementations may accept fewer arguments than the spec declares (pluggy's rule), so specs can grow
without breaking plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from luopan.components import Dataset, SummaryTable, UnitResult
    from luopan.config import ResolvedDataset, ResolvedModel, RunConfig
    from luopan.units import Unit, UnitSpec

PROJECT = "luopan"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------- what hooks receive


class Register(Protocol):
    """The ``register`` callback of a registration hook: ``register(name, factory, *, params=None,
    description="")``. ``factory`` and ``params`` may be ``"module:attr"`` strings, imported on first use."""

    def __call__(self, name: str, factory: Callable[..., Any] | str, *, params: type | str | None = None,
                 description: str = "") -> None: ...


class RegisterPreset(Protocol):
    """The ``register`` callback of :func:`luopan_register_presets`: ``register(kind, name, fields)``."""

    def __call__(self, kind: str, name: str, fields: dict[str, Any]) -> None: ...


class RegisterCommand(Protocol):
    """The ``register`` callback of :func:`luopan_register_commands`: ``register(name, *, help, configure, run)``.

    ``configure(parser)`` adds the command's arguments to its :class:`argparse.ArgumentParser`; ``run(args,
    registry)`` does the work with the registry the command line loaded (a ``luopan.plugins.Registry``: pass it to
    ``load_run``, ``run_samples``) and returns the exit code. A :class:`luopan.errors.LuopanError` it raises is
    printed as one line."""

    def __call__(self, name: str, *, help: str, configure: Callable[[Any], None],
                 run: Callable[[Any, Any], int]) -> None: ...


class RunView(Protocol):
    """What life-cycle hooks may read of a run, and the two things they may do to it.

    ``config`` is the resolved run config, ``out`` its output folder, ``units`` its planned units (each with
    ``model``, ``dataset``, ``samples``, ``mode``, ``shard``, ``n_shards`` and ``id``). ``predictions(unit)`` reads
    a finished unit's per-sample records (shard files included), ``add_tables(tables)`` appends summary tables
    and rewrites the summary files, ``dataset(entry)`` is the dataset component of a run entry."""

    @property
    def config(self) -> RunConfig: ...

    @property
    def out(self) -> Path: ...

    @property
    def units(self) -> list[Unit]: ...

    def predictions(self, unit: Unit | UnitSpec) -> list[dict[str, Any]]: ...

    def add_tables(self, tables: Sequence[SummaryTable]) -> None: ...

    def dataset(self, spec: ResolvedDataset) -> Dataset: ...


class RunnerHost(Protocol):
    """What a runner gets from the run (:meth:`luopan.components.Runner.attach`) to place work elsewhere.

    ``config``, ``out``, ``data_dirs`` (the run's data folders, in search order) and ``cache_path`` (the driver's
    request cache; None when caching is off) describe the run; ``runner_params`` is the runner's validated
    options block (``run.<runner>``). ``delegate_backends(factory)`` makes ``factory(model, backend)`` answer a
    model's requests instead of its backend loaded here (the backend passed is built, never loaded: its identity
    still makes the cache keys, and the driver still records every answer in its cache as it arrives).
    ``merge_cache(path)`` copies another request cache's entries into the driver's; ``refresh(unit)`` looks the
    unit's requests up again after that; ``fail(unit, error)`` records a unit that could not run as failed;
    ``log(event, **fields)`` writes to the run's ``run.log``; ``status(text)`` shows a line on the console."""

    @property
    def config(self) -> RunConfig: ...

    @property
    def out(self) -> Path: ...

    @property
    def data_dirs(self) -> list[Path]: ...

    @property
    def cache_path(self) -> Path | None: ...

    @property
    def runner_params(self) -> Any: ...

    def delegate_backends(self, factory: Callable[[ResolvedModel, Any], Any]) -> None: ...

    def merge_cache(self, path: Path) -> int: ...

    def refresh(self, unit: Unit) -> None: ...

    def fail(self, unit: Unit, error: str) -> Any: ...

    def log(self, event: str, **fields: Any) -> None: ...

    def status(self, text: str) -> None: ...


# ---------------------------------------------------------------- registration


@hookspec
def luopan_register_backends(register: Register) -> None:
    """Register model backends (:class:`luopan.components.Backend` factories), e.g. ``hf``, ``openai``."""


@hookspec
def luopan_register_datasets(register: Register) -> None:
    """Register dataset loaders (:class:`luopan.components.Dataset` factories), e.g. ``mcq_csv``."""


@hookspec
def luopan_register_evaluators(register: Register) -> None:
    """Register evaluators (:class:`luopan.components.Evaluator` factories), e.g. ``accuracy``."""


@hookspec
def luopan_register_summarizers(register: Register) -> None:
    """Register summarizers (:class:`luopan.components.Summarizer` factories), e.g. ``default``."""


@hookspec
def luopan_register_runners(register: Register) -> None:
    """Register runners (:class:`luopan.components.Runner` factories), e.g. ``local``."""


@hookspec
def luopan_register_presets(register: RegisterPreset) -> None:
    """Register named presets: ``register(kind, name, fields)`` with kind ``"model"``, ``"dataset"`` or
    ``"run"``. ``fields`` are the same keys a run file's entry takes. Presets from ``registry.yaml`` and from
    plugins share one namespace per kind; a clash is an error naming both sources."""


@hookspec
def luopan_register_commands(register: RegisterCommand) -> None:
    """Add subcommands to the ``luopan`` command line: ``register(name, help=..., configure=..., run=...)``.

    Plugins are loaded only when the command line names a command that is not one of luopan's own, so a plugin's
    command never slows down or breaks the built-in ones; a name that clashes with a built-in command or another
    plugin's command is refused (the clash is reported by ``luopan plugins``)."""


# ---------------------------------------------------------------- life cycle


@hookspec
def luopan_validate_config(config: RunConfig, source: str) -> None:
    """Check a resolved run config (:class:`luopan.config.RunConfig`) before anything runs.

    Raise :class:`luopan.errors.ConfigError` to reject it; the message is shown with ``source`` (the file)."""


@hookspec
def luopan_run_start(run: RunView) -> None:
    """Called once the plan is built and the output folder exists."""


@hookspec
def luopan_unit_start(run: RunView, unit: Unit) -> None:
    """Called before a unit (model x dataset x shard) executes."""


@hookspec
def luopan_unit_finish(run: RunView, unit: Unit, result: UnitResult) -> None:
    """Called after a unit, successful or failed (``result.error`` is set when it failed)."""


@hookspec
def luopan_run_finish(run: RunView, results: list[UnitResult]) -> None:
    """Called after every unit ran and the summaries were written. ``run.units`` are the units,
    ``run.predictions(unit)`` a unit's per-sample records, ``run.add_tables(tables)`` appends
    :class:`~luopan.components.SummaryTable` s to the summary and rewrites it."""


@hookspec
def luopan_report(out: Path) -> list[Path]:
    """Rebuild, from the finished run folder ``out``, the files this plugin writes after a run (``luopan report
    RUN_DIR``, :func:`luopan.rebuild_reports`); return the paths written. Only the run folder's files may be read
    (summary.json, results/, predictions/, config.yaml, run.log): the run's components are not loaded."""
