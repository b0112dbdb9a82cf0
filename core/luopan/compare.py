"""Paired comparison of models on the same questions, and the comparability of two scores.

``luopan compare RUN_A [RUN_B] [--baseline MODEL]`` and a run file's ``compare:`` section. For each dataset both
models ran, on the questions both answered (a question of several samples counts once, as in the scores): each
model's score, the difference (model - baseline, in points) with a seeded paired bootstrap 95% interval, a
p-value (McNemar's exact test when every score is 0 or 1, else a paired z test), the p-values corrected by
Holm's method across the datasets of the comparison, and the questions where one model is right and the other
wrong. Scores of a dataset are comparable only when the data files, prompt, dataset options, shots, mode,
evaluator, generation settings and reasoning rule (on or off) were the same: :func:`version` hashes them (the
summary's ``version`` column) and :func:`differences` says in words what differs; a comparison across different
settings carries a warning, never a silent number.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luopan import stats
from luopan.errors import ConfigError

#: dataset options that name where the data is: left out of the comparability record when the dataset gives a
#: hash of the files' content (the same files under another path are the same data)
PATH_OPTIONS = ("path", "files")
#: at most this many question ids listed per side in compare.md (compare.json lists every one)
SHOWN_IDS = 20


def comparability(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """What must be equal for two scores of a dataset to mean the same thing, from a result's provenance:
    the data files (their content hash), the prompt (the dataset's templates and the model's system prompt),
    the dataset's other options, shots, mode, evaluator (with its options and repeats), the generation
    settings and, for generated answers, whether the reasoning rule was on (the thinking left out of what is
    scored; a result written before the rule existed has no such part). The model and the backend are not part
    of it (they are what is compared), nor the limit or the sampling of questions (a comparison keeps the
    questions both answered); nor the rule's markers: like the chat template, they describe how a model writes
    (two reasoning models with different markers are compared under the same settings)."""
    ds = dict(provenance.get("dataset") or {})
    fingerprint = ds.get("fingerprint") or ""
    options = dict(ds.get("params") or {})
    if fingerprint:
        for key in PATH_OPTIONS:
            options.pop(key, None)
    prompt = {k: v for k, v in ds.items() if k not in ("loader", "params", "fingerprint")}
    if provenance.get("system_prompt"):
        prompt["system_prompt"] = provenance["system_prompt"]
    out: dict[str, Any] = {
        "data files": {"loader": ds.get("loader"), "fingerprint": fingerprint},
        "prompt": prompt,
        "dataset options": options,
        "shots": provenance.get("shots"),
        "mode": provenance.get("mode"),
        "evaluator": {"name": provenance.get("evaluator"), "params": provenance.get("evaluator_params") or {},
                      "repeats": provenance.get("repeats") or 1},
        "generation settings": provenance.get("generation"),
    }
    if "reasoning" in provenance:
        out["reasoning rule"] = "on" if provenance["reasoning"] else "off"
    return out


def version(provenance: Mapping[str, Any]) -> str:
    """The comparability hash: six hex digits of the SHA-256 of :func:`comparability` (as OpenCompass's
    ``version`` column). Equal hashes: the scores were produced under the same settings."""
    text = json.dumps(comparability(provenance), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def differences(a: Mapping[str, Any], b: Mapping[str, Any], *, data: bool = True) -> list[str]:
    """In words, what differs between the settings behind two results (their provenances): one phrase per
    part of :func:`comparability` that differs, e.g. ``shots: 0 vs 5``; empty when they are comparable.
    ``data=False`` leaves out the data files' content hash (a comparison checks the questions themselves)."""
    ra, rb = comparability(a), comparability(b)
    out = []
    for part in {**ra, **rb}:
        x, y = ra.get(part), rb.get(part)
        if x == y or (part == "data files" and not data):
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            keys = [k for k in {**x, **y} if x.get(k) != y.get(k)]
            if part == "data files":
                out.append("data files (content hash "
                           f"{str(x.get('fingerprint'))[:8] or '?'} vs {str(y.get('fingerprint'))[:8] or '?'})"
                           if x.get("fingerprint") != y.get("fingerprint")
                           else f"data loader: {_short(x.get('loader'))} vs {_short(y.get('loader'))}")
            elif part == "prompt":
                out.append(f"prompt ({', '.join(map(str, keys))})")
            else:
                out.append(f"{part}: " + ", ".join(f"{k} {_short(x.get(k))} vs {_short(y.get(k))}" for k in keys))
        else:
            out.append(f"{part}: {_short(x)} vs {_short(y)}")
    return out


