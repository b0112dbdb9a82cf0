"""Framework overhead: all 11,582 CMMLU test questions with a model that does no work.

luopan with its `fake` backend (likelihood mode: 46,328 requests through the cache) against lm-eval's
`--model dummy` on task YAMLs that read the same CSVs (written by ../shared/peers/lmeval_cmmlu_tasks.py).
Both are timed as whole commands, side by side, on this machine.

Usage: python benchmarks/overhead_fake_cmmlu.py [--lmeval-venv /path/to/venv] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers"

RUN = """\
run: {{output_dir: {out}, name: bench}}
models:
  - preset: fake
datasets:
  - preset: cmmlu
"""


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmeval-venv", default=os.environ.get("LMEVAL_VENV", "/work/peer-lmeval"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-lmeval", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="luopan-bench-"))
    luopan_bin = shutil.which("luopan") or sys.exit("luopan is not installed")
    tasks = work / "tasks"
    lm_bin = str(Path(args.lmeval_venv) / "bin" / "lm_eval")
    if not args.skip_lmeval:
        py = Path(args.lmeval_venv) / "bin" / "python"
        subprocess.run([str(py), str(PEERS / "lmeval_cmmlu_tasks.py"), str(tasks)], check=True, capture_output=True)
    cold, warm, lm = [], [], []
    for i in range(args.repeats):  # interleaved, so both tools see the same machine conditions
        out = work / f"out{i}"
        cfg = work / f"run{i}.yaml"
        cfg.write_text(RUN.format(out=out), encoding="utf-8")
        cold.append(timed([luopan_bin, "run", str(cfg), "--no-progress"]))
        warm.append(timed([luopan_bin, "run", str(cfg), "--no-progress"]))
        if not args.skip_lmeval:
            lm.append(timed([lm_bin, "--model", "dummy", "--tasks", "pb_cmmlu_all", "--include_path", str(tasks),
                             "--output_path", str(work / f"lm{i}")]))
    res = json.loads((work / "out0/bench/results/fake/cmmlu.json").read_text())
    n = sum(s["n"] for s in res["subsets"])
    report = {"questions": n, "subjects": len(res["subsets"]),
              "luopan_cold_s": cold, "luopan_warm_s": warm,
              "luopan_cold_median_s": statistics.median(cold), "luopan_warm_median_s": statistics.median(warm)}
    if lm:
        report["lmeval_dummy_s"] = lm
        report["lmeval_dummy_median_s"] = statistics.median(lm)
        report["speedup_cold"] = report["lmeval_dummy_median_s"] / report["luopan_cold_median_s"]
        report["speedup_warm"] = report["lmeval_dummy_median_s"] / report["luopan_warm_median_s"]
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
