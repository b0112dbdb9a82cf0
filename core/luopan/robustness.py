"""Prompt robustness: a dataset asked under perturbed prompts, and how much each model's answers move.

A dataset entry's ``robustness:`` lists prompt variants. Each variant is run as a dataset of its own, labelled
``<dataset>~<variant>``, on the same questions as the original (same subsets, limits and seeded draw): other
loader templates (``params``), shuffled option order (``shuffle``, for loaders that can reorder options),
character-level typos (``typos``: a rate), whitespace changes (``whitespace``: a rate), case changes (``case``)
and Chinese/English punctuation swaps (``punctuation``). A variant's text is a deterministic function of the
item, the variant's settings and its ``seed``, so its requests are cached like any other and a rerun asks
nothing again. The original (unperturbed) dataset is the baseline.

After the run, :func:`build_report` reads the units' predictions and reports per dataset and model: the score
under each variant, the spread (max - min, standard deviation) over the original and its variants, and the
share of questions whose verdict flips relative to the original, and under any variant. A dataset asked with
CircularEval (``circular: true``) adds its circular accuracy as a row. Written to ``robustness.json`` and as
two tables in the run's summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from luopan.types import Sample

#: the variant name of the unperturbed dataset in reports
ORIGINAL = "original"
#: between a dataset's label and its variant's name in the variant dataset's label
SEPARATOR = "~"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class VariantSpec(BaseModel):
    """One entry of a dataset's ``robustness:`` list: what this variant changes in the prompts."""

    model_config = ConfigDict(extra="forbid")

    #: the variant's name (letters, digits, ``-_.``); default: made from its settings
    name: str | None = None
    #: loader params that replace the dataset's for this variant (another prompt template)
    params: dict[str, Any] = Field(default_factory=dict)
    #: ask each question with its options in a seeded random order (the gold answer follows its text)
    shuffle: bool = False
    #: the share of eligible characters given a typo (swap, drop, double or a neighbouring key)
    typos: float = Field(default=0.0, ge=0.0, le=0.5)
    #: the share of whitespace runs changed (widened, narrowed, a space added or removed)
    whitespace: float = Field(default=0.0, ge=0.0, le=1.0)
    #: letter case: upper, lower, swap (swapcase) or random (per word); one-letter words (option labels) kept
    case: Literal["upper", "lower", "swap", "random"] | None = None
    #: punctuation: ascii (，。：→,.:), fullwidth (,.:→，。：) or swap (each to the other form)
    punctuation: Literal["ascii", "fullwidth", "swap"] | None = None
    #: the seed of this variant's random choices
    seed: int = 0

    @model_validator(mode="after")
    def _changes_something(self) -> VariantSpec:
        if not (self.params or self.shuffle or self.typos or self.whitespace or self.case or self.punctuation):
            raise ValueError("a variant must change something: set params, shuffle, typos, whitespace, case "
                             "or punctuation")
        if self.name is not None and (not _NAME.match(self.name) or self.name == ORIGINAL):
            raise ValueError(f"variant name {self.name!r} must be letters, digits and -_. (and not "
                             f"'{ORIGINAL}', the baseline's)")
        return self

    def label(self, index: int) -> str:
        """The variant's name: as given, or made from its settings."""
        if self.name:
            return self.name
        parts = []
        if self.params:
            parts.append(f"params{index + 1}")
        if self.shuffle:
            parts.append("shuffle")
        if self.typos:
            parts.append(f"typos{self.typos:g}")
        if self.whitespace:
            parts.append(f"whitespace{self.whitespace:g}")
        if self.case:
            parts.append(f"case-{self.case}")
        if self.punctuation:
            parts.append(f"punct-{self.punctuation}")
        if self.seed:
            parts.append(f"s{self.seed}")
        return "_".join(parts)


def variant_label(dataset: str, variant: str) -> str:
    return f"{dataset}{SEPARATOR}{variant}"


# ---------------------------------------------------------------- perturbations (pure functions of text and rng)


def _rng(seed: int, kind: str, item: str) -> random.Random:
    return random.Random(f"{seed}\x00{kind}\x00{item}")


def shuffle_order(seed: int, question: str, n: int) -> list[int]:
    """The option order of ``question`` under a shuffle: ``order[k]`` is the original index of the option shown
    at position ``k``. Seeded by (seed, question); never the original order when ``n`` > 1."""
    order = list(range(n))
    if n < 2:
        return order
    _rng(seed, "shuffle", question).shuffle(order)
    if order == list(range(n)):
        order = order[1:] + order[:1]
    return order


