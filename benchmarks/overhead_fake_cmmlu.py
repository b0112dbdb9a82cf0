"""Framework overhead: all 11,582 CMMLU test questions with a model that does no work.

luopan with its `fake` backend (likelihood mode: 46,328 requests through the cache) against lm-eval's
`--model dummy` on task YAMLs that read the same CSVs (written by ``_common.write_cmmlu_tasks``: lm-eval's
CMMLU prompt on the files under $LUOPAN_DATA/cmmlu). Both are timed as whole commands, side by side, on this
machine, interleaved, after one untimed run of each: both start from compiled bytecode, as an installed program
does (PYTHONDONTWRITEBYTECODE is removed from their environment for the same reason).

Usage: python benchmarks/overhead_fake_cmmlu.py [--lmeval-python PATH] [--repeats 3] [--skip-lmeval] [--lock PATH]

  --lmeval-python PATH  a Python with lm-eval installed (default: $LUOPAN_LMEVAL_PYTHON); not needed with
                        --skip-lmeval
  --lock PATH           hold an exclusive flock on PATH while measuring (default: $LUOPAN_BENCH_LOCK, else none)
  $LUOPAN_DATA          the data folder (default ../shared/datasets beside the repository)
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

from _common import (
    EPILOG,
    add_lmeval_option,
    add_lock_option,
    hold_lock,
    lmeval_cmd,
    lmeval_python,
    write_cmmlu_tasks,
)

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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    add_lmeval_option(ap)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-lmeval", action="store_true", help="time luopan only")
    add_lock_option(ap)
    args = ap.parse_args()
    lm_cmd = [] if args.skip_lmeval else lmeval_cmd(lmeval_python(args))
    hold_lock(args.lock)
    work = Path(tempfile.mkdtemp(prefix="luopan-bench-"))
    luopan_bin = shutil.which("luopan") or sys.exit("luopan is not installed")
    tasks = work / "tasks"
    if not args.skip_lmeval:
        write_cmmlu_tasks(tasks)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    warmup = work / "warmup.yaml"
    warmup.write_text(RUN.format(out=work / "warmup"), encoding="utf-8")
    timed([luopan_bin, "run", str(warmup), "--no-progress"], env=env)  # untimed: writes the bytecode caches
    if not args.skip_lmeval:
        timed([*lm_cmd, "--model", "dummy", "--tasks", "pb_cmmlu_all", "--include_path", str(tasks),
               "--output_path", str(work / "lm-warmup")], env=env)
    cold, warm, lm = [], [], []
    for i in range(args.repeats):  # interleaved, so both tools see the same machine conditions
        out = work / f"out{i}"
        cfg = work / f"run{i}.yaml"
        cfg.write_text(RUN.format(out=out), encoding="utf-8")
        cold.append(timed([luopan_bin, "run", str(cfg), "--no-progress"], env=env))
        warm.append(timed([luopan_bin, "run", str(cfg), "--no-progress"], env=env))
        if not args.skip_lmeval:
            lm.append(timed([*lm_cmd, "--model", "dummy", "--tasks", "pb_cmmlu_all", "--include_path", str(tasks),
                             "--output_path", str(work / f"lm{i}")], env=env))
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
