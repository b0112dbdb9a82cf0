"""Scale-out on one machine: the ray runner against the local runner, same run file, one sitting.

1. A real model (SmolLM2-135M-Instruct through llama.cpp, likelihood on CMMLU, 400 questions, 0-shot):
   - local runner, 1 thread;
   - ray runner, 2 replicas of 1 CPU and 1 thread each (a private Ray instance, its start-up included);
   - local runner at the default threads (what a user gets without Ray).
   Scores are compared (the two 1-thread runs must be identical).
2. Overhead: the fake CMMLU run (11,582 questions, 46,328 requests) through the ray runner (2 replicas) against
   the local runner: with a private instance started by the run, and joining a running cluster (``--address``);
   median of ``--repeats`` cold runs of each; and Ray alone (a private instance started and stopped as the runner
   does, two empty actors), the floor under the private-instance figure.

Usage: python benchmarks/ray_scaling.py [--questions 400] [--skip-model] [--skip-overhead] [--repeats 3]
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
import tempfile
import time
from pathlib import Path

import yaml
from _common import EPILOG, data_dir

LUOPAN = shutil.which("luopan") or sys.exit("luopan is not installed")


def run(cfg: dict, work: Path, name: str, *extra: str, env: dict | None = None) -> tuple[float, Path]:
    path = work / f"{name}.yaml"
    cfg = {**cfg, "run": {**cfg.get("run", {}), "name": name, "output_dir": str(work / name)}}  # own cache
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    t0 = time.perf_counter()
    r = subprocess.run([LUOPAN, "run", str(path), "--no-progress", *extra], capture_output=True, text=True,
                       env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return dt, work / name / name


def score(out: Path, model: str, dataset: str) -> tuple[float, list]:
    res = json.loads((out / "results" / model / f"{dataset}.json").read_text())
    n = sum(s["n"] for s in res["subsets"])
    acc = sum(s["score"] * s["n"] for s in res["subsets"]) / n
    preds = [json.loads(x)["logprobs"] for x in (out / "predictions" / model / f"{dataset}.jsonl").open()]
    return acc, preds


def unit_seconds(out: Path) -> float:
    """From the first replica's start (or the unit's start) to the last unit's end, from run.log."""
    from datetime import datetime

    evs = [json.loads(x) for x in (out / "run.log").read_text().splitlines()]
    t = {e["event"]: datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) for e in reversed(evs)}
    start = t.get("replicas_started", t["unit_start"])
    end = max(datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) for e in evs if e["event"] == "unit_finish")
    return (end - start).total_seconds()


# Ray alone, as the runner starts a private instance, with two empty actors: the floor under the ray runner's
# overhead on this machine (no luopan code runs in it but the function that starts the instance)
RAY_ALONE = """
import json, time
t0 = time.perf_counter()
import ray
from luopan_ray.runner import _private_node
t1 = time.perf_counter()
node = _private_node(None, None)
t2 = time.perf_counter()
ray.init(address=node.address, log_to_driver=False, configure_logging=False)
t3 = time.perf_counter()

@ray.remote(num_cpus=1)
class A:
    def f(self):
        return 1

actors = [A.remote() for _ in range(2)]
ray.get([a.f.remote() for a in actors])
t4 = time.perf_counter()
ray.shutdown()
node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
t5 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "start": t2 - t1, "connect": t3 - t2, "two_actors": t4 - t3,
                  "stop": t5 - t4}))
"""