def _is_cjk(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf"


_KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD):
    for _i, _c in enumerate(_row):
        near = _row[max(0, _i - 1):_i] + _row[_i + 1:_i + 2]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_KEYBOARD):
                near += _KEYBOARD[_other][max(0, _i - 1):_i + 1]
        _NEIGHBOURS[_c] = near


def typo_positions(text: str) -> list[int]:
    """The characters a typo may hit: letters inside words of three or more ASCII letters, and Chinese
    characters (option labels, numbers, punctuation and short words are never touched)."""
    out = []
    for m in re.finditer(r"[A-Za-z]{3,}", text):
        out.extend(range(m.start(), m.end()))
    out.extend(i for i, c in enumerate(text) if _is_cjk(c))
    return sorted(out)


def add_typos(text: str, rate: float, rng: random.Random) -> str:
    """Typos at ``round(rate * eligible)`` of the eligible characters (:func:`typo_positions`): each is swapped
    with the next character, dropped, doubled, or (a letter) replaced by a neighbouring key."""
    positions = typo_positions(text)
    k = round(rate * len(positions))
    if not k:
        return text
    chosen = set(rng.sample(positions, k))
    eligible = set(positions)
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        c = chars[i]
        if i not in chosen:
            out.append(c)
            i += 1
            continue
        op = rng.randrange(4)
        if op == 0 and i + 1 < len(chars) and i + 1 in eligible and chars[i + 1] != c:
            out += [chars[i + 1], c]  # swap with the next (which is then used up)
            i += 2
            continue
        if op == 1:
            pass  # drop
        elif op == 2 or not c.isascii():
            out += [c, c]  # double
        else:
            near = _NEIGHBOURS.get(c.lower(), "") or c
            r = rng.choice(near)
            out.append(r.upper() if c.isupper() else r)
        i += 1
    return "".join(out)


def change_whitespace(text: str, rate: float, rng: random.Random) -> str:
    """``round(rate * runs)`` of the runs of spaces changed: a single space widened by one or two, a longer run
    widened the same way or narrowed to one space; newlines are kept (they carry the prompt's layout)."""
    gaps = [m for m in re.finditer(r" +", text)]
    k = round(rate * len(gaps))
    if not k:
        return text
    chosen = set(rng.sample(range(len(gaps)), k))
    out, pos = [], 0
    for j, m in enumerate(gaps):
        out.append(text[pos:m.start()])
        width = len(m.group())
        if j in chosen:
            width = width + rng.choice((1, 2)) if width == 1 or rng.random() < 0.5 else 1
        out.append(" " * width)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def change_case(text: str, how: str, rng: random.Random) -> str:
    """Words of two letters or more in upper, lower, swapped or random (per word) case; one-letter words
    (option labels such as ``A``) are kept."""
    def one(m: re.Match[str]) -> str:
        w = m.group()
        if how == "upper":
            return w.upper()
        if how == "lower":
            return w.lower()
        if how == "swap":
            return w.swapcase()
        return rng.choice((w.upper(), w.lower(), w.capitalize()))
    return re.sub(r"[A-Za-z]{2,}", one, text)


#: ASCII punctuation and its full-width (Chinese) form
PUNCTUATION = {",": "，", ".": "。", ":": "：", ";": "；", "?": "？", "!": "！", "(": "（", ")": "）"}
_TO_ASCII = {v: k for k, v in PUNCTUATION.items()}


def _keep_ascii(text: str, i: int) -> bool:
    """An ASCII mark that is not prose punctuation: a decimal point or a thousands comma (between digits), and
    the dot after a one-letter option label at a line start (``A.``)."""
    c = text[i]
    before = text[i - 1] if i else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    if c in ".,:" and before.isdigit() and after.isdigit():
        return True
    return c == "." and before.isalpha() and (i < 2 or text[i - 2] in "\n ")


def swap_punctuation(text: str, how: str) -> str:
    """Punctuation to ASCII (``ascii``), to full-width (``fullwidth``), or each mark to the other form
    (``swap``). Decimal points, digit-group commas and option labels' dots stay ASCII."""
    out = []
    for i, c in enumerate(text):
        if c in _TO_ASCII and how in ("ascii", "swap"):
            out.append(_TO_ASCII[c])
        elif c in PUNCTUATION and how in ("fullwidth", "swap") and not _keep_ascii(text, i):
            out.append(PUNCTUATION[c])
        else:
            out.append(c)
    return "".join(out)


