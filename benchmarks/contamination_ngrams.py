"""The 13-gram contamination check at scale: every benchmark preset's items against a corpus of 100 MB (or 1 GB)
of real text with a known set of benchmark items planted in it.

The corpus is built in a temporary folder (never in the repository): the needle-in-a-haystack essays, the two
Chinese novels of zh_haystack and GSM8K's train split (questions and worked answers), cut into paragraphs,
shuffled and repeated up to the size asked for; half is written as a plain text file, half as JSON lines (a
``text`` field). ``--plant`` items of each benchmark (drawn with a seed) are inserted at random places, disguised
as a crawl would have them (other line breaks, upper case, other punctuation). The items are the 0-shot prompts
and gold answers of every dataset preset that loads from $LUOPAN_DATA (needle presets left out: their items are
the haystack itself).

Printed: corpus size, items and their n-grams, time to hash the items, time to read the corpus (and MB/s), peak
memory (``resource.getrusage``), planted items found, and clean items flagged (none is expected, except items that
really occur in the background text: each flagged one is listed).

Usage: python benchmarks/contamination_ngrams.py [--size 100M|1G] [--plant 20] [--seed 0] [--keep DIR] [--lock PATH]

lm-eval's own decontamination (``lm_eval/decontamination``) cannot be run on these inputs as shipped: its
``get_train_overlap`` reads pre-built, sorted, zstd-compressed 13-gram bucket files of the training set that
scripts of lm-eval's source repository (``scripts/clean_training_data``, not in the pip package) produce, and
needs ``zstandard``; lm-eval 0.4 no longer calls it from its evaluator. ``--lmeval-python PATH`` instead checks
the n-grams themselves: it runs lm-eval's ``Janitor.normalize_string`` and ``word_ngrams`` (the exact strings) on
the English items and a slice of the corpus in that interpreter, and compares the items it finds with ours.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import EPILOG, REPO, add_lock_option, hold_lock

os.environ.setdefault("LUOPAN_DATA", str(REPO.parent / "shared" / "datasets"))
sys.path[:0] = [str(REPO / "core"), str(REPO / "plugins")]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def size_bytes(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(float(s[:-1] if s[-1:] in "KMG" else s) * mult)


def preset_items(reg, skip: tuple[str, ...] = ("needle", "demo", "fake")) -> tuple[list, dict[str, str]]:
    """The items of every dataset preset that loads here; the presets that do not, with why."""
    from luopan import load_run
    from luopan_contamination.report import run_items

    items, failed = [], {}
    with tempfile.TemporaryDirectory() as d:
        for name in sorted(reg.presets["dataset"]):
            if name.startswith(skip):
                continue
            run = Path(d) / f"{name}.yaml"
            run.write_text(f"models: [{{backend: fake}}]\ndatasets: [{{preset: {name}}}]\n", encoding="utf-8")
            try:
                items += run_items(load_run(str(run), reg), reg)
            except Exception as exc:  # a preset whose data is not here: reported, not fatal
                failed[name] = f"{type(exc).__name__}: {str(exc)[:160]}"
    return items, failed


def background(data: Path) -> list[str]:
    """Paragraphs of real text that no benchmark evaluates."""
    paras: list[str] = []
    for f in sorted((data / "needle_in_a_haystack" / "PaulGrahamEssays").glob("*.txt")):
        paras += [p for p in f.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    for f in sorted((data / "zh_haystack").glob("*.txt")):
        text = f.read_text(encoding="utf-8")
        paras += [text[i:i + 2000] for i in range(0, len(text), 2000)]
    with open(data / "gsm8k" / "train.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            paras.append(rec["question"] + "\n" + rec["answer"])
    return paras


def disguise(text: str, rng: random.Random) -> str:
    text = text.replace("\n", rng.choice([" ", "\n\n", "  "]))
    if text.isascii():
        return text.upper() if rng.random() < 0.3 else text.replace(",", " ,")
    return text.replace("，", ",").replace("。", ".")


def build_corpus(folder: Path, target: int, paras: list[str], planted: list, seed: int) -> int:
    """Write about ``target`` bytes: corpus.txt (half) and corpus.jsonl (half); the planted items at random places."""
    rng = random.Random(seed)
    n_docs_est = max(1, target // 1500)
    where = sorted(rng.sample(range(n_docs_est), min(len(planted), n_docs_est)))
    plant_at = dict(zip(where, planted))
    written = 0
    k = 0
    with open(folder / "corpus.txt", "w", encoding="utf-8") as txt, \
            open(folder / "corpus.jsonl", "w", encoding="utf-8") as jl:
        while written < target or k <= max(plant_at, default=-1):
            order = list(range(len(paras)))
            rng.shuffle(order)
            for i in order:
                doc = paras[i]
                if k in plant_at:
                    cut = doc.find(" ", rng.randrange(len(doc))) if doc else -1
                    cut = cut if cut > 0 else len(doc)
                    doc = doc[:cut] + " " + disguise(plant_at[k].text, rng) + " " + doc[cut:]
                if written < target // 2:
                    line = doc + "\n\n"
                    txt.write(line)
                else:
                    line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
                    jl.write(line)
                written += len(line.encode("utf-8"))
                k += 1
                if written >= target and k > max(plant_at, default=-1):
                    break
    return written


def lmeval_crosscheck(py: str, items: list, corpus_file: Path, limit_bytes: int = 8 << 20) -> dict:
    """lm-eval's own normalisation and 13-grams (exact strings) on the ASCII items and the corpus's first
    ``limit_bytes``: which items it finds, against ours on the same slice."""
    from luopan_contamination.detect import check

    ascii_items = [it for it in items if it.text.isascii()]
    with open(corpus_file, encoding="utf-8") as fh:
        head = fh.read(limit_bytes)
    head = head[: head.rfind(" ")]
    code = r"""
