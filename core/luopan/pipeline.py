"""A run: plan every unit, hand them to the runner, summarise, call the plugins' hooks.

The work itself lives in modules named for what they do: :mod:`luopan.planning` (samples, requests, cache
look-up), :mod:`luopan.resolver` (the one request path: cache, backend, record), :mod:`luopan.execution`
(one unit: roll-out, peers, judges, scoring, records), :mod:`luopan.scoring` (subset entries, shard merging),
:mod:`luopan.outputs` (the output folder) and :mod:`luopan.report` (summary files). The backend is loaded only
when a unit has uncached requests, so a fully cached rerun never touches the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from luopan._gc import fewer_collections
from luopan.cache import RequestCache
from luopan.components import Backend, Dataset, Runner, SummaryTable, UnitResult
from luopan.config import ResolvedDataset, ResolvedModel, RunConfig, runner_params
from luopan.data import data_scope, run_folders
from luopan.errors import ConfigError
from luopan.execution import RunContext, now_iso
from luopan.files import atomic_write, ensure_dir
from luopan.planning import format_estimate, print_plan  # noqa: F401 - the CLI's and scripts' names
from luopan.plugins import Registry
from luopan.progress import Progress
from luopan.runlog import close_run_log, configure_run_log
from luopan.scoring import merge_shards
from luopan.units import Unit, UnitSpec

log = structlog.get_logger("luopan")

__all__ = ["Run", "Unit", "UnitSpec", "merge_shards", "print_plan", "format_estimate"]


class Run:
    """One execution of a run config; also what ``luopan_run_*`` hooks receive (see :class:`luopan.hookspecs.RunView`)."""

    def __init__(self, config: RunConfig, registry: Registry, *, progress: bool = True,
                 dry_run: bool = False, debug: bool = False) -> None:
        self.config = config
        self.debug = debug  # the log also on the console, readable, tracebacks in full
        self.registry = registry
        self.show_progress = progress
        self.dry_run = dry_run  # plan only: the cache is read if it exists, nothing is created
        self.run_id = config.run.name or datetime.now().strftime("%Y%m%d_%H%M%S")
        for key, value in (("run.output_dir", config.run.output_dir), ("run.cache", config.run.cache)):
            if isinstance(value, str) and "\x00" in value:
                raise ConfigError(f"{config.source}: {key}: contains a NUL byte")
        # a relative output folder is relative to where the command runs, as for most tools (not to the run
        # file: `luopan run examples/x.yaml` writes ./outputs, not examples/outputs)
        self.output_dir = Path(config.run.output_dir)
        if not self.output_dir.is_absolute():
            self.output_dir = Path.cwd() / self.output_dir
        self.out = self.output_dir / self.run_id
        cache_cfg = config.run.cache
        if cache_cfg is True:
            self.cache_path: Path | None = self.output_dir / "cache" / "requests.sqlite"
        elif cache_cfg is False:
            self.cache_path = None
        else:
            self.cache_path = Path(cache_cfg)
        self.data_dirs = run_folders(config)  # read once: the run's own, whatever the process does later
        self._ctx: RunContext | None = None
        self.units: list[Unit] = []
        self.started_at = ""
        self.finished_at = ""
        self.results: list[UnitResult] = []
        self.tables: list[SummaryTable] = []
        #: the run file's comparison (``compare:``) once written, or why it could not be
        self.comparison: dict[str, Any] | None = None
        self.comparison_problem: str | None = None
        #: the ``robustness:`` report once written (:mod:`luopan.robustness`)
        self.robustness_report: dict[str, Any] | None = None

    # ------------------------------------------------------------ the context (built on first use)
    @property
    def ctx(self) -> RunContext:
        if self._ctx is None:
            cache = RequestCache(self.cache_path, readonly=self.dry_run)
            self._ctx = RunContext(self.config, self.registry, out=self.out, cache=cache, data_dirs=self.data_dirs)
        return self._ctx

    @property
    def cache(self) -> RequestCache:
        return self.ctx.cache

    @property
    def models(self) -> Any:
        return self.ctx.models

    def backend(self, model: ResolvedModel) -> Backend:
        """The backend of ``model`` (built, not loaded)."""
        return self.ctx.models.backend(model)

    def dataset(self, spec: ResolvedDataset) -> Dataset:
        """The dataset component of a run entry."""
        return self.ctx.datasets.get(spec)

    # ------------------------------------------------------------ plan and execute
    def plan(self) -> list[Unit]:
        """Build every unit's samples, requests and cache keys. Executes nothing."""
        with fewer_collections():
            self.units = self.ctx.plan()
        return self.units

    def execute(self) -> list[UnitResult]:
        """Run every unit, write the summaries, call the hooks (all with the run's data folders)."""
        with data_scope(self.data_dirs), fewer_collections():
            return self._execute()

    def _execute(self) -> list[UnitResult]:
        if not self.units:
            self.plan()
        ctx = self.ctx
        ensure_dir(self.out, "output folder")
        previous_log = configure_run_log(self.out / "run.log", echo=self.debug)
        try:
            return self._execute_logged(ctx)
        finally:
            close_run_log(previous_log)

    def _execute_logged(self, ctx: RunContext) -> list[UnitResult]:
        self.started_at = now_iso()
        atomic_write(self.out / "config.yaml", _dump_yaml(self.config.to_dict()))  # atomic_write redacts
        log.info("run_start", run_id=self.run_id, units=len(self.units), source=self.config.source)
        if ctx.cache.invalid:
            log.warning("cache_entries_invalid", path=str(self.cache_path), count=ctx.cache.invalid,
                        note="entries that did not decode as the expected result: asked again")
        hook = self.registry.pm.hook
        hook.luopan_run_start(run=self)
        runner = self.build_runner()
        progress = Progress(enabled=self.show_progress)
        ctx.set_progress(progress)
        try:
            with progress:
                runner.attach(RunnerHost(self, runner_params(self.config.run)))
                results = runner.run(self.units, self._execute_unit)
        finally:
            try:
                runner.close()
            finally:
                ctx.close()
                ctx.cache.close()
        self.finished_at = now_iso()
        self.results = results
        if ctx.cache.invalid:
            log.warning("cache_entries_invalid_total", path=str(self.cache_path), count=ctx.cache.invalid)
        self.tables = self.summarize(results)
        if any(d.robustness for d in self.config.datasets):
            self.robustness()
        if self.config.compare is not None:
            self.compare()
        hook.luopan_run_finish(run=self, results=results)
        log.info("run_finish", run_id=self.run_id, failed=sum(1 for r in results if r.error))
        return results

    def build_runner(self) -> Runner:
        """The run's runner, built with its options block (``run.<runner>``)."""
        return self.registry.get("runner", self.config.run.runner).build(runner_params(self.config.run))

    def runner_plan(self) -> list[str]:
        """What the runner would do with the planned units (``--dry-run``): it starts and submits nothing."""
        runner = self.build_runner()
        runner.attach(RunnerHost(self, runner_params(self.config.run)))
        try:
            return runner.plan_lines(self.units)
        finally:
            runner.close()

    def _execute_unit(self, unit: Unit) -> UnitResult:
        hook = self.registry.pm.hook
        hook.luopan_unit_start(run=self, unit=unit)
        result = self.ctx.execute(unit)
        hook.luopan_unit_finish(run=self, unit=unit, result=result)
        return result

    # ------------------------------------------------------------ for run_finish hooks (public)
    def predictions(self, unit: Unit | UnitSpec) -> list[dict[str, Any]]:
        """A finished unit's per-sample records (``predictions/<model>/<dataset>[.shardKofN].jsonl``): id,
        subset, prompt, target, output or log-probs, prediction, score and the evaluator's extras. Empty for a
        unit that wrote none (it failed)."""
        return self.ctx.outputs.predictions(unit)

    def add_tables(self, tables: Sequence[SummaryTable]) -> None:
        """Append tables to the run's summary (summary.md, summary.csv, the console's) and rewrite it; for
        ``luopan_run_finish`` hooks (the arena leaderboard, the needle grids)."""
        from luopan.report import write_summaries

        self.tables.extend(tables)
        write_summaries(self.out, self.tables, merge_shards(list(self.results)))

    # ------------------------------------------------------------ summary
    def summarize(self, results: list[UnitResult]) -> list[SummaryTable]:
        """The summarizer's tables over the run's datasets (prompt variants of ``robustness:`` are left to the
        robustness tables), written with every unit's result."""
        results = merge_shards(results)
        summarizer = self.registry.get("summarizer", self.config.run.summarizer).build({})
        variants = {d.label for d in self.config.datasets if d.variant_of is not None}
        tables = summarizer.summarize([r for r in results if r.dataset not in variants])
        from luopan.report import write_summaries

        write_summaries(self.out, tables, results)
        return tables

    def robustness(self) -> dict[str, Any]:
        """The ``robustness:`` report (:mod:`luopan.robustness`): each model's score under each prompt variant,
        the spread and the verdicts that flip, written to robustness.json and added to the summary."""
        from luopan.outputs import prediction_files
        from luopan.robustness import build_report, report_tables, write_report

        def read(model: str, dataset: str) -> list[dict[str, Any]]:
            import json

            return [json.loads(line) for f in prediction_files(self.out, model, dataset)
                    for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]

        models = [m.label for m in self.config.models if m.role != "judge"]
        report = build_report(self.config.datasets, models, merge_shards(list(self.results)), read)
        write_report(self.out, report)
        self.add_tables(report_tables(report))
        self.robustness_report = report
        return report

    def compare(self) -> dict[str, Any] | None:
        """The run file's ``compare:`` section: each model against the baseline on the questions both answered,
        written to compare.md and compare.json. A comparison that cannot be made (every unit of a model
        failed) is logged and kept in ``comparison_problem``; it never fails the run."""
        from luopan.compare import compare, warnings_of, write

        spec = self.config.compare
        if spec is None:
            return None
        try:
            report = compare(self.out, baseline=spec.baseline, models=spec.models, resamples=spec.resamples,
                             seed=spec.seed)
        except ConfigError as exc:
            self.comparison_problem = str(exc)
            log.warning("compare_failed", error=str(exc))
            return None
        write(self.out, report)
        for warning in warnings_of(report):
            log.warning("compare_settings_differ", warning=warning)
        self.comparison = report
        return report


class RunnerHost:
    """The run as a runner sees it (:class:`luopan.hookspecs.RunnerHost`)."""

    def __init__(self, run: Run, params: dict[str, Any]) -> None:
        self._run = run
        self.runner_params = params

    @property
    def config(self) -> RunConfig:
        return self._run.config

    @property
    def out(self) -> Path:
        return self._run.out

    @property
    def data_dirs(self) -> list[Path]:
        return list(self._run.data_dirs)

    @property
    def cache_path(self) -> Path | None:
        return self._run.cache_path

    def delegate_backends(self, factory: Any) -> None:
        self._run.ctx.models.delegate = factory

    def merge_cache(self, path: Path) -> int:
        return self._run.ctx.cache.merge(path)

    def refresh(self, unit: Unit) -> None:
        unit.found = self._run.ctx.resolver.lookup(unit.keys, unit.requests)

    def fail(self, unit: Unit, error: str) -> UnitResult:
        return self._run.ctx.record_failure(unit, now_iso(), error)

    def log(self, event: str, **fields: Any) -> None:
        log.info(event, **fields)

    def status(self, text: str) -> None:
        self._run.ctx.progress.status(text)


def _dump_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
