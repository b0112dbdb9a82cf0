"""Executing units: requests resolved (single turn, later turns, peers, judges), outputs scored, records written.

:class:`RunContext` holds what execution needs (the config, the registry, the request cache, the run's models and
datasets, its output folder, a progress display) and executes a planned :class:`~luopan.units.Unit`.
:func:`execute_spec` does the same in any process from a :class:`~luopan.units.UnitSpec` and the run config: it
plans that one unit again (deterministic: same data, same sampling, same cache keys) and executes it, which is
the contract a runner that moves units to other processes or machines relies on.
"""

from __future__ import annotations

import platform
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

import luopan
from luopan.cache import CacheError, RequestCache
from luopan.compare import version
from luopan.components import EvalContext, UnitResult
from luopan.config import ResolvedModel, RunConfig, generation_config
from luopan.data import data_scope
from luopan.errors import ConfigError, LuopanError
from luopan.files import OutputError
from luopan.outputs import RunOutputs
from luopan.planning import DatasetPool, build_requests, next_turn, plan_units
from luopan.plugins import Registry, nearest
from luopan.progress import Progress
from luopan.reasoning import answer_of, answers_of, rule_of
from luopan.resolver import ModelPool, RequestResolver
from luopan.scoring import group_outputs, subset_entries, usage_of
from luopan.types import (
    ConversationResult,
    FailedResult,
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    Request,
)
from luopan.units import Unit, UnitSpec

log = structlog.get_logger("luopan")


