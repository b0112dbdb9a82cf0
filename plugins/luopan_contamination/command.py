"""``luopan contamination RUN.yaml --corpus PATH...``: the checks on a run file's datasets (and models)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from luopan.errors import ConfigError

__all__ = ["ContaminationOptions", "configure", "run"]


class ContaminationOptions(BaseModel):
    """The checks' options (validated; the command line's flags)."""

    model_config = ConfigDict(extra="forbid")

    corpus: list[str] = Field(default_factory=list)
    text_field: str = "text"
    #: n-gram size in tokens (lm-eval: 13)
    n: int = Field(default=13, ge=5, le=50)
    #: an n-gram in more than this many items of a benchmark is boilerplate and not used
    max_shared: int = Field(default=1, ge=1)
    #: an item is contaminated when more than this fraction of its n-grams is found (0: any one, lm-eval's rule)
    threshold: float = Field(default=0.0, ge=0.0, lt=1.0)
    #: also read an item with punctuation glued between words ("rabbit,because") as if it stood apart
    spacing_variants: bool = True
    index: str | None = None
    save_index: str | None = None
    membership: bool = False
    k: float = Field(default=0.2, gt=0.0, le=1.0)
    shuffles: int = Field(default=3, ge=1, le=23)
    limit: int = Field(default=200, ge=1)
    seed: int = 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="RUN", help="run file (YAML) or run preset: its datasets (subsets, limits) are "
                                               "checked, its models by --membership")
    p.add_argument("--corpus", nargs="+", default=[], metavar="PATH",
                   help="corpus files or folders: .txt/.md, .jsonl (--text-field), .parquet, .arrow, a datasets "
                        "folder (save_to_disk); .txt and .jsonl may be .gz")
    p.add_argument("--text-field", default="text", help="the text field of JSON lines / column of Parquet and Arrow "
                                                        "(default: text)")
    p.add_argument("--n", type=int, default=13, help="n-gram size in words (CJK: characters); default 13 (lm-eval)")
    p.add_argument("--max-shared", type=int, default=1,
                   help="n-grams found in more items than this of one benchmark are template boilerplate, not used "
                        "(default 1: only n-grams of a single item count)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="flag an item when more than this fraction of its n-grams is in the corpus (default 0: any)")
    p.add_argument("--no-spacing-variants", dest="spacing_variants", action="store_false",
                   help="lm-eval's rule alone: do not also read items whose punctuation is glued between two words "
                        "(rabbit,because) as if it stood apart (a copy re-spaced as rabbit , because)")
    p.add_argument("--index", metavar="FILE.npy", help="a corpus index saved by --save-index, instead of --corpus")
    p.add_argument("--save-index", metavar="FILE.npy",
                   help="also save every distinct corpus n-gram (8 bytes each) for later checks with --index")
    p.add_argument("--membership", action="store_true",
                   help="membership signals of the run's models (Min-K%%, option-order test): loads each model")
    p.add_argument("--k", type=float, default=0.2, help="Min-K%%: the fraction of lowest token log-probs (0.2)")
    p.add_argument("--shuffles", type=int, default=3, help="option-order test: shuffled orders per item (3)")
    p.add_argument("--limit", type=int, default=200, help="membership: items per benchmark (200)")
    p.add_argument("--seed", type=int, default=0, help="membership: the shuffles' seed")
    p.add_argument("--out", metavar="FOLDER", help="where contamination.json/.csv/.md go (default: the run's folder, "
                                                  "run.output_dir/run.name)")
    p.add_argument("--run-dir", metavar="RUN_DIR", help="the finished run whose clean-subset scores are computed "
                                                       "(default: the run's folder, when it holds a finished run)")


def options(args: argparse.Namespace) -> ContaminationOptions:
    fields = {k: getattr(args, k) for k in ContaminationOptions.model_fields}
    try:
        return ContaminationOptions.model_validate(fields)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ConfigError(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}") from None


def run(args: argparse.Namespace, reg: Any) -> int:
    from luopan import load_run
    from luopan_contamination.corpus import check_paths

    opts = options(args)
    if not opts.corpus and not opts.index and not opts.membership:
        raise ConfigError("contamination: give --corpus PATH... (or --index FILE.npy) for the n-gram check, "
                          "--membership for the models' membership signals, or both")
    corpus = check_paths(opts.corpus) if opts.corpus else []  # before anything slow: a typo is one line
    if opts.index and not Path(opts.index).is_file():
        raise ConfigError(f"--index: {opts.index}: no such file")
    cfg = load_run(args.file, reg)
    from luopan_contamination.report import run_folder, run_items

    out = Path(args.out) if args.out else run_folder(cfg)
    items = run_items(cfg, reg)
    print(f"{len(items)} items of {len(cfg.datasets)} dataset(s)", file=sys.stderr)
    from luopan_contamination.detect import Detector, peak_rss_mb
    from luopan_contamination.ngrams import NgramSet

    det = Detector(items, n=opts.n, max_shared=opts.max_shared, threshold=opts.threshold,
                   spacing_variants=opts.spacing_variants)
    stats: dict[str, Any] = {"n": opts.n, "max_shared": opts.max_shared, "threshold": opts.threshold,
                             "spacing_variants": opts.spacing_variants,
                             "corpus": [str(p) for p in corpus], "index": opts.index, "items": len(items),
                             "item_ngrams": int(len(det.keys))}
    results: list[Any] = []
    benchmarks: list[Any] = []
    if corpus or opts.index:
        from luopan_contamination.corpus import read_corpus

        t0 = time.perf_counter()
        texts = read_corpus(corpus, text_field=opts.text_field)
        if opts.index:
            found = NgramSet.load(opts.index, n=opts.n)
        elif opts.save_index:
            found = NgramSet.build(texts, n=opts.n)
            found.save(opts.save_index)
        else:
            found = det.scan(texts)
        results = det.results(found)
        stats.update({"corpus_chars": found.chars, "corpus_ngrams": found.total,
                      "matched_ngrams": int(found.contains(det.keys).sum()),  # distinct item n-grams found
                      "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak_rss_mb(), 1)})
        if opts.index or opts.save_index:
            stats["index_ngrams"] = len(found)
        benchmarks = det.summarize(results)
    scores: list[dict[str, Any]] = []
    run_dir = Path(args.run_dir) if args.run_dir else run_folder(cfg)
    if args.run_dir and not (run_dir / "summary.json").is_file():
        raise ConfigError(f"--run-dir: {run_dir}: not a finished run (no summary.json)")
    if results and (run_dir / "summary.json").is_file():
        from luopan_contamination.report import clean_scores

        flagged: dict[str, set[str]] = {b.benchmark: set() for b in benchmarks}
        for r in results:
            if r.contaminated:
                flagged[r.benchmark].add(r.id)
        scores = clean_scores(run_dir, flagged)
    member: list[dict[str, Any]] = []
    if opts.membership:
        member = membership_of_run(cfg, reg, items, opts)
    from luopan.report import to_markdown
    from luopan_contamination.report import tables, write_outputs

    paths = write_outputs(out, results, benchmarks, stats, scores, member)
    shown = tables(benchmarks, scores, member)
    print(to_markdown(shown if results else shown[1:]))
    print(f"written: {', '.join(str(p) for p in paths)}")
    return 0


def membership_of_run(cfg: Any, reg: Any, items: list[Any], opts: ContaminationOptions) -> list[dict[str, Any]]:
    """Each model of the run on each benchmark's first ``opts.limit`` items."""
    from luopan_contamination.membership import membership

    by: dict[str, list[str]] = {}
    ids: dict[str, list[str]] = {}
    for it in items:
        texts = by.setdefault(it.benchmark, [])
        if len(texts) < opts.limit:
            texts.append(it.text)
            ids.setdefault(it.benchmark, []).append(it.id)
    out = []
    for m in cfg.models:
        backend = reg.get("backend", m.backend).create(m.params)
        if "loglikelihood" not in backend.capabilities:
            for bench, texts in by.items():
                out.append({"model": m.label, "benchmark": bench, "items": len(texts), "min_k": None,
                            "note": f"backend '{m.backend}' gives no log-likelihoods: no membership signal"})
            continue
        try:
            backend.load()
            for bench, texts in by.items():
                res = membership(backend, texts, k=opts.k, shuffles=opts.shuffles, seed=opts.seed)
                res["per_item"] = [{"id": item_id, **values} for item_id, values in zip(ids[bench], res["per_item"])]
                out.append({"model": m.label, "benchmark": bench, **res})
        finally:
            backend.close()
    return out