def perturb_text(text: str, variant: VariantSpec, item: str) -> str:
    """``text`` under ``variant``'s character-level changes (case, punctuation, typos, whitespace, in this order);
    a deterministic function of (text, item, variant settings, seed)."""
    if variant.case:
        text = change_case(text, variant.case, _rng(variant.seed, "case", item))
    if variant.punctuation:
        text = swap_punctuation(text, variant.punctuation)
    if variant.typos:
        text = add_typos(text, variant.typos, _rng(variant.seed, "typos", item))
    if variant.whitespace:
        text = change_whitespace(text, variant.whitespace, _rng(variant.seed, "whitespace", item))
    return text


def changes_text(variant: VariantSpec) -> bool:
    return bool(variant.case or variant.punctuation or variant.typos or variant.whitespace)


def perturb_sample(sample: Sample, variant: VariantSpec) -> Sample:
    """``sample`` with its question perturbed: the part of ``prompt`` after the shared ``prefix`` (few-shot
    examples stay as they are), ``chat_prompt`` (after the same prefix, when it starts with it) and the last user
    message. Choices (the scored continuations) and the target are kept."""
    if not changes_text(variant):
        return sample
    item = sample.id

    def tail(text: str) -> str:
        head = sample.prefix if sample.prefix and text.startswith(sample.prefix) else ""
        return head + perturb_text(text[len(head):], variant, item)

    messages = sample.messages
    if messages:
        messages = [dict(m) for m in messages]
        last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last is not None:
            last["content"] = perturb_text(last["content"], variant, item)
    meta = {**sample.meta, "variant": variant.name or ""}
    return dataclasses.replace(
        sample, prompt=tail(sample.prompt),
        chat_prompt=tail(sample.chat_prompt) if sample.chat_prompt is not None else None,
        messages=messages, meta=meta)


def option_order(variant: VariantSpec) -> Callable[[str, int], list[int]]:
    """What a loader that reorders options (``Dataset.reorders_options``) is given: question id, option count
    -> the shown order."""
    seed = variant.seed
    return lambda question, n: shuffle_order(seed, question, n)


# ---------------------------------------------------------------- the report


