"""The ``slurm`` runner: the units (and shards) that have requests to ask, as Slurm job arrays, via submitit.

* One job array per model (models differ in GPUs and CPUs per task), one array task per unit or shard. Each
  task plans its unit again from the run config (the same data, sampling and cache keys) and executes it in
  its own process on a cluster node, with **its own cache file** on the shared file system (SQLite must not be
  shared across hosts). Before submitting, the driver copies the answers its cache already holds for that unit
  into the task's file, so nothing answered is asked again.
* When the array is done, the driver merges every task's cache into its own and executes the units here: every
  answer is now cached, so this only scores and writes, through the same code as the local runner. The outputs
  are the local runner's.
* If the driver is stopped while the jobs run, a later ``luopan run`` of the same run file merges the task
  caches it finds first and submits only what is still missing: reruns are idempotent.
* ``cluster: local`` runs the array as local processes (submitit's LocalExecutor): the same path without Slurm.
* ``luopan run --runner slurm --dry-run`` prints the ``sbatch`` script it would submit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from luopan import Runner, UnitResult
from luopan.deps import installed, missing_line


class SlurmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: Literal["slurm", "local"] = Field(default="slurm", description="local: the array as processes on "
                                               "this machine (submitit's LocalExecutor), to try a run file")
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    time_min: int = Field(default=60, ge=1, description="each task's time limit, in minutes")
    gpus_per_task: int | None = Field(default=None, ge=0, description="default: the model's resources.num_gpus")
    cpus_per_task: int | None = Field(default=None, ge=1, description="default: the model's resources.num_cpus")
    mem_gb: float | None = Field(default=None, gt=0)
    array_parallelism: int = Field(default=64, ge=1, description="tasks of one array running at once")
    constraint: str | None = None
    setup: list[str] = Field(default_factory=list, description="shell lines run before each task (module load, "
                             "conda activate, export LUOPAN_DATA=...)")
    additional: dict[str, Any] = Field(default_factory=dict, description="more #SBATCH options, name: value")
    folder: str | None = Field(default=None, description="jobs' logs and caches (default: <run folder>/slurm); "
                               "must be on a file system every node sees")


class SlurmRunner(Runner):
    """Units as job arrays; per-task caches merged into the driver's."""

    def __init__(self, **params: Any) -> None:
        self.p = SlurmParams(**params)
        self.host: Any = None

    @classmethod
    def environment(cls) -> list[str]:
        return [] if installed("submitit") else [missing_line(["submitit"], extra="slurm")]

    def attach(self, host: Any) -> None:
        self.host = host

    def folder(self, out: Path) -> Path:
        return Path(self.p.folder) if self.p.folder else out / "slurm"

    # ------------------------------------------------------------ parameters
    def per_task(self, model: Any) -> tuple[int, int]:
        """GPUs and CPUs of one task of the model's array: the options, else the model's resources."""
        res = model.resources
        gpus = self.p.gpus_per_task if self.p.gpus_per_task is not None else int(res.get("num_gpus") or 0)
        return gpus, self.p.cpus_per_task or max(1, int(res.get("num_cpus") or 1))

    def parameters(self, model: Any, n_tasks: int) -> dict[str, Any]:
        """The submitit ``SlurmExecutor`` parameters of one model's array."""
        gpus, cpus = self.per_task(model)
        params: dict[str, Any] = {"job_name": f"luopan-{model.label}"[:64], "time": self.p.time_min,
                                  "cpus_per_task": cpus, "array_parallelism": min(self.p.array_parallelism, n_tasks),
                                  "ntasks_per_node": 1, "nodes": 1}
        if gpus:
            params["gpus_per_task"] = gpus
        for key in ("partition", "qos", "account", "constraint"):
            if getattr(self.p, key):
                params[key] = getattr(self.p, key)
        if self.p.mem_gb:
            params["mem"] = f"{int(self.p.mem_gb * 1024)}M"
        if self.p.setup:
            params["setup"] = list(self.p.setup)
        if self.p.additional:
            params["additional_parameters"] = dict(self.p.additional)
        return params

    def plan_lines(self, units: Sequence[Any]) -> list[str]:
        todo = [u for u in units if _needs_task(u)]
        lines = [f"runner slurm ({self.p.cluster}): {len(todo)} of {len(units)} unit(s) have requests to ask: "
                 f"one job array per model, one task per unit or shard"]
        for label, us in _by_model(todo).items():
            lines.append(f"  {label}: {len(us)} task(s): " + ", ".join(u.id for u in us))
            if self.p.cluster == "slurm" and installed("submitit"):
                from submitit.slurm.slurm import _make_sbatch_string

                folder = self.folder(self.host.out) if self.host is not None else Path("slurm")
                script = _make_sbatch_string(command=f"python -u -m submitit.core._submit {folder}",
                                             folder=folder / "%j", map_count=len(us),
                                             **self.parameters(us[0].model, len(us)))
                lines.extend("    " + line for line in script.splitlines() if line.startswith("#SBATCH"))
        return lines

    # ------------------------------------------------------------ running
    def run(self, units: Sequence[Any], execute: Callable[[Any], UnitResult]) -> list[UnitResult]:
        host = self.host
        folder = self.folder(host.out)
        caches = folder / "caches"
        caches.mkdir(parents=True, exist_ok=True)
        merged = self._merge(caches)  # a stopped driver's tasks: their answers first
        if merged:
            host.log("slurm_caches_merged", entries=merged, when="before submitting")
        for u in units:
            host.refresh(u)
        todo = [u for u in units if _needs_task(u)]
        errors = self._submit(todo, folder, caches) if todo else {}
        merged = self._merge(caches)
        host.log("slurm_caches_merged", entries=merged, when="after the arrays")
        results = []
        for u in units:
            host.refresh(u)
            missing = len(u.keys) - u.cached
            if u.id in errors or missing:
                why = errors.get(u.id, "the task ended without answering every request")
                results.append(host.fail(u, f"slurm: {why} ({missing} of {len(u.keys)} requests unanswered); "
                                            f"rerun the same command to submit only them"))
            else:
                results.append(execute(u))  # every answer is cached: scoring and writing only
        return results

    def _merge(self, caches: Path) -> int:
        return sum(self.host.merge_cache(f) for f in sorted(caches.glob("*.sqlite")))

    def _submit(self, todo: list[Any], folder: Path, caches: Path) -> dict[str, str]:
        import submitit

        from luopan import RequestCache

        host = self.host
        jobs: list[tuple[Any, Any]] = []
        for label, us in _by_model(todo).items():
            args = []
            for u in us:
                cache_file = caches / f"{_file(u.id)}.sqlite"
                seed = RequestCache(cache_file)  # the answers the driver already has: never asked again
                try:
                    seed.put_many([(k, u.found[k]) for k in u.keys if k in u.found])
                finally:
                    seed.close()
                args.append((u.spec, cache_file))
            if self.p.cluster == "local":
                ex: Any = submitit.LocalExecutor(folder=folder / "%j")
                ex.update_parameters(timeout_min=self.p.time_min, cpus_per_task=self.per_task(us[0].model)[1])
            else:
                ex = submitit.SlurmExecutor(folder=folder / "%j")
                ex.update_parameters(**self.parameters(us[0].model, len(us)))
            config, out, data_dirs = host.config, host.out, host.data_dirs
            submitted = ex.map_array(run_task, [a[0] for a in args], [config] * len(args), [out] * len(args),
                                     [a[1] for a in args], [data_dirs] * len(args))
            host.log("slurm_submitted", model=label, jobs=[j.job_id for j in submitted], units=[u.id for u in us])
            host.status(f"slurm: {len(submitted)} task(s) of {label} submitted")
            jobs.extend(zip(us, submitted))
        errors: dict[str, str] = {}
        for u, job in jobs:
            try:
                summary = job.result()
                host.log("slurm_task_done", unit=u.id, job=job.job_id, **summary)
                if summary.get("error"):
                    errors[u.id] = f"task {job.job_id} failed: {summary['error']}"
            except Exception as exc:  # a failed, cancelled or timed-out task: its unit fails, the rest go on
                first = str(exc).strip().splitlines()
                errors[u.id] = f"task {job.job_id} failed: {first[-1][:300] if first else type(exc).__name__}" \
                               f" (log: {job.paths.stderr})"
                host.log("slurm_task_failed", unit=u.id, job=job.job_id, error=errors[u.id])
        host.status("")
        return errors


def run_task(spec: Any, config: Any, out: Path, cache_file: Path, data_dirs: list[Path]) -> dict[str, Any]:
    """One array task: plan the unit ``spec`` names and execute it here, with the task's own cache file."""
    from luopan import RequestCache, execute_spec, load_registry

    cache = RequestCache(cache_file)
    try:
        result = execute_spec(spec, config, load_registry(), out=Path(out), cache=cache, data_dirs=data_dirs)
    finally:
        cache.close()
    return {"error": result.error}


def _by_model(units: Sequence[Any]) -> dict[str, list[Any]]:
    """Units grouped by model label (one job array each), in order."""
    out: dict[str, list[Any]] = {}
    for u in units:
        out.setdefault(u.model.label, []).append(u)
    return out


def _needs_task(unit: Any) -> bool:
    """Whether a unit has anything to ask: planned requests missing, or later turns or judges (whose requests
    are known only while it runs)."""
    if len(unit.keys) > unit.cached:
        return True
    if unit.later_turns > unit.later_cached:
        return True
    return bool(unit.dataset.judges)


def _file(unit_id: str) -> str:
    from luopan import safe_name

    return safe_name(unit_id.replace("/", "__").replace("#", "_"))