import json, sys
from lm_eval.decontamination.janitor import Janitor, word_ngrams
j = Janitor()
items = json.load(open(sys.argv[1]))
corpus = set(word_ngrams(j.normalize_string(open(sys.argv[2], encoding="utf-8").read()), 13))
print(json.dumps([key for key, text in items if any(g in corpus for g in word_ngrams(j.normalize_string(text), 13))]))
"""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "items.json").write_text(json.dumps([[f"{it.benchmark}/{it.id}", it.text] for it in ascii_items]))
        (Path(d) / "corpus.txt").write_text(head, encoding="utf-8")
        out = subprocess.run([py, "-c", code, str(Path(d) / "items.json"), str(Path(d) / "corpus.txt")],
                             capture_output=True, text=True, check=True)
    theirs = set(json.loads(out.stdout.strip().splitlines()[-1]))  # lm-eval prints a warning first
    # lm-eval uses every n-gram (no boilerplate rule): compare with ours with the rule off
    results, _, _ = check(ascii_items, [head], max_shared=10**9, spacing_variants=False)  # lm-eval's rule alone
    ours = {f"{r.benchmark}/{r.id}" for r in results if r.contaminated}
    return {"items": len(ascii_items), "slice_mb": round(len(head) / 2**20, 1), "lm_eval": len(theirs),
            "luopan": len(ours), "same": theirs == ours, "only_lm_eval": sorted(theirs - ours)[:5],
            "only_luopan": sorted(ours - theirs)[:5]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--size", default="100M", help="corpus size: 100M (default), 1G, ...")
    ap.add_argument("--plant", type=int, default=20, help="items planted per benchmark (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", metavar="DIR", help="build the corpus in DIR and keep it (default: a temporary folder)")
    ap.add_argument("--lmeval-python", default=os.environ.get("LUOPAN_LMEVAL_PYTHON"),
                    help="an interpreter with lm-eval: cross-check the n-grams with lm-eval's Janitor")
    add_lock_option(ap)
    args = ap.parse_args()
    hold_lock(args.lock)

    from luopan import load_registry
    from luopan_contamination.corpus import read_corpus
    from luopan_contamination.detect import Detector

    data = Path(os.environ["LUOPAN_DATA"].split(os.pathsep)[0])
    reg = load_registry()
    t0 = time.perf_counter()
    items, failed = preset_items(reg)
    t_load = time.perf_counter() - t0
    benches = sorted({it.benchmark for it in items})
    print(f"items: {len(items):,} of {len(benches)} presets ({', '.join(benches)}), loaded in {t_load:.1f} s")
    for name, why in failed.items():
        print(f"  not loaded: {name}: {why}")
    rss_items = peak_mb()

    rng = random.Random(args.seed)
    by: dict[str, list] = {}
    for it in items:
        by.setdefault(it.benchmark, []).append(it)
    planted = [it for b in benches for it in rng.sample(by[b], min(args.plant, len(by[b])))]
    target = size_bytes(args.size)
    tmp = tempfile.TemporaryDirectory(prefix="luopan-contam-") if not args.keep else None
    folder = Path(args.keep) if args.keep else Path(tmp.name)  # type: ignore[union-attr]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        written = build_corpus(folder, target, background(data), planted, args.seed)
        print(f"corpus: {written / 2**20:,.0f} MiB (corpus.txt + corpus.jsonl) with {len(planted)} planted items, "
              f"written in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        det = Detector(items)
        t_items = time.perf_counter() - t0
        print(f"item n-grams: {len(det.keys):,} distinct, hashed in {t_items:.1f} s; peak RSS so far "
              f"{peak_mb():,.0f} MiB (after loading the items: {rss_items:,.0f} MiB)")
        t0 = time.perf_counter()
        found = det.scan(read_corpus([folder / "corpus.txt", folder / "corpus.jsonl"]))
        t_scan = time.perf_counter() - t0
        results = det.results(found)
        t_all = time.perf_counter() - t0
        print(f"scan: {found.total:,} corpus 13-grams ({found.chars / 2**20:,.0f} Mi characters) in {t_scan:.1f} s "
              f"({written / 2**20 / t_scan:,.1f} MiB/s), lookup of the items {t_all - t_scan:.2f} s; "
              f"peak RSS {peak_mb():,.0f} MiB")

        keys = {(p.benchmark, p.id) for p in planted}
        flagged = {(r.benchmark, r.id) for r in results if r.contaminated}
        unchecked = sum(not r.checked for r in results)
        # a flagged item that was not planted may be the same question as a planted one under another preset
        # (gsm8k and gsm8k_cot, truthfulqa_mc1 and _mc2 share their questions): its n-grams are the planted text's
        import numpy as np

        from luopan_contamination.ngrams import text_ngram_hashes

        planted_keys = np.unique(np.concatenate([text_ngram_hashes(p.text) for p in planted]))
        index = {(it.benchmark, it.id): i for i, it in enumerate(items)}
        same_q, background_hits = [], []
        for k in sorted(flagged - keys):
            h = det.hashes[index[k]]
            (same_q if np.isin(h[found.contains(h)], planted_keys).all() else background_hits).append(k)
        print(f"planted found: {len(keys & flagged)} / {len(keys)}; clean items flagged: {len(flagged - keys)} "
              f"of {len(results) - len(keys):,} ({len(same_q)} the same question as a planted item under another "
              f"preset, {len(background_hits)} against the background text); unchecked (no 13-gram of their own): "
              f"{unchecked:,}")
        for b in benches:
            hits = [k[1] for k in background_hits if k[0] == b]
            if hits:
                print(f"  {b}: {len(hits)} flagged against the background, e.g. {', '.join(hits[:5])}")
        missed = sorted(keys - flagged)
        checked = {(r.benchmark, r.id) for r in results if r.checked}
        print(f"planted and checkable (a 13-gram of their own): {len(keys & checked)}, found: "
              f"{len(keys & checked & flagged)}; planted but unchecked: {len(keys - checked)}")
        if set(missed) - (keys - checked):
            print(f"  planted, checkable and not found: {sorted(set(missed) - (keys - checked))[:10]}")
        if args.lmeval_python:
            print("lm-eval cross-check:", json.dumps(lmeval_crosscheck(args.lmeval_python, items,
                                                                        folder / "corpus.txt")))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
