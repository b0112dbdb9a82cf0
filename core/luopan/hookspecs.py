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

from typing import Any

import pluggy

PROJECT = "luopan"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------- registration


@hookspec
def luopan_register_backends(register: Any) -> None:
    """Register model backends (:class:`luopan.components.Backend` factories), e.g. ``hf``, ``openai``."""


@hookspec
def luopan_register_datasets(register: Any) -> None:
    """Register dataset loaders (:class:`luopan.components.Dataset` factories), e.g. ``mcq_csv``."""


@hookspec
def luopan_register_evaluators(register: Any) -> None:
    """Register evaluators (:class:`luopan.components.Evaluator` factories), e.g. ``accuracy``."""


@hookspec
def luopan_register_summarizers(register: Any) -> None:
    """Register summarizers (:class:`luopan.components.Summarizer` factories), e.g. ``default``."""


@hookspec
def luopan_register_runners(register: Any) -> None:
    """Register runners (:class:`luopan.components.Runner` factories), e.g. ``local``."""


@hookspec
def luopan_register_presets(register: Any) -> None:
    """Register named presets: ``register(kind, name, fields)`` with kind ``"model"``, ``"dataset"`` or
    ``"run"``. ``fields`` are the same keys a run file's entry takes. Presets from ``registry.yaml`` and from
    plugins share one namespace per kind; a clash is an error naming both sources."""


# ---------------------------------------------------------------- life cycle


@hookspec
def luopan_validate_config(config: Any, source: str) -> None:
    """Check a resolved run config (:class:`luopan.config.RunConfig`) before anything runs.

    Raise :class:`luopan.errors.ConfigError` to reject it; the message is shown with ``source`` (the file)."""


@hookspec
def luopan_run_start(run: Any) -> None:
    """Called once the plan is built and the output folder exists (``run``: :class:`luopan.pipeline.Run`)."""


@hookspec
def luopan_unit_start(run: Any, unit: Any) -> None:
    """Called before a unit (model x dataset x shard) executes."""


@hookspec
def luopan_unit_finish(run: Any, unit: Any, result: Any) -> None:
    """Called after a unit, successful or failed (``result.error`` is set when it failed)."""


@hookspec
def luopan_run_finish(run: Any, results: Any) -> None:
    """Called after every unit ran and the summaries were written. ``run.units`` are the units,
    ``run.predictions(unit)`` a unit's per-sample records, ``run.add_tables(tables)`` appends
    :class:`~luopan.components.SummaryTable` s to the summary and rewrites it."""
