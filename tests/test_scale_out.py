"""The ray and slurm runners, on real Ray (a private instance, a multi-node cluster on this machine) and real
submitit (its local executor: there is no Slurm here). The fake backend keeps scheduling, placement and failure
tests fast; each run is compared with the local runner's outputs on the same run file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

LUOPAN = str(Path(sys.executable).parent / "luopan")
OUTPUTS = ("summary.csv", "summary.md")


def write_run(tmp_path: Path, name: str, *, runner: dict | None = None, models: list | None = None,
              datasets: list | None = None) -> Path:
    run: dict = {"name": "r", "output_dir": str(tmp_path / name)}
    if runner:
        run.update(runner)
    cfg = {"run": run, "models": models or [{"preset": "fake"}],
           "datasets": datasets or [{"preset": "cmmlu", "limit_per_subset": 4}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def luopan(*args: str, timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([LUOPAN, *args], capture_output=True, text=True, timeout=timeout, **kw)


def outputs_equal(a: Path, b: Path) -> None:
    """The same predictions, scores and summary (times and provenance aside)."""
    for f in OUTPUTS:
        assert (a / f).read_text(encoding="utf-8") == (b / f).read_text(encoding="utf-8"), f
    preds = sorted(p.relative_to(a) for p in (a / "predictions").rglob("*.jsonl"))
    assert preds, "no predictions written"
    assert preds == sorted(p.relative_to(b) for p in (b / "predictions").rglob("*.jsonl"))
    for p in preds:
        assert (a / p).read_bytes() == (b / p).read_bytes(), p
    for p in (a / "results").rglob("*.json"):
        ra, rb = json.loads(p.read_text()), json.loads((b / p.relative_to(a)).read_text())
        assert ra["subsets"] == rb["subsets"] and ra.get("error") == rb.get("error"), p


def events(out: Path, name: str) -> list[dict]:
    lines = (out / "run.log").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def local_reference(tmp_path: Path, models: list, datasets: list | None = None) -> Path:
    path = write_run(tmp_path, "local", models=models, datasets=datasets)
    r = luopan("run", str(path), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path / "local" / "r"


# ---------------------------------------------------------------- ray

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of three nodes on this machine (a head with no CPU for work, two workers of 2 logical CPUs
    and 1 logical GPU each), joined by the runs below with --address."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0})
    workers = [c.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    c.shutdown()


def test_local_runner_never_imports_ray(tmp_path):
    path = write_run(tmp_path, "local", datasets=[{"preset": "demo_mcq"}])
    code = ("import sys; from luopan.cli import main; rc = main(['run', sys.argv[1], '--no-progress']); "
            "assert rc == 0, rc; assert 'ray' not in sys.modules and 'submitit' not in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_private_ray_instance_gives_the_local_runners_outputs(tmp_path):
    models = [{"preset": "fake", "resources": {"replicas": 2}},
              {"name": "other", "backend": "fake", "params": {"seed": 7}}]
    ref = local_reference(tmp_path, models)
    path = write_run(tmp_path, "ray", models=models,
                     runner={"runner": "ray", "ray": {"num_cpus": 3, "chunk_size": 100}})
    r = luopan("run", str(path), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "ray" / "r"
    outputs_equal(out, ref)
    started = {e["model"]: e["replicas"] for e in events(out, "replicas_started")}
    assert len(started["fake"]) == 2 and len(started["other"]) == 1
    answered = [e for e in events(out, "answered") if e["model"] == "fake"]
    assert len(answered[0]["replicas"]) == 2, answered  # both replicas took chunks of the unit
    # a rerun: every answer cached, no replica started
    r = luopan("run", str(path), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(events(out, "replicas_started")) == 2


def test_dry_run_shows_the_assignment_and_starts_nothing(tmp_path):
    path = write_run(tmp_path, "ray", models=[{"preset": "fake", "resources": {"replicas": 3, "num_gpus": 1}}],
                     runner={"runner": "ray"})
    r = luopan("run", str(path), "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "runner ray: a private Ray instance" in r.stdout
    assert "fake: 3 replica(s) x (1 CPU, 1 GPU)" in r.stdout
    assert not (tmp_path / "ray" / "r" / "cache").exists()


def test_replicas_are_placed_on_logical_gpus_across_nodes(tmp_path, cluster):
    c, _ = cluster
    models = [{"preset": "fake", "resources": {"replicas": 2, "num_gpus": 1, "num_cpus": 1}}]
    path = write_run(tmp_path, "ray", models=models, runner={"runner": "ray"})
    r = luopan("run", str(path), "--no-progress", "--address", c.address)
    assert r.returncode == 0, r.stderr[-3000:]
    (started,) = events(tmp_path / "ray" / "r", "replicas_started")
    nodes = {w["node"] for w in started["replicas"]}
    assert len(nodes) == 2, started  # one GPU per node: one replica on each
    assert all(len(w["gpus"]) == 1 for w in started["replicas"]), started
    outputs_equal(tmp_path / "ray" / "r", local_reference(tmp_path, models))


def _kill_when(out: Path, pick, sig=signal.SIGKILL, after: float = 0.5) -> threading.Thread:
    """Kill the process ``pick(run.log events)`` names, once it appears, ``after`` seconds later."""
    def watch() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                pid = pick([json.loads(x) for x in (out / "run.log").read_text().splitlines()])
            except (OSError, ValueError):
                pid = None
            if pid:
                time.sleep(after)
                os.kill(pid, sig)
                return
            time.sleep(0.1)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_a_replica_killed_mid_unit_is_retried_and_nothing_answered_is_asked_again(tmp_path, cluster):
    c, _ = cluster
    calls = tmp_path / "calls.log"
    models = [{"preset": "fake", "params": {"delay_s": 0.3, "calls_log": str(calls), "chunk_size": 40},
               "resources": {"replicas": 2}}]
    path = write_run(tmp_path, "ray", models=models, runner={"runner": "ray", "ray": {"in_flight": 1}})
    out = tmp_path / "ray" / "r"

    def replica0(evs):
        s = [e for e in evs if e["event"] == "replicas_started"]
        return s[0]["replicas"][0]["pid"] if s else None

    killer = _kill_when(out, replica0, after=1.0)
    r = luopan("run", str(path), "--no-progress", "--address", c.address)
    killer.join(timeout=5)
    assert r.returncode == 0, r.stderr[-3000:]
    retries = events(out, "chunk_retry")
    assert retries, "the replica was not killed mid-unit"
    served = calls.read_text().splitlines()
    result = json.loads((out / "results/fake/cmmlu.json").read_text())
    n_requests = sum(s["n"] for s in result["subsets"]) * 4
    # every request answered; only the chunks in flight on the killed replica were served twice
    assert len(set(served)) == n_requests
    assert len(served) - n_requests <= 40 * len(retries), (len(served), n_requests, len(retries))
    outputs_equal(out, local_reference(tmp_path, [{"preset": "fake"}]))


def test_a_unit_whose_worker_keeps_dying_fails_alone(tmp_path, cluster):
    c, _ = cluster
    models = [{"preset": "fake", "params": {"exit_if_prompt_contains": "以下是关于农学"}}]
    datasets = [{"preset": "cmmlu", "subsets": ["agronomy"], "limit": 5},
                {"preset": "cmmlu", "name": "cmmlu_anatomy", "subsets": ["anatomy"], "limit": 5}]
    path = write_run(tmp_path, "ray", models=models, datasets=datasets,
                     runner={"runner": "ray", "ray": {"max_retries": 1}})
    r = luopan("run", str(path), "--no-progress", "--address", c.address)
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "FAILED fake/cmmlu:" in r.stderr and "died 2 times" in r.stderr, r.stderr[-2000:]
    out = tmp_path / "ray" / "r"
    good = json.loads((out / "results/fake/cmmlu_anatomy.json").read_text())
    assert good.get("error") is None and good["subsets"][0]["n"] == 5
    bad = json.loads((out / "results/fake/cmmlu.json").read_text())
    assert len(bad["failed_items"]) == 5


def test_a_killed_driver_resumes_from_the_cache(tmp_path, cluster):
    c, _ = cluster
    calls = tmp_path / "calls.log"
    models = [{"preset": "fake", "params": {"delay_s": 0.2, "calls_log": str(calls), "chunk_size": 40},
               "resources": {"replicas": 2}}]
    path = write_run(tmp_path, "ray", models=models, runner={"runner": "ray", "ray": {"address": c.address}})
    out = tmp_path / "ray" / "r"
    p = subprocess.Popen([LUOPAN, "run", str(path), "--no-progress"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(calls.read_text().splitlines() if calls.exists() else []) < 300:
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    import sqlite3

    with sqlite3.connect(out.parent / "cache" / "requests.sqlite") as db:
        kept = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert 0 < kept < 1072, kept  # some answers were recorded before the kill, not all
    before = len(calls.read_text().splitlines())
    r = luopan("run", str(path), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    asked_again = len(calls.read_text().splitlines()) - before
    assert asked_again == 1072 - kept, (asked_again, kept)  # only what the cache lacked
    outputs_equal(out, local_reference(tmp_path, [{"preset": "fake"}]))


def test_a_removed_node_moves_its_work_to_the_other(tmp_path):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [c.add_node(num_cpus=1) for _ in range(2)]
        c.wait_for_nodes()
        models = [{"preset": "fake", "params": {"delay_s": 0.3, "chunk_size": 40}, "resources": {"replicas": 2}}]
        path = write_run(tmp_path, "ray", models=models, runner={"runner": "ray", "ray": {"in_flight": 1}})
        out = tmp_path / "ray" / "r"

        def remove() -> None:
            deadline = time.time() + 120
            while time.time() < deadline:
                if (out / "run.log").exists() and "replicas_started" in (out / "run.log").read_text():
                    time.sleep(1.0)
                    c.remove_node(nodes[0])
                    return
                time.sleep(0.1)
        t = threading.Thread(target=remove, daemon=True)
        t.start()
        r = luopan("run", str(path), "--no-progress", "--address", c.address)
        t.join(timeout=5)
        assert r.returncode == 0, r.stderr[-3000:]
        assert events(out, "chunk_retry"), "no chunk was lost with the node"
        outputs_equal(out, local_reference(tmp_path, [{"preset": "fake"}]))
    finally:
        c.shutdown()


# ---------------------------------------------------------------- slurm (submitit's local executor)

submitit = pytest.importorskip("submitit")


def test_slurm_array_with_the_local_executor_gives_the_local_runners_outputs(tmp_path):
    models = [{"preset": "fake"}, {"name": "other", "backend": "fake", "params": {"seed": 7}}]
    datasets = [{"preset": "cmmlu", "limit_per_subset": 2, "shards": 2}]
    path = write_run(tmp_path, "slurm", models=models, datasets=datasets,
                     runner={"runner": "slurm", "slurm": {"cluster": "local", "time_min": 10}})
    r = luopan("run", str(path), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "slurm" / "r"
    outputs_equal(out, local_reference(tmp_path, models, datasets))
    submitted = events(out, "slurm_submitted")
    assert sorted(len(e["jobs"]) for e in submitted) == [2, 2]  # one array per model, a task per shard
    assert len(list((out / "slurm" / "caches").glob("*.sqlite"))) == 4
    # idempotent: a rerun submits nothing
    r = luopan("run", str(path), "--no-progress")
    assert r.returncode == 0 and len(events(out, "slurm_submitted")) == 2, r.stderr[-2000:]


def test_a_later_run_merges_the_caches_of_a_stopped_driver(tmp_path):
    path = write_run(tmp_path, "slurm", runner={"runner": "slurm", "slurm": {"cluster": "local"}})
    assert luopan("run", str(path), "--no-progress").returncode == 0
    out = tmp_path / "slurm" / "r"
    (tmp_path / "slurm" / "cache" / "requests.sqlite").unlink()  # as if the driver died before merging
    r = luopan("run", str(path), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    merged = events(out, "slurm_caches_merged")
    assert merged[-2]["when"] == "before submitting" and merged[-2]["entries"] > 0
    assert len(events(out, "slurm_submitted")) == 1  # the first run's only


def test_a_failing_task_fails_its_unit_and_the_others_complete(tmp_path):
    models = [{"preset": "fake", "params": {"exit_if_prompt_contains": "以下是关于农学"}}]
    datasets = [{"preset": "cmmlu", "subsets": ["agronomy"], "limit": 3},
                {"preset": "cmmlu", "name": "cmmlu_anatomy", "subsets": ["anatomy"], "limit": 3}]
    path = write_run(tmp_path, "slurm", models=models, datasets=datasets,
                     runner={"runner": "slurm", "slurm": {"cluster": "local"}})
    r = luopan("run", str(path), "--no-progress")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "FAILED fake/cmmlu: slurm: task" in r.stderr, r.stderr[-2000:]
    good = json.loads((tmp_path / "slurm/r/results/fake/cmmlu_anatomy.json").read_text())
    assert good.get("error") is None and good["subsets"][0]["n"] == 3


def test_slurm_dry_run_prints_the_submission(tmp_path):
    models = [{"preset": "fake", "resources": {"num_gpus": 2, "num_cpus": 8}}]
    datasets = [{"preset": "cmmlu", "limit_per_subset": 1, "shards": 3}]
    path = write_run(tmp_path, "slurm", models=models, datasets=datasets,
                     runner={"runner": "slurm", "slurm": {"partition": "gpu", "qos": "high", "time_min": 120,
                                                           "mem_gb": 32, "additional": {"exclusive": True}}})
    r = luopan("run", str(path), "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]
    for line in ("#SBATCH --partition=gpu", "#SBATCH --qos=high", "#SBATCH --time=120", "#SBATCH --array=0-2%3",
                 "#SBATCH --gpus-per-task=2", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32768M",
                 "#SBATCH --exclusive", "#SBATCH --job-name=luopan-fake"):
        assert line in r.stdout, (line, r.stdout)
    assert not (tmp_path / "slurm" / "r" / "slurm").exists()


def test_runner_options_are_checked_like_the_rest_of_the_run_file(tmp_path):
    path = write_run(tmp_path, "bad", runner={"runner": "slurm", "slurm": {"partion": "gpu"}})
    r = luopan("validate", str(path))
    assert r.returncode == 2 and "run.slurm" in r.stderr and "partition" in r.stderr, r.stderr
    path = write_run(tmp_path, "bad2", runner={"rey": {"address": "auto"}})
    r = luopan("validate", str(path))
    assert r.returncode == 2 and "unknown key 'rey'" in r.stderr and "ray" in r.stderr, r.stderr
    path = write_run(tmp_path, "ok", datasets=[{"preset": "demo_mcq"}])
    r = luopan("run", str(path), "--address", "auto")
    assert r.returncode == 2 and "--address: runner 'local'" in r.stderr, r.stderr


def test_an_api_limit_holds_across_every_replica(tmp_path):
    """Three replicas of an API model share one requests-per-minute schedule (a Ray actor), so the service never
    sees more than the limit in any window, whichever replica sends."""
    import faultproxy as fp

    with fp.ProxyThread(None, rpm=10, window_s=1.0) as proxy:  # the service: 10 requests per second at most
        models = [{"name": "api", "backend": "openai", "kind": "chat",
                   "params": {"base_url": proxy.base_url, "model": "mock", "api_key_env": None,
                              "rpm": 540, "max_concurrency": 4},  # 9 per second, the whole run
                   "resources": {"replicas": 3}}]
        datasets = [{"preset": "cmmlu", "subsets": ["agronomy", "anatomy", "astronomy"], "limit": 60,
                     "mode": "generate"}]
        path = write_run(tmp_path, "ray", models=models, datasets=datasets,
                         runner={"runner": "ray", "ray": {"num_cpus": 3, "chunk_size": 5}})
        r = luopan("run", str(path), "--no-progress")
        stats = proxy.stats.copy()
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "ray" / "r"
    answered = events(out, "answered")[0]["replicas"]
    assert len(answered) == 3, answered  # every replica sent requests
    assert stats.accepted == 60 and stats.rate_limited == 0, stats.to_dict()
    assert stats.max_in_window(1.0) <= 10, stats.max_in_window(1.0)
    (shared,) = events(out, "shared_schedule")
    assert sum(shared["calls"].values()) >= 60, shared  # every request took its slot from the one schedule