def now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RunContext:
    """Everything executing a unit needs; one per process that executes units."""

    def __init__(self, config: RunConfig, registry: Registry, *, out: Path, cache: RequestCache,
                 data_dirs: Sequence[Path], progress: Progress | None = None) -> None:
        self.config = config
        self.registry = registry
        self.outputs = RunOutputs(out)
        self.cache = cache
        self.data_dirs = list(data_dirs)
        self.models = ModelPool(registry)
        self.datasets = DatasetPool(config, registry)
        self.progress = progress or Progress(enabled=False)
        self.resolver = RequestResolver(cache, self.models, self.progress)

    def set_progress(self, progress: Progress) -> None:
        self.progress = progress
        self.resolver.progress = progress

    def model(self, label: str) -> ResolvedModel:
        for m in self.config.models:
            if m.label == label:
                return m
        hint = nearest(label, [m.label for m in self.config.models])
        raise ConfigError(f"{self.config.source}: no model is named '{label}'"
                          + (f" (did you mean '{hint}'?)" if hint else ""))

    def plan(self, only: UnitSpec | None = None) -> list[Unit]:
        with data_scope(self.data_dirs):
            return plan_units(self.config, self.datasets, self.models, self.resolver, only)

    def close(self) -> None:
        self.models.close()

    # ------------------------------------------------------------ one unit
    def execute(self, unit: Unit) -> UnitResult:
        """Execute a planned unit; a failure is recorded as the unit's result (the run goes on), except a
        failing machine (a full disk, an unwritable cache), which every later unit would meet too."""
        started = now_iso()
        t0 = time.perf_counter()
        log.info("unit_start", unit=unit.id, mode=unit.mode, samples=len(unit.samples),
                 requests=len(unit.requests), cached=unit.cached)
        try:
            with data_scope(self.data_dirs):
                try:
                    result = self._run_unit(unit, started)
                finally:  # the unit's answers are committed (the cache's writer thread) before it is reported
                    self.cache.flush()
        except (OutputError, CacheError):
            raise
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else ""
            # luopan's own errors are already one readable line; others keep their type for context
            error = msg if isinstance(exc, LuopanError) else f"{type(exc).__name__}: {msg}"
            result = self.record_failure(unit, started, error, traceback=traceback.format_exc())
        log.info("unit_finish", unit=unit.id, seconds=round(time.perf_counter() - t0, 3), error=result.error)
        return result

    def record_failure(self, unit: Unit, started: str, error: str, **log_fields: Any) -> UnitResult:
        """A unit that could not run: its result (the error, the provenance) written and logged."""
        log.error("unit_failed", unit=unit.id, error=error, **log_fields)
        result = UnitResult(unit.model.label, unit.dataset.label, error=error,
                            provenance=self.provenance(unit, started, None))
        self.outputs.write_result(unit, result)
        return result

    def _run_unit(self, unit: Unit, started: str) -> UnitResult:
        raw, failed = self.resolver.resolve(unit.model, unit.mode, unit.requests, unit_id=unit.id, keys=unit.keys,
                                            found=unit.found, always_show=True)
        if unit.multi_turn:
            self._rollout(unit, raw, failed)
        if failed:
            return self._failed_result(unit, started, failed, raw)
        outputs = group_outputs(unit.mode, unit.samples, raw)
        # what evaluators and judges see: generated answers without a reasoning model's thinking
        answers = answers_of(outputs, rule_of(unit.model)) if unit.mode == "generate" else outputs
        ds = self.datasets.get(unit.dataset)
        ev_name = unit.dataset.evaluator or ds.default_evaluator
        evaluator = self.registry.get("evaluator", ev_name).build(unit.dataset.evaluator_params)
        judges = list(unit.dataset.judges)
        judge_calls: dict[str, dict[str, int]] = {}
        ctx = EvalContext(unit.mode, unit.model.label, unit.dataset.label, unit.dataset.evaluator_params,
                          judges=judges,
                          judge_generate=self._judge_fn(unit, judges, judge_calls) if judges else None,
                          peer_outputs=lambda label, _u=unit: self.peer_outputs(_u, label),
                          models=[m.label for m in self.config.models if m.role != "judge"],
                          components=self.registry.components_view())
        scored = evaluator.score(unit.samples, answers, ctx)
        subsets = subset_entries(unit.samples, scored, getattr(evaluator, "derived_metrics", None))
        usage = usage_of(raw, self.models.get(unit.model.label)) if unit.mode == "generate" else {}
        provenance = self.provenance(unit, started, ev_name)
        if judges:
            provenance["judges"] = {j: {"backend": self.models.backend(self.model(j)).identity(),
                                        **judge_calls.get(j, {})} for j in judges}
        result = UnitResult(unit.model.label, unit.dataset.label, evaluator.metric, subsets,
                            ds.categories(), dict(ds.display_names), provenance=provenance, usage=usage,
                            version=version(provenance))
        self.outputs.write_predictions(unit, outputs, scored, answers)
        self.outputs.write_result(unit, result)
        return result

    # ------------------------------------------------------------ multi-turn, peers, judges
    def _rollout(self, unit: Unit, raw: list[Any], failed: dict[int, str]) -> None:
        """Turns 2+ of multi-turn samples: each turn's request is the conversation so far (the model's own
        earlier answers included, without their thinking: the model's reasoning rule) plus the next user turn;
        answered from the cache or the backend, turn by turn. ``raw[i]`` becomes a :class:`ConversationResult`
        of the raw turns; a failed turn fails its sample (``failed[i]``)."""
        rule = rule_of(unit.model)
        convs = {i: [raw[i]] for i, s in enumerate(unit.samples)
                 if s.turns and len(s.turns) > 1 and i not in failed and raw[i] is not None}
        current: dict[int, GenerationRequest] = {i: unit.requests[i] for i in convs}  # type: ignore[misc]
        turn = 1
        while True:
            idx = [i for i in convs if i not in failed and len(unit.samples[i].turns or ()) > turn]
            if not idx:
                break
            reqs: list[Request] = [next_turn(current[i], answer_of(convs[i][-1], rule).text,
                                             unit.samples[i].turns[turn])  # type: ignore[index]
                                   for i in idx]
            outs, errors = self.resolver.resolve(unit.model, "generate", reqs, unit_id=unit.id,
                                                 title=f"{unit.id} turn {turn + 1}")
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
        cache or generated now and cached, so evaluators can compare models; answers without their thinking
        (model ``label``'s reasoning rule). Raises if any of them failed."""
        peer = Unit(self.model(label), unit.dataset, unit.shard, unit.n_shards, unit.mode, unit.samples)
        peer.requests = build_requests(peer)
        raw, failed = self.resolver.resolve(peer.model, peer.mode, peer.requests, unit_id=unit.id,
                                            title=f"{peer.id} (for {unit.model.label})")
        if peer.multi_turn:
            self._rollout(peer, raw, failed)
        if failed:
            i, err = next(iter(sorted(failed.items())))
            raise LuopanError(f"model '{label}' failed on {len(failed)} sample(s) needed to compare with "
                              f"'{unit.model.label}' (first: {peer.samples[i].id if peer.mode == 'generate' else i}: "
                              f"{err})")
        outputs = group_outputs(peer.mode, peer.samples, raw)
        return answers_of(outputs, rule_of(peer.model)) if peer.mode == "generate" else outputs

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
        """Ask judge model ``label`` to continue each conversation; answers cached like any request (raw), and
        returned without the judge's thinking (its reasoning rule), so that only its final reply is read."""
        model = self.model(label)
        cfg = config or generation_config(model, None)
        system: tuple[tuple[str, str], ...] = (("system", model.system_prompt),) if model.system_prompt else ()
        reqs: list[Request] = [GenerationRequest(messages=system + tuple((r, c) for r, c in conv), config=cfg)
                               for conv in conversations]
        keys = self.resolver.keys(model, reqs)
        found = self.resolver.lookup(keys, reqs)
        out, errors = self.resolver.resolve(model, "generate", reqs, unit_id=unit.id, title=f"{unit.id} judge {label}",
                                            keys=keys, found=found)
        results: list[Any] = answers_of(out, rule_of(model))
        for i, err in errors.items():
            results[i] = FailedResult(err)
        cached = sum(1 for k in keys if k in found)
        n = {"requests": len(reqs), "cached": cached, "sent": len(reqs) - cached, "failed": len(errors)}
        if calls is not None:
            stats = calls.setdefault(label, {})
            for k, v in n.items():
                stats[k] = stats.get(k, 0) + v
        log.info("judge_calls", unit=unit.id, judge=label, **n)
        return results

    # ------------------------------------------------------------ records
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
        usage = usage_of(raw, self.models.get(unit.model.label)) if unit.mode == "generate" else {}
        result = UnitResult(unit.model.label, unit.dataset.label, error=error, usage=usage,
                            failed_items=failed_items, provenance=self.provenance(unit, started, None))
        self.outputs.write_result(unit, result)
        return result

    def provenance(self, unit: Unit, started: str, evaluator: str | None) -> dict[str, Any]:
        """What produced a result. ``backend`` is the identity (part of every cache key); ``backend_options`` the
        model's options as validated, including those outside the key that can still move a score (batch size,
        device, threads: padding and batched kernels round differently); ``runtime`` what the backend reports
        about its engine once loaded (versions, resolved device and dtype)."""
        ds = self.datasets.built(unit.dataset.label)
        backend = self.models.get(unit.model.label)
        return {
            "luopan_version": luopan.__version__,
            "plugins": {p.name: {"distribution": p.distribution, "version": p.version, "ok": p.ok}
                        for p in self.registry.plugins},
            "backend": backend.identity() if backend is not None else {"backend": unit.model.backend},
            "backend_options": unit.model.params,
            "runtime": backend.runtime() if backend is not None else {},
            "model_kind": unit.model.kind,
            "dataset": {"loader": unit.dataset.loader, "params": unit.dataset.params,
                        "fingerprint": ds.fingerprint() if ds else "", **(ds.describe() if ds else {})},
            "mode": unit.mode,
            "shots": unit.dataset.shots,
            "evaluator": evaluator,
            "evaluator_params": unit.dataset.evaluator_params,
            "generation": generation_config(unit.model, unit.dataset).as_key() if unit.mode == "generate" else None,
            "seed": self.config.run.seed,
            "sample_seed": unit.dataset.sample_seed,
            "repeats": unit.dataset.repeats,
            **({"reasoning": unit.model.reasoning} if unit.mode == "generate" else {}),
            **({"system_prompt": unit.model.system_prompt} if unit.model.system_prompt else {}),
            "shard": [unit.shard + 1, unit.n_shards],
            "python": platform.python_version(),
            "started_at": started,
            "finished_at": now_iso(),
        }


def execute_spec(spec: UnitSpec, config: RunConfig, registry: Registry, *, out: Path, cache: RequestCache,
                 data_dirs: Sequence[Path]) -> UnitResult:
    """Plan the unit ``spec`` describes and execute it, in this process: what a runner that sends units to other
    processes calls there (with the run config, its own registry and cache)."""
    ctx = RunContext(config, registry, out=out, cache=cache, data_dirs=data_dirs)
    try:
        (unit,) = ctx.plan(only=spec)
        return ctx.execute(unit)
    finally:
        ctx.close()
