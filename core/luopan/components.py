"""The component classes that plugins implement. Hooks *register* these; the hot path calls their methods.

A plugin registers a factory for each component (see :mod:`luopan.hookspecs`); the kernel calls the factory
with the validated parameters when a run needs the component, so heavy imports (torch, openai, ...) happen
inside the factory, never at registration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from luopan.types import (
    FailedResult,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ModelKind,
    Result,
    Sample,
    ScoredSample,
)


class Component(ABC):  # noqa: B024 - a base for the classmethod; the kinds below are the abstract ones
    """What every component class shares: how the registry builds it from its validated params object."""

    @classmethod
    def from_params(cls, params: Any) -> Any:
        """Build from the validated params object (the registered pydantic model's instance, or None). The
        default passes its fields (``model_dump()``) to ``__init__`` as keyword arguments; a class that wants
        the object itself overrides this."""
        if params is None:
            return cls()
        return cls(**params.model_dump())

    @classmethod
    def environment(cls) -> list[str]:
        """Why this component cannot work in this environment at all (a missing package, no GPU for a GPU-only
        engine), one line each with the fix; empty when it can. Cheap: finds packages without importing them.
        ``luopan plugins`` lists these, and :meth:`preflight` includes them."""
        return []

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """Everything that would stop this component with these options, found before anything loads: the
        environment's problems plus missing keys, data files, model files, unusable devices. One line each,
        saying what to do. ``luopan validate`` and the start of ``luopan run`` report every problem of every
        entry at once. The default is :meth:`environment`."""
        return cls.environment()


class Backend(Component):
    """A model behind a uniform interface.

    Results come back in request order. ``identity()`` names everything that changes outputs (backend name,
    weights and their version, dtype, backend options that affect numerics): it is part of every request's
    cache key and of every result's provenance.
    """

    #: ``"base"`` (likelihood scoring by default) or ``"chat"`` (chat template, generation by default)
    kind: ModelKind = "base"
    #: what the backend can do: a subset of {"loglikelihood", "generate"}
    capabilities: frozenset[str] = frozenset({"loglikelihood", "generate"})
    #: how many requests the kernel hands over per call (each call's results are cached before the next)
    chunk_size: int = 256
    #: whether every copy of this backend in a run must share state through :mod:`luopan.limits` (an API's
    #: rate-limit schedule and its Retry-After pauses): a runner that spreads a model over several processes
    #: installs a shared state in each of them only when this is true
    shares_state: bool = False
    #: price per million tokens (``{"prompt": 0.5, "completion": 1.5, "currency": "USD"}``) for the cost line
    price: dict[str, Any] | None = None
    #: the kernel sets this before requests are sent: ``status("retrying 2 requests: connection refused to
    #: HOST, next try in 12 s")`` shows what the backend is doing on the console as it happens ("" clears it);
    #: call it from the thread that runs :meth:`stream` (not from an event loop's or a pool's threads)
    status: Callable[[str], None] = staticmethod(lambda message: None)

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Cheap (no weights loaded): called at plan time to build cache keys."""

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights / open connections. Called once, only when a request is not in the cache."""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        raise NotImplementedError(f"{type(self).__name__} cannot score log-likelihoods")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        raise NotImplementedError(f"{type(self).__name__} cannot generate")

    def stream(self, mode: str, requests: Sequence[Any]) -> Iterator[tuple[int, Result | FailedResult]]:
        """Answer ``requests`` and yield ``(index, result)`` pairs as they complete, in any order.

        The kernel caches what it receives as it goes (every ``chunk_size`` results, at most ten commits a second and at least one), so an
        interruption loses little. The default calls :meth:`loglikelihood` or :meth:`generate` one
        ``chunk_size`` at a time; concurrent backends (API clients) override it to yield each answer the
        moment it arrives. A result may be a :class:`~luopan.types.FailedResult` for a request that failed
        on its own; raising fails the whole unit (what was yielded before is kept).
        """
        call = self.loglikelihood if mode == "likelihood" else self.generate
        chunk = max(1, int(self.chunk_size))
        for start in range(0, len(requests), chunk):
            part = requests[start : start + chunk]
            outs = call(part)
            if len(outs) != len(part):
                raise RuntimeError(f"backend returned {len(outs)} results for {len(part)} requests")
            yield from enumerate(outs, start)

    def runtime(self) -> dict[str, Any]:
        """What a result's provenance should record about the engine that is not part of the cache key
        (library versions, resolved device and dtype, batch size): settings that should not change outputs but
        can (batched kernels and padding round differently). Called after the run's units, cheap."""
        return {}

    @classmethod
    def ships_chat_template(cls, params: Any) -> bool | None:
        """Whether the model these options name ships a chat template, found cheaply (a tokenizer config read,
        no weights); None when it cannot tell. A model entry without ``kind`` whose model has one is warned
        about: it would be scored as a base model."""
        return None

    def estimate(self, requests: Sequence[Any]) -> dict[str, Any]:
        """Before a run (``--dry-run``): what answering ``requests`` would cost. The default says nothing;
        API backends report requests, tokens, money and the time their rate limit implies."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (GPU memory, server processes)."""


class Dataset(Component):
    """A benchmark: named subsets of samples, with few-shot examples built into the prompts."""

    @abstractmethod
    def subsets(self) -> list[str]: ...

    @abstractmethod
    def load(self, subset: str, *, shots: int = 0) -> list[Sample]:
        """The evaluation samples of ``subset``, prompts rendered with ``shots`` few-shot examples."""

    def categories(self) -> dict[str, list[str]]:
        """Summary groups: category name -> subsets. Empty when the benchmark has none."""
        return {}

    def fingerprint(self) -> str:
        """A hash of the data files read (provenance)."""
        return ""

    def describe(self) -> dict[str, Any]:
        """Prompt template and other settings recorded in provenance."""
        return {}

    #: whether :meth:`load` takes ``order``, a function (question id, number of options) -> the order to show
    #: the options in (``order[k]``: the original index of the option shown k-th), the gold answer following
    #: its text: how ``robustness:`` variants with ``shuffle: true`` ask a question with its options reordered
    reorders_options: bool = False
    #: the evaluator used when the run names none
    default_evaluator: str = "accuracy"
    #: subset label -> human readable name (optional)
    display_names: dict[str, str] = {}


@runtime_checkable
class Components(Protocol):
    """The run's own components, for evaluators that are built from others (a rule inside a judge cascade, a
    needle judge from a model preset): ``ctx.components`` builds them from the run's registry, never from a
    process-wide one, so two runs with different plugin sets in one process do not see each other's."""

    def evaluator(self, name: str, params: dict[str, Any] | None = None) -> Evaluator: ...

    def backend(self, name: str, params: dict[str, Any] | None = None) -> Backend: ...

    def preset(self, kind: str, name: str) -> dict[str, Any]: ...


#: ``judge_generate(conversations, *, judge=None, config=None)``: see :class:`EvalContext`
JudgeGenerate = Callable[..., list[GenerationResult | FailedResult]]


@dataclass(slots=True)
class EvalContext:
    """What an evaluator may need beyond samples and outputs.

    Model-based judging: ``judges`` are the labels of the judge models this dataset uses (the run's ``judges:``,
    or models named by the dataset's ``judge:``). ``judge_generate(
    conversations, judge=None, config=None)`` asks a judge (default: the first): each conversation is a sequence
    of ``(role, content)`` pairs; the judge's system prompt and ``generation:`` settings are applied unless
    ``config`` is given. Answers go through the run's request cache (a rerun makes no judge call that was
    answered before) and come back in order; a request the judge's backend could not answer is a
    :class:`~luopan.types.FailedResult` (never cached: a rerun retries it). ``peer_outputs(model)`` returns
    another model of this run's outputs on the same samples (generated or read from the cache), for evaluators
    that compare models, and ``models`` lists the run's model labels. ``components`` builds other evaluators and
    backends from the run's own registry (:class:`Components`).
    """

    mode: str
    model: str
    dataset: str
    params: dict[str, Any] = field(default_factory=dict)
    judges: list[str] = field(default_factory=list)
    judge_generate: JudgeGenerate | None = None
    peer_outputs: Callable[[str], list[Any]] | None = None
    models: list[str] = field(default_factory=list)
    #: the run's components (other evaluators, backends, presets); None outside a run
    components: Components | None = None


class Evaluator(Component):
    """Turns model outputs into per-sample scores.

    ``outputs[i]`` belongs to ``samples[i]``: in likelihood mode a list of :class:`LoglikelihoodResult`, one
    per choice; in generate mode a :class:`GenerationResult` whose text is the answer without a reasoning
    model's thinking (the model's rule, :mod:`luopan.reasoning`; the raw text stays in the predictions).
    ``ctx.peer_outputs`` and ``ctx.judge_generate`` return answers cut the same way, each by its model's rule.
    """

    #: name of the primary metric (reported as the score)
    metric: str = "accuracy"
    #: metrics in ``ScoredSample.extra`` that are not the mean of their per-question values: name -> (the extra
    #: they are computed from, a function of that extra's per-question values), e.g. ``{"perplexity":
    #: ("logprob", lambda lls: math.exp(-sum(lls) / len(lls)))}``. The kernel computes such a metric per subset
    #: from the function, and its standard error and 95% interval by a seeded bootstrap (the mean of
    #: per-question values, every other metric, gets them analytically).
    derived_metrics: dict[str, tuple[str, Callable[[Sequence[float]], float]]] = {}

    @abstractmethod
    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]: ...


