"""The plain data that crosses the kernel's seams: samples, requests, results.

These are deliberately small dataclasses with no behaviour beyond serialisation: backends, datasets and
evaluators are written against them, and the request cache keys on their canonical JSON form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["likelihood", "generate"]
ModelKind = Literal["base", "chat"]


@dataclass(frozen=True, slots=True)
class GenerationConfig:
    """Decoding parameters. Every field is part of the request cache key."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def as_key(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "seed": self.seed,
        }


@dataclass(slots=True)
class Sample:
    """One evaluation item, as a dataset plugin hands it to the kernel.

    ``prompt`` is the full text a base model continues (few-shot examples included); ``prefix`` is the
    leading part of ``prompt`` that many samples share (the few-shot block), a hint that lets a backend
    compute it once. ``choices`` are the continuations scored in likelihood mode; ``target`` is the gold
    answer (an index into ``choices`` for multiple choice, a string otherwise). ``messages`` is the chat
    form of the prompt, when the dataset has one; otherwise chat models get ``chat_prompt`` (or ``prompt``)
    as a single user turn.
    """

    id: str
    subset: str
    prompt: str
    target: Any
    choices: list[str] | None = None
    prefix: str = ""
    chat_prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: a multi-turn conversation's user turns (MT-Bench): chat models answer ``turns[0]`` (after ``messages``,
    #: when given), then each next turn with their own earlier answers in the history; each turn is one cached
    #: request. ``prompt``/``chat_prompt`` hold the first turn.
    turns: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class LoglikelihoodRequest:
    """Score ``continuation`` after ``context``: log P(continuation | context).

    ``prefix`` (a leading part of ``context``, possibly empty) is shared with other requests of the same
    batch; backends may compute its state once and reuse it. It never changes the result.
    """

    context: str
    continuation: str
    prefix: str = ""

    def key_parts(self) -> tuple[str, ...]:
        """What identifies this request in the cache (with the backend identity). ``prefix`` is only a hint."""
        return ("loglikelihood", self.context, self.continuation)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Generate text from either a plain ``prompt`` (base models) or chat ``messages`` (chat models)."""

    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...): hashable and ordered
    config: GenerationConfig = field(default_factory=GenerationConfig)
    #: the sample this request answers (a hint for backends that look answers up, e.g. pregenerated answer
    #: files); not part of the cache key nor of equality: the same prompt is the same request
    sample_id: str | None = field(default=None, compare=False)

    def key_parts(self) -> tuple[str, ...]:
        import json

        messages = json.dumps(self.messages, ensure_ascii=False) if self.messages is not None else ""
        config = json.dumps(self.config.as_key(), sort_keys=True)
        return ("generate", "" if self.prompt is None else "p" + self.prompt, messages, config)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in (self.messages or ())]


@dataclass(slots=True)
class LoglikelihoodResult:
    logprob: float
    is_greedy: bool = False
    n_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"logprob": self.logprob, "is_greedy": self.is_greedy, "n_tokens": self.n_tokens}

    def to_json(self) -> str:
        """Compact cache form: ``[logprob, is_greedy, n_tokens]`` (decoded by :func:`result_from_json`)."""
        lp = self.logprob
        if lp - lp != 0.0:  # NaN or an infinity: JSON has no literal for them
            import json

            return json.dumps([lp, int(self.is_greedy), self.n_tokens])
        return f"[{lp!r},{1 if self.is_greedy else 0},{self.n_tokens}]"


@dataclass(slots=True)
class GenerationResult:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationResult:
        return cls(d["text"], d.get("prompt_tokens"), d.get("completion_tokens"), d.get("finish_reason"))

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(slots=True)
class FailedResult:
    """A request that could not be answered (a 401, a context-length error, retries exhausted).

    Backends return it in a request's place instead of raising, so the other requests of the call still
    count. It is never cached: rerunning the same command retries exactly the failed requests.
    """

    error: str

    def to_json(self) -> str:  # pragma: no cover - guarded: the cache refuses failed results
        raise TypeError("a FailedResult is never cached")


@dataclass(slots=True)
class ConversationResult:
    """The answers of a multi-turn sample (:attr:`Sample.turns`), one :class:`GenerationResult` per user turn.

    It reads like the last turn's result (``text``, ``finish_reason``), so evaluators of a final answer need no
    change; token counts are the sum over turns. Never cached itself: each turn is cached as its own request."""

    turns: list[GenerationResult]

    @property
    def text(self) -> str:
        return self.turns[-1].text

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.turns]

    @property
    def finish_reason(self) -> str | None:
        return self.turns[-1].finish_reason

    @property
    def prompt_tokens(self) -> int | None:
        return sum(t.prompt_tokens or 0 for t in self.turns)

    @property
    def completion_tokens(self) -> int | None:
        return sum(t.completion_tokens or 0 for t in self.turns)


def result_from_json(text: str) -> LoglikelihoodResult | GenerationResult:
    """Decode a cached result: a JSON array is a log-likelihood, an object a generation. Anything else (a
    damaged or foreign value) raises ``ValueError``: the caller treats the entry as missing."""
    v = _loads(text)
    if type(v) is list:
        ll = likelihood_of(v)
        if ll is not None:
            return ll
    elif type(v) is dict and type(v.get("text")) is str and set(v) <= _GENERATION_FIELDS:
        p, c, f = v.get("prompt_tokens"), v.get("completion_tokens"), v.get("finish_reason")
        if all(x is None or type(x) is int for x in (p, c)) and (f is None or type(f) is str):
            return GenerationResult(v["text"], p, c, f)
    raise ValueError(f"not a cached result: {text[:80]!r}")


def likelihood_of(v: Any) -> LoglikelihoodResult | None:
    """A decoded cache value ``[logprob, greedy 0/1, tokens]`` as a log-likelihood; None if it is not one."""
    if (type(v) is list and len(v) == 3 and type(v[0]) in (float, int) and type(v[1]) is int and v[1] in (0, 1)
            and type(v[2]) is int and v[2] >= 0):
        return LoglikelihoodResult(float(v[0]), v[1] == 1, v[2])
    return None


_GENERATION_FIELDS = frozenset({"text", "prompt_tokens", "completion_tokens", "finish_reason"})


def _loads(text: str) -> Any:
    import orjson

    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # -Infinity (an impossible continuation) is written by json, not orjson
        import json

        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"not JSON: {text[:80]!r}") from None


Request = LoglikelihoodRequest | GenerationRequest
Result = LoglikelihoodResult | GenerationResult


@dataclass(slots=True)
class ScoredSample:
    """An evaluator's verdict on one sample: ``score`` is the primary metric (1.0/0.0 for accuracy)."""

    id: str
    subset: str
    score: float | None  # None: not scored (e.g. every judge verdict failed); left out of means, counted
    prediction: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


