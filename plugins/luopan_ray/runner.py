"""The ``ray`` runner: model replicas as Ray actors; the driver plans, records, scores and writes.

How a run is laid out:

* **One actor per model replica** holds the model's backend, loaded once (``resources: {replicas, num_gpus,
  num_cpus}`` in the model entry). Every unit of that model, across datasets, shards and later turns, sends its
  requests to those actors, in chunks spread over the replicas; weights never load once per unit.
* **The driver** (where ``luopan run`` runs) plans every unit, looks the requests up in its request cache, sends
  only the missing ones, and records each chunk's answers in the cache as it arrives: it is the cache's only
  writer (SQLite must not be shared across hosts), so a killed driver loses at most the chunks in flight, and a
  rerun resumes from the cache exactly as with the local runner. Scoring and writing happen on the driver too,
  through the same code as the local runner: the predictions, scores and summaries are the local runner's.
* **Several models at once:** the units of each model run in a lane of their own (a driver thread), so every
  model's replicas are busy at the same time; within a model, its units run one after another, each spread over
  all its replicas.
* **Failures:** a chunk whose worker died (its process killed, its node removed) is sent again to another
  replica, up to ``max_retries`` times; the actor itself is restarted by Ray (``max_restarts``) on any node with
  room. Answers already recorded are never asked again. A chunk that keeps failing fails its requests, so the
  unit is reported failed with those items, and the rest of the run completes. An exception raised by the
  backend itself (a bad request) fails the unit, as it does locally.
* **Engines with their own workers** (vLLM, LMDeploy with tensor parallelism) run inside one actor that reserves
  all their GPUs (``num_gpus: 4``) and start their own processes; luopan never asks Ray for a nested placement
  group.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from luopan import Backend, FailedResult, LuopanError, Runner, UnitResult
from luopan.deps import installed, missing_line


class RayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(default=None, description="the cluster to join: 'auto' (the one `ray start` "
                                "began on this machine), HOST:PORT of its head, or ray://HOST:PORT; none: a "
                                "private Ray instance on this machine for this run")
    max_retries: int = Field(default=3, ge=0, le=100,
                             description="times a chunk is sent again after the worker answering it died")
    max_restarts: int = Field(default=3, ge=0, le=1000, description="times Ray restarts a dead replica")
    chunk_size: int | None = Field(default=None, ge=1, description="requests per task (default: the backend's "
                                   "chunk_size)")
    in_flight: int = Field(default=2, ge=1, le=64, description="tasks queued per replica (keeps it busy)")
    num_cpus: float | None = Field(default=None, gt=0, description="a private instance's CPUs (default: all)")
    num_gpus: float | None = Field(default=None, ge=0, description="a private instance's GPUs (default: all; "
                                   "declare logical ones to try placement on a machine without)")
    namespace: str = "luopan"


class RayRunner(Runner):
    """Units on the driver, requests on model replicas (Ray actors)."""

    def __init__(self, address: str | None = None, max_retries: int = 3, max_restarts: int = 3,
                 chunk_size: int | None = None, in_flight: int = 2, num_cpus: float | None = None,
                 num_gpus: float | None = None, namespace: str = "luopan") -> None:
        self.address = address
        self.max_retries = max_retries
        self.max_restarts = max_restarts
        self.chunk_size = chunk_size
        self.in_flight = in_flight
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.namespace = namespace
        self.host: Any = None
        self.pools: dict[str, ReplicaPool] = {}
        self._started_ray = False
        self._node: Any = None  # the private Ray instance this run started, if any
        self._connect_lock = threading.Lock()
        self._schedule: Any = None
        self._lane = threading.local()  # the unit each lane thread is executing (for the log)

    @classmethod
    def environment(cls) -> list[str]:
        return [] if installed("ray") else [missing_line(["ray"], extra="ray")]

    # ------------------------------------------------------------ life cycle
    def attach(self, host: Any) -> None:
        self.host = host
        host.delegate_backends(self._pool)

    def _connect(self) -> Any:
        import ray

        with self._connect_lock:
            if not ray.is_initialized():
                self._init(ray)
        return ray

    def _init(self, ray: Any) -> None:
        kwargs: dict[str, Any] = {"namespace": self.namespace, "log_to_driver": False,
                                  "configure_logging": False}
        if self.host is not None:
            self.host.status("starting Ray" if not self.address else f"joining Ray at {self.address}")
        try:
            if self.address:
                kwargs["address"] = self.address
            else:  # always a new instance, never a cluster `ray start` left running on this machine
                self._node = _private_node(self.num_cpus, self.num_gpus)
                if self._node is not None:
                    kwargs["address"] = self._node.address
                else:
                    kwargs.update(address="local", include_dashboard=False, num_cpus=self.num_cpus,
                                  num_gpus=self.num_gpus)
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            self._stop_node()
            where = self.address or "a private instance"
            raise LuopanError(f"ray runner: cannot connect to {where}: {str(exc).splitlines()[0]}") from None
        self._started_ray = True
        if self.host is not None:
            self.host.status("")
            res = ray.cluster_resources()
            self.host.log("ray_connected", address=self.address or "private", nodes=len(ray.nodes()),
                          cpus=res.get("CPU", 0), gpus=res.get("GPU", 0))

    def _stop_node(self) -> None:
        node, self._node = self._node, None
        if node is not None:
            node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)

    def schedule(self) -> Any:
        """The run's :class:`Schedule` actor (started once, on first use)."""
        with self._connect_lock:
            if self._schedule is None:
                import ray

                self._schedule = ray.remote(Schedule).options(num_cpus=0, max_restarts=-1).remote()
        return self._schedule

    def _pool(self, model: Any, local: Backend) -> Backend:
        pool = self.pools.get(model.label)
        if pool is None:
            pool = self.pools[model.label] = ReplicaPool(self, model, local)
        return pool

    def close(self) -> None:
        for pool in self.pools.values():
            pool.stop()
        if self._schedule is not None and self.host is not None:
            import ray

            try:  # what the shared schedule paced: the log shows the limit held run-wide
                calls = ray.get(self._schedule.calls.remote(), timeout=10)
                if calls:
                    self.host.log("shared_schedule", calls=calls)
            except Exception:  # the log line must not fail the run
                pass
            self._schedule = None
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
        self._stop_node()

    # ------------------------------------------------------------ running
    def run(self, units: Sequence[Any], execute: Callable[[Any], UnitResult]) -> list[UnitResult]:
        lanes: dict[str, list[int]] = {}
        for i, u in enumerate(units):
            lanes.setdefault(u.model.label, []).append(i)
        results: list[UnitResult | None] = [None] * len(units)

        def lane(indices: list[int]) -> None:
            for i in indices:
                self._lane.unit = units[i].id
                results[i] = execute(units[i])

        if len(lanes) <= 1:
            for indices in lanes.values():
                lane(indices)
        else:
            with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="luopan-lane") as ex:
                for f in [ex.submit(lane, idx) for idx in lanes.values()]:
                    f.result()
        return [r for r in results if r is not None]

    def current_unit(self) -> str:
        return getattr(self._lane, "unit", "")

    # ------------------------------------------------------------ --dry-run
    def plan_lines(self, units: Sequence[Any]) -> list[str]:
        where = f"the Ray cluster at {self.address}" if self.address else "a private Ray instance on this machine"
        lines = [f"runner ray: {where}; each model's requests go to its replicas in chunks, answers recorded "
                 f"by this driver as they arrive"]
        by_model: dict[str, list[Any]] = {}
        for u in units:
            by_model.setdefault(u.model.label, []).append(u)
        for label, us in by_model.items():
            res = us[0].model.resources
            todo = sum(len(u.keys) - u.cached for u in us)
            gpus = f", {res['num_gpus']:g} GPU" if res.get("num_gpus") else ""
            lines.append(f"  {label}: {res['replicas']} replica(s) x ({res['num_cpus']:g} CPU{gpus}); "
                         f"{len(us)} unit(s), {todo} request(s) to send, about {-(-todo // res['replicas'])} "
                         f"per replica")
            for u in us:
                lines.append(f"    {u.id}: {len(u.keys) - u.cached} to send of {len(u.keys)}")
        return lines


