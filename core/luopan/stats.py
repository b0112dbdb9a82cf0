"""Uncertainty of scores: standard errors, 95% intervals, their propagation, paired tests. Pure Python, O(n).

* The mean of per-item scores: ``SE = sd / sqrt(n)`` (``sd`` with n - 1), interval ``mean ± t SE`` with
  Student's t quantile for n - 1 degrees of freedom (1.96 for large n) (:func:`estimate_mean`,
  :func:`from_moments`). Shards merge exactly (:func:`pool`).
* A mean over subsets, each counting once: ``SE = sqrt(sum se_i^2) / k`` (:func:`mean_of_means`), the
  interval's degrees of freedom by Welch-Satterthwaite.
* A mean over every item of several subsets (each item counting once): the clustered standard error with the
  subsets as clusters, ``SE^2 = G/(G-1) * sum_c (sum_{i in c} (s_i - mean))^2 / N^2`` (Miller 2024, "Adding
  Error Bars to Evals", appendix A, with inspect_ai's finite-cluster factor), which needs only each subset's
  ``n`` and mean, and G - 1 degrees of freedom; with fewer than :data:`MIN_CLUSTERS` subsets the subsets are
  fixed strata instead, ``SE^2 = sum (n_i/N)^2 se_i^2`` (:func:`weighted_mean`; :func:`clustered_se` is the
  item-level formula).
* Any other statistic of per-item values: a seeded bootstrap with a bounded number of resamples, its interval
  the expanded percentile interval (Hesterberg 2015: the percentiles moved out so that a mean of n items
  would get its t interval) (:func:`bootstrap`).
* Paired comparisons: :func:`paired_bootstrap` (the difference of two models on the same items),
  :func:`mcnemar_exact` (two-sided binomial test on the discordant pairs) and :func:`holm` (step-down
  correction across several tests).
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

__all__ = [
    "Z95", "MIN_CLUSTERS", "DEFAULT_RESAMPLES", "MAX_DRAWS", "Estimate", "estimate_mean", "from_moments", "pool",
    "mean_of_means", "weighted_mean", "clustered_se", "bootstrap", "paired_bootstrap", "percentile",
    "mcnemar_exact", "holm", "normal_p", "overlap", "seed_of", "t_quantile",
]

#: the standard normal quantile of 0.975 (a large sample's 95% interval is ``value ± Z95 * se``)
Z95 = 1.959963984540054
#: the fewest subsets for the clustered standard error (fewer clusters estimate it too poorly)
MIN_CLUSTERS = 10
#: bootstrap resamples when none are asked for
DEFAULT_RESAMPLES = 1000
#: at most this many items drawn by one bootstrap (resamples x items): fewer resamples for big sets
MAX_DRAWS = 2_000_000
#: never fewer resamples than this, whatever the set's size
MIN_RESAMPLES = 200


@dataclass(frozen=True, slots=True)
class Estimate:
    """A statistic with its uncertainty: ``value``, standard error ``se``, 95% interval ``ci`` (low, high),
    the ``n`` items behind it and ``method`` ("mean", "mean of subsets", "clustered", "strata",
    "bootstrap"). ``sd`` is the items' standard deviation where the value is their mean (it lets means of
    disjoint parts merge exactly). ``se`` and ``ci`` are None where they cannot be estimated (one item). ``df``
    is the degrees of freedom of the interval's t quantile (None: n - 1)."""

    value: float | None
    se: float | None
    ci: tuple[float, float] | None
    n: int
    method: str = "mean"
    sd: float | None = None
    df: float | None = None

    @property
    def dof(self) -> float:
        """The degrees of freedom of this estimate's standard error (``df``, else n - 1, at least 1)."""
        return self.df if self.df is not None else float(max(self.n - 1, 1))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, without the value (it is stored beside it): n, se, ci, method and sd if known."""
        out: dict[str, Any] = {"n": self.n, "se": self.se, "ci": list(self.ci) if self.ci else None,
                               "method": self.method}
        if self.sd is not None:
            out["sd"] = self.sd
        return out

    def scaled(self, k: float) -> Estimate:
        """The same estimate in other units (``k = 100`` for percentages)."""
        def s(x: float | None) -> float | None:
            return None if x is None else x * k
        ci = None if self.ci is None else (self.ci[0] * k, self.ci[1] * k)
        if k < 0 and ci is not None:
            ci = (ci[1], ci[0])
        return Estimate(s(self.value), None if self.se is None else self.se * abs(k), ci, self.n, self.method,
                        None if self.sd is None else self.sd * abs(k), self.df)

    @classmethod
    def from_dict(cls, value: float | None, d: dict[str, Any] | None) -> Estimate:
        """The inverse of :meth:`to_dict`: ``d`` as stored beside ``value`` (None: no uncertainty known)."""
        if not d:
            return cls(value, None, None, 0, "unknown")
        ci = d.get("ci")
        return cls(value, d.get("se"), (ci[0], ci[1]) if ci else None, int(d.get("n", 0)), d.get("method", "mean"),
                   d.get("sd"))


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher expansion around the
    normal quantile (within 0.2% of the exact value at p = 0.975 for df >= 3; the normal quantile as df grows).
    A fractional df below 3 (Welch-Satterthwaite's) is interpolated linearly in 1/df."""
    if df <= 1:
        return math.tan(math.pi * (p - 0.5))
    if df < 3 and df != int(df):
        lo, hi = math.floor(df), math.ceil(df)
        w = (1 / df - 1 / hi) / (1 / lo - 1 / hi)
        return w * t_quantile(p, lo) + (1 - w) * t_quantile(p, hi)
    if df <= 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    z2 = z * z
    g1 = (z2 + 1) * z / 4
    g2 = ((5 * z2 + 16) * z2 + 3) * z / 96
    g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384
    g4 = ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@lru_cache(maxsize=4096)
