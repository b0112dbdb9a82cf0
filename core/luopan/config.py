"""The YAML run file: schema, preset resolution and validation, before anything runs.

Every error is one line naming the file, the line, the key and (where one is close) the nearest valid
name, and exits with code 2. Presets come from ``registry.yaml`` and from plugins; a run entry refers to one
with ``preset:`` and overrides any of its fields (``params``, ``generation`` and ``evaluator_params`` merge
key by key).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from luopan.errors import ConfigError, ConfigErrors, LuopanError
from luopan.files import MAX_NAME_BYTES, name_problem, safe_name
from luopan.plugins import Registry, nearest
from luopan.reasoning import ReasoningSpec, spec_value
from luopan.robustness import VariantSpec, variant_label
from luopan.types import GenerationConfig, ModelKind
from luopan.yamlpos import Located, load_located, load_located_file

MERGED_DICTS = ("params", "generation", "evaluator_params", "reasoning")
#: bounds that keep a typo (``shards: 1000000000``) from hanging the planner
MAX_SHARDS = 10_000
MAX_REPEATS = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerationSpec(_Strict):
    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None
    seed: int | None = None


class RunSection(BaseModel):
    """``run:``. Besides these keys it takes one options block per runner, named after it (``ray: {...}``,
    ``slurm: {...}``), validated by that runner's params; a key that names no runner is an error."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    output_dir: str = "outputs"
    #: folders searched for dataset files (relative to the run file), before $LUOPAN_DATA
    data: list[str] = Field(default_factory=list)
    seed: int = 0
    cache: bool | str = True
    runner: str = "local"
    summarizer: str = "default"


class ResourceSpec(_Strict):
    """What one replica of a model needs, for runners that place replicas (ray, slurm); the local runner runs
    one replica in its own process and ignores it."""

    replicas: int = Field(default=1, ge=1, le=10_000)
    num_gpus: float = Field(default=0, ge=0)
    num_cpus: float = Field(default=1, gt=0)


class ModelSpec(_Strict):
    name: str | None = None
    preset: str | None = None
    backend: str | None = None
    kind: ModelKind | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    system_prompt: str | None = None
    description: str | None = None
    #: "judge": this model only judges (datasets name it in ``judge:``); it is not evaluated itself
    role: Literal["model", "judge"] = "model"
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    #: where a reasoning model's thinking ends (luopan.reasoning): the answer scored is the text after it;
    #: default ``{end: "</think>", start: "<think>"}``; ``none`` or ``false``: off
    reasoning: ReasoningSpec | None = Field(default_factory=ReasoningSpec)

    @field_validator("reasoning", mode="before")
    @classmethod
    def _reasoning(cls, v: Any) -> Any:
        return spec_value(v)


