"""The Python API: ``luopan.evaluate(models=[...], datasets=[...], **run_options)`` and ``luopan.load_results``.

``evaluate`` takes exactly what a run file holds: model and dataset entries (preset names, or mappings with the
fields of a run file's entries) and the ``run:`` options as keyword arguments. It validates everything first
(a :class:`~luopan.errors.ConfigError` names the entry and key), runs, and returns :class:`Results`. It never
exits the interpreter, loads its own plugin registry (unless one is given), reads data from its own folders and
leaves no logging set-up behind, so it can be called again and again from a notebook.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luopan.components import SummaryTable, UnitResult

__all__ = ["evaluate", "load_results", "run_samples", "Results", "Score", "model_entry", "dataset_entry"]

#: OpenCompass-style dataset names: ``<preset>_gen`` generates and extracts the answer, ``<preset>_ppl`` scores
#: the options by likelihood (perplexity)
MODE_SUFFIXES = {"_gen": "generate", "_ppl": "likelihood", "_ll": "likelihood"}


def model_entry(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """A run file's model entry from a short form: a preset name (``smollm2-135m-instruct``), ``hf:PATH`` (a local
    folder or hub id through transformers), ``llamacpp:PATH`` (a GGUF file), ``openai:MODEL`` (an
    OpenAI-compatible API: give ``params.base_url``), or a mapping (returned as a copy)."""
    if isinstance(spec, Mapping):
        return dict(spec)
    backend, sep, rest = spec.partition(":")
    if sep and backend in ("hf", "vllm", "lmdeploy") and rest:
        return {"name": Path(rest).name or rest, "backend": backend, "params": {"path": rest}}
    if sep and backend == "llamacpp" and rest:
        p = Path(rest)
        if p.suffix == ".gguf":
            return {"name": p.stem, "backend": "llamacpp", "params": {"path": str(p.parent), "gguf_file": p.name}}
        return {"name": p.name or rest, "backend": "llamacpp", "params": {"path": rest}}
    if sep and backend == "openai" and rest:
        return {"name": rest, "backend": "openai", "kind": "chat", "params": {"model": rest}}
    return {"preset": spec}


def dataset_entry(spec: str | Mapping[str, Any], presets: Iterable[str] = ()) -> dict[str, Any]:
    """A run file's dataset entry from a preset name, an OpenCompass-style name (``cmmlu_gen``, ``mmlu_ppl``:
    the preset with that mode) when no preset has that exact name, or a mapping (its ``preset`` may be such a
    name too; an explicit ``mode`` wins)."""
    entry = dict(spec) if isinstance(spec, Mapping) else {"preset": spec}
    name = entry.get("preset")
    known = set(presets)
    if not isinstance(name, str) or not known or name in known:
        return entry
    for suffix, mode in MODE_SUFFIXES.items():
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in known:
            entry["preset"] = base
            entry.setdefault("name", name)
            entry.setdefault("mode", mode)
            return entry
    return entry


@dataclass(frozen=True)
class Score:
    """One model on one dataset: the overall score (mean over subsets), its questions and its metric, with its
    standard error ``se`` and 95% interval ``ci`` (same units as ``value``; None where they cannot be
    estimated) and ``version``, the comparability hash of the settings behind it."""

    model: str
    dataset: str
    metric: str
    value: float | None
    n: int
    subsets: dict[str, float | None]
    error: str | None = None
    se: float | None = None
    ci: tuple[float, float] | None = None
    version: str = ""

    def __float__(self) -> float:
        if self.value is None:
            raise ValueError(f"{self.model} on {self.dataset} has no score: {self.error or 'nothing was scored'}")
        return float(self.value)


@dataclass
class Results:
    """A finished run: per model and dataset results with provenance, the summary tables, and the per-sample
    records on demand."""

    run_dir: Path
    units: list[UnitResult]
    tables: list[SummaryTable] = field(default_factory=list)

    def score(self, model: str, dataset: str) -> Score:
        from luopan import stats

        for u in self.units:
            if u.model == model and u.dataset == dataset:
                scored = [s for s in u.subsets if s.get("score") is not None]
                parts = [stats.Estimate.from_dict(s["score"], s.get("stats", {}).get("score")) for s in scored]
                est = stats.mean_of_means(parts)
                known = parts and all(p.method != "unknown" for p in parts)
                return Score(model, dataset, u.metric, est.value, sum(s["n"] for s in u.subsets),
                             {s["subset"]: s.get("score") for s in u.subsets}, u.error,
                             est.se if known else None, est.ci if known else None, u.version)
        known = ", ".join(f"{u.model}/{u.dataset}" for u in self.units)
        raise KeyError(f"no result for model '{model}' on dataset '{dataset}' (the run has: {known})")

    def scores(self) -> list[Score]:
        return [self.score(u.model, u.dataset) for u in self.units]

    @property
    def failed(self) -> list[UnitResult]:
        return [u for u in self.units if u.error]

    def predictions(self, model: str, dataset: str) -> Iterator[dict[str, Any]]:
        """The per-sample records of ``model`` on ``dataset`` (every shard), read from the run folder."""
        from luopan.outputs import prediction_files

        files = prediction_files(self.run_dir, model, dataset)
        if not files:
            raise KeyError(f"no predictions for model '{model}' on dataset '{dataset}' in {self.run_dir}")
        for f in files:
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)

    def to_markdown(self) -> str:
        from luopan.report import to_markdown

        return to_markdown(self.tables)

    def _repr_markdown_(self) -> str:  # notebooks render the summary
        return self.to_markdown()


def evaluate(models: Sequence[str | Mapping[str, Any]], datasets: Sequence[str | Mapping[str, Any]], *,
             registry: Any = None, progress: bool = False, backend: str | None = None,
             base_dir: str | Path | None = None, **run_options: Any) -> Results:
    """Evaluate ``models`` on ``datasets`` and return the results.

    ``models``/``datasets``: preset names, short forms (see :func:`model_entry`, :func:`dataset_entry`) or
    mappings with a run file's entry fields. ``run_options``: the fields of a run file's ``run:`` section
    (``name``, ``output_dir``, ``cache``, ``data``, ``seed``, ``runner``, ...). ``backend`` swaps every model's
    backend (``--backend``). Relative paths are taken from ``base_dir`` (default: the working folder).
    """
    import yaml

    from luopan.config import resolve
    from luopan.pipeline import Run
    from luopan.plugins import load_registry
    from luopan.yamlpos import load_located

    reg = registry if registry is not None else load_registry()
    doc = {"run": dict(run_options), "models": [model_entry(m) for m in models],
           "datasets": [dataset_entry(d, reg.presets["dataset"]) for d in datasets]}
    loc = load_located(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "luopan.evaluate()")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    problems: list[str] = []  # every entry's problems, and every component's, at once
    config = resolve(loc, reg, base_dir=base.resolve(), backend=backend, collect=problems)
    import warnings

    from luopan.data import run_folders
    from luopan.preflight import check_run

    for message in check_run(config, reg, run_folders(config), earlier=problems):
        warnings.warn(message, stacklevel=2)
    run = Run(config, reg, progress=progress)
    units = run.execute()
    from luopan.scoring import merge_shards

    return Results(run.out, merge_shards(units), list(run.tables))


def load_results(run_dir: str | Path) -> Results:
    """The results of a finished run, read back from its folder (``summary.json``)."""
    from luopan.components import SummaryTable, UnitResult
    from luopan.errors import ConfigError

    folder = Path(run_dir)
    summary = folder / "summary.json"
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{summary}: no such file; is {folder} a luopan run folder?") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{summary}: cannot read it: {exc}") from None
    units = [UnitResult(**u) for u in data.get("units", [])]
    tables = [SummaryTable(**t) for t in data.get("tables", [])]
    return Results(folder, units, tables)


def run_samples(config: Any, registry: Any = None, *, shots: int | None = None) -> dict[str, list[Any]]:
    """The samples each dataset entry of a resolved run (:class:`~luopan.config.RunConfig`, e.g. from
    ``load_run``) would evaluate: its subsets, limits, seeded draw and repeats, rendered with ``shots`` few-shot
    examples (default: the entry's own), read from the run's data folders. Keyed by dataset label; nothing runs,
    no model is loaded (what checks on a run's items, such as contamination checks, read)."""
    import dataclasses

    from luopan.data import data_scope, run_folders
    from luopan.planning import DatasetPool, select_samples
    from luopan.plugins import get_registry

    reg = registry if registry is not None else get_registry()
    pool = DatasetPool(config, reg)
    out: dict[str, list[Any]] = {}
    with data_scope(run_folders(config)):
        for spec in config.datasets:
            entry = spec if shots is None else dataclasses.replace(spec, shots=shots)
            out[spec.label] = select_samples(pool.get(entry), entry, config.source)
    return out
