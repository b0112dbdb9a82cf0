"""The ``code_pass`` evaluator: run each answer against its tests in the sandbox; pass@1 and pass@k.

Each sample's score is 1.0 when its program passes, so a subset's score is the mean pass rate: pass@1
(greedy decoding: one sample per problem; with several samples per problem it is the unbiased pass@1
estimate, the mean of c/n). Samples with the same ``Sample.meta["problem"]`` (default: the sample id) are
pooled: with n samples of a problem, c of them passing, each of them carries the unbiased
``pass@k = 1 - C(n-c, k) / C(n, k)`` of its problem in ``extra`` for every k in ``k`` with k <= n (a subset's
mean is then the mean over problems when every problem has the same n). ``extra`` also says how the
answer was read (``how``), the sandbox's verdict (``status``: passed, failed, timeout, error), and
``reason``, one line saying why it failed.

What a sample needs: ``meta["tests"]`` (default: ``target``), and for completion-style benchmarks
``meta["code_prompt"]`` and ``meta["entry_point"]`` (see :mod:`luopan_code.programs`).

The solution and the tests run in separate processes (:mod:`luopan_code.sandbox`): the tests, with
HumanEval's prompt (its imports and helper functions: dataset code) run first, call the solution's entry
point, or for MBPP the functions and classes the reference solution defines (``meta["reference"]``), in the
solution's process and judge what comes back as plain data in their own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from luopan.components import EvalContext, Evaluator
from luopan.types import Sample, ScoredSample
from luopan_code.passk import pass_at_k
from luopan_code.programs import solution
from luopan_code.sandbox import ExecResult, Job, Limits, Sandbox, defined_names

log = structlog.get_logger("luopan")


class CodePassParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: list[int] = Field(default_factory=lambda: [1], description="pass@k for each k (those <= n samples)")
    timeout: float = Field(default=10.0, gt=0, le=600, description="wall-clock seconds per program")
    memory_mb: int = Field(default=512, ge=64, description="address space per program (RLIMIT_AS)")
    processes: int = Field(default=16, ge=1, description="processes and threads per program (RLIMIT_NPROC)")
    file_mb: int = Field(default=16, ge=1, description="largest file a program may write (RLIMIT_FSIZE)")
    disk_mb: int = Field(default=64, ge=1, le=65536,
                         description="the work folder's size per program (a private tmpfs with namespaces)")
    workers: int = Field(default=2, ge=1, le=64, description="programs run at once")
    isolation: Literal["auto", "namespaces", "process"] = Field(
        default="auto",
        description="auto: namespaces when they work here, else process; namespaces: an error without them",
    )

    @field_validator("k")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(k < 1 for k in value):
            raise ValueError(f"k must list positive integers, got {value}")
        return sorted(set(value))


class CodePass(Evaluator):
    """Functional correctness: the fraction of answers whose program passes its tests (pass@1)."""

    metric = "pass@1"

    def __init__(self, k: Sequence[int] = (1,), timeout: float = 10.0, memory_mb: int = 512,
                 processes: int = 16, file_mb: int = 16, workers: int = 2,
                 isolation: Literal["auto", "namespaces", "process"] = "auto", disk_mb: int = 64) -> None:
        self.ks = sorted(set(k))
        self.workers = workers
        self.sandbox = Sandbox(Limits(timeout=timeout, memory_mb=memory_mb, processes=processes,
                                      file_mb=file_mb, disk_mb=disk_mb), isolation=isolation)

    def programs(self, samples: Sequence[Sample], texts: Sequence[str]) -> list[tuple[Job | None, str, str]]:
        """``(job, how, solution)`` for each answer; the job is None when the answer holds no code."""
        out: list[tuple[Job | None, str, str]] = []
        exposed: dict[str, tuple[str, ...]] = {}
        for s, text in zip(samples, texts):
            meta = s.meta or {}
            prompt, entry = meta.get("code_prompt", "") or "", meta.get("entry_point")
            code, how = solution(text, code_prompt=prompt, entry_point=entry, stops=tuple(meta.get("stops", ())))
            answer = code[len(prompt):] if how == "completion" else code
            if not answer.strip():
                out.append((None, "empty", ""))
                continue
            tests = meta.get("tests", s.target)
            tests = tests if isinstance(tests, str) else "\n".join(tests)
            if entry:  # HumanEval: the prompt (trusted) runs with the tests, the entry point is the solution's
                job = Job(code, tests, prelude=prompt, expose=(entry,))
            else:  # MBPP: what the reference solution defines is what the tests call
                reference = meta.get("reference") or ""
                if reference not in exposed:
                    exposed[reference] = defined_names(reference)
                job = Job(code, tests, expose=exposed[reference])
            out.append((job, how, code))
        return out

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        if ctx.mode != "generate":
            raise ValueError(f"code_pass runs generated code: set 'mode: generate' for dataset '{ctx.dataset}'")
        if len(samples) != len(outputs):
            raise ValueError(f"code_pass: {len(outputs)} outputs for {len(samples)} samples")
        texts = [o.text for o in outputs]
        built = self.programs(samples, texts)
        to_run = [i for i, b in enumerate(built) if b[0] is not None]
        jobs = [b[0] for b in built if b[0] is not None]
        results: dict[int, ExecResult] = {}
        if to_run:
            results = dict(zip(to_run, self.sandbox.run_many(jobs, workers=self.workers)))
        passed = [results[i].passed if i in results else False for i in range(len(samples))]
        # pool the samples of each problem for pass@k
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            groups[str((s.meta or {}).get("problem", s.id))].append(i)
        per_problem: dict[str, dict[str, float]] = {}
        for problem, idx in groups.items():
            n, c = len(idx), sum(passed[i] for i in idx)
            per_problem[problem] = {f"pass@{k}": pass_at_k(n, c, k) for k in self.ks if k <= n}
        mode = self.sandbox.mode.name
        log.info("code_sandbox", dataset=ctx.dataset, mode=mode, layers=self.sandbox.layers,
                 programs=len(to_run), passed=sum(passed))
        scored = []
        for i, s in enumerate(samples):
            res = results.get(i)
            problem = str((s.meta or {}).get("problem", s.id))
            extra: dict[str, Any] = dict(per_problem[problem])
            extra.update(
                how=built[i][1],
                status=res.status if res else "failed",
                reason=res.reason if res else "no code in the answer",
                seconds=res.seconds if res else 0.0,
                sandbox=mode,
            )
            if res is not None and res.status == "error":
                raise RuntimeError(f"code_pass: the sandbox failed for {s.id}: {res.reason}")
            scored.append(ScoredSample(s.id, s.subset, float(passed[i]), built[i][2][:4000], extra))
        return scored