# ---------------------------------------------------------------- reading runs


@dataclass
class Side:
    """One model of one run folder, as compared."""

    label: str  #: the name shown (the model's, with the run folder's where two runs share a model name)
    model: str
    results: Any  #: the run's :class:`luopan.api.Results`

    def unit(self, dataset: str) -> Any:
        return next((u for u in self.results.units if u.model == self.model and u.dataset == dataset), None)

    def questions(self, dataset: str) -> dict[tuple[str, str], Question]:
        """(subset, question) -> the question's score (the mean of its scored samples, as the kernel scores)
        and what it asked; questions without a score are left out."""
        found: dict[tuple[str, str], Question] = {}
        for rec in self.results.predictions(self.model, dataset):
            key = (str(rec.get("subset")), str(rec.get("question") or rec.get("id")))
            q = found.get(key)
            if q is None:
                q = found[key] = Question()
            q.asked.append(_signature(rec.get("prompt"), rec.get("messages")))
            q.data.append(_signature(rec.get("target"), rec.get("choices")))
            if rec.get("score") is not None:
                q.total += float(rec["score"])
                q.scored += 1
        return {k: q for k, q in found.items() if q.scored}


@dataclass
class Question:
    """One question of a run's predictions: its samples' scores and what they asked (prompt, messages) and
    held (target, options), as signatures."""

    total: float = 0.0
    scored: int = 0
    asked: list[int] = field(default_factory=list)
    data: list[int] = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.total / self.scored