def _private_node(num_cpus: float | None, num_gpus: float | None) -> Any:
    """Start a private Ray instance the way ``ray.init()`` does, without the two processes a run of its own
    never uses: the autoscaler's monitor (this instance never scales) and the log monitor (worker output is not
    forwarded to the driver). On two cores they cost a second of CPU at start and the monitor a second at
    shutdown (it exits only after a GCS time-out). ``None`` if this Ray's internals differ: ``ray.init`` then
    starts the instance with its defaults."""
    try:
        from ray._private.node import Node
        from ray._private.parameter import RayParams

        params = RayParams(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, no_monitor=True,
                           include_log_monitor=False)
    except (ImportError, TypeError):
        return None
    # as ray.init does: killed with the driver (a reaper and the kernel's parent-death signal), stopped by close
    return Node(ray_params=params, head=True, shutdown_at_exit=False, spawn_reaper=True)


class Schedule:
    """A Ray actor holding the run's shared state (luopan.limits): an API's requests-per-minute schedule, one
    for every replica on every node. Its methods run one at a time, so each update is atomic."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def apply(self, key: str, fn: Callable[[dict[str, Any]], Any]) -> Any:
        return fn(self.states.setdefault(key, {}))

    def calls(self) -> dict[str, int]:
        return {k: int(v.get("calls", 0)) for k, v in self.states.items()}


class RayState:
    """luopan.limits.SharedState on the :class:`Schedule` actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def apply(self, key: str, fn: Callable[[dict[str, Any]], Any]) -> Any:
        import ray

        return ray.get(self.actor.apply.remote(key, fn))


