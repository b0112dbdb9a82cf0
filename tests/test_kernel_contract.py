"""The kernel's contract with runners and embedders: a unit is a picklable description that a fresh process
executes to the same records as the driver; two runs in one process, with different data folders and plugin
sets, do not see each other's; a component of the wrong type is refused by the registry."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import toy_plugin
import yaml

from luopan.config import load_run
from luopan.errors import PluginLoadError, UnknownComponentError
from luopan.pipeline import Run
from luopan.plugins import load_registry
from luopan.units import UnitSpec


def _write(folder: Path, cfg: dict, name: str = "run.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


_CHILD = """
import pickle, sys
from luopan.cache import RequestCache
from luopan.execution import execute_spec
from luopan.plugins import load_registry

spec, config, out, cache_path, data_dirs = pickle.loads(sys.stdin.buffer.read())
result = execute_spec(spec, config, load_registry(), out=out, cache=RequestCache(cache_path), data_dirs=data_dirs)
print(result.error or "ok")
"""


def test_a_unit_executed_in_a_fresh_process_from_its_pickled_description_gives_the_same_records(tmp_path):
    cfg = {"run": {"name": "driver", "output_dir": str(tmp_path / "out")},
           "models": [{"preset": "fake"}, {"preset": "fake", "name": "fake-chat", "kind": "chat"}],
           "datasets": [{"preset": "cmmlu", "subsets": ["agronomy", "anatomy", "astronomy"], "limit_per_subset": 4,
                         "shots": 2, "shards": 2},
                        {"preset": "winogrande", "limit": 5}]}
    path = _write(tmp_path, cfg)
    reg = load_registry()
    run = Run(load_run(str(path), reg), reg, progress=False)
    run.execute()
    assert len(run.units) == 6
    for unit in run.units:
        spec = unit.spec
        blob = pickle.dumps((spec, run.config, tmp_path / "worker", tmp_path / "worker-cache.sqlite", run.data_dirs))
        assert pickle.loads(blob)[0] == spec  # a plain description
        r = subprocess.run([sys.executable, "-c", _CHILD], input=blob, capture_output=True, timeout=300)
        assert r.returncode == 0 and r.stdout.decode().strip().splitlines()[-1] == "ok", r.stderr.decode()[-3000:]
        mine = run.predictions(unit)
        theirs = _records(tmp_path / "worker", spec)
        assert mine and theirs == mine, spec.id
        a = json.loads(run.ctx.outputs.unit_path("results", spec, ".json").read_text())
        b = json.loads(_path(tmp_path / "worker", spec, "results", ".json").read_text())
        for d in (a, b):
            for k in ("started_at", "finished_at", "runtime"):
                d["provenance"].pop(k)
        assert a == b, spec.id


def _path(out: Path, spec: UnitSpec, kind: str, suffix: str) -> Path:
    from luopan.outputs import RunOutputs

    return RunOutputs(out).unit_path(kind, spec, suffix)


def _records(out: Path, spec: UnitSpec) -> list[dict]:
    return [json.loads(x) for x in _path(out, spec, "predictions", ".jsonl").read_text().splitlines()]


def _questions(folder: Path, n: int, tag: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "qa.jsonl", "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"q": f"{tag} question {i}", "a": f"{tag}{i}"}) + "\n")


def test_two_runs_in_one_process_keep_their_own_data_folders_and_plugins(tmp_path, monkeypatch):
    monkeypatch.delenv("LUOPAN_DATA", raising=False)
    _questions(tmp_path / "data_a", 3, "alpha")
    _questions(tmp_path / "data_b", 5, "beta")
    qa = {"name": "qa", "loader": "files", "mode": "generate", "evaluator": "exact_match",
          "params": {"path": "qa.jsonl", "prompt": "q", "target": "a"}}
    run_a = _write(tmp_path / "a", {"run": {"name": "a", "output_dir": str(tmp_path / "out"),
                                            "data": [str(tmp_path / "data_a")]},
                                    "models": [{"preset": "fake", "kind": "chat"}], "datasets": [qa]})
    run_b = _write(tmp_path / "b", {"run": {"name": "b", "output_dir": str(tmp_path / "out"),
                                            "data": ["../data_b"]},  # relative to the run file
                                    "models": [{"preset": "fake", "kind": "chat"}],
                                    "datasets": [qa, {"loader": "toy", "params": {"subsets": 2, "per_subset": 2}}]})
    plain = load_registry()
    with_toy = load_registry(extra_plugins=[("toy", toy_plugin)])
    with pytest.raises(UnknownComponentError, match="unknown dataset 'toy'"):
        load_run(str(run_b), plain)  # the plugin set is the registry's: the first registry never sees 'toy'
    a = Run(load_run(str(run_a), plain), plain, progress=False)
    b = Run(load_run(str(run_b), with_toy), with_toy, progress=False)
    a.plan()
    b.plan()  # interleaved: planning b must not change where a reads from
    a.execute()
    b.execute()
    preds_a = a.predictions(a.units[0])
    preds_b = b.predictions(b.units[0])
    assert [p["target"] for p in preds_a] == ["alpha0", "alpha1", "alpha2"]
    assert [p["target"] for p in preds_b] == [f"beta{i}" for i in range(5)]
    assert json.loads((tmp_path / "out" / "b" / "results" / "fake" / "toy.json").read_text())["error"] is None


class _NotABackend:
    def __init__(self, params: object = None) -> None:  # a factory: called with the params object
        self.params = params


class _BadPlugin:
    @staticmethod
    def luopan_register_backends(register):
        register("not_a_backend", _NotABackend)


def test_a_factory_that_builds_the_wrong_type_is_refused():
    from luopan import hookimpl

    plugin = type("P", (), {"luopan_register_backends": staticmethod(hookimpl(_BadPlugin.luopan_register_backends))})
    reg = load_registry(extra_plugins=[("bad", plugin)])
    with pytest.raises(PluginLoadError, match="not_a_backend.*is not a luopan.Backend"):
        reg.get("backend", "not_a_backend").build({})


def test_factories_receive_their_validated_params_object():
    from pydantic import BaseModel, ConfigDict

    from luopan import Evaluator, hookimpl

    class Opts(BaseModel):
        model_config = ConfigDict(extra="forbid")
        threshold: float = 0.5

    seen: list[object] = []

    class Mine(Evaluator):
        def __init__(self, opts: Opts) -> None:
            self.opts = opts

        @classmethod
        def from_params(cls, params: Opts) -> Mine:
            seen.append(params)
            return cls(params)

        def score(self, samples, outputs, ctx):
            return []

    def make(params: Opts) -> Mine:  # a plain function factory
        seen.append(params)
        return Mine(params)

    class Plugin:
        @staticmethod
        @hookimpl
        def luopan_register_evaluators(register):
            register("by_class", Mine, params=Opts)
            register("by_function", make, params=Opts)

    reg = load_registry(extra_plugins=[("mine", Plugin)])
    a = reg.get("evaluator", "by_class").build({"threshold": 0.9})
    b = reg.get("evaluator", "by_function").build({})
    assert isinstance(seen[0], Opts) and seen[0].threshold == 0.9 and a.opts is seen[0]
    assert isinstance(seen[1], Opts) and seen[1].threshold == 0.5 and b.opts is seen[1]
    with pytest.raises(Exception, match="threshold"):
        reg.get("evaluator", "by_class").build({"threshold": "high"})


def test_no_import_cycles_in_the_kernel():
    """Kernel modules import each other at module level in one direction only (imports inside functions are the
    lazy ones, by design)."""
    import ast

    core = Path(__file__).resolve().parents[1] / "core" / "luopan"
    graph: dict[str, set[str]] = {}
    for f in core.glob("*.py"):
        deps = set()
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("luopan."):
                deps.add(node.module.split(".")[1])
        graph[f.stem] = deps

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                return path[path.index(dep):] + [dep]
            found = cycle_from(dep, path + [dep])
            if found:
                return found
        return None

    for module in sorted(graph):
        assert cycle_from(module, [module]) is None, cycle_from(module, [module])