def _t975(df: float) -> float:
    return t_quantile(0.975, df)


def _interval(value: float | None, se: float | None, df: float) -> tuple[float, float] | None:
    if value is None or se is None:
        return None
    h = _t975(df) * se
    return (value - h, value + h)


def from_moments(n: int, mean: float | None, sd: float | None, method: str = "mean") -> Estimate:
    """The mean of ``n`` items whose standard deviation is ``sd``: SE = sd / sqrt(n), the t interval."""
    se = sd / math.sqrt(n) if sd is not None and n > 1 else None
    return Estimate(mean, se, _interval(mean, se, max(n - 1, 1)), n, method, sd)


def _satterthwaite(terms: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variances ``(variance, df)``."""
    total = sum(v for v, _ in terms)
    denom = sum(v * v / d for v, d in terms)
    return total * total / denom if denom > 0 else float(sum(d for _, d in terms))


def estimate_mean(values: Sequence[float]) -> Estimate:
    """The mean of per-item values with SE = sd / sqrt(n) and the normal 95% interval (two passes, O(n));
    one item has no standard error."""
    n = len(values)
    if n == 0:
        return Estimate(None, None, None, 0)
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, None, None, 1)
    ss = sum((x - mean) * (x - mean) for x in values)
    return from_moments(n, mean, math.sqrt(ss / (n - 1)))


def pool(parts: Sequence[tuple[int, float | None, float | None]]) -> tuple[int, float | None, float | None]:
    """``(n, mean, sd)`` of disjoint parts combined into those of their union, exactly (the sums of squares
    add, plus the spread of the parts' means). ``sd`` is None when a part with two or more items lacks it."""
    parts = [p for p in parts if p[0] > 0 and p[1] is not None]
    n = sum(p[0] for p in parts)
    if n == 0:
        return 0, None, None
    mean = sum(p[0] * p[1] for p in parts) / n  # type: ignore[operator]
    if n == 1:
        return 1, mean, None
    ss = 0.0
    for k, m, sd in parts:
        if sd is None and k > 1:
            return n, mean, None
        ss += (k - 1) * (sd or 0.0) ** 2 + k * (m - mean) ** 2  # type: ignore[operator]
    return n, mean, math.sqrt(max(ss, 0.0) / (n - 1))


def mean_of_means(parts: Sequence[Estimate]) -> Estimate:
    """The mean of ``k`` estimates from independent items, each counting once (a benchmark's mean over
    subjects): SE = sqrt(sum se_i^2) / k; None when any part has no SE."""
    parts = [p for p in parts if p.value is not None]
    k = len(parts)
    if k == 0:
        return Estimate(None, None, None, 0, "mean of subsets")
    if k == 1:
        return parts[0]
    value = sum(p.value for p in parts) / k  # type: ignore[misc]
    n = sum(p.n for p in parts)
    if any(p.se is None for p in parts):
        return Estimate(value, None, None, n, "mean of subsets")
    se = math.sqrt(sum(p.se * p.se for p in parts)) / k  # type: ignore[operator]
    df = _satterthwaite([(p.se * p.se, p.dof) for p in parts])  # type: ignore[operator]
    return Estimate(value, se, _interval(value, se, df), n, "mean of subsets", df=df)


def weighted_mean(parts: Sequence[Estimate], min_clusters: int = MIN_CLUSTERS) -> Estimate:
    """The mean over every item of ``parts`` (each part weighted by its ``n``). Its standard error is the
    clustered one with each part a cluster when there are at least ``min_clusters`` parts (it needs only the
    parts' ``n`` and means), else that of fixed strata, sqrt(sum (n_i/N)^2 se_i^2). ``sd`` is the pooled
    standard deviation of the items where every part has one."""
    parts = [p for p in parts if p.value is not None and p.n > 0]
    if not parts:
        return Estimate(None, None, None, 0, "strata")
    if len(parts) == 1:
        return parts[0]
    big_n = sum(p.n for p in parts)
    value = sum(p.n * p.value for p in parts) / big_n  # type: ignore[operator]
    _, _, sd = pool([(p.n, p.value, p.sd) for p in parts])
    g = len(parts)
    if g >= min_clusters:
        sq = sum((p.n * (p.value - value)) ** 2 for p in parts)  # type: ignore[operator]
        se: float | None = math.sqrt(sq * g / (g - 1)) / big_n
        method, df = "clustered", float(g - 1)
    elif any(p.se is None for p in parts):
        se, method, df = None, "strata", 1.0
    else:
        terms = [((p.n * p.se / big_n) ** 2, p.dof) for p in parts]  # type: ignore[operator]
        se = math.sqrt(sum(v for v, _ in terms))
        method, df = "strata", _satterthwaite(terms)
    return Estimate(value, se, _interval(value, se, df), big_n, method, sd, df)


def clustered_se(values: Sequence[float], clusters: Sequence[Hashable]) -> float | None:
    """The clustered standard error of the mean of ``values`` (item-level; ``clusters[i]`` is item i's
    cluster): sqrt(G/(G-1) * sum_c (sum_{i in c} (v_i - mean))^2) / N. None with fewer than two clusters."""
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    sums: dict[Hashable, float] = {}
    for v, c in zip(values, clusters):
        sums[c] = sums.get(c, 0.0) + (v - mean)
    g = len(sums)
    if g < 2:
        return None
    return math.sqrt(sum(s * s for s in sums.values()) * g / (g - 1)) / n


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, interpolated linearly between order statistics (numpy's
    default)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _resamples(n: int, resamples: int | None) -> int:
    if resamples is not None:
        return max(1, int(resamples))
    return max(MIN_RESAMPLES, min(DEFAULT_RESAMPLES, MAX_DRAWS // max(n, 1)))


def bootstrap(values: Sequence[float], statistic: Callable[[Sequence[float]], float], *,
              resamples: int | None = None, seed: int = 0) -> Estimate:
    """``statistic(values)`` with a seeded percentile bootstrap: ``resamples`` draws of ``len(values)`` items
    with replacement (default :data:`DEFAULT_RESAMPLES`, fewer for big sets so that at most :data:`MAX_DRAWS`
    items are drawn, never fewer than :data:`MIN_RESAMPLES`); ``se`` is the replicates' standard deviation,
    ``ci`` their 2.5% and 97.5% percentiles. The same values and seed give the same interval."""
    n = len(values)
    if n == 0:
        return Estimate(None, None, None, 0, "bootstrap")
    value = statistic(values)
    if n == 1:
        return Estimate(value, None, None, 1, "bootstrap")
    rng = random.Random(seed)
    b = _resamples(n, resamples)
    pool_ = list(values)
    reps = sorted(statistic(rng.choices(pool_, k=n)) for _ in range(b))
    m = sum(reps) / b
    se = math.sqrt(sum((r - m) ** 2 for r in reps) / (b - 1)) if b > 1 else 0.0
    q = NormalDist().cdf(math.sqrt(n / (n - 1)) * _t975(n - 1))
    return Estimate(value, se, (percentile(reps, 1 - q), percentile(reps, q)), n, "bootstrap")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int | None = None,
                     seed: int = 0) -> Estimate:
    """The difference ``mean(b) - mean(a)`` over paired items (``a[i]`` and ``b[i]`` are two models' scores
    on item i), with a seeded percentile bootstrap that resamples the pairs together."""
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap: {len(a)} and {len(b)} values: pairs need the same items")
    d = [y - x for x, y in zip(a, b)]
    return bootstrap(d, _mean, resamples=resamples, seed=seed)


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact test: the two-sided binomial p-value of ``b`` against ``c`` discordant pairs
    (p = 0.5), ``min(1, 2 * P(X <= min(b, c)))`` for X ~ Binomial(b + c, 1/2); computed in integers."""
    if b < 0 or c < 0:
        raise ValueError("mcnemar_exact: counts cannot be negative")
    n, k = b + c, min(b, c)
    if n == 0 or 2 * k == n:
        return 1.0
    term, total = 1, 1  # C(n, 0), and the running sum of C(n, j) for j <= k
    for j in range(k):
        term = term * (n - j) // (j + 1)
        total += term
    return min(1.0, total / (1 << (n - 1)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``pvalues`` (in their order): the i-th smallest is multiplied by
    ``m - i + 1``, made monotone, capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def normal_p(z: float) -> float:
    """The two-sided p-value of a standard normal statistic ``z``."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Whether two intervals overlap (False when either is unknown)."""
    if a is None or b is None:
        return False
    return a[0] <= b[1] and b[0] <= a[1]


def seed_of(*parts: Any) -> int:
    """A stable seed from labels (the same in every process and Python version): bootstraps are reproducible
    and each statistic gets its own stream."""
    return zlib.crc32("\x00".join(map(str, parts)).encode("utf-8"))