class DatasetSpec(_Strict):
    name: str | None = None
    preset: str | None = None
    loader: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    subsets: list[str] | Literal["all"] = "all"
    limit_per_subset: int | None = Field(default=None, ge=1)
    limit: int | None = Field(default=None, ge=1)
    sample_seed: int | None = None
    shots: int = Field(default=0, ge=0)
    mode: Literal["auto", "likelihood", "generate"] = "auto"
    evaluator: str | None = None
    evaluator_params: dict[str, Any] = Field(default_factory=dict)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    #: split each unit of this dataset into this many shards (result files, array tasks); "auto": sized from
    #: the plan's request counts and the model's replicas (planning.auto_shards)
    shards: Annotated[int, Field(ge=1, le=MAX_SHARDS)] | Literal["auto"] = 1

    @field_validator("shards", mode="before")
    @classmethod
    def _shards(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SHARDS:
            raise ValueError(f"must be a number from 1 to {MAX_SHARDS}, or auto")
        return v
    #: answers per sample (generation only): each sample is asked n times with seeds seed+0 .. seed+n-1, for
    #: pass@k and other sampled metrics; copies carry meta["problem"] (the sample's id) and meta["repeat"]
    repeats: int = Field(default=1, ge=1, le=MAX_REPEATS)
    description: str | None = None
    #: the judge model(s) of model-based evaluators: model labels (default: every model with role: judge)
    judge: str | list[str] | None = None
    #: prompt variants (luopan.robustness): each is run as dataset ``<name>~<variant>`` on the same questions,
    #: and the run reports how the scores and verdicts move against this (the original) one
    robustness: list[VariantSpec] | None = None


class CompareSpec(_Strict):
    """A run file's ``compare:`` section: after the run, each model is compared with the baseline on the questions
    both answered (``compare.md``, ``compare.json`` in the run folder; see ``luopan compare``)."""

    #: the model the others are compared with (default: the first evaluated model)
    baseline: str | None = None
    #: the models compared with it (default: every other evaluated model)
    models: list[str] | None = None
    #: paired bootstrap resamples
    resamples: int = Field(default=1000, ge=100, le=100_000)
    #: the bootstrap's seed
    seed: int = 0


class RunFile(_Strict):
    run: RunSection = Field(default_factory=RunSection)
    models: list[ModelSpec] = Field(min_length=1)
    datasets: list[DatasetSpec] = Field(min_length=1)
    #: compare the models after the run (``true``: every model with the first)
    compare: CompareSpec | None = None

    @field_validator("compare", mode="before")
    @classmethod
    def _compare_flag(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value


@dataclass
class ResolvedModel:
    label: str
    backend: str
    kind: ModelKind
    params: dict[str, Any]
    generation: dict[str, Any]
    system_prompt: str | None
    preset: str | None = None
    role: str = "model"
    #: whether ``kind`` was written (in the entry or its preset) rather than defaulted to "base"
    kind_given: bool = True
    #: replicas and what each needs (runners that place replicas read it)
    resources: dict[str, Any] = field(default_factory=lambda: ResourceSpec().model_dump())
    #: the reasoning rule (``{"end", "start", "opened"}``, luopan.reasoning); None: off
    reasoning: dict[str, Any] | None = field(default_factory=lambda: ReasoningSpec().model_dump())


@dataclass
class ResolvedDataset:
    label: str
    loader: str
    params: dict[str, Any]
    subsets: list[str] | Literal["all"]
    limit_per_subset: int | None
    limit: int | None
    sample_seed: int | None
    shots: int
    mode: str
    evaluator: str | None
    evaluator_params: dict[str, Any]
    generation: dict[str, Any]
    shards: int | str
    preset: str | None = None
    judge: str | list[str] | None = None  # as written; ``judges`` is the resolved list of model labels
    judges: list[str] = field(default_factory=list)
    repeats: int = 1
    #: prompt variants (``VariantSpec`` fields, ``name`` resolved); on the original dataset only
    robustness: list[dict[str, Any]] = field(default_factory=list)
    #: a variant dataset: the variant's settings, and the label of the dataset it perturbs
    variant: dict[str, Any] | None = None
    variant_of: str | None = None


@dataclass
class RunConfig:
    """A validated, fully resolved run: what ``config.yaml`` in the output folder records."""

    source: str
    run: RunSection
    models: list[ResolvedModel]
    datasets: list[ResolvedDataset]
    base_dir: Path = field(default_factory=Path.cwd)
    #: the run file's ``compare:`` section with the baseline and models filled in; None: no comparison
    compare: CompareSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = {
            "source": self.source,
            "run": self.run.model_dump(),
            "models": [asdict(m) for m in self.models],
            "datasets": [asdict(d) for d in self.datasets],
        }
        if self.compare is not None:
            out["compare"] = self.compare.model_dump()
        return out


def generation_config(model: ResolvedModel, dataset: ResolvedDataset | None) -> GenerationConfig:
    """Model-level decoding settings, overridden by the dataset's (a benchmark knows its stop strings)."""
    merged = {k: v for k, v in model.generation.items() if v is not None}
    if dataset is not None:
        merged.update({k: v for k, v in dataset.generation.items() if v is not None})
    if "stop" in merged:
        merged["stop"] = tuple(merged["stop"])
    return GenerationConfig(**merged)


# ---------------------------------------------------------------- error formatting


def _format_pydantic(err: ValidationError, loc: Located, prefix: tuple[Any, ...], model: type[BaseModel] | None,
                     what: str = "") -> ConfigError:
    return _format_error(err.errors()[0], loc, prefix, model, what)


def _format_error(e: Any, loc: Located, prefix: tuple[Any, ...], model: type[BaseModel] | None,
                  what: str = "") -> ConfigError:
    """One pydantic error (an item of ``ValidationError.errors()``) as a one-line config error."""
    path = prefix + tuple(e["loc"])
    key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        bad = str(e["loc"][-1])
        fields = _fields_at(model, e["loc"][:-1]) if model is not None else []
        hint = nearest(bad, fields)
        msg = f"unknown key '{bad}'" + (f" (did you mean '{hint}'?)" if hint else f"; valid keys: {', '.join(fields)}")
    elif "input" in e and e["type"] not in ("missing",):
        msg += f" (got {e['input']!r})"
    return ConfigError(f"{loc.where(path)}: {key}: {what}{msg}")


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names valid at ``loc`` inside ``model`` (for 'did you mean')."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        f = current.model_fields.get(str(part))
        if f is None:
            return []
        current = f.annotation
        for arg in getattr(current, "__args__", ()) or ():
            for inner in (arg, *(getattr(arg, "__args__", ()) or ())):  # X | None, list[X] | None
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    current = inner
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


# ---------------------------------------------------------------- resolution


def _merge(preset: dict[str, Any], entry: dict[str, Any], also: frozenset[str] = frozenset()) -> dict[str, Any]:
    out = dict(preset)
    for k, v in entry.items():
        if (k in MERGED_DICTS or k in also) and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _resolve_entry(reg: Registry, loc: Located, kind: str, index: int, raw: Any, spec: type[BaseModel],
                   blocks: dict[str, dict[str, Any]] | None = None) -> Any:
    """Preset merged with the entry, validated by ``spec``. For models, ``blocks`` receives the backend option
    blocks (keys named after a backend), which are merged key by key like ``params``."""
    section = "models" if kind == "model" else "datasets"
    path: tuple[Any, ...] = (section, index)
    if not isinstance(raw, dict):
        raise ConfigError(f"{loc.where(path)}: {section}[{index}]: must be a mapping, got {type(raw).__name__}")
    merged = dict(raw)
    preset_name = raw.get("preset")
    if preset_name is not None:
        try:
            preset = reg.preset(kind, str(preset_name))
        except LuopanError as exc:
            raise ConfigError(f"{loc.where(path + ('preset',))}: {section}[{index}].preset: {exc}") from None
        also = frozenset(k for k in raw if blocks is not None and _is_backend_name(reg, k))
        merged = _merge(preset.fields, raw, also)
        merged["preset"] = preset.name
        merged.setdefault("name", preset.name)
    if blocks is not None:
        blocks.update(_split_blocks(reg, loc, path, merged, raw, preset_name))
    try:
        return spec.model_validate(merged)
    except ValidationError as exc:
        what = f"(from preset '{preset_name}') " if preset_name and exc.errors()[0]["loc"][0] not in raw else ""
        raise _format_pydantic(exc, loc, path, spec, what) from None


def _component_params(reg: Registry, loc: Located, kind: str, name: str, params: dict[str, Any],
                      path: tuple[Any, ...]) -> dict[str, Any]:
    try:
        comp = reg.get(kind, name)
    except LuopanError as exc:
        raise type(exc)(f"{loc.where(path)}: {'.'.join(map(str, path[:1]))}[{path[1]}]: {exc}") from exc.__cause__
    try:
        return comp.validate_params(params)
    except ValidationError as exc:
        raise _format_pydantic(exc, loc, path[:-1] + ("params",), comp.params, f"{kind} '{name}': ") from None
    except TypeError as exc:
        raise ConfigError(f"{loc.where(path[:2] + ('params',))}: {exc}") from None


# ---------------------------------------------------------------- backends: identity in params, options in blocks
#
# A model entry's ``params`` hold what identifies the model and means the same to every backend (path,
# gguf_file, chat_template...); options that only one backend understands go in a block named after it
# (``hf: {batch_size: 16}``, ``llamacpp: {n_threads: 8}``), used only when that backend runs the model. Swapping
# the backend (``backend: llamacpp`` or ``--backend llamacpp``) therefore changes nothing else, and an option the
# chosen backend does not take is an error naming it, never dropped.


def _is_backend_name(reg: Registry, key: Any) -> bool:
    if not isinstance(key, str) or key in ModelSpec.model_fields:
        return False
    return (key in reg.components["backend"] or ("backend", key) in reg.conflicts
            or reg.failed_provider("backend", key) is not None)


def _split_blocks(reg: Registry, loc: Located, path: tuple[Any, ...], merged: dict[str, Any], raw: dict[str, Any],
                  preset_name: Any) -> dict[str, dict[str, Any]]:
    """Remove the backend option blocks from a merged model entry; unknown keys are an error here (the nearest
    field or backend name is suggested)."""
    where = f"models[{path[1]}]"
    blocks: dict[str, dict[str, Any]] = {}
    for key in list(merged):
        if key in ModelSpec.model_fields:
            continue
        origin = "" if key in raw else f" (from preset '{preset_name}')"
        if _is_backend_name(reg, key):
            value = merged.pop(key)
            if not isinstance(value, dict):
                raise ConfigError(f"{loc.where(path + (key,))}: {where}.{key}: the options of backend '{key}' "
                                  f"must be a mapping, got {type(value).__name__}{origin}")
            blocks[key] = value
            continue
        names = list(ModelSpec.model_fields) + sorted(reg.components["backend"])
        hint = nearest(str(key), names)
        raise ConfigError(
            f"{loc.where(path + (key,))}: {where}: unknown key '{key}'{origin}"
            + (f" (did you mean '{hint}'?)" if hint else f"; valid keys: {', '.join(ModelSpec.model_fields)} "
               f"or a backend name holding that backend's options")
        )
    return blocks


def _backend_params(reg: Registry, loc: Located, i: int, m: ModelSpec, raw: dict[str, Any],
                    blocks: dict[str, dict[str, Any]], chosen: str, *, overridden: bool) -> dict[str, Any]:
    """The chosen backend's validated options: the shared ``params`` plus its own block. Blocks of the other
    backends are checked too (a misspelt option is an error even while another backend runs the model)."""
    path: tuple[Any, ...] = ("models", i)
    try:
        comp = reg.get("backend", chosen)
    except LuopanError as exc:
        where = "--backend" if overridden else loc.where(path + ("backend",))
        raise type(exc)(f"{where}: models[{i}]: {exc}") from exc.__cause__
    own = blocks.get(chosen, {})
    params = {**m.params, **own}
    fields = list(getattr(comp.params, "model_fields", {}) or {})
    for key in params:
        if comp.params is None or key in fields:
            continue
        in_block = key in own
        key_path = path + ((chosen, key) if in_block else ("params", key))
        given = raw.get(chosen, {}) if in_block else raw.get("params", {})
        origin = [] if isinstance(given, dict) and key in given else [f"from preset '{m.preset}'"]
        if overridden:
            origin.append(f"backend set by --backend {chosen}")
        elif m.preset and "backend" in raw:
            origin.append(f"backend set to {chosen} in this entry")
        owners = [b for b in _owners(reg, key) if b != chosen]
        hint = None if owners else nearest(key, fields)
        msg = f"backend '{chosen}' does not accept option '{key}'"
        if origin:
            msg += f" ({'; '.join(origin)})"
        if hint:
            msg += f" (did you mean '{hint}'?)"
        if len(owners) == 1 and not in_block:
            msg += (f"; it is an option of backend '{owners[0]}': put it in the model's '{owners[0]}:' block, "
                    f"which is used only when {owners[0]} runs the model")
        elif owners:
            msg += f"; backends {', '.join(owners)} take it"
        raise ConfigError(f"{loc.where(key_path)}: models[{i}].{'.'.join(map(str, key_path[2:]))}: {msg}")
    try:
        validated = comp.validate_params(params)
    except ValidationError as exc:
        loc_key = exc.errors()[0]["loc"][0] if exc.errors()[0]["loc"] else None
        where = (chosen,) if loc_key in own else ("params",)
        given = raw.get(where[0])
        origin = "" if isinstance(given, dict) and loc_key in given or not m.preset else f" (from preset '{m.preset}')"
        raise _format_pydantic(exc, loc, path + where, comp.params, f"backend '{chosen}'{origin}: ") from None
    except TypeError as exc:
        raise ConfigError(f"{loc.where(path + ('params',))}: {exc}") from None
    for other, block in blocks.items():
        if other == chosen or other not in reg.components["backend"]:
            continue
        model = reg.components["backend"][other].params
        if model is None:
            continue
        names = list(model.model_fields)
        for key in block:
            if key not in names:
                hint = nearest(str(key), names)
                raise ConfigError(
                    f"{loc.where(path + (other, key))}: models[{i}].{other}.{key}: backend '{other}': unknown key "
                    f"'{key}'" + (f" (did you mean '{hint}'?)" if hint else f"; valid keys: {', '.join(names)}")
                )
        try:
            model.model_validate({**m.params, **block})
        except ValidationError as exc:
            for e in exc.errors():
                if e["loc"] and e["loc"][0] in block and e["type"] != "missing":
                    raise _format_error(e, loc, path + (other,), model, f"backend '{other}': ") from None
    return validated


def _owners(reg: Registry, key: str) -> list[str]:
    """The registered backends whose options include ``key`` (for the hint in an error)."""
    out = []
    for name, comp in sorted(reg.components["backend"].items()):
        if comp.params is not None and key in getattr(comp.params, "model_fields", {}):
            out.append(name)
    return out


def _resolve_model(reg: Registry, loc: Located, i: int, raw: Any, backend: str | None) -> ResolvedModel:
    blocks: dict[str, dict[str, Any]] = {}
    m: ModelSpec = _resolve_entry(reg, loc, "model", i, raw, ModelSpec, blocks)
    path = ("models", i)
    swap = backend if m.role != "judge" else None  # a judge keeps its own backend
    chosen = swap or m.backend
    if not chosen:
        raise ConfigError(f"{loc.where(path)}: models[{i}]: no 'backend' (and no preset that sets one)")
    params = _backend_params(reg, loc, i, m, raw, blocks, chosen, overridden=swap is not None)
    label = m.name or m.preset or chosen
    return ResolvedModel(label, chosen, m.kind or "base", params, m.generation.model_dump(), m.system_prompt,
                         m.preset, m.role, kind_given=m.kind is not None, resources=m.resources.model_dump(),
                         reasoning=m.reasoning.model_dump() if m.reasoning is not None else None)


def _resolve_dataset(reg: Registry, loc: Located, i: int, raw: Any) -> list[ResolvedDataset]:
    """The dataset entry, and one dataset per prompt variant of its ``robustness:`` list after it."""
    d: DatasetSpec = _resolve_entry(reg, loc, "dataset", i, raw, DatasetSpec)
    path = ("datasets", i)
    if not d.loader:
        raise ConfigError(f"{loc.where(path)}: datasets[{i}]: no 'loader' (and no preset that sets one)")
    params = _component_params(reg, loc, "dataset", d.loader, d.params, path + ("loader",))
    if d.evaluator is not None:
        ev = _component_params(reg, loc, "evaluator", d.evaluator, d.evaluator_params, path + ("evaluator",))
    else:
        ev = d.evaluator_params
    label = d.name or d.preset or d.loader
    base = ResolvedDataset(label, d.loader, params, d.subsets, d.limit_per_subset, d.limit, d.sample_seed, d.shots,
                           d.mode, d.evaluator, ev, d.generation.model_dump(), d.shards, d.preset, d.judge,
                           repeats=d.repeats)
    return [base] + _variants(reg, loc, i, d, base)


def _variants(reg: Registry, loc: Located, i: int, d: DatasetSpec, base: ResolvedDataset) -> list[ResolvedDataset]:
    """The datasets of ``robustness:``: the entry's settings, the variant's loader params merged over its own
    (validated by the loader), labelled ``<label>~<variant>``."""
    out: list[ResolvedDataset] = []
    names: dict[str, int] = {}
    for j, v in enumerate(d.robustness or ()):
        path: tuple[Any, ...] = ("datasets", i, "robustness", j)
        name = v.label(j)
        if name in names:
            raise ConfigError(f"{loc.where(path)}: datasets[{i}].robustness[{j}]: two variants are named '{name}' "
                              f"(robustness[{names[name]}] too); give one a 'name'")
        names[name] = j
        params = base.params
        if v.params:
            params = _component_params(reg, loc, "dataset", base.loader, {**base.params, **v.params},
                                       path + ("loader",))
            if params == base.params:
                raise ConfigError(f"{loc.where(path + ('params',))}: datasets[{i}].robustness[{j}].params: the "
                                  f"same as the dataset's own; a variant must change the prompt")
        settings = {**v.model_dump(), "name": name}
        out.append(dataclasses.replace(base, label=variant_label(base.label, name), params=params, variant=settings, robustness=[],
                                       variant_of=base.label))
        base.robustness.append(settings)
    return out


def resolve(loc: Located, reg: Registry, *, base_dir: Path | None = None, backend: str | None = None,
            collect: list[str] | None = None) -> RunConfig:
    """Validate and resolve a run file. ``backend`` (``luopan run --backend NAME``) replaces the backend of every
    evaluated model (judges keep theirs); each model keeps its identity (``params``) and takes that backend's
    option block. With ``collect`` (a list), the problems of single entries are appended to it and those entries
    left out, so that the caller can check the others too and report everything at once."""
    data = loc.data
    if not isinstance(data, dict):
        raise ConfigError(f"{loc.source}: a run file must be a mapping with 'models' and 'datasets'")
    try:
        # entries are validated one by one after preset resolution; here only the file's shape
        shape = {k: ([{}] * len(v) if k in ("models", "datasets") and isinstance(v, list) else v)
                 for k, v in data.items()}
        top = RunFile.model_validate(shape)
    except ValidationError as exc:
        raise _format_pydantic(exc, loc, (), RunFile) from None
    if backend is not None:
        try:
            reg.get("backend", backend)
        except LuopanError as exc:
            raise type(exc)(f"--backend {backend}: {exc}") from exc.__cause__
    for comp_kind, name, key in (("runner", top.run.runner, "runner"), ("summarizer", top.run.summarizer, "summarizer")):
        try:
            reg.get(comp_kind, name)
        except LuopanError as exc:
            raise type(exc)(f"{loc.where(('run', key))}: run.{key}: {exc}") from exc.__cause__
    _check_runner_blocks(reg, loc, top.run)

    # every entry is resolved even when an earlier one is wrong: all of their problems are reported at once
    problems: list[LuopanError] = []
    models: list[ResolvedModel] = []
    for i, raw in enumerate(data["models"]):
        try:
            models.append(_resolve_model(reg, loc, i, raw, backend))
        except LuopanError as exc:
            problems.append(exc)
    datasets: list[ResolvedDataset] = []
    for i, raw in enumerate(data["datasets"]):
        try:
            datasets.extend(_resolve_dataset(reg, loc, i, raw))
        except LuopanError as exc:
            problems.append(exc)
    if problems and collect is not None:
        collect.extend(str(p) for p in problems)
    elif len(problems) == 1:
        raise problems[0]
    elif problems:
        raise ConfigErrors([str(p) for p in problems])

    for kind, items in (("models", models), ("datasets", datasets)):
        labels = [x.label for x in items]
        dup = next((lab for lab in labels if labels.count(lab) > 1), None)
        if dup is not None:
            idx = len(labels) - 1 - labels[::-1].index(dup)
            raise ConfigError(f"{loc.where((kind, idx))}: {kind}[{idx}]: two {kind} are named '{dup}'; give one a 'name'")

    _check_names(loc, top.run, models, datasets)
    _resolve_judges(loc, models, datasets)
    # with entries left out (``collect``) the run stops before it compares: names are checked once all resolve
    compare = _resolve_compare(loc, top.compare, models) if not problems else top.compare
    cfg = RunConfig(loc.source, top.run, models, datasets, base_dir or Path.cwd(), compare)
    try:
        reg.pm.hook.luopan_validate_config(config=cfg, source=loc.source)
    except ConfigError as exc:
        raise ConfigError(f"{loc.source}: {exc}") from None
    return cfg


def runner_params(run: RunSection) -> dict[str, Any]:
    """The options block of the chosen runner (``run.<runner>``), as written."""
    block = (run.model_extra or {}).get(run.runner)
    return dict(block) if isinstance(block, dict) else {}


def _check_runner_blocks(reg: Registry, loc: Located, run: RunSection) -> None:
    """Each extra key of ``run:`` must name a runner and hold its options (validated by that runner)."""
    runners = reg.components["runner"]
    for key, block in (run.model_extra or {}).items():
        if key not in runners:
            names = [*RunSection.model_fields, *runners]
            hint = nearest(str(key), names)
            raise ConfigError(f"{loc.where(('run', key))}: run: unknown key '{key}'"
                              + (f" (did you mean '{hint}'?)" if hint else f"; valid keys: {', '.join(names)}"))
        if not isinstance(block, dict):
            raise ConfigError(f"{loc.where(('run', key))}: run.{key}: the options of runner '{key}' must be a "
                              f"mapping (got {block!r})")
        comp = runners[key]
        try:
            comp.validate_params(block)
        except ValidationError as exc:
            raise _format_pydantic(exc, loc, ("run", key), comp.params, f"runner '{key}': ") from None
        except TypeError as exc:
            raise ConfigError(f"{loc.where(('run', key))}: run.{key}: {exc}") from None


def _check_names(loc: Located, run: RunSection, models: list[ResolvedModel],
                 datasets: list[ResolvedDataset]) -> None:
    """Names become folders and files: ``run.name`` must be one plain folder name, and no two model (or
    dataset) labels may map to the same file name (``a/b`` and ``a_b`` would overwrite each other)."""
    if run.name is not None:
        problem = name_problem(run.name)
        if problem:
            raise ConfigError(f"{loc.where(('run', 'name'))}: run.name: {run.name[:80]!r} {problem}")
    for kind, items in (("models", models), ("datasets", datasets)):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            file = safe_name(item.label)
            if len(file.encode("utf-8")) > MAX_NAME_BYTES:
                raise ConfigError(f"{loc.where((kind, i))}: {kind}[{i}]: name {item.label[:40]!r}... is longer than "
                                  f"{MAX_NAME_BYTES} bytes (it names files); give a shorter 'name'")
            if file in seen:
                j = seen[file]
                raise ConfigError(
                    f"{loc.where((kind, i))}: {kind}[{i}]: name '{item.label}' and {kind}[{j}]'s '{items[j].label}' "
                    f"would share the file name '{file}' (only letters, digits and -_. are kept); rename one")
            seen[file] = i


def _resolve_compare(loc: Located, spec: CompareSpec | None, models: list[ResolvedModel]) -> CompareSpec | None:
    """The ``compare:`` section with its baseline and models resolved: labels of evaluated models (judges are
    not compared), at least one besides the baseline."""
    if spec is None:
        return None
    labels = [m.label for m in models if m.role != "judge"]

    def check(name: str, path: tuple[Any, ...], key: str) -> None:
        if name not in labels:
            hint = nearest(name, labels)
            raise ConfigError(f"{loc.where(path)}: {key}: no evaluated model is named '{name}'"
                              + (f" (did you mean '{hint}'?)" if hint else f" (models: {', '.join(labels)})"))

    if spec.baseline is not None:
        check(spec.baseline, ("compare", "baseline"), "compare.baseline")
    base = spec.baseline or (labels[0] if labels else None)
    for i, name in enumerate(spec.models or []):
        check(name, ("compare", "models", i), f"compare.models[{i}]")
    others = [m for m in (spec.models or labels) if m != base]
    if base is None or not others:
        raise ConfigError(f"{loc.where(('compare',))}: compare: needs two evaluated models (the baseline "
                          f"'{base}' and at least one other)")
    return spec.model_copy(update={"baseline": base, "models": others})


def _resolve_judges(loc: Located, models: list[ResolvedModel],
                    datasets: list[ResolvedDataset]) -> None:
    """Each dataset's judge models (``judge:``, default every ``role: judge`` model): known labels of chat
    models. At least one model must be evaluated."""
    if models and all(m.role == "judge" for m in models):
        raise ConfigError(f"{loc.where(('models',))}: models: every model has role: judge; nothing to evaluate")
    by_label = {m.label: m for m in models}
    default = [m.label for m in models if m.role == "judge"]
    for i, d in enumerate(datasets):
        given = d.judge
        names = ([given] if isinstance(given, str) else list(given)) if given is not None else default
        for k, name in enumerate(names):
            path: tuple[Any, ...] = ("datasets", i, "judge") + ((k,) if isinstance(given, list) else ())
            if name not in by_label:
                hint = nearest(str(name), by_label)
                raise ConfigError(f"{loc.where(path)}: datasets[{i}].judge: no model is named '{name}'"
                                  + (f" (did you mean '{hint}'?)" if hint else "; add it to models: with role: judge"))
            if by_label[name].kind != "chat":
                raise ConfigError(f"{loc.where(path)}: datasets[{i}].judge: judge '{name}' must be a chat model "
                                  f"(kind: chat), it is kind {by_label[name].kind}")
        d.judges = list(names)


def load_run(target: str, reg: Registry, *, backend: str | None = None,
             collect: list[str] | None = None) -> RunConfig:
    """Load a run from a YAML file path, or from a run preset name (e.g. ``quickstart``). ``backend`` replaces
    every model's backend (``--backend``); ``collect``: see :func:`resolve`."""
    p = Path(target)
    if p.suffix in (".yaml", ".yml") or p.exists() or os.sep in target:
        if not p.exists():
            raise ConfigError(f"{target}: no such run file")
        return resolve(load_located_file(p), reg, base_dir=p.resolve().parent, backend=backend, collect=collect)
    if target in reg.presets["run"]:
        import yaml

        preset = reg.presets["run"][target]
        fields = {k: v for k, v in preset.fields.items() if k != "description"}
        loc = load_located(yaml.safe_dump(fields, allow_unicode=True, sort_keys=False),
                           f"run preset '{target}' ({preset.source})")
        return resolve(loc, reg, backend=backend, collect=collect)
    hint = nearest(target, reg.presets["run"])
    raise ConfigError(f"{target}: no such run file or run preset" + (f" (did you mean '{hint}'?)" if hint else ""))