def _question_scores(records: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Per question (``question``, else the sample id): the mean of its samples' scores (None: unscored)."""
    members: dict[str, list[float]] = {}
    seen: dict[str, None] = {}
    for r in records:
        q = f"{r.get('subset', '')}\x00{r.get('question', r['id'])}"
        seen.setdefault(q)
        if r.get("score") is not None:
            members.setdefault(q, []).append(float(r["score"]))
    return {q: (sum(members[q]) / len(members[q]) if q in members else None) for q in seen}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _circular(result: Any) -> float | None:
    """A unit's circular accuracy over its subsets (weighted by their questions), or None without one."""
    total = n = 0.0
    for s in result.subsets:
        v = s.get("metrics", {}).get("circular_accuracy")
        if v is not None:
            k = s.get("metric_n", {}).get("circular_accuracy", s["n"])
            total += v * k
            n += k
    return total / n if n else None


def build_report(datasets: Sequence[Any], models: Sequence[str],
                 results: Sequence[Any], read: Callable[[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """The robustness report of a finished run. ``datasets``: the run's resolved datasets (bases carry
    ``robustness``, variants ``variant_of``); ``results``: the merged unit results; ``read(model, dataset)``:
    a unit's prediction records (every shard)."""
    by_result = {(r.model, r.dataset): r for r in results}
    report: dict[str, Any] = {"datasets": {}}
    for base in datasets:
        if not getattr(base, "robustness", None):
            continue
        variants = [(ORIGINAL, base.label, {})] + [
            (v["name"], variant_label(base.label, v["name"]), {k: x for k, x in v.items() if k != "name"})
            for v in base.robustness]
        entry: dict[str, Any] = {"variants": {name: settings for name, _, settings in variants}, "models": {}}
        for model in models:
            scores: dict[str, dict[str, float | None]] = {}
            failed: list[str] = []
            for name, label, _ in variants:
                res = by_result.get((model, label))
                records = read(model, label) if res is not None and not res.error else []
                if not records:
                    failed.append(name)
                    continue
                scores[name] = _question_scores(records)
            m: dict[str, Any] = {"variants": {}}
            if failed:
                m["missing"] = failed
            if ORIGINAL not in scores:
                entry["models"][model] = m
                continue
            base_q = scores[ORIGINAL]
            per_variant: dict[str, float] = {}
            for name, q in scores.items():
                values = [v for v in q.values() if v is not None]
                row: dict[str, Any] = {"score": _mean(values), "n": len(values)}
                if name != ORIGINAL:
                    both = [k for k in q if q[k] is not None and base_q.get(k) is not None]
                    flips = [k for k in both if q[k] != base_q[k]]
                    row.update(compared=len(both), flips=len(flips),
                               flip_share=len(flips) / len(both) if both else None,
                               to_wrong=sum(1 for k in flips if q[k] < base_q[k]),  # type: ignore[operator]
                               to_right=sum(1 for k in flips if q[k] > base_q[k]))  # type: ignore[operator]
                    if row["score"] is not None and m["variants"][ORIGINAL]["score"] is not None:
                        row["delta"] = row["score"] - m["variants"][ORIGINAL]["score"]
                m["variants"][name] = row
                if row["score"] is not None:
                    per_variant[name] = row["score"]
            vals = list(per_variant.values())
            if vals:
                mean = sum(vals) / len(vals)
                m["spread"] = max(vals) - min(vals)
                m["std"] = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
                m["min"] = min(vals)
                m["max"] = max(vals)
            common = [k for k in base_q if all(q.get(k) is not None for q in scores.values())]
            unstable = [k for k in common if len({q[k] for q in scores.values()}) > 1]
            m["questions"] = len(common)
            m["unstable"] = len(unstable)
            m["unstable_share"] = len(unstable) / len(common) if common else None
            # right under the original and every variant (the robustness analogue of circular accuracy)
            m["consistent"] = (sum(1 for k in common if all(q[k] == 1.0 for q in scores.values())) / len(common)
                               if common else None)
            base_res = by_result.get((model, base.label))
            circ = _circular(base_res) if base_res is not None and not base_res.error else None
            if circ is not None:
                m["circular_accuracy"] = circ
            entry["models"][model] = m
        report["datasets"][base.label] = entry
    return report


def report_tables(report: dict[str, Any]) -> list[Any]:
    """The report as two summary tables: the score and flips per variant, and the spread per model."""
    from luopan.components import SummaryTable

    def pct(x: float | None) -> float | None:
        return None if x is None else 100.0 * x

    rows: list[list[Any]] = []
    spread: list[list[Any]] = []
    for ds, entry in report["datasets"].items():
        for model, m in entry["models"].items():
            for name, v in m["variants"].items():
                rows.append([ds, model, name, v["n"], pct(v["score"]), pct(v.get("delta")),
                             pct(v.get("flip_share")), v.get("to_wrong"), v.get("to_right")])
            if "circular_accuracy" in m:
                base = m["variants"][ORIGINAL]
                rows.append([ds, model, "circular (every rotation right)", base["n"], pct(m["circular_accuracy"]),
                             pct(m["circular_accuracy"] - (base["score"] or 0.0)), None, None, None])
            for name in m.get("missing", []):
                rows.append([ds, model, name, 0, None, None, None, None, None])
            if "spread" in m:
                spread.append([ds, model, len(m["variants"]), pct(m["min"]), pct(m["max"]), pct(m["spread"]),
                               pct(m["std"]), pct(m["unstable_share"]), pct(m["consistent"])])
    notes = [
        "percentages; score: the mean over questions under each prompt variant; original: the unperturbed prompts (the "
        "baseline); Δ: the variant's score minus the original's",
        "flips: the share of questions whose verdict differs from the original's; →wrong / →right: how many "
        "went from right to wrong and from wrong to right",
    ]
    if any("circular_accuracy" in m for e in report["datasets"].values() for m in e["models"].values()):
        notes.append("circular: CircularEval's accuracy (right under every rotation of the options), beside the "
                     "variants; not part of the spread")
    spread_notes = [
        "percentages; spread: max − min of the scores over the original and its variants (percentage points); "
        "std: their standard deviation",
        "unstable: the share of questions whose verdict is not the same under every variant; consistent: the "
        "share right under the original and every variant",
    ]
    return [
        SummaryTable("robustness: score per prompt variant",
                     ["dataset", "model", "variant", "n", "score", "Δ", "flips", "→wrong", "→right"], rows, notes),
        SummaryTable("robustness: spread per model",
                     ["dataset", "model", "variants", "min", "max", "spread", "std", "unstable", "consistent"],
                     spread, spread_notes),
    ]


def write_report(out: Path, report: dict[str, Any]) -> Path:
    from luopan.files import atomic_write

    path = out / "robustness.json"
    atomic_write(path, json.dumps(report, ensure_ascii=False, indent=2))
    return path
