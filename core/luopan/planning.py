"""Planning: datasets loaded and sampled, every unit's requests built and looked up in the cache. Executes
nothing, loads no weights (backends are built for their identities only), and is what ``--dry-run`` prints.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from luopan.components import Dataset
from luopan.config import ResolvedDataset, ResolvedModel, RunConfig, generation_config
from luopan.errors import ConfigError, LuopanError
from luopan.plugins import Registry, nearest
from luopan.reasoning import answer_of, rule_of
from luopan.resolver import ModelPool, RequestResolver
from luopan.robustness import VariantSpec, option_order, perturb_sample
from luopan.types import GenerationRequest, LoglikelihoodRequest, Request, Sample
from luopan.units import Unit, UnitSpec, question_groups

#: the most samples one dataset entry may expand to (repeats included): a typo must not exhaust memory
MAX_SAMPLES = 5_000_000


class DatasetPool:
    """The run's dataset components, built once per dataset label."""

    def __init__(self, config: RunConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self._datasets: dict[str, Dataset] = {}

    def get(self, spec: ResolvedDataset) -> Dataset:
        d = self._datasets.get(spec.label)
        if d is None and spec.variant_of is not None:  # a prompt variant with the loader params of its dataset
            base = next((b for b in self.config.datasets if b.label == spec.variant_of), None)
            if base is not None and base.params == spec.params:
                d = self._datasets[spec.label] = self.get(base)
        if d is None:
            try:
                d = self.registry.get("dataset", spec.loader).create(spec.params)
            except LuopanError as exc:
                raise type(exc)(f"{self.config.source}: dataset '{spec.label}': {exc}") from exc
            self._datasets[spec.label] = d
        return d

    def built(self, label: str) -> Dataset | None:
        return self._datasets.get(label)


def select_samples(ds: Dataset, spec: ResolvedDataset, source: str) -> list[Sample]:
    """The dataset entry's samples: its subsets, limits (in questions), seeded draw and repeats."""
    available = ds.subsets()
    if spec.subsets == "all":
        chosen = available
    else:
        chosen = []
        for s in spec.subsets:
            if s not in available:
                hint = nearest(s, available)
                raise ConfigError(
                    f"{source}: dataset '{spec.label}': unknown subset '{s}'"
                    + (f" (did you mean '{hint}'?)" if hint else f"; {len(available)} subsets available")
                )
            chosen.append(s)
    variant = VariantSpec.model_validate(spec.variant) if spec.variant else None
    order: dict[str, Any] = {}
    if variant is not None and variant.shuffle:
        if not ds.reorders_options:
            raise ConfigError(f"{source}: dataset '{spec.label}': loader '{spec.loader}' cannot reorder the options "
                              f"of its questions; drop 'shuffle' from this robustness variant")
        order["order"] = option_order(variant)
    out: list[Sample] = []
    for subset in chosen:
        try:
            samples = ds.load(subset, shots=spec.shots, **order)
        except LuopanError as exc:
            raise type(exc)(f"{source}: dataset '{spec.label}': {exc}") from exc
        if spec.limit_per_subset is not None and len(samples) > spec.limit_per_subset:
            samples = take(samples, spec.limit_per_subset, spec.sample_seed, subset)
        out.extend(samples)
    if spec.limit is not None and len(out) > spec.limit:
        out = take(out, spec.limit, spec.sample_seed, "")
    if variant is not None:  # the same questions as the original, perturbed (before repeats: one prompt each)
        out = [perturb_sample(s, variant) for s in out]
    if spec.repeats > 1:
        if len(out) * spec.repeats > MAX_SAMPLES:
            raise ConfigError(f"{source}: dataset '{spec.label}': repeats: {spec.repeats} x {len(out):,} samples is "
                              f"{len(out) * spec.repeats:,} requests, more than {MAX_SAMPLES:,}; lower repeats or set limit")
        out = [dataclasses.replace(s, id=f"{s.id}#r{r}", meta={**s.meta, "problem": s.meta.get("problem", s.id),
                                                              "repeat": r})
               for s in out for r in range(spec.repeats)]
    return out


def take(samples: list[Sample], n: int, seed: int | None, salt: str) -> list[Sample]:
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


def build_requests(unit: Unit) -> list[Request]:
    """A unit's requests: one per choice (likelihood) or one per sample (generation; chat models get messages
    with the model's system prompt; each repeat its own seed)."""
    reqs: list[Request] = []
    if unit.mode == "likelihood":
        for s in unit.samples:
            for c in s.choices or ():
                reqs.append(LoglikelihoodRequest(s.prompt, c, s.prefix))
        return reqs
    gen_cfg = generation_config(unit.model, unit.dataset)
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


def _mode(model: ResolvedModel, ds: ResolvedDataset) -> str:
    return ds.mode if ds.mode != "auto" else ("generate" if model.kind == "chat" else "likelihood")


def _check(config: RunConfig, model: ResolvedModel, ds: ResolvedDataset, mode: str, samples: list[Sample],
           capabilities: frozenset[str]) -> None:
    source = config.source
    need = "loglikelihood" if mode == "likelihood" else "generate"
    if need not in capabilities:
        raise ConfigError(f"{source}: model '{model.label}' (backend {model.backend}) cannot {need}; "
                          f"set mode for dataset '{ds.label}'")
    if mode == "likelihood" and any(not s.choices for s in samples):
        raise ConfigError(f"{source}: dataset '{ds.label}' has samples without choices, so it cannot be scored by "
                          f"likelihood; set 'mode: generate'")
    if mode == "likelihood" and ds.repeats > 1:
        raise ConfigError(f"{source}: dataset '{ds.label}': repeats: {ds.repeats} needs generation (a likelihood is "
                          f"the same every time); set 'mode: generate' or drop repeats")
    if mode == "generate" and model.kind != "chat" and any(s.turns and len(s.turns) > 1 for s in samples):
        raise ConfigError(f"{source}: dataset '{ds.label}' has multi-turn samples, which need a chat model; "
                          f"model '{model.label}' is kind {model.kind} (set kind: chat)")
    if ds.repeats > 1 and generation_config(model, ds).temperature == 0:
        raise ConfigError(f"{source}: dataset '{ds.label}': repeats: {ds.repeats} with greedy decoding gives "
                          f"{ds.repeats} identical answers; set generation.temperature (e.g. 0.8) or drop repeats")


def plan_units(config: RunConfig, datasets: DatasetPool, models: ModelPool, resolver: RequestResolver,
               only: UnitSpec | None = None) -> list[Unit]:
    """Every unit of the run (or the one ``only`` describes): samples, requests, keys, cached results."""
    units: list[Unit] = []
    samples_by_ds: dict[str, list[Sample]] = {}
    for ds in config.datasets:
        if only is None or only.dataset == ds.label:
            samples_by_ds[ds.label] = select_samples(datasets.get(ds), ds, config.source)
    for model in config.models:
        if model.role == "judge" or (only is not None and only.model != model.label):
            continue  # a judge only judges: no units of its own
        backend = models.backend(model)
        for ds in config.datasets:
            if ds.label not in samples_by_ds:
                continue
            samples = samples_by_ds[ds.label]
            mode = _mode(model, ds)
            _check(config, model, ds, mode, samples, backend.capabilities)
            groups = question_groups(samples)  # a shard boundary never splits a question
            if only is not None:
                n = only.n_shards
            elif ds.shards == "auto":
                n = auto_shards(groups, mode, model.resources.get("replicas", 1))
            else:
                n = int(ds.shards)
            if n > max(1, len(groups)):
                raise ConfigError(f"{config.source}: dataset '{ds.label}': shards: {n} is more than its "
                                  f"{len(groups)} questions; use at most {max(1, len(groups))}")
            size = -(-len(groups) // n) if groups else 0
            for shard in range(n):
                if only is not None and only.shard != shard:
                    continue
                part = [s for g in groups[shard * size : (shard + 1) * size] for s in g]
                unit = Unit(model, ds, shard, n, mode, part)
                unit.requests = build_requests(unit)
                unit.keys = resolver.keys(model, unit.requests)
                units.append(unit)
    found = resolver.lookup([k for u in units for k in u.keys], [r for u in units for r in u.requests])
    for u in units:
        u.found = {k: found[k] for k in u.keys if k in found}
        if u.multi_turn:
            count_later_turns(u, resolver)
    return units


#: ``shards: auto`` aims at about this many requests per shard (a few minutes of a GPU's likelihood scoring)
SHARD_REQUESTS = 20_000


def auto_shards(groups: Sequence[Sequence[Sample]], mode: str, replicas: int) -> int:
    """``shards: auto``: enough shards that none holds much more than :data:`SHARD_REQUESTS` requests, and a
    multiple of the model's replicas so each gets an equal share; never more than the questions. The plan's own
    request counts decide (a likelihood question asks one request per option), not a guess from text length."""
    requests = sum(len(s.choices or ()) if mode == "likelihood" else 1 for g in groups for s in g)
    replicas = max(1, int(replicas))
    n = max(1, -(-requests // SHARD_REQUESTS))
    n = -(-n // replicas) * replicas
    return max(1, min(n, len(groups)))


def next_turn(request: GenerationRequest, answer: str, user: str) -> GenerationRequest:
    """The request of a conversation's next turn: the previous one, its answer, and the next user turn."""
    messages = (request.messages or ()) + (("assistant", answer), ("user", user))
    return GenerationRequest(messages=messages, config=request.config, sample_id=request.sample_id)


def count_later_turns(unit: Unit, resolver: RequestResolver) -> None:
    """How many requests turns 2+ of a unit's multi-turn samples make, and how many the cache holds: a later
    turn's request is known only when the turns before it are cached (its prompt holds their answers)."""
    unit.later_turns = sum(len(s.turns) - 1 for s in unit.samples if s.turns)
    convs = {i: unit.found.get(unit.keys[i]) for i, s in enumerate(unit.samples) if s.turns and len(s.turns) > 1}
    current = {i: unit.requests[i] for i, r in convs.items() if r is not None}
    answers = {i: r for i, r in convs.items() if r is not None}
    rule = rule_of(unit.model)  # the history holds answers without thinking, as the run sends them
    turn = 1
    while current and resolver.cache.enabled:
        reqs = {i: next_turn(current[i], answer_of(answers[i], rule).text,  # type: ignore[arg-type]
                             unit.samples[i].turns[turn])  # type: ignore[index]
                for i in current if len(unit.samples[i].turns or ()) > turn}
        keys = dict(zip(reqs, resolver.keys(unit.model, list(reqs.values()))))
        found = resolver.lookup(list(keys.values()), list(reqs.values()))
        answers = {i: found[k] for i, k in keys.items() if k in found}
        unit.later_cached += len(answers)
        current = {i: reqs[i] for i in answers}
        turn += 1


def print_plan(run: Any, file: Any = None) -> None:
    """The dry run: units, requests, what is cached, and (for backends that can say, e.g. APIs) the tokens,
    money and rate-limited time the uncached requests would cost. Nothing is sent."""
    file = file or sys.stdout
    units = run.units
    print(f"plan: {len(units)} unit(s); output folder {run.out}", file=file)
    total = cached = 0
    totals: dict[str, Any] = defaultdict(float)
    costs: dict[str, float] = defaultdict(float)  # per currency: a USD and a CNY model never add up
    for u in units:
        n_sub = len({s.subset for s in u.samples})
        to_run = len(u.requests) - u.cached
        print(f"  {u.id}: mode={u.mode} subsets={n_sub} samples={len(u.samples)} "
              f"requests={len(u.requests)} cached={u.cached} to_run={to_run}", file=file)
        if u.later_turns:
            print(f"    turns 2+: {u.later_turns} requests, {u.later_cached} cached (a turn's prompt holds the answers "
                  f"before it, so only turns after cached ones can be looked up)", file=file)
        judges = u.dataset.judges
        if judges:
            print(f"    judged by {', '.join(judges)}: judge requests depend on the answers; cached ones are reused",
                  file=file)
        total += len(u.requests)
        cached += u.cached
        if to_run:
            est = run.models.backend(u.model).estimate([r for r, k in zip(u.requests, u.keys) if k not in u.found])
            if est:
                print(f"    estimate: {format_estimate(est)}", file=file)
                for k, v in est.items():
                    if k == "cost":
                        costs[est.get("currency", "USD")] += v
                    elif isinstance(v, (int, float)) and not isinstance(v, bool):
                        totals[k] += v
    print(f"total: {total} requests, {cached} cached, {total - cached} to run", file=file)
    if totals or costs:
        parts = [format_estimate(dict(totals))] if totals else []
        parts += [f"<= {c:.4f} {cur}" for cur, c in sorted(costs.items())]
        print(f"estimate for the whole run: {', '.join(p for p in parts if p != '-')}", file=file)


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
