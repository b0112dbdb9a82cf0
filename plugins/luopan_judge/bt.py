"""Bradley-Terry ratings from pairwise battles, on the Elo scale, with bootstrap intervals.

P(i beats j) = 1 / (1 + 10 ** ((R_j - R_i) / 400)). The ratings are the maximum-likelihood fit (Newton's method on
the logistic log-likelihood; a tie counts as half a win for each side, as Chatbot Arena and FastChat count them),
with a very weak ridge (``ridge``, in natural-log units) so that an undefeated model gets a large but finite rating.
Ratings are anchored: the ``anchor`` model (the baseline) at ``anchor_rating``, else their mean at it.

Intervals come from a bootstrap over *questions* (the battles of one question, both orders and every pair, are
resampled together: they are not independent), ``rounds`` resamples, seeded. All resamples are fitted at once:
the battles reduce to win counts per ordered pair, a resample is a vector of question weights, and Newton's method
runs on a (rounds x models) array, so 1,000 resamples of a few thousand battles take well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SCALE = 400.0 / math.log(10.0)  # Elo points per natural-log unit of odds


@dataclass
class Battle:
    """One comparison: ``outcome`` is 1.0 (``a`` won), 0.0 (``b`` won) or 0.5 (tie)."""

    a: str
    b: str
    outcome: float
    question: str = ""
    source: str = ""  # the judge's label, or the votes file's annotator
    weight: float = 1.0


@dataclass
class Ratings:
    models: list[str]
    rating: dict[str, float]
    low: dict[str, float] = field(default_factory=dict)
    high: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    anchor: str | None = None
    n_battles: int = 0
    n_questions: int = 0

    def order(self) -> list[str]:
        return sorted(self.models, key=lambda m: -self.rating[m])


def _design(battles: Sequence[Battle], models: Sequence[str]) -> tuple[Any, Any, Any, list[str]]:
    """Pairs (i, j) with i < j, and per question the wins of i over j and the battles between them:
    ``wins[q, p]`` and ``games[q, p]`` (weighted)."""
    import numpy as np

    index = {m: k for k, m in enumerate(models)}
    questions = list(dict.fromkeys(b.question for b in battles))
    qindex = {q: k for k, q in enumerate(questions)}
    pairs: dict[tuple[int, int], int] = {}
    rows: list[tuple[int, int, float, float]] = []
    for b in battles:
        i, j = index[b.a], index[b.b]
        if i == j:
            continue
        o = b.outcome
        if i > j:
            i, j, o = j, i, 1.0 - o
        p = pairs.setdefault((i, j), len(pairs))
        rows.append((qindex[b.question], p, o * b.weight, b.weight))
    wins = np.zeros((len(questions), len(pairs)))
    games = np.zeros((len(questions), len(pairs)))
    for q, p, w, g in rows:
        wins[q, p] += w
        games[q, p] += g
    ij = np.array(list(pairs), dtype=int).reshape(-1, 2)
    return ij, wins, games, questions


def _newton(ij: Any, wins: Any, games: Any, m: int, ridge: float, iters: int = 50) -> Any:
    """MLE of the natural-scale strengths for each row of ``wins``/``games`` (shape R x P): returns R x m."""
    import numpy as np

    r = wins.shape[0]
    theta = np.zeros((r, m))
    if ij.size == 0:
        return theta
    x = np.zeros((ij.shape[0], m))  # P x m: +1 for i, -1 for j
    x[np.arange(ij.shape[0]), ij[:, 0]] = 1.0
    x[np.arange(ij.shape[0]), ij[:, 1]] = -1.0
    eye = np.eye(m)
    for _ in range(iters):
        d = theta @ x.T                                   # R x P
        p = 1.0 / (1.0 + np.exp(-d))
        grad = (wins - games * p) @ x - ridge * theta      # R x m
        w = games * p * (1.0 - p)                          # R x P
        hess = np.einsum("rp,pi,pj->rij", w, x, x) + ridge * eye  # R x m x m (negative Hessian)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        theta = theta + step
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta


def fit(battles: Sequence[Battle], models: Sequence[str] | None = None, *, anchor: str | None = None,
        anchor_rating: float = 1000.0, rounds: int = 1000, seed: int = 0, ridge: float = 0.01) -> Ratings:
    """Bradley-Terry ratings of ``models`` (default: every model in ``battles``) with 95% bootstrap intervals
    (``rounds=0``: no intervals)."""
    import numpy as np

    if models is None:
        models = list(dict.fromkeys([b.a for b in battles] + [b.b for b in battles]))
    models = list(models)
    known = set(models)
    battles = [b for b in battles if b.a in known and b.b in known and b.a != b.b]
    m = len(models)
    ij, wins, games, questions = _design(battles, models)

    def anchored(theta: Any) -> Any:
        elo = SCALE * theta
        ref = elo[..., models.index(anchor)] if anchor in known else elo.mean(axis=-1)
        return elo - ref[..., None] + anchor_rating

    point = anchored(_newton(ij, wins.sum(0, keepdims=True), games.sum(0, keepdims=True), m, ridge))[0]
    out = Ratings(models, {mod: float(point[k]) for k, mod in enumerate(models)}, rounds=rounds,
                  anchor=anchor if anchor in known else None, n_battles=len(battles), n_questions=len(questions))
    if rounds and questions:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(len(questions), np.full(len(questions), 1.0 / len(questions)), size=rounds)
        boot = anchored(_newton(ij, counts @ wins, counts @ games, m, ridge))
        lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
        out.low = {mod: float(lo[k]) for k, mod in enumerate(models)}
        out.high = {mod: float(hi[k]) for k, mod in enumerate(models)}
    return out


def expected_win(ra: float, rb: float) -> float:
    """P(a beats b) for Elo ratings ``ra``, ``rb``."""
    return 1.0 / (1.0 + 10.0 ** ((rb - ra) / 400.0))