def _signature(*parts: Any) -> int:
    return zlib.crc32(json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8"))


def load_run_folder(folder: str | Path, what: str = "run folder") -> Any:
    """A finished run's results, or a one-line error saying why the folder is not one."""
    from luopan.api import load_results

    path = Path(folder)
    if not path.exists():
        raise ConfigError(f"{folder}: no such {what}")
    if not path.is_dir():
        raise ConfigError(f"{folder}: not a folder (give a run's output folder, e.g. outputs/<run name>)")
    if not (path / "summary.json").is_file():
        raise ConfigError(f"{folder}: not a finished luopan run (no summary.json); give a run's output folder")
    return load_results(path)


def _models(results: Any) -> list[str]:
    return list(dict.fromkeys(u.model for u in results.units))


def _pick(results: Any, name: str | None, folder: str, flag: str = "--baseline") -> str:
    models = _models(results)
    if name is None:
        if not models:
            raise ConfigError(f"{folder}: the run has no results")
        return models[0]
    if name not in models:
        from luopan.plugins import nearest

        hint = nearest(name, models)
        raise ConfigError(f"{flag} {name}: no such model in {folder}"
                          + (f" (did you mean '{hint}'?)" if hint else f" (models: {', '.join(models)})"))
    return name


def sides(run_a: str | Path, run_b: str | Path | None = None, *, baseline: str | None = None,
          models: Sequence[str] | None = None) -> tuple[Side, list[Side]]:
    """The baseline and the models compared with it. One folder: ``baseline`` (default: the run's first model)
    against ``models`` (default: every other model of the run). Two folders: ``baseline`` of RUN_A (default:
    its first model) against ``models`` of RUN_B (default: all of them)."""
    ra = load_run_folder(run_a)
    base = _pick(ra, baseline, str(run_a))
    if run_b is None:
        names = list(models) if models else [m for m in _models(ra) if m != base]
        for m in names:
            _pick(ra, m, str(run_a), "model")
        names = [m for m in names if m != base]
        if not names:
            raise ConfigError(f"{run_a}: only one model ({base}) to compare; give a second run folder "
                              f"(luopan compare RUN_A RUN_B)")
        return Side(base, base, ra), [Side(m, m, ra) for m in names]
    rb = load_run_folder(run_b)
    names = list(models) if models else _models(rb)
    for m in names:
        _pick(rb, m, str(run_b), "model")
    if not names:
        raise ConfigError(f"{run_b}: the run has no results")
    pa, pb = Path(run_a).resolve(), Path(run_b).resolve()
    tag_a, tag_b = (pa.name, pb.name) if pa.name != pb.name else ("A", "B")
    clash = base in names  # the same model name in both runs: each side is named after its run folder
    return (Side(f"{base}@{tag_a}" if clash else base, base, ra),
            [Side(f"{m}@{tag_b}" if m == base else m, m, rb) for m in names])


# ---------------------------------------------------------------- comparing


def compare_datasets(base: Side, other: Side, *, resamples: int = stats.DEFAULT_RESAMPLES,
                     seed: int = 0) -> dict[str, Any]:
    """One comparison: ``other`` against ``base`` on every dataset both ran (see the module's docstring)."""
    datasets = [d for d in dict.fromkeys(u.dataset for u in base.results.units if u.model == base.model)
                if other.unit(d) is not None]
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for ds in datasets:
        ua, ub = base.unit(ds), other.unit(ds)
        failed = [s.label for s, u in ((base, ua), (other, ub)) if u.error]
        if failed:
            skipped.append({"dataset": ds, "reason": f"{' and '.join(failed)} failed on it"})
            continue
        try:
            qa, qb = base.questions(ds), other.questions(ds)
        except KeyError as exc:
            skipped.append({"dataset": ds, "reason": str(exc).strip("'\"")})
            continue
        common = [k for k in qa if k in qb]
        if not common:
            skipped.append({"dataset": ds, "reason": "no question answered by both"})
            continue
        rows.append(_compare_one(ds, base, other, ua, ub, qa, qb, common, resamples, seed))
    adjusted = stats.holm([r["p"] for r in rows])
    for r, p in zip(rows, adjusted):
        r["p_holm"] = p
    return {"baseline": base.label, "model": other.label, "datasets": rows, "skipped": skipped}


def _compare_one(ds: str, base: Side, other: Side, ua: Any, ub: Any, qa: dict[tuple[str, str], Question],
                 qb: dict[tuple[str, str], Question], common: list[tuple[str, str]], resamples: int,
                 seed: int) -> dict[str, Any]:
    xa = [qa[k].score for k in common]
    xb = [qb[k].score for k in common]
    n = len(common)
    diff = stats.paired_bootstrap(xa, xb, resamples=resamples,
                                  seed=stats.seed_of(seed, ds, base.label, other.label)).scaled(100.0)
    binary = all(v in (0.0, 1.0) for v in xa) and all(v in (0.0, 1.0) for v in xb)
    row: dict[str, Any] = {
        "dataset": ds, "metric": ua.metric, "n": n,
        "only_baseline": len(qa) - n, "only_model": len(qb) - n,
        "baseline_score": 100.0 * sum(xa) / n, "model_score": 100.0 * sum(xb) / n,
        "difference": diff.value, "se": diff.se, "ci": list(diff.ci) if diff.ci else None,
        "binary": binary,
    }
    if binary:
        base_right = [k[1] for k, a, b in zip(common, xa, xb) if a == 1.0 and b == 0.0]
        model_right = [k[1] for k, a, b in zip(common, xa, xb) if a == 0.0 and b == 1.0]
        row["test"] = "mcnemar_exact"
        row["p"] = stats.mcnemar_exact(len(base_right), len(model_right))
        row["discordant"] = {"baseline_right": base_right, "model_right": model_right}
    else:
        d = [b - a for a, b in zip(xa, xb)]
        est = stats.estimate_mean(d)
        if est.se:
            p = stats.normal_p(est.value / est.se)  # type: ignore[operator]
        else:
            p = 1.0 if est.value == 0 else 0.0
        row["test"] = "paired_z"
        row["p"] = p
    row["versions"] = {"baseline": ua.version or version(ua.provenance),
                       "model": ub.version or version(ub.provenance)}
    # the settings from the results' provenance, the data from the questions themselves: another selection of
    # a benchmark's files changes its content hash, not the questions both answered
    warnings = differences(ua.provenance, ub.provenance, data=False)
    held = sum(1 for k in common if qa[k].data != qb[k].data)
    if held:
        warnings.append(f"data files: the answers or options of {held} of {n} questions differ")
    asked = sum(1 for k in common if qa[k].asked != qb[k].asked)
    if asked:
        warnings.append(f"prompt: {asked} of {n} questions were asked differently")
    row["warnings"] = warnings
    row["comparable"] = not warnings
    return row


def compare(run_a: str | Path, run_b: str | Path | None = None, *, baseline: str | None = None,
            models: Sequence[str] | None = None, resamples: int = stats.DEFAULT_RESAMPLES,
            seed: int = 0) -> dict[str, Any]:
    """The report of ``luopan compare``: every comparison of :func:`sides`. Raises a one-line
    :class:`~luopan.errors.ConfigError` when nothing can be compared (no folder, no dataset or question in
    common)."""
    if resamples < 1:
        raise ConfigError(f"--resamples {resamples}: must be at least 1")
    base, others = sides(run_a, run_b, baseline=baseline, models=models)
    comparisons = [compare_datasets(base, o, resamples=resamples, seed=seed) for o in others]
    if not any(c["datasets"] for c in comparisons):
        reasons = {f"{c['model']}: {s['dataset']}: {s['reason']}" for c in comparisons for s in c["skipped"]}
        what = ", ".join(o.label for o in others)
        if not reasons:
            raise ConfigError(f"{base.label} and {what} have no dataset in common: nothing to compare")
        raise ConfigError(f"{base.label} and {what} answered no question in common ({'; '.join(sorted(reasons))})")
    return {"runs": [str(run_a)] + ([str(run_b)] if run_b is not None else []), "resamples": resamples,
            "seed": seed, "comparisons": comparisons}


# ---------------------------------------------------------------- writing


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown + (f", ... {len(ids) - SHOWN_IDS} more (compare.json lists all)" if len(ids) > SHOWN_IDS else "")


def warnings_of(report: Mapping[str, Any]) -> list[str]:
    """One line per dataset compared across different settings."""
    return [f"{r['dataset']}: {c['baseline']} and {c['model']} ran it with different settings "
            f"({'; '.join(r['warnings'])}): the difference is not the models' alone"
            for c in report["comparisons"] for r in c["datasets"] if r["warnings"]]


def to_markdown(report: Mapping[str, Any]) -> str:
    parts = []
    for c in report["comparisons"]:
        base, model = c["baseline"], c["model"]
        lines = [f"### {model} vs {base} (baseline)", "",
                 f"| dataset | metric | n | {base} | {model} | difference | 95% interval | p | p (Holm) | settings |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        notes = []
        for r in c["datasets"]:
            ci = f"[{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]" if r["ci"] else "-"
            test = "McNemar" if r["test"] == "mcnemar_exact" else "paired z"
            settings = "same" if r["comparable"] else "DIFFER: " + ", ".join(
                dict.fromkeys(w.split(":")[0].split(" (")[0] for w in r["warnings"]))
            lines.append(f"| {r['dataset']} | {r['metric']} | {r['n']} | {r['baseline_score']:.2f} | "
                         f"{r['model_score']:.2f} | {r['difference']:+.2f} | {ci} | {_p(r['p'])} ({test}) | "
                         f"{_p(r['p_holm'])} | {settings} |")
            if r["warnings"]:
                notes.append(f"warning: {r['dataset']}: ran with different settings ({'; '.join(r['warnings'])}): "
                             f"the difference is not the models' alone")
            if r["only_baseline"] or r["only_model"]:
                notes.append(f"{r['dataset']}: {r['only_baseline']} question(s) answered by {base} only and "
                             f"{r['only_model']} by {model} only are left out")
            d = r.get("discordant")
            if d and not (d["baseline_right"] or d["model_right"]):
                notes.append(f"{r['dataset']}: no question where one is right and the other wrong")
            elif d:
                for who, other, ids in ((base, model, d["baseline_right"]), (model, base, d["model_right"])):
                    notes.append(f"{r['dataset']}: {who} right, {other} wrong on {len(ids)}"
                                 + (f": {_ids(ids)}" if ids else ""))
        for s in c["skipped"]:
            notes.append(f"{s['dataset']}: not compared: {s['reason']}")
        notes.append(f"difference: {model} - {base} in points, on the questions both answered; 95% interval: "
                     f"paired bootstrap ({report['resamples']} resamples, seed {report['seed']}); p: McNemar's "
                     f"exact test (scores 0 or 1) or a paired z test; Holm: corrected across the "
                     f"{len(c['datasets'])} dataset(s) of this comparison")
        lines += [""] + [f"- {n}" for n in notes]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def write(folder: Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """``compare.md`` and ``compare.json`` in ``folder``."""
    from luopan.files import atomic_write, ensure_dir

    ensure_dir(folder, "comparison folder")
    md, js = folder / "compare.md", folder / "compare.json"
    atomic_write(md, to_markdown(report))
    atomic_write(js, json.dumps(report, ensure_ascii=False, indent=2))
    return md, js