def ray_alone() -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", RAY_ALONE], capture_output=True, text=True, check=True)
    phases = json.loads(r.stdout.strip().splitlines()[-1])
    return {"wall_s": round(time.perf_counter() - t0, 2), **{k: round(v, 2) for k, v in phases.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--questions", type=int, default=400)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="overhead runs of each kind (medians reported)")
    args = ap.parse_args()
    os.environ.setdefault("LUOPAN_DATA", str(data_dir()))
    work = Path(tempfile.mkdtemp(prefix="luopan-ray-"))
    report: dict = {}
    if not args.skip_model:
        model = {"preset": "smollm2-135m-instruct", "name": "smollm2", "backend": "llamacpp", "kind": "base",
                 "params": {"n_threads": 1}}
        ds = [{"preset": "cmmlu", "limit": args.questions, "mode": "likelihood"}]
        t_local1, o_local1 = run({"models": [model], "datasets": ds}, work, "local_1thread")
        two = {**model, "resources": {"replicas": 2, "num_cpus": 1}}
        t_ray, o_ray = run({"run": {"runner": "ray", "ray": {"num_cpus": 2, "chunk_size": 64}},
                            "models": [two], "datasets": ds}, work, "ray_2x1thread")
        dflt = {**model, "params": {}}
        t_localn, o_localn = run({"models": [dflt], "datasets": ds}, work, "local_default_threads")
        a1, p1 = score(o_local1, "smollm2", "cmmlu")
        a2, p2 = score(o_ray, "smollm2", "cmmlu")
        a3, p3 = score(o_localn, "smollm2", "cmmlu")
        report["model"] = {
            "questions": args.questions,
            "local_1thread_s": round(t_local1, 2), "ray_2x1thread_s": round(t_ray, 2),
            "local_default_threads_s": round(t_localn, 2),
            "ray_2x1thread_units_s": round(unit_seconds(o_ray), 2), "local_1thread_units_s": round(unit_seconds(o_local1), 2),
            "speedup_vs_1thread": round(t_local1 / t_ray, 2),
            "speedup_vs_1thread_excluding_startup": round(unit_seconds(o_local1) / unit_seconds(o_ray), 2),
            "speedup_vs_default_threads": round(t_localn / t_ray, 2),
            "accuracy": {"local_1thread": a1, "ray_2x1thread": a2, "local_default_threads": a3},
            "identical_logprobs_ray_vs_local_1thread": p1 == p2,
            "identical_logprobs_default_threads_vs_1thread": p1 == p3,
        }
        print(json.dumps(report["model"], indent=2), flush=True)
    if not args.skip_overhead:
        fake = {"models": [{"preset": "fake", "resources": {"replicas": 2}}], "datasets": [{"preset": "cmmlu"}]}
        local, private, joined = [], [], []
        for r in range(args.repeats):  # interleaved; each run has a fresh cache (cold)
            local.append(run(fake, work, f"fake_local_{r}")[0])
            private.append(run({**fake, "run": {"runner": "ray"}}, work, f"fake_ray_private_{r}")[0])
        alone = [ray_alone() for _ in range(args.repeats)]
        head = subprocess.run(["ray", "start", "--head", "--port=6390", "--num-cpus=2", "--include-dashboard=false"],
                              capture_output=True, text=True)
        if head.returncode != 0:
            sys.exit(f"ray start failed: {head.stderr[-2000:]}")
        try:
            for r in range(args.repeats):
                joined.append(run({**fake, "run": {"runner": "ray"}}, work, f"fake_ray_joined_{r}",
                                  "--address", "auto")[0])
        finally:
            subprocess.run(["ray", "stop"], capture_output=True)
        t_local, t_private, t_joined = (statistics.median(x) for x in (local, private, joined))
        report["overhead"] = {"repeats": args.repeats, "fake_local_s": round(t_local, 2),
                              "fake_ray_private_s": round(t_private, 2), "fake_ray_joined_s": round(t_joined, 2),
                              "extra_private_s": round(t_private - t_local, 2),
                              "extra_joined_s": round(t_joined - t_local, 2),
                              "ray_alone_s": statistics.median(a["wall_s"] for a in alone), "ray_alone": alone,
                              "runs": {"local": [round(x, 2) for x in local],
                                       "private": [round(x, 2) for x in private],
                                       "joined": [round(x, 2) for x in joined]}}
        print(json.dumps(report["overhead"], indent=2), flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