@dataclass(slots=True)
class UnitResult:
    """The outcome of one unit (model x dataset x shard), successful or not."""

    model: str
    dataset: str
    metric: str = "accuracy"
    subsets: list[dict[str, Any]] = field(default_factory=list)  # {"subset", "n", "score", "metrics"}
    categories: dict[str, list[str]] = field(default_factory=dict)
    display_names: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    #: samples whose requests failed (``{"id", "subset", "error"}``); a rerun retries only these
    failed_items: list[dict[str, Any]] = field(default_factory=list)
    #: the comparability hash of the dataset's settings (data files, prompt, shots, mode, evaluator, generation
    #: settings; not the model): two scores are comparable only where it is the same (OpenCompass's "version")
    version: str = ""


@dataclass(slots=True)
class SummaryTable:
    """A summary: ``columns`` headers and ``rows`` of cells (str or float or None). ``stats`` (optional, one
    mapping per row) gives the uncertainty of numeric cells: column name -> ``{"se", "ci": [low, high], "n",
    "method", ...}`` in the cell's units; summary.md shows such a cell as ``value ± half-width`` (or
    ``value [low, high]`` for an asymmetric interval), summary.csv adds ``<column> se``, ``<column> ci_low``
    and ``<column> ci_high`` columns."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    stats: list[dict[str, dict[str, Any]]] = field(default_factory=list)


class Summarizer(Component):
    @abstractmethod
    def summarize(self, results: Sequence[UnitResult]) -> list[SummaryTable]: ...


class Runner(Component):
    """Executes units. ``execute(unit)`` does one unit and returns its :class:`UnitResult` (a unit that fails is
    recorded as its result; the run goes on). Runners that answer requests elsewhere (other processes, other
    machines) get what they need through :meth:`attach` before :meth:`run`."""

    def attach(self, host: Any) -> None:  # noqa: B027 - optional hook
        """Called once before :meth:`run` with the run's :class:`luopan.hookspecs.RunnerHost`."""

    def plan_lines(self, units: Sequence[Any]) -> list[str]:
        """What ``luopan run --dry-run`` prints about where the units would run (the local runner: nothing).
        Called after :meth:`attach`; it must start and submit nothing."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`attach` or :meth:`run` acquired (workers, a cluster connection)."""

    @abstractmethod
    def run(self, units: Sequence[Any], execute: Callable[[Any], UnitResult]) -> list[UnitResult]: ...
