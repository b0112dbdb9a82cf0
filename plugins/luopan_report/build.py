"""Build report.html from a run folder: everything is read from the files a run writes (summary.json,
results/, predictions/, config.yaml, run.log), so a report can be rebuilt at any time after the run.

Safety: the page is rendered by Jinja2 with autoescape on; data that scripts read (the page's index and the
per-unit sample files) is JSON with ``<``, ``>``, ``&``, U+2028 and U+2029 written as ``\\u003c`` etc., so no
text from a model or a dataset can end a ``<script>`` element; the page's script builds the sample browser
with ``textContent`` only.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

import luopan
from luopan import atomic_write, ensure_dir, prediction_files, safe_name, stats
from luopan.stats import Estimate
from luopan_report.svg import radar

HERE = Path(__file__).parent
#: prompts shared by many samples (few-shot examples) are stored once per unit file and shown folded
MIN_PREFIX = 80
_ESCAPES = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"),
            ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element and a JavaScript source file."""
    data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    for raw, esc in _ESCAPES:
        if raw in data:
            data = data.replace(raw, esc)
    return data.decode("utf-8")


@dataclass
class UnitData:
    model: str
    dataset: str
    result: dict[str, Any]
    key: str = ""
    file: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    subsets: list[str] = field(default_factory=list)
    overall: Estimate | None = None


def _estimate(s: dict[str, Any]) -> Estimate:
    est = Estimate.from_dict(s.get("score"), (s.get("stats") or {}).get("score"))
    if est.method == "unknown":
        return Estimate(s.get("score"), None, None, s.get("n", 0), "unknown")
    return est


def _combine(parts: list[Estimate], how: Any) -> Estimate | None:
    parts = [p for p in parts if p.value is not None]
    if not parts:
        return None
    est = how(parts)
    if any(p.method == "unknown" for p in parts):
        return Estimate(est.value, None, None, est.n, "unknown")
    return est


def _read_results(out: Path) -> list[dict[str, Any]]:
    summary = out / "summary.json"
    if summary.is_file():
        units = json.loads(summary.read_text(encoding="utf-8")).get("units")
        if units:
            return units
    found = []
    for f in sorted((out / "results").glob("*/*.json")):
        if ".shard" not in f.name:
            found.append(json.loads(f.read_text(encoding="utf-8")))
    return found


def _run_log(out: Path) -> tuple[dict[str, dict[str, Any]], list[list[Any]]]:
    """From the last run recorded in run.log, in one pass: per unit (``model/dataset``) its requests, cached
    answers and seconds; per API model the requests sent, retried, rate limited and failed."""
    ops: dict[str, dict[str, Any]] = {}
    api: list[list[Any]] = []
    log = out / "run.log"
    if not log.is_file():
        return ops, api
    for line in log.read_bytes().splitlines():
        if b'"run_start"' in line:
            ops, api = {}, []
        is_api = b'"api_usage"' in line
        if not is_api and b'"unit_' not in line:
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if is_api:
            api.append([rec.get("model"), rec.get("base_url"), rec.get("sent"), rec.get("retried"),
                        rec.get("rate_limited"), rec.get("failed")])
            continue
        unit = str(rec.get("unit", "")).split("#", 1)[0]
        op = ops.setdefault(unit, {"requests": 0, "cached": 0, "seconds": 0.0})
        if rec.get("event") == "unit_start":
            op["requests"] += int(rec.get("requests") or 0)
            op["cached"] += int(rec.get("cached") or 0)
        elif rec.get("event") == "unit_finish":
            op["seconds"] += float(rec.get("seconds") or 0)
    return ops, api


#: plots other plugins saved in the run folder (needle heatmaps, arena ratings) larger than this stay out
MAX_FIGURE_BYTES = 2 * 1024 * 1024


