"""The openai backend's figures in BENCHMARKS.md (rate limits, faults, throughput), side by side in one run.

  rate        300 requests, 8 workers, through luopan's proxy enforcing R requests per minute (mock upstream,
              0.2 s latency): luopan's shared limiter (one process, 8 workers; and 8 processes x 1 worker
              sharing the schedule file) against per-worker limiters (the peers' way, OpenCompass #1418).
  faults      CMMLU, one question per subject (67), SmolLM2 through llama-cpp-python's server, with and
              without 20% injected faults (429 + Retry-After, 500, stalls past the timeout, malformed
              JSON, empty choices, dropped connections): items, answers and scores compared.
  throughput  the same 48 chat requests against the llama.cpp server at concurrency 4: luopan against a
              bare asyncio + openai loop (A B B A order, best of each).

    python benchmarks/api_limits.py [--parts rate,faults,throughput] [--rpm 120] [--out .bench/api_limits.json] \\
        [--lock PATH]

  --lock PATH   hold an exclusive flock on PATH while measuring (default: $LUOPAN_BENCH_LOCK, else none)
  $LUOPAN_DATA  the data folder (default ../shared/datasets beside the repository)

Timings are only meaningful when nothing else runs on the machine: run it alone, or give every benchmark the same
``--lock`` so they take turns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import EPILOG, REPO, add_lock_option, hold_lock

os.environ.setdefault("LUOPAN_DATA", str(REPO.parent / "shared" / "datasets"))
sys.path.insert(0, str(REPO / "tools"))  # the fault-injecting proxy, tools/faultproxy.py
KEY = "sk-bench-0123456789abcdef"


def write_questions(folder: Path, n: int) -> Path:
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps({"q": f"Question {i}: which letter?", "a": "B"}) + "\n" for i in range(n)))
    return path


def run_cfg(folder: Path, name: str, model_params: dict[str, Any], dataset: dict[str, Any]) -> Path:
    cfg = {
        "run": {"name": name, "output_dir": str(folder / "out"), "cache": str(folder / f"{name}.sqlite")},
        "models": [{"name": "api", "backend": "openai", "kind": "chat", "params": model_params}],
        "datasets": [dataset],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def luopan_run(path: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "luopan.cli", "run", str(path), "--no-progress"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        print(f"luopan run {path.name} exited {proc.returncode}: {proc.stderr[-2000:]}", file=sys.stderr)
    return proc.returncode, time.perf_counter() - t0


# ---------------------------------------------------------------- rate
def part_rate(rpm: int, n: int = 300, workers: int = 8, which: str = "one,many,per_worker") -> dict[str, Any]:
    from faultproxy import ProxyThread

    out: dict[str, Any] = {"R": rpm, "requests": n, "workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["LUOPAN_STATE_DIR"] = str(folder / "state")
        data = write_questions(folder, n)

        def dataset(path: Path) -> dict[str, Any]:
            return {"name": "qs", "loader": "files", "params": {"path": str(path), "prompt": "q", "target": "a"},
                    "mode": "generate", "evaluator": "exact_match", "generation": {"max_new_tokens": 8}}

        # luopan, one process, 8 workers sharing one limiter
        if "one" in which.split(","):
            with ProxyThread(None, rpm=rpm, window_s=60.0, mock_latency=0.2) as p:
                params = {"base_url": p.base_url, "model": "mock", "api_key_env": None, "rpm": rpm,
                          "max_concurrency": workers, "rate_limit_scope": "bench-one"}
                rc, secs = luopan_run(run_cfg(folder, "one", params, dataset(data)))
                s = p.stats
                out["luopan_1proc"] = {"rc": rc, "seconds": round(secs, 1), "accepted": s.accepted,
                                       "429": s.rate_limited, "achieved_rpm": round(s.achieved_rpm(), 1),
                                       "max_in_60s": s.max_in_window(60.0)}
                print("rate luopan 1 process x 8 workers:", out["luopan_1proc"], flush=True)

        # luopan, 8 processes x 1 worker, each an eighth of the questions, sharing the schedule file
        if "many" in which.split(","):
            with ProxyThread(None, rpm=rpm, window_s=60.0, mock_latency=0.2) as p:
                procs = []
                lines = data.read_text().splitlines(keepends=True)
                t0 = time.perf_counter()
                for w in range(workers):
                    part = folder / f"part{w}.jsonl"
                    part.write_text("".join(lines[w::workers]))
                    params = {"base_url": p.base_url, "model": "mock", "api_key_env": None, "rpm": rpm,
                              "max_concurrency": 1, "rate_limit_scope": "bench-many"}
                    path = run_cfg(folder, f"proc{w}", params, dataset(part))
                    procs.append(subprocess.Popen([sys.executable, "-m", "luopan.cli", "run", str(path), "--no-progress"],
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                rcs = [pr.wait() for pr in procs]
                secs = time.perf_counter() - t0
                s = p.stats
                out["luopan_8proc"] = {"rc": max(rcs), "seconds": round(secs, 1), "accepted": s.accepted,
                                       "429": s.rate_limited, "achieved_rpm": round(s.achieved_rpm(), 1),
                                       "max_in_60s": s.max_in_window(60.0)}
                print("rate luopan 8 processes x 1 worker:", out["luopan_8proc"], flush=True)

        # the peers' way: every worker has its own limiter at R
        if "per_worker" in which.split(","):
            with ProxyThread(None, rpm=rpm, window_s=60.0, mock_latency=0.2) as p:
                out["per_worker"] = asyncio.run(_per_worker(p.base_url, rpm, n, workers))
                s = p.stats
                out["per_worker"].update({"accepted": s.accepted, "429": s.rate_limited, "max_in_60s": s.max_in_window(60.0)})
                print("rate per-worker limiters:", out["per_worker"], flush=True)
    return out


async def _per_worker(base_url: str, rpm: float, n: int, workers: int) -> dict[str, Any]:
    import openai

    from luopan_openai.limiter import RateLimiter

    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    todo = list(range(n))
    sent: list[float] = []

    async def worker() -> None:
        lim = RateLimiter("per-worker", rpm, shared=False)  # each worker its own schedule
        while todo:
            i = todo.pop()
            while True:
                await lim.acquire()
                sent.append(time.monotonic())
                try:
                    await client.chat.completions.create(model="mock", max_tokens=8, messages=[
                        {"role": "user", "content": f"Question {i}: which letter?"}])
                    break
                except openai.RateLimitError as exc:
                    await asyncio.sleep(float(exc.response.headers.get("retry-after", "1")))

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    secs = time.monotonic() - t0
    await client.close()
    return {"seconds": round(secs, 1), "sent": len(sent), "max_sent_in_60s": _max_in(sent, 60.0),
            "peak_send_rpm_10s": _max_in(sent, 10.0) * 6, "send_rpm": round((len(sent) - 1) * 60.0 / (sent[-1] - sent[0]), 1)}


def _max_in(times: list[float], window: float) -> int:
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# ---------------------------------------------------------------- faults
def part_faults(fault_rate: float = 0.2) -> dict[str, Any]:
    from faultproxy import ProxyThread
    from luopan_openai.local_server import llama_cpp_server, smollm2_gguf

    out: dict[str, Any] = {"fault_rate": fault_rate}
    dataset = {"preset": "cmmlu", "name": "cmmlu", "limit_per_subset": 1, "generation": {"max_new_tokens": 16}}
    with tempfile.TemporaryDirectory() as tmp, llama_cpp_server(smollm2_gguf(), alias="smollm2", n_threads=2) as url:
        folder = Path(tmp)
        os.environ["LUOPAN_STATE_DIR"] = str(folder / "state")
        # the server answers one request at a time: at concurrency 2 a request waits for at most one other
        base = {"model": "smollm2", "api_key_env": None, "max_concurrency": 2, "timeout": 60.0}
        rc, secs = luopan_run(run_cfg(folder, "clean", {"base_url": url, **base}, dataset))
        out["clean"] = {"rc": rc, "seconds": round(secs, 1)}
        with ProxyThread(url, fault_rate=fault_rate, seed=7, retry_after=1.0, stall_s=65.0) as p:
            rc, secs = luopan_run(run_cfg(folder, "faulty", {"base_url": p.base_url, **base, "max_retries": 12},
                                          dataset))
            s = p.stats
        out["faulty"] = {"rc": rc, "seconds": round(secs, 1), "received": s.received, "faults": dict(s.faults)}
        a = _preds(folder / "out" / "clean")
        b = _preds(folder / "out" / "faulty")
        out["items"] = {"clean": len(a), "faulty": len(b), "unique_ids_faulty": len({p["id"] for p in b}),
                        "same_ids": [p["id"] for p in a] == [p["id"] for p in b],
                        "same_outputs": sum(x["output"] == y["output"] for x, y in zip(a, b)),
                        "score_clean": _score(folder / "out" / "clean"), "score_faulty": _score(folder / "out" / "faulty")}
        print("faults:", out, flush=True)
    return out


def _preds(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "predictions" / "api" / "cmmlu.jsonl").read_text().splitlines()]


def _score(run_dir: Path) -> float:
    res = json.loads((run_dir / "results" / "api" / "cmmlu.json").read_text())
    n = sum(s["n"] for s in res["subsets"])
    return round(100 * sum(s["score"] * s["n"] for s in res["subsets"]) / n, 2)


# ---------------------------------------------------------------- throughput
def part_throughput(n: int = 48, concurrency: int = 4) -> dict[str, Any]:
    from luopan.config import load_run
    from luopan.pipeline import Run
    from luopan.plugins import get_registry
    from luopan_openai.local_server import llama_cpp_server, smollm2_gguf

    out: dict[str, Any] = {"requests": n, "concurrency": concurrency}
    dataset = {"preset": "cmmlu", "name": "cmmlu", "limit_per_subset": 1, "limit": n,
               "generation": {"max_new_tokens": 24}}
    with tempfile.TemporaryDirectory() as tmp, llama_cpp_server(smollm2_gguf(), alias="smollm2", n_threads=2) as url:
        folder = Path(tmp)
        params = {"base_url": url, "model": "smollm2", "api_key_env": None, "max_concurrency": concurrency}
        path = run_cfg(folder, "tp", params, dataset)
        cfg_data = yaml.safe_load(path.read_text())
        cfg_data["run"]["cache"] = False
        path.write_text(yaml.safe_dump(cfg_data, allow_unicode=True))
        run = Run(load_run(str(path), get_registry()), get_registry(), progress=False)
        requests = run.plan()[0].requests
        messages = [r.message_dicts() for r in requests]

        def bare() -> float:
            return asyncio.run(_bare(url, messages, concurrency))

        def ours() -> float:  # plan + execute in this process: requests, caching off, scoring, outputs
            reg = get_registry()
            t0 = time.perf_counter()
            r = Run(load_run(str(path), reg), reg, progress=False)
            r.plan()
            results = r.execute()
            secs = time.perf_counter() - t0
            assert not results[0].error, results[0].error
            return secs

        times: dict[str, list[float]] = {"luopan": [], "bare": []}
        for name, fn in (("luopan", ours), ("bare", bare), ("bare", bare), ("luopan", ours)):
            times[name].append(fn())
            print(f"throughput {name}: {times[name][-1]:.1f} s", flush=True)
        rc, cli_secs = luopan_run(path)
        out["luopan_cli_seconds"] = round(cli_secs, 2)  # the whole command, start-up included, for reference
        best = {k: min(v) for k, v in times.items()}
        out.update({k: [round(x, 2) for x in v] for k, v in times.items()})
        out["req_per_s"] = {k: round(n / v, 3) for k, v in best.items()}
        out["ratio_luopan_over_bare"] = round(best["bare"] / best["luopan"], 3)
        print("throughput:", out, flush=True)
    return out


async def _bare(url: str, messages: list[list[dict[str, str]]], concurrency: int) -> float:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(m: list[dict[str, str]]) -> str:
        async with sem:
            r = await client.chat.completions.create(model="smollm2", messages=m, max_tokens=24, temperature=0.0,
                                                     top_p=1.0)
            return r.choices[0].message.content or ""

    t0 = time.perf_counter()
    await asyncio.gather(*(one(m) for m in messages))
    secs = time.perf_counter() - t0
    await client.close()
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--parts", default="rate,faults,throughput")
    ap.add_argument("--rpm", type=int, default=120)
    ap.add_argument("--out", default=str(REPO / ".bench" / "api_limits.json"))
    add_lock_option(ap)
    args = ap.parse_args()
    hold_lock(args.lock)
    results: dict[str, Any] = {}
    path = Path(args.out)
    if path.exists():
        results = json.loads(path.read_text())
    for part in args.parts.split(","):
        if part in ("rate", "per_worker"):
            which = "one,many,per_worker" if part == "rate" else "per_worker"
            results.setdefault("rate", {}).update(part_rate(args.rpm, which=which))
        elif part == "faults":
            results["faults"] = part_faults()
        elif part == "throughput":
            results["throughput"] = part_throughput()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
