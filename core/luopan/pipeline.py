"""Plan and execution: units (model x dataset x shard), the request cache, evaluation, results on disk.

Stages: plan (load datasets, build every request, look them up in the cache) -> runner executes units ->
evaluator scores -> summarizer tables. The backend is loaded only when a unit has uncached requests, so a
fully cached rerun never touches the model.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import random
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import structlog

import luopan
from luopan.cache import CacheError, RequestCache, canonical_json, expected_types, request_keys
from luopan.components import Backend, Dataset, EvalContext, SummaryTable, UnitResult
from luopan.config import ResolvedDataset, ResolvedModel, RunConfig, generation_config
from luopan.data import set_run_dir
from luopan.errors import ConfigError, LuopanError
from luopan.files import OutputError, atomic_write, ensure_dir, safe_name
from luopan.plugins import Registry, nearest
from luopan.progress import Progress
from luopan.runlog import configure_run_log, redact_text
from luopan.types import (
    ConversationResult,
    FailedResult,
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    Request,
    Sample,
)

log = structlog.get_logger("luopan")


#: the most samples one dataset entry may expand to (repeats included): a typo must not exhaust memory
MAX_SAMPLES = 5_000_000


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Unit:
    model: ResolvedModel
    dataset: ResolvedDataset
    shard: int = 0
    n_shards: int = 1
    mode: str = "likelihood"
    samples: list[Sample] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    found: dict[bytes, Any] = field(default_factory=dict)  # cached results, looked up at plan time
    #: multi-turn samples (Sample.turns): requests of turns 2+ and how many of them the cache holds (at plan
    #: time only those whose earlier turns are cached can be known); the last turn's request per sample
    later_turns: int = 0
    later_cached: int = 0
    last_requests: dict[int, GenerationRequest] = field(default_factory=dict)

    @property
    def cached(self) -> int:
        return sum(1 for k in self.keys if k in self.found)

    @property
    def id(self) -> str:
        s = f"{self.model.label}/{self.dataset.label}"
        return s if self.n_shards == 1 else f"{s}#{self.shard + 1}of{self.n_shards}"


_safe = safe_name


class Run:
    """One execution of a run config."""

    def __init__(self, config: RunConfig, registry: Registry, *, progress: bool = True,
                 backend_override: str | None = None, dry_run: bool = False) -> None:
        self.config = config
        self.registry = registry
        self.show_progress = progress
        self.dry_run = dry_run  # plan only: the cache is read if it exists, nothing is created
        self.run_id = config.run.name or datetime.now().strftime("%Y%m%d_%H%M%S")
        self.output_dir = Path(config.run.output_dir)
        if not self.output_dir.is_absolute():
            self.output_dir = config.base_dir / self.output_dir if config.source.endswith((".yaml", ".yml")) \
                else Path.cwd() / self.output_dir
        self.out = self.output_dir / self.run_id
        for key, value in (("run.output_dir", config.run.output_dir), ("run.cache", config.run.cache)):
            if isinstance(value, str) and "\x00" in value:
                raise ConfigError(f"{config.source}: {key}: contains a NUL byte")
        cache_cfg = config.run.cache
        if cache_cfg is True:
            cache_path: Path | None = self.output_dir / "cache" / "requests.sqlite"
        elif cache_cfg is False:
            cache_path = None
        else:
            cache_path = Path(cache_cfg)
        self.cache_path = cache_path
        self.cache: RequestCache | None = None
        self._backends: dict[str, Backend] = {}
        self._loaded: set[str] = set()
        self._datasets: dict[str, Dataset] = {}
        self.units: list[Unit] = []
        #: per judge label: {"requests", "cached", "sent", "failed"} over the whole run
        self.judge_stats: dict[str, dict[str, int]] = {}
        self.started_at = ""
        self.finished_at = ""
        self.results: list[UnitResult] = []
        self.tables: list[SummaryTable] = []

    # ------------------------------------------------------------ components
    def backend(self, model: ResolvedModel) -> Backend:
        b = self._backends.get(model.label)
        if b is None:
            comp = self.registry.get("backend", model.backend)
            b = comp.factory(**model.params)
            if model.kind:
                b.kind = model.kind
            self._backends[model.label] = b
        return b

    def dataset(self, spec: ResolvedDataset) -> Dataset:
        d = self._datasets.get(spec.label)
        if d is None:
            try:
                d = self.registry.get("dataset", spec.loader).factory(**spec.params)
            except LuopanError as exc:
                raise type(exc)(f"{self.config.source}: dataset '{spec.label}': {exc}") from exc
            self._datasets[spec.label] = d
        return d

    # ------------------------------------------------------------ plan
    def plan(self) -> list[Unit]:
        """Build every unit's samples, requests and cache keys. Executes nothing."""
        set_run_dir(self.config.base_dir)
        if self.cache is None:
            self.cache = RequestCache(self.cache_path, readonly=self.dry_run)
        units = []
        samples_by_ds: dict[str, list[Sample]] = {}
        for ds in self.config.datasets:
            samples_by_ds[ds.label] = self._select_samples(ds)
        for model in self.config.models:
            if getattr(model, "role", "model") == "judge":  # only judges: no units of its own
                continue
            backend = self.backend(model)
            identity_json = canonical_json(backend.identity())
            for ds in self.config.datasets:
                samples = samples_by_ds[ds.label]
                mode = ds.mode if ds.mode != "auto" else ("generate" if model.kind == "chat" else "likelihood")
                need = "loglikelihood" if mode == "likelihood" else "generate"
                if need not in backend.capabilities:
                    raise ConfigError(
                        f"{self.config.source}: model '{model.label}' (backend {model.backend}) cannot {need}; "
                        f"set mode for dataset '{ds.label}'"
                    )
                if mode == "likelihood" and any(not s.choices for s in samples):
                    raise ConfigError(
                        f"{self.config.source}: dataset '{ds.label}' has samples without choices, so it cannot be "
                        f"scored by likelihood; set 'mode: generate'"
                    )
                if mode == "likelihood" and ds.repeats > 1:
                    raise ConfigError(
                        f"{self.config.source}: dataset '{ds.label}': repeats: {ds.repeats} needs generation (a "
                        f"likelihood is the same every time); set 'mode: generate' or drop repeats"
                    )
                if mode == "generate" and model.kind != "chat" and any(s.turns and len(s.turns) > 1 for s in samples):
                    raise ConfigError(
                        f"{self.config.source}: dataset '{ds.label}' has multi-turn samples, which need a chat model; "
                        f"model '{model.label}' is kind {model.kind} (set kind: chat)"
                    )
                gen_cfg = generation_config(model, ds)
                if ds.repeats > 1 and gen_cfg.temperature == 0:
                    raise ConfigError(
                        f"{self.config.source}: dataset '{ds.label}': repeats: {ds.repeats} with greedy decoding "
                        f"gives {ds.repeats} identical answers; set generation.temperature (e.g. 0.8) or drop repeats"
                    )
                n = ds.shards
                groups = question_groups(samples)  # a shard boundary never splits a question
                if n > max(1, len(groups)):
                    raise ConfigError(f"{self.config.source}: dataset '{ds.label}': shards: {n} is more than its "
                                      f"{len(groups)} questions; use at most {max(1, len(groups))}")
                size = -(-len(groups) // n) if groups else 0
                for shard in range(n):
                    part = [s for g in groups[shard * size : (shard + 1) * size] for s in g]
                    unit = Unit(model, ds, shard, n, mode, part)
                    unit.requests = self._requests(unit, gen_cfg)
                    unit.keys = request_keys(identity_json, unit.requests)
                    units.append(unit)
        found = (self.cache.get_many([k for u in units for k in u.keys],
                                     [t for u in units for t in expected_types(u.requests)])
                 if self.cache.enabled else {})
        for u in units:
            u.found = {k: found[k] for k in u.keys if k in found}
            if u.mode == "generate" and any(s.turns and len(s.turns) > 1 for s in u.samples):
                self._count_later_turns(u)
        self.units = units
        return units

    def _count_later_turns(self, unit: Unit) -> None:
        """How many requests turns 2+ of a unit's multi-turn samples make, and how many the cache holds: a
        later turn's request is known only when the turns before it are cached (its prompt holds their answers)."""
        assert self.cache is not None
        unit.later_turns = sum(len(s.turns) - 1 for s in unit.samples if s.turns)
        identity_json = canonical_json(self.backend(unit.model).identity())
        convs = {i: unit.found.get(unit.keys[i]) for i, s in enumerate(unit.samples) if s.turns and len(s.turns) > 1}
        current = {i: unit.requests[i] for i, r in convs.items() if r is not None}
        answers = {i: r for i, r in convs.items() if r is not None}
        turn = 1
        while current and self.cache.enabled:
            reqs = {i: _next_turn(current[i], answers[i].text, unit.samples[i].turns[turn])  # type: ignore[index]
                    for i in current if len(unit.samples[i].turns or ()) > turn}
            keys = dict(zip(reqs, request_keys(identity_json, list(reqs.values()))))
            found = self.cache.get_many(list(keys.values()), expected_types(list(reqs.values())))
            answers = {i: found[k] for i, k in keys.items() if k in found}
            unit.later_cached += len(answers)
            current = {i: reqs[i] for i in answers}
            turn += 1

    def _select_samples(self, spec: ResolvedDataset) -> list[Sample]:
        ds = self.dataset(spec)
        available = ds.subsets()
        if spec.subsets == "all":
            chosen = available
        else:
            chosen = []
            for s in spec.subsets:
                if s not in available:
                    hint = nearest(s, available)
                    raise ConfigError(
                        f"{self.config.source}: dataset '{spec.label}': unknown subset '{s}'"
                        + (f" (did you mean '{hint}'?)" if hint else f"; {len(available)} subsets available")
                    )
                chosen.append(s)
        out: list[Sample] = []
        for subset in chosen:
            try:
                samples = ds.load(subset, shots=spec.shots)
            except LuopanError as exc:
                raise type(exc)(f"{self.config.source}: dataset '{spec.label}': {exc}") from exc
            if spec.limit_per_subset is not None and len(samples) > spec.limit_per_subset:
                samples = self._take(samples, spec.limit_per_subset, spec.sample_seed, subset)
            out.extend(samples)
        if spec.limit is not None and len(out) > spec.limit:
            out = self._take(out, spec.limit, spec.sample_seed, "")
        if spec.repeats > 1:
            if len(out) * spec.repeats > MAX_SAMPLES:
                raise ConfigError(f"{self.config.source}: dataset '{spec.label}': repeats: {spec.repeats} x "
                                  f"{len(out):,} samples is {len(out) * spec.repeats:,} requests, more than "
                                  f"{MAX_SAMPLES:,}; lower repeats or set limit")
            out = [dataclasses.replace(s, id=f"{s.id}#r{r}", meta={**s.meta, "problem": s.meta.get("problem", s.id),
                                                                  "repeat": r})
                   for s in out for r in range(spec.repeats)]
        return out

    @staticmethod
    def _take(samples: list[Sample], n: int, seed: int | None, salt: str) -> list[Sample]:
        """``n`` questions (every sample of each: options, rotations), the first ones or a seeded draw."""
        groups = question_groups(samples)
        if len(groups) <= n:
            return samples
        if seed is None:
            chosen = groups[:n]
        else:
            idx = sorted(random.Random(f"{seed}:{salt}").sample(range(len(groups)), n))
            chosen = [groups[i] for i in idx]
        return [s for g in chosen for s in g]

    def _requests(self, unit: Unit, gen_cfg: Any) -> list[Request]:
        reqs: list[Request] = []
        if unit.mode == "likelihood":
            for s in unit.samples:
                for c in s.choices or ():
                    reqs.append(LoglikelihoodRequest(s.prompt, c, s.prefix))
            return reqs
        chat = unit.model.kind == "chat"
        system = unit.model.system_prompt
        for s in unit.samples:
            cfg = gen_cfg
            if unit.dataset.repeats > 1:  # each copy its own seed: different, reproducible, cached apart
                cfg = dataclasses.replace(gen_cfg, seed=(gen_cfg.seed or 0) + s.meta["repeat"])
            if chat:
                msgs: list[tuple[str, str]] = [("system", system)] if system else []
                if s.messages:
                    msgs += [(m["role"], m["content"]) for m in s.messages]
                else:
                    msgs.append(("user", s.chat_prompt if s.chat_prompt is not None else s.prompt))
                reqs.append(GenerationRequest(messages=tuple(msgs), config=cfg, sample_id=s.id))
            else:
                reqs.append(GenerationRequest(prompt=s.prompt, config=cfg, sample_id=s.id))
        return reqs

    # ------------------------------------------------------------ execute
    def execute(self) -> list[UnitResult]:
        if not self.units:
            self.plan()
        ensure_dir(self.out, "output folder")
        configure_run_log(self.out / "run.log")
        self.started_at = now_iso()
        atomic_write(self.out / "config.yaml", redact_text(_dump_yaml(self.config.to_dict())))
        log.info("run_start", run_id=self.run_id, units=len(self.units), source=self.config.source)
        if self.cache is not None and self.cache.invalid:
            log.warning("cache_entries_invalid", path=str(self.cache_path), count=self.cache.invalid,
                        note="entries that did not decode as the expected result: asked again")
        hook = self.registry.pm.hook
        hook.luopan_run_start(run=self)
        runner = self.registry.get("runner", self.config.run.runner).build({})
        self.progress = Progress(enabled=self.show_progress)
        try:
            with self.progress:
                results = runner.run(self.units, self._execute_unit)
        finally:
            for b in self._backends.values():
                try:
                    b.close()
                except Exception:  # closing must not hide the run's own outcome
                    log.warning("backend_close_failed", exc_info=True)
            if self.cache is not None:
                self.cache.close()
        self.finished_at = now_iso()
        self.results = results
        if self.cache is not None and self.cache.invalid:
            log.warning("cache_entries_invalid_total", path=str(self.cache_path), count=self.cache.invalid)
        self.tables = self.summarize(results)
        hook.luopan_run_finish(run=self, results=results)
        log.info("run_finish", run_id=self.run_id, failed=sum(1 for r in results if r.error))
        return results

    def _execute_unit(self, unit: Unit) -> UnitResult:
        hook = self.registry.pm.hook
        hook.luopan_unit_start(run=self, unit=unit)
        started = now_iso()
        t0 = time.perf_counter()
        log.info("unit_start", unit=unit.id, mode=unit.mode, samples=len(unit.samples),
                 requests=len(unit.requests), cached=unit.cached)
        try:
            result = self._run_unit(unit, started)
        except (OutputError, CacheError):
            raise  # the machine failed (a full disk, a read-only folder): every later unit would fail alike
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else ""
            # luopan's own errors are already one readable line; others keep their type for context
            error = msg if isinstance(exc, LuopanError) else f"{type(exc).__name__}: {msg}"
            log.error("unit_failed", unit=unit.id, error=error, traceback=traceback.format_exc())
            result = UnitResult(unit.model.label, unit.dataset.label, error=error,
                                provenance=self._provenance(unit, started, None))
            self._write_result(unit, result)
        log.info("unit_finish", unit=unit.id, seconds=round(time.perf_counter() - t0, 3), error=result.error)
        hook.luopan_unit_finish(run=self, unit=unit, result=result)
        return result

    def _run_unit(self, unit: Unit, started: str) -> UnitResult:
        assert self.cache is not None
        keys = unit.keys
        found = unit.found
        raw: list[Any] = [found.get(k) for k in keys]
        missing = [i for i, r in enumerate(raw) if r is None]
        task = self.progress.add(unit.id, total=len(keys), completed=len(keys) - len(missing))
        failed: dict[int, str] = {}
        if missing:
            backend = self.backend(unit.model)
            if unit.model.label not in self._loaded:
                backend.load()
                self._loaded.add(unit.model.label)
            failed = self._answer(unit, backend, missing, raw, task)
        self.progress.finish(task)
        if unit.mode == "generate" and any(s.turns and len(s.turns) > 1 for s in unit.samples):
            self._rollout(unit, raw, failed)
        if failed:
            return self._failed_result(unit, started, failed, raw)
        outputs = self._group_outputs(unit, raw)
        ds = self.dataset(unit.dataset)
        ev_name = unit.dataset.evaluator or ds.default_evaluator
        evaluator = self.registry.get("evaluator", ev_name).build(unit.dataset.evaluator_params)
        judges = list(getattr(unit.dataset, "judges", []) or [])
        judge_calls: dict[str, dict[str, int]] = {}
        ctx = EvalContext(unit.mode, unit.model.label, unit.dataset.label, unit.dataset.evaluator_params,
                          judge=self.backend(self._model(judges[0])) if judges else None, judges=judges,
                          judge_generate=self._judge_fn(unit, judges, judge_calls) if judges else None,
                          peer_outputs=lambda label, _u=unit: self.peer_outputs(_u, label),
                          models=[m.label for m in self.config.models if getattr(m, "role", "model") != "judge"],
                          components=self.registry.components_view())
        scored = evaluator.score(unit.samples, outputs, ctx)
        subsets = subset_entries(unit.samples, scored)
        usage = _usage(raw, self._backends.get(unit.model.label)) if unit.mode == "generate" else {}
        provenance = self._provenance(unit, started, ev_name)
        if judges:
            provenance["judges"] = {j: {"backend": self.backend(self._model(j)).identity(), **judge_calls.get(j, {})}
                                    for j in judges}
        result = UnitResult(unit.model.label, unit.dataset.label, evaluator.metric, subsets,
                            ds.categories(), dict(ds.display_names), provenance=provenance, usage=usage)
        self._write_predictions(unit, outputs, scored)
        self._write_result(unit, result)
        return result

    def _answer(self, unit: Unit, backend: Backend, missing: list[int], raw: list[Any], task: int,
                requests: Sequence[Request] | None = None, keys: Sequence[bytes] | None = None,
                mode: str | None = None) -> dict[int, str]:
        """Stream the uncached requests through the backend, caching answers as they arrive (every
        ``chunk_size`` answers or every second). Returns the failed requests' errors by request index.
        ``requests``/``keys``/``mode`` default to the unit's own (later turns and judge calls pass theirs)."""
        assert self.cache is not None
        requests = unit.requests if requests is None else requests
        keys = unit.keys if keys is None else keys
        mode = mode or unit.mode
        flush_n = max(1, int(getattr(backend, "chunk_size", 256)))
        failed: dict[int, str] = {}
        buf: list[tuple[bytes, Any]] = []
        n_done = 0
        last = time.monotonic()

        def flush() -> None:
            nonlocal buf, n_done, last
            if buf:
                self.cache.put_many(buf)  # type: ignore[union-attr]
            self.progress.advance(task, n_done, usage=_usage([o for _, o in buf]))
            buf, n_done, last = [], 0, time.monotonic()

        try:
            for j, out in backend.stream(mode, [requests[i] for i in missing]):
                i = missing[j]
                n_done += 1
                if isinstance(out, FailedResult):
                    failed[i] = out.error
                    log.warning("request_failed", unit=unit.id, request=i, error=out.error)
                else:
                    raw[i] = out
                    buf.append((keys[i], out))
                if len(buf) >= flush_n or time.monotonic() - last >= 1.0:
                    flush()
        finally:
            flush()  # an exception or an interruption keeps every answer received so far
        unanswered = [i for i in missing if raw[i] is None and i not in failed]
        if unanswered:
            raise RuntimeError(f"backend left {len(unanswered)} of {len(missing)} requests unanswered")
        return failed

    # ------------------------------------------------------------ multi-turn, peers, judges
    def _ensure_loaded(self, model: ResolvedModel) -> Backend:
        backend = self.backend(model)
        if model.label not in self._loaded:
            backend.load()
            self._loaded.add(model.label)
        return backend

    def _rollout(self, unit: Unit, raw: list[Any], failed: dict[int, str]) -> None:
        """Turns 2+ of multi-turn samples: each turn's request is the conversation so far (the model's own
        earlier answers included) plus the next user turn; answered from the cache or the backend, turn by turn.
        ``raw[i]`` becomes a :class:`ConversationResult`; a failed turn fails its sample (``failed[i]``)."""
        assert self.cache is not None
        identity_json = canonical_json(self.backend(unit.model).identity())
        convs = {i: [raw[i]] for i, s in enumerate(unit.samples)
                 if s.turns and len(s.turns) > 1 and i not in failed and raw[i] is not None}
        current: dict[int, GenerationRequest] = {i: unit.requests[i] for i in convs}  # type: ignore[misc]
        turn = 1
        while True:
            idx = [i for i in convs if i not in failed and len(unit.samples[i].turns or ()) > turn]
            if not idx:
                break
            reqs: list[Request] = [_next_turn(current[i], convs[i][-1].text, unit.samples[i].turns[turn])  # type: ignore[index]
                                   for i in idx]
            keys = request_keys(identity_json, reqs)
            found = self.cache.get_many(keys, expected_types(reqs)) if self.cache.enabled else {}
            outs: list[Any] = [found.get(k) for k in keys]
            missing = [j for j, o in enumerate(outs) if o is None]
            task = self.progress.add(f"{unit.id} turn {turn + 1}", total=len(reqs), completed=len(reqs) - len(missing))
            errors: dict[int, str] = {}
            if missing:
                errors = self._answer(unit, self._ensure_loaded(unit.model), missing, outs, task, reqs, keys)
            self.progress.finish(task)
            for j, i in enumerate(idx):
                if j in errors:
                    failed[i] = f"turn {turn + 1}: {errors[j]}"
                else:
                    convs[i].append(outs[j])
                    current[i] = reqs[j]  # type: ignore[assignment]
            turn += 1
        for i, turns in convs.items():
            if i not in failed:
                raw[i] = ConversationResult(turns)
                unit.last_requests[i] = current[i]

    def peer_outputs(self, unit: Unit, label: str) -> list[Any]:
        """Model ``label``'s outputs on ``unit``'s samples (same dataset, mode and generation settings), from the
        cache or generated now and cached, so evaluators can compare models. Raises if any of them failed."""
        model = self._model(label)
        peer = Unit(model, unit.dataset, unit.shard, unit.n_shards, unit.mode, unit.samples)
        peer.requests = self._requests(peer, generation_config(model, unit.dataset))
        peer.keys = request_keys(canonical_json(self.backend(model).identity()), peer.requests)
        assert self.cache is not None
        found = self.cache.get_many(peer.keys, expected_types(peer.requests)) if self.cache.enabled else {}
        raw: list[Any] = [found.get(k) for k in peer.keys]
        missing = [i for i, r in enumerate(raw) if r is None]
        failed: dict[int, str] = {}
        if missing:
            task = self.progress.add(f"{peer.id} (for {unit.model.label})", total=len(raw),
                                     completed=len(raw) - len(missing))
            failed = self._answer(peer, self._ensure_loaded(model), missing, raw, task)
            self.progress.finish(task)
        if peer.mode == "generate" and any(s.turns and len(s.turns) > 1 for s in peer.samples):
            self._rollout(peer, raw, failed)
        if failed:
            i, err = next(iter(sorted(failed.items())))
            raise LuopanError(f"model '{label}' failed on {len(failed)} sample(s) needed to compare with "
                              f"'{unit.model.label}' (first: {peer.samples[i].id if peer.mode == 'generate' else i}: "
                              f"{err})")
        return self._group_outputs(peer, raw)

    def _model(self, label: str) -> ResolvedModel:
        for m in self.config.models:
            if m.label == label:
                return m
        hint = nearest(label, [m.label for m in self.config.models])
        raise ConfigError(f"{self.config.source}: no model is named '{label}'" + (f" (did you mean '{hint}'?)" if hint else ""))

    def _judge_fn(self, unit: Unit, judges: list[str], calls: dict[str, dict[str, int]]) -> Any:
        def judge_generate(conversations: Sequence[Sequence[tuple[str, str]]], *, judge: str | None = None,
                           config: GenerationConfig | None = None) -> list[GenerationResult | FailedResult]:
            label = judge or judges[0]
            if label not in judges:
                raise ConfigError(f"{self.config.source}: dataset '{unit.dataset.label}': '{label}' is not one of "
                                  f"its judges ({', '.join(judges)})")
            return self.judge_generate(unit, label, conversations, config=config, calls=calls)
        return judge_generate

    def judge_generate(self, unit: Unit, label: str, conversations: Sequence[Sequence[tuple[str, str]]], *,
                       config: GenerationConfig | None = None,
                       calls: dict[str, dict[str, int]] | None = None) -> list[GenerationResult | FailedResult]:
        """Ask judge model ``label`` to continue each conversation; answers cached like any request."""
        assert self.cache is not None
        model = self._model(label)
        backend = self.backend(model)
        cfg = config or generation_config(model, _NO_DATASET)
        system: tuple[tuple[str, str], ...] = (("system", model.system_prompt),) if model.system_prompt else ()
        reqs: list[Request] = [GenerationRequest(messages=system + tuple((r, c) for r, c in conv), config=cfg)
                               for conv in conversations]
        keys = request_keys(canonical_json(backend.identity()), reqs)
        found = self.cache.get_many(keys, expected_types(reqs)) if self.cache.enabled else {}
        out: list[Any] = [found.get(k) for k in keys]
        missing = [i for i, o in enumerate(out) if o is None]
        errors: dict[int, str] = {}
        if missing:
            task = self.progress.add(f"{unit.id} judge {label}", total=len(reqs), completed=len(reqs) - len(missing))
            errors = self._answer(unit, self._ensure_loaded(model), missing, out, task, reqs, keys, "generate")
            self.progress.finish(task)
        for i, err in errors.items():
            out[i] = FailedResult(err)
        n = {"requests": len(reqs), "cached": len(reqs) - len(missing), "sent": len(missing), "failed": len(errors)}
        for stats in (self.judge_stats.setdefault(label, {}), ({} if calls is None else calls).setdefault(label, {})):
            for k, v in n.items():
                stats[k] = stats.get(k, 0) + v
        log.info("judge_calls", unit=unit.id, judge=label, **n)
        return out

    def _failed_result(self, unit: Unit, started: str, failed: dict[int, str], raw: list[Any]) -> UnitResult:
        """Some requests failed: no score (it would count a partial set), the failed samples listed."""
        owner: list[int] = []  # request index -> sample index
        for si, s in enumerate(unit.samples):
            owner.extend([si] * (len(s.choices or ()) if unit.mode == "likelihood" else 1))
        items: dict[int, str] = {}
        for i, err in sorted(failed.items()):
            items.setdefault(owner[i], err)
        failed_items = [{"id": unit.samples[si].id, "subset": unit.samples[si].subset, "error": err}
                        for si, err in items.items()]
        first = failed_items[0]
        error = (f"{len(failed_items)} of {len(unit.samples)} samples failed (first: {first['id']}: "
                 f"{first['error']}); rerun the same command to retry only them")
        usage = _usage(raw, self._backends.get(unit.model.label)) if unit.mode == "generate" else {}
        result = UnitResult(unit.model.label, unit.dataset.label, error=error, usage=usage,
                            failed_items=failed_items, provenance=self._provenance(unit, started, None))
        self._write_result(unit, result)
        return result

    def _group_outputs(self, unit: Unit, raw: list[Any]) -> list[Any]:
        if unit.mode == "generate":
            return raw
        outputs, pos = [], 0
        for s in unit.samples:
            n = len(s.choices or ())
            outputs.append(raw[pos : pos + n])
            pos += n
        return outputs

    # ------------------------------------------------------------ records
    def _provenance(self, unit: Unit, started: str, evaluator: str | None) -> dict[str, Any]:
        ds = self._datasets.get(unit.dataset.label)
        backend = self._backends.get(unit.model.label)
        return {
            "luopan_version": luopan.__version__,
            "plugins": {p.name: {"distribution": p.distribution, "version": p.version, "ok": p.ok}
                        for p in self.registry.plugins},
            "backend": backend.identity() if backend is not None else {"backend": unit.model.backend},
            "model_kind": unit.model.kind,
            "dataset": {"loader": unit.dataset.loader, "params": unit.dataset.params,
                        "fingerprint": ds.fingerprint() if ds else "", **(ds.describe() if ds else {})},
            "mode": unit.mode,
            "shots": unit.dataset.shots,
            "evaluator": evaluator,
            "generation": generation_config(unit.model, unit.dataset).as_key() if unit.mode == "generate" else None,
            "seed": self.config.run.seed,
            "sample_seed": unit.dataset.sample_seed,
            "repeats": unit.dataset.repeats,
            "shard": [unit.shard + 1, unit.n_shards],
            "python": platform.python_version(),
            "started_at": started,
            "finished_at": now_iso(),
        }

    # ------------------------------------------------------------ for run_finish hooks (public)
    def predictions(self, unit: Unit) -> list[dict[str, Any]]:
        """A finished unit's per-sample records (``predictions/<model>/<dataset>[.shardKofN].jsonl``): id,
        subset, prompt, target, output or log-probs, prediction, score and the evaluator's extras. Empty for a
        unit that wrote none (it failed)."""
        path = self._unit_path("predictions", unit, ".jsonl")
        if not path.is_file():
            return []
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

    def add_tables(self, tables: Sequence[SummaryTable]) -> None:
        """Append tables to the run's summary (summary.md, summary.csv, the console's) and rewrite it; for
        ``luopan_run_finish`` hooks (the arena leaderboard, the needle grids)."""
        from luopan.report import write_summaries

        self.tables.extend(tables)
        write_summaries(self.out, self.tables, merge_shards(list(self.results)))

    def _unit_path(self, kind: str, unit: Unit, suffix: str) -> Path:
        name = _safe(unit.dataset.label) + ("" if unit.n_shards == 1 else f".shard{unit.shard + 1}of{unit.n_shards}")
        return self.out / kind / _safe(unit.model.label) / f"{name}{suffix}"

    def _write_predictions(self, unit: Unit, outputs: Sequence[Any], scored: Sequence[Any]) -> None:
        lines = []
        requests = unit.requests if unit.mode == "generate" else [None] * len(unit.samples)
        for i, (s, out, sc, req) in enumerate(zip(unit.samples, outputs, scored, requests)):
            rec: dict[str, Any] = {"id": s.id, "subset": s.subset, "prompt": s.prompt, "target": s.target}
            if unit.mode == "likelihood":
                rec["choices"] = s.choices
                rec["logprobs"] = [o.logprob for o in out]
            else:
                req = unit.last_requests.get(i, req)  # a multi-turn sample: its whole conversation
                if req.messages is not None:  # what a chat model really received
                    rec["messages"] = req.message_dicts()
                rec["output"] = out.text
                if isinstance(out, ConversationResult):
                    rec["turns"] = out.texts
            rec["prediction"] = sc.prediction
            rec["score"] = sc.score
            if sc.extra:
                rec["extra"] = sc.extra
            lines.append(orjson.dumps(rec))
        atomic_write(self._unit_path("predictions", unit, ".jsonl"), b"\n".join(lines) + (b"\n" if lines else b""))

    def _write_result(self, unit: Unit, result: UnitResult) -> None:
        from dataclasses import asdict

        atomic_write(self._unit_path("results", unit, ".json"),
                     json.dumps(asdict(result), ensure_ascii=False, indent=2))

    # ------------------------------------------------------------ summary
    def summarize(self, results: list[UnitResult]) -> list[SummaryTable]:
        results = merge_shards(results)
        summarizer = self.registry.get("summarizer", self.config.run.summarizer).build({})
        tables = summarizer.summarize(results)
        from luopan.report import write_summaries

        write_summaries(self.out, tables, results)
        return tables


def question_key(sample: Sample) -> str:
    """The question a sample belongs to: the options of one WinoGrande question (``meta["partial"]``), the
    rotations of a CircularEval question (``meta["circular"]``) and the repeats of a problem
    (``meta["problem"]``) are one question each; any other sample is a question of its own."""
    meta = sample.meta
    for kind in ("partial", "circular"):
        g = meta.get(kind)
        if isinstance(g, dict) and "group" in g:
            return f"{kind}:{g['group']}"
    return str(meta.get("problem", sample.id))


def question_groups(samples: Sequence[Sample]) -> list[list[Sample]]:
    """``samples`` grouped by question, in order of first appearance."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(question_key(s), []).append(s)
    return list(groups.values())


def subset_entries(samples: Sequence[Sample], scored: Sequence[Any]) -> list[dict[str, Any]]:
    """Per subset: ``n`` questions, the score (mean over questions of each question's mean score), each extra
    metric the same way (``metric_n`` where fewer questions report it), ``unscored`` questions. A question of
    several samples (options, rotations, repeats) counts once, so a limit of N questions reports n = N."""
    qkey = {s.id: question_key(s) for s in samples}
    per_subset: dict[str, dict[str, list[Any]]] = {}
    for sc in scored:
        per_subset.setdefault(sc.subset, {}).setdefault(qkey.get(sc.id, sc.id), []).append(sc)
    subsets = []
    for name, questions in per_subset.items():
        scores: list[float] = []
        extra: dict[str, list[float]] = defaultdict(list)
        unscored = 0
        for items in questions.values():
            if len(items) == 1:  # the common case, kept cheap
                it = items[0]
                if it.score is None:
                    unscored += 1
                else:
                    scores.append(it.score)
                for k, v in it.extra.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        extra[k].append(float(v))
                continue
            values = [it.score for it in items if it.score is not None]
            if values:
                scores.append(sum(values) / len(values))
            else:
                unscored += 1
            per_item: dict[str, list[float]] = defaultdict(list)
            for it in items:
                for k, v in it.extra.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        per_item[k].append(float(v))
            for k, v in per_item.items():
                extra[k].append(sum(v) / len(v))
        entry: dict[str, Any] = {
            "subset": name,
            "n": len(scores),
            "score": sum(scores) / len(scores) if scores else None,
            "metrics": {k: sum(v) / len(v) for k, v in extra.items()},
        }
        counts = {k: len(v) for k, v in extra.items() if len(v) != len(scores)}
        if counts:  # a metric only some questions report: its own count, so shards merge exactly
            entry["metric_n"] = counts
        if unscored:  # not scored (e.g. every judge verdict failed): counted, never guessed
            entry["unscored"] = unscored
        subsets.append(entry)
    return subsets


def _next_turn(request: GenerationRequest, answer: str, user: str) -> GenerationRequest:
    """The request of a conversation's next turn: the previous one, its answer, and the next user turn."""
    messages = (request.messages or ()) + (("assistant", answer), ("user", user))
    return GenerationRequest(messages=messages, config=request.config, sample_id=request.sample_id)


class _NoDataset:
    generation: dict[str, Any] = {}


_NO_DATASET: Any = _NoDataset()


def merge_shards(results: list[UnitResult]) -> list[UnitResult]:
    """Combine the shards of one model x dataset into one result. A subset's score is the mean over the scored
    items of every shard (each shard weighted by its ``n``); a metric is the mean over the items that report it
    (``metric_n`` where that differs from ``n``), so a metric one shard lacks is not counted as 0 there."""
    merged: dict[tuple[str, str], UnitResult] = {}
    for r in results:
        key = (r.model, r.dataset)
        if key not in merged:
            merged[key] = UnitResult(r.model, r.dataset, r.metric, [_copy_subset(s) for s in r.subsets],
                                     r.categories, r.display_names, r.error, r.provenance, dict(r.usage),
                                     list(r.failed_items))
            continue
        m = merged[key]
        if r.error and not m.error:
            m.error = r.error
        by = {s["subset"]: s for s in m.subsets}
        for s in r.subsets:
            if s["subset"] not in by:
                m.subsets.append(_copy_subset(s))
                by[s["subset"]] = m.subsets[-1]
                continue
            t = by[s["subset"]]
            n = t["n"] + s["n"]
            t["score"] = ((t["score"] or 0.0) * t["n"] + (s["score"] or 0.0) * s["n"]) / n if n else None
            if s.get("unscored"):
                t["unscored"] = t.get("unscored", 0) + s["unscored"]
            tn, sn = _metric_counts(t), _metric_counts(s)
            metrics, counts = {}, {}
            for k in {**t["metrics"], **s["metrics"]}:
                a, b = tn.get(k, 0), sn.get(k, 0)
                counts[k] = a + b
                metrics[k] = ((t["metrics"].get(k, 0.0) * a + s["metrics"].get(k, 0.0) * b) / (a + b)
                              if a + b else 0.0)
            t["metrics"], t["n"] = metrics, n
            t.pop("metric_n", None)
            if odd := {k: c for k, c in counts.items() if c != n}:
                t["metric_n"] = odd
        for k, v in r.usage.items():
            m.usage[k] = v if isinstance(v, str) else m.usage.get(k, 0) + v
        m.failed_items.extend(r.failed_items)
    return list(merged.values())


def _copy_subset(s: dict[str, Any]) -> dict[str, Any]:
    out = dict(s)
    out["metrics"] = dict(s.get("metrics", {}))
    if "metric_n" in s:
        out["metric_n"] = dict(s["metric_n"])
    return out


def _metric_counts(s: dict[str, Any]) -> dict[str, int]:
    """How many items each of a subset's metrics is the mean of."""
    odd = s.get("metric_n", {})
    return {k: odd.get(k, s["n"]) for k in s["metrics"]}


def _usage(outs: Sequence[Any], backend: Backend | None = None) -> dict[str, Any]:
    """Token counts of answered requests, and their cost where the backend has a ``price`` (per million
    tokens: ``{"prompt": 0.5, "completion": 1.5, "currency": "USD"}``)."""
    p = c = 0
    for o in outs:
        if o is not None:
            p += getattr(o, "prompt_tokens", None) or 0
            c += getattr(o, "completion_tokens", None) or 0
    usage: dict[str, Any] = {"prompt_tokens": p, "completion_tokens": c}
    price = getattr(backend, "price", None)
    if price:
        usage["cost"] = round((p * price.get("prompt", 0) + c * price.get("completion", 0)) / 1e6, 6)
        usage["currency"] = price.get("currency", "USD")
    return usage


def _dump_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def print_plan(run: Run, file: Any = None) -> None:
    """The dry run: units, requests, what is cached, and (for backends that can say, e.g. APIs) the tokens,
    money and rate-limited time the uncached requests would cost. Nothing is sent."""
    file = file or sys.stdout
    units = run.units
    print(f"plan: {len(units)} unit(s); output folder {run.out}", file=file)
    total = cached = 0
    totals: dict[str, Any] = defaultdict(float)
    for u in units:
        n_sub = len({s.subset for s in u.samples})
        to_run = len(u.requests) - u.cached
        print(f"  {u.id}: mode={u.mode} subsets={n_sub} samples={len(u.samples)} "
              f"requests={len(u.requests)} cached={u.cached} to_run={to_run}", file=file)
        if u.later_turns:
            print(f"    turns 2+: {u.later_turns} requests, {u.later_cached} cached (a turn's prompt holds the answers "
                  f"before it, so only turns after cached ones can be looked up)", file=file)
        judges = getattr(u.dataset, "judges", None)
        if judges:
            print(f"    judged by {', '.join(judges)}: judge requests depend on the answers; cached ones are reused",
                  file=file)
        total += len(u.requests)
        cached += u.cached
        if to_run:
            est = run.backend(u.model).estimate([r for r, k in zip(u.requests, u.keys) if k not in u.found])
            if est:
                print(f"    estimate: {format_estimate(est)}", file=file)
                for k, v in est.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        totals[k] += v
                    else:
                        totals[k] = v
    print(f"total: {total} requests, {cached} cached, {total - cached} to run", file=file)
    if totals:
        print(f"estimate for the whole run: {format_estimate(totals)}", file=file)


def format_estimate(est: dict[str, Any]) -> str:
    parts = []
    if "prompt_tokens" in est:
        parts.append(f"~{int(est['prompt_tokens']):,} prompt tokens")
    if "completion_tokens" in est:
        parts.append(f"<= {int(est['completion_tokens']):,} completion tokens")
    if "cost" in est:
        parts.append(f"<= {est['cost']:.4f} {est.get('currency', 'USD')}")
    if est.get("minutes"):
        parts.append(f">= {est['minutes']:.1f} min at the rate limit")
    return ", ".join(parts) or "-"