def _figures(out: Path) -> list[dict[str, str]]:
    """Every PNG other plugins saved in the run folder, as ``data:`` URIs (the page fetches nothing)."""
    import base64

    figs = []
    for f in sorted(out.rglob("*.png")):
        rel = f.relative_to(out)
        if rel.parts[0] == "report" or f.stat().st_size > MAX_FIGURE_BYTES:
            continue
        figs.append({"name": rel.as_posix(),
                     "src": "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode("ascii")})
    return figs


def _cost(usage: dict[str, Any]) -> str:
    cost = usage.get("cost")
    return "" if cost is None else f"{cost:.4f} {usage.get('currency', '')}".strip()


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _cell(est: Estimate | None) -> dict[str, Any]:
    """A table cell: text ``value ± half`` and the number to sort and compare by."""
    if est is None or est.value is None:
        return {"text": "-", "v": "", "n": "", "ci": ""}
    half = (est.ci[1] - est.ci[0]) / 2 if est.ci else None
    return {"text": _fmt(est.value), "half": _fmt(half) if half is not None else "", "v": f"{est.value:.6g}",
            "n": est.n, "ci": f"[{_fmt(est.ci[0])}, {_fmt(est.ci[1])}]" if est.ci else ""}


def _display(v: Any, labels: list[str] | None) -> str:
    if type(v) is int and labels and 0 <= v < len(labels):  # an option index shown as its label (not a bool)
        return labels[v].strip() or str(v)
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


def _prompt_text(rec: dict[str, Any]) -> str:
    msgs = rec.get("messages")
    if msgs:
        return "\n\n".join(f"[{m.get('role', '?')}]\n{m.get('content', '')}" for m in msgs)
    p = rec.get("prompt")
    return p if isinstance(p, str) else json.dumps(p, ensure_ascii=False)


def _fold_point(text: str) -> int:
    """Where the part of a long prompt worth folding ends (after the last blank line), or 0."""
    i = text.rfind("\n\n")
    return i + 2 if i + 2 >= MIN_PREFIX else 0


def _records(out: Path, model: str, dataset: str) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    for f in prediction_files(out, model, dataset):
        lines = [line for line in f.read_bytes().splitlines() if line.strip()]
        recs += orjson.loads(b"[" + b",".join(lines) + b"]")  # one parse of the whole file
    return recs


def _unit_payload(u: UnitData, recs: list[dict[str, Any]]) -> dict[str, Any]:
    prov = u.result.get("provenance") or {}
    params = ((prov.get("dataset") or {}).get("params") or {})
    labels = params.get("choice_labels") if isinstance(params.get("choice_labels"), list) else None
    failed = {f.get("id"): f.get("error", "") for f in u.result.get("failed_items") or []}
    prompts = [_prompt_text(r) for r in recs]
    by_subset: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(recs):
        by_subset[str(r.get("subset", ""))].append(i)
    prefix_of: dict[str, int] = {}
    prefixes: list[str] = []
    cut = [0] * len(recs)
    for idx in by_subset.values():
        if len(idx) > 1:
            common = os.path.commonprefix([prompts[i] for i in idx])
            end = _fold_point(common)
            for i in idx:
                cut[i] = end
        else:
            cut[idx[0]] = _fold_point(prompts[idx[0]][: max(0, len(prompts[idx[0]]) - 1)])
    rows = []
    counts = {"right": 0, "wrong": 0, "unparsed": 0, "failed": 0}
    for i, r in enumerate(recs):
        text = prompts[i]
        c = cut[i]
        pp = -1
        if c:
            head = text[:c]
            pp = prefix_of.get(head, -1)
            if pp < 0:
                pp = prefix_of[head] = len(prefixes)
                prefixes.append(head)
            text = text[c:]
        rid = r.get("id")
        extra = r.get("extra") or {}
        score = r.get("score")
        prediction = r.get("prediction")
        if rid in failed:
            st = "failed"
        elif score is None or prediction is None or extra.get("parsed") in (0, 0.0, False):
            st = "unparsed"
        else:
            st = "right" if score >= 0.5 else "wrong"
        counts[st] += 1
        choices = r.get("choices") or labels
        target = r.get("target")
        row: dict[str, Any] = {
            "id": rid, "s": r.get("subset"), "st": st, "sc": score, "pp": pp, "p": text,
            "pr": _display(prediction, choices), "g": _display(target, choices),
        }
        if "output" in r:
            row["o"] = r["output"] if isinstance(r["output"], str) else json.dumps(r["output"], ensure_ascii=False)
        turns = r.get("turns")
        if turns and len(turns) > 1:
            row["t"] = turns
        if "logprobs" in r:
            row["ch"] = r.get("choices")
            row["lp"] = r["logprobs"]
        if "extracted" in extra:
            row["x"] = _display(extra["extracted"], None)
        if "status" in extra and "reason" in extra:  # an evaluator's own verdict, e.g. the code sandbox's
            row["v"] = f"{extra.get('sandbox') or 'verdict'}: {extra['status']}: {extra['reason']}"[:2000]
        if rid in failed:
            row["e"] = failed[rid]
        rows.append(row)
    seen = {r.get("id") for r in recs}
    for f in u.result.get("failed_items") or []:  # a unit with failed requests writes no predictions: list them
        if f.get("id") in seen:
            continue
        by_subset.setdefault(str(f.get("subset", "")), [])
        counts["failed"] += 1
        rows.append({"id": f.get("id"), "s": f.get("subset"), "st": "failed", "sc": None, "pp": -1, "p": "",
                     "pr": "", "g": "", "e": f.get("error", "")})
    u.counts = counts
    u.subsets = list(by_subset)
    return {"unit": u.key, "prefixes": prefixes, "rows": rows}


def _subset_name(result: dict[str, Any], subset: str) -> str:
    disp = (result.get("display_names") or {}).get(subset)
    return f"{subset} ({disp})" if disp else subset


def _table(title: str, columns: list[str], rows: list[list[Any]], best_cols: list[int] | None = None,
           notes: list[str] | None = None) -> dict[str, Any]:
    """Rows of cells (dicts from :func:`_cell` or plain values); the best numeric cell of each column in
    ``best_cols`` is marked."""
    cells = [[c if isinstance(c, dict) else {"text": "" if c is None else str(c),
                                              "v": f"{c:.6g}" if isinstance(c, (int, float)) and not isinstance(c, bool)
                                              else ""} for c in row] for row in rows]
    for col in best_cols or []:
        vals = [(float(r[col]["v"]), k) for k, r in enumerate(cells) if r[col].get("v") not in ("", None)]
        if len(vals) > 1:
            top = max(v for v, _ in vals)
            for v, k in vals:
                if v == top:
                    cells[k][col] = {**cells[k][col], "best": True}
    return {"title": title, "columns": columns, "rows": cells, "notes": notes or []}


def _summary_tables(out: Path) -> list[dict[str, Any]]:
    """The summary tables plugins added (arena, needle), shown as they are; the default summary is rebuilt."""
    f = out / "summary.json"
    if not f.is_file():
        return []
    found = []
    for t in json.loads(f.read_text(encoding="utf-8")).get("tables", []):
        if t.get("title") == "Summary":
            continue
        rows = []
        for i, row in enumerate(t.get("rows", [])):
            st = (t.get("stats") or [])[i] if i < len(t.get("stats") or []) else {}
            cells = []
            for col, c in zip(t.get("columns", []), row):
                s = (st or {}).get(col) or {}
                if isinstance(c, float):
                    ci = s.get("ci")
                    cells.append(_cell(Estimate(c, s.get("se"), tuple(ci) if ci else None, s.get("n", 0))))
                else:
                    cells.append(c)
            rows.append(cells)
        found.append(_table(t.get("title", ""), list(t.get("columns", [])), rows, notes=t.get("notes")))
    return found


def collect(out: Path) -> dict[str, Any]:
    """Everything the page shows, and the per-unit sample payloads (written beside it)."""
    results = _read_results(out)
    ops, api_rows = _run_log(out)
    units: list[UnitData] = []
    for r in results:
        u = UnitData(r["model"], r["dataset"], r)
        u.key = f"{u.model}/{u.dataset}"
        u.file = f"report/{safe_name(u.model)}/{safe_name(u.dataset)}.js"
        parts = [_estimate(s) for s in r.get("subsets") or [] if s.get("score") is not None]
        est = _combine(parts, stats.weighted_mean)
        u.overall = est.scaled(100.0) if est else None
        units.append(u)
    models = list(dict.fromkeys(u.model for u in units))
    datasets = list(dict.fromkeys(u.dataset for u in units))
    by = {(u.model, u.dataset): u for u in units}
    payloads = {u.key: _unit_payload(u, _records(out, u.model, u.dataset)) for u in units}

    # the leaderboard: models x datasets
    lb_rows = []
    for m in models:
        row: list[Any] = [m]
        for d in datasets:
            u = by.get((m, d))
            if u is None:
                row.append({"text": "", "v": ""})
                continue
            c = _cell(u.overall)
            c["failed"] = len(u.result.get("failed_items") or [])
            c["unanswered"] = u.counts.get("unparsed", 0)  # answers that named nothing, or were not scored
            if u.result.get("error") and u.overall is None:
                c = {"text": "failed", "v": "", "error": u.result["error"]}
            row.append(c)
        lb_rows.append(row)
    leaderboard = _table("Leaderboard", ["model"] + datasets, lb_rows, best_cols=list(range(1, len(datasets) + 1)))

    per_dataset = []
    for d in datasets:
        here = [by[(m, d)] for m in models if (m, d) in by]
        first = here[0].result
        subsets = list(dict.fromkeys(s["subset"] for u in here for s in u.result.get("subsets") or []))
        metric = first.get("metric", "score")
        srows = []
        for s in subsets:
            row = [_subset_name(first, s)]
            for u in here:
                found = next((x for x in u.result.get("subsets") or [] if x["subset"] == s), None)
                e = _estimate(found).scaled(100.0) if found and found.get("score") is not None else None
                row.append(_cell(e))
            srows.append(row)
        cols = ["subset"] + [u.model for u in here]
        subset_table = _table(f"{d}: {metric} per subset", cols, srows, best_cols=list(range(1, len(cols))))
        cats = first.get("categories") or {}
        crows, radar_series = [], []
        cat_names = [c for c, members in cats.items() if set(members) & set(subsets)]
        per_model_values: dict[str, list[float | None]] = {u.model: [] for u in here}
        for c in cat_names:
            row = [f"{c} ({len(set(cats[c]) & set(subsets))} subsets)"]
            for u in here:
                parts = [_estimate(x) for x in u.result.get("subsets") or []
                         if x["subset"] in cats[c] and x.get("score") is not None]
                est = _combine(parts, stats.mean_of_means)
                est = est.scaled(100.0) if est else None
                per_model_values[u.model].append(est.value if est else None)
                row.append(_cell(est))
            crows.append(row)
        category_table = (_table(f"{d}: {metric} per category", ["category"] + [u.model for u in here], crows,
                                 best_cols=list(range(1, len(here) + 1))) if crows else None)
        if len(cat_names) >= 3:
            radar_series = [(m, v) for m, v in per_model_values.items()]
        per_dataset.append({"name": d, "metric": metric, "subsets": subset_table, "categories": category_table,
                            "radar": radar(cat_names, radar_series) if radar_series else None})

    op_rows, prov = [], []
    for u in units:
        r = u.result
        p = r.get("provenance") or {}
        usage = r.get("usage") or {}
        op = ops.get(u.key, {})
        op_rows.append([u.model, u.dataset, sum(u.counts.values()),
                        op.get("requests"), op.get("cached"), usage.get("prompt_tokens"),
                        usage.get("completion_tokens"), _cost(usage), op.get("seconds"),
                        len(r.get("failed_items") or []), r.get("error") or ""])
        ds = p.get("dataset") or {}
        prov.append({"unit": u.key, "items": [
            ("luopan", p.get("luopan_version")), ("python", p.get("python")),
            ("backend", json.dumps(p.get("backend"), ensure_ascii=False, sort_keys=True)),
            ("runtime", json.dumps(p.get("runtime"), ensure_ascii=False, sort_keys=True) if p.get("runtime") else ""),
            ("model kind", p.get("model_kind")), ("mode", p.get("mode")),
            ("dataset loader", ds.get("loader")), ("dataset fingerprint", ds.get("fingerprint")),
            ("shots", p.get("shots")), ("evaluator", p.get("evaluator")),
            ("generation", json.dumps(p.get("generation"), ensure_ascii=False) if p.get("generation") else ""),
            ("seed", p.get("seed")), ("sample seed", p.get("sample_seed")), ("repeats", p.get("repeats")),
            ("version (settings hash)", r.get("version")),
            ("started", p.get("started_at")), ("finished", p.get("finished_at")),
        ]})
    plugins = {}
    for u in units:
        plugins.update((u.result.get("provenance") or {}).get("plugins") or {})
    operations = _table("Operations", ["model", "dataset", "samples", "requests", "cached", "prompt tokens",
                                       "completion tokens", "cost", "wall s", "failed", "error"], op_rows)
    api_calls = _table("API calls", ["model", "service", "sent", "retried", "rate limited", "failed"],
                       api_rows) if api_rows else None
    config = out / "config.yaml"
    index = {
        "units": [{"key": u.key, "model": u.model, "dataset": u.dataset, "file": u.file, "counts": u.counts,
                   "subsets": u.subsets, "names": {s: _subset_name(u.result, s) for s in u.subsets}}
                  for u in units],
        "models": models, "datasets": datasets,
    }
    return {
        "run": out.name, "luopan_version": luopan.__version__, "leaderboard": leaderboard, "per_dataset": per_dataset,
        "other_tables": _summary_tables(out), "figures": _figures(out), "operations": operations, "api_calls": api_calls, "provenance": prov,
        "plugins": sorted(plugins.items()),
        "config": config.read_text(encoding="utf-8") if config.is_file() else "(config.yaml not found)",
        "index": index, "payloads": payloads, "units": units,
    }


def _env() -> Any:
    import jinja2

    class QuietCache(jinja2.FileSystemBytecodeCache):
        """Jinja's per-user cache of compiled templates (in the temporary folder, made 0700 and checked to be
        the user's own): compiling the page's template is a twentieth of a fast run. A cache that cannot be
        written only means compiling again next time."""

        def dump_bytecode(self, bucket: Any) -> None:
            try:
                super().dump_bytecode(bucket)
            except OSError:
                pass

    try:
        cache: Any = QuietCache()
    except (OSError, RuntimeError):  # no usable temporary folder: compile every time
        cache = None
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE)), autoescape=True,
                              trim_blocks=True, lstrip_blocks=True, bytecode_cache=cache)


def write_report(out: Path | str) -> Path:
    """Write ``<out>/report.html`` and its per-unit sample files ``<out>/report/<model>/<dataset>.js``."""
    import markupsafe

    out = Path(out)
    data = collect(out)
    for u in data["units"]:
        path = out / u.file
        ensure_dir(path.parent, "the report folder")
        body = f"window.__luopan_samples_load({script_json(u.key)}, {script_json(data['payloads'][u.key])});\n"
        atomic_write(path, body)
    page = _env().get_template("page.html.j2").render(
        data=data, index_json=markupsafe.Markup(script_json(data["index"])),
        script=markupsafe.Markup((HERE / "report.js").read_text(encoding="utf-8")),
        style=markupsafe.Markup((HERE / "report.css").read_text(encoding="utf-8")))
    atomic_write(out / "report.html", page)
    return out / "report.html"