class Replica:
    """A Ray actor: one loaded backend answering chunks of requests."""

    def __init__(self, backend: str, params: dict[str, Any], kind: str | None, schedule: Any = None) -> None:
        from luopan import load_registry
        from luopan.limits import use_shared_state

        if schedule is not None:  # before the backend is built: its rate limiter takes the shared schedule
            use_shared_state(RayState(schedule))
        self.backend = load_registry().get("backend", backend).create(params)
        if kind:
            self.backend.kind = kind
        self.backend.load()

    def where(self) -> dict[str, Any]:
        import ray

        return {"node": ray.get_runtime_context().get_node_id()[:12], "host": socket.gethostname(),
                "pid": os.getpid(), "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def answer(self, mode: str, requests: Sequence[Any]) -> list[Any]:
        out: list[Any] = [None] * len(requests)
        for i, r in self.backend.stream(mode, requests):
            out[i] = r
        return out

    def runtime(self) -> dict[str, Any]:
        return self.backend.runtime()

    def close(self) -> None:
        self.backend.close()


class ReplicaPool(Backend):
    """The driver's stand-in for a model's backend: requests go to the model's replicas, chunk by chunk."""

    def __init__(self, runner: RayRunner, model: Any, local: Backend) -> None:
        self.runner = runner
        self.model = model
        self.local = local
        self.capabilities = local.capabilities
        self.kind = local.kind
        self.chunk_size = int(runner.chunk_size or local.chunk_size)
        self.actors: list[Any] = []
        self.where: list[dict[str, Any]] = []
        self._load: list[int] = []
        self._lock = threading.Lock()
        self._runtime: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        return self.local.identity()

    def runtime(self) -> dict[str, Any]:
        if self._runtime is None and self.actors:
            import ray

            try:
                self._runtime = {**ray.get(self.actors[0].runtime.remote(), timeout=60),
                                 "replicas": len(self.actors), "workers": self.where}
            except Exception:  # provenance must not fail a finished run
                self._runtime = {"replicas": len(self.actors), "workers": self.where}
        return self._runtime or {}

    def _start(self) -> Any:
        ray = self.runner._connect()
        with self._lock:
            if self.actors:
                return ray
            res = self.model.resources
            actor = ray.remote(Replica).options(num_cpus=res["num_cpus"], num_gpus=res["num_gpus"],
                                                max_restarts=self.runner.max_restarts, max_task_retries=0)
            host = self.runner.host
            if host is not None:
                host.status(f"{self.model.label}: starting {res['replicas']} replica(s) on Ray")
            # the run-wide schedule actor only for a backend that uses it: it is one more process to start
            schedule = self.runner.schedule() if self.local.shares_state else None
            actors = [actor.remote(self.model.backend, self.model.params, self.model.kind, schedule)
                      for _ in range(res["replicas"])]
            try:
                where = ray.get([a.where.remote() for a in actors])
            except ray.exceptions.RayActorError as exc:
                for a in actors:
                    ray.kill(a)
                raise LuopanError(f"model '{self.model.label}': its replica could not start on Ray: "
                                  f"{_cause(exc)}") from None
            self.actors, self.where, self._load = actors, where, [0] * len(actors)
            if host is not None:
                host.status("")
                host.log("replicas_started", model=self.model.label, replicas=where)
        return ray

    def stop(self) -> None:
        if not self.actors:
            return
        import ray

        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # already gone
                pass
        self.actors = []

    def _pick(self, avoid: int | None) -> int | None:
        """The least busy replica with room (not ``avoid`` if another has room)."""
        with self._lock:
            order = sorted(range(len(self.actors)), key=lambda i: (i == avoid, self._load[i]))
            for i in order:
                if self._load[i] < self.runner.in_flight:
                    self._load[i] += 1
                    return i
        return None

    def _done(self, i: int) -> None:
        with self._lock:
            self._load[i] -= 1

    def stream(self, mode: str, requests: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        ray = self._start()
        from ray.exceptions import RayError, RayTaskError

        n = self.chunk_size
        chunks = [(s, list(requests[s : s + n])) for s in range(0, len(requests), n)]
        queue: deque[int] = deque(range(len(chunks)))
        attempts = [0] * len(chunks)
        last_on: dict[int, int] = {}
        pending: dict[Any, tuple[int, int]] = {}
        answered_by: dict[int, int] = {}
        try:
            while queue or pending:
                while queue:
                    ci = queue[0]
                    ai = self._pick(last_on.get(ci))
                    if ai is None:
                        break
                    queue.popleft()
                    pending[self.actors[ai].answer.remote(mode, chunks[ci][1])] = (ci, ai)
                if not pending:  # every replica is busy with another unit's chunks: wait for room
                    time.sleep(0.05)
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    ci, ai = pending.pop(ref)
                    self._done(ai)
                    start, part = chunks[ci]
                    try:
                        outs = ray.get(ref)
                    except RayTaskError as exc:  # the backend raised: the unit fails, as it would locally
                        raise _unwrap(exc) from None
                    except RayError as exc:  # the worker or its node died: another replica takes the chunk
                        attempts[ci] += 1
                        last_on[ci] = ai
                        self._log("chunk_retry" if attempts[ci] <= self.runner.max_retries else "chunk_failed",
                                  replica=ai, attempt=attempts[ci], requests=len(part), error=_cause(exc))
                        if attempts[ci] <= self.runner.max_retries:
                            queue.append(ci)
                        else:
                            err = (f"ray: the worker answering this request died {attempts[ci]} times "
                                   f"(last: {_cause(exc)})")
                            yield from ((start + j, FailedResult(err)) for j in range(len(part)))
                        continue
                    answered_by[ai] = answered_by.get(ai, 0) + len(part)
                    yield from enumerate(outs, start)
        finally:
            for ref, (_, ai) in list(pending.items()):
                ray.cancel(ref, force=False)
                self._done(ai)
            if answered_by:
                self._log("answered", replicas={self._name(ai): k for ai, k in sorted(answered_by.items())})

    def _name(self, ai: int) -> str:
        w = self.where[ai] if ai < len(self.where) else {}
        return f"replica{ai}@{w.get('host', '?')}:{w.get('pid', '?')}"

    def _log(self, event: str, **fields: Any) -> None:
        host = self.runner.host
        if host is not None:
            host.log(event, model=self.model.label, unit=self.runner.current_unit(), **fields)

    def close(self) -> None:
        self.stop()


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _unwrap(exc: Any) -> BaseException:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return RuntimeError(_cause(exc))
