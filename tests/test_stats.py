"""luopan.stats: interval coverage on simulated data with known truth, the tests and bootstrap against scipy and
statsmodels, and the propagation of standard errors (shards, subsets, categories, overall rows) checked against
direct computation from the items."""

from __future__ import annotations

import ast
import math
import random
import sys
from pathlib import Path

import pytest

from luopan import stats
from luopan.components import UnitResult
from luopan.scoring import merge_shards, subset_entries
from luopan.types import Sample, ScoredSample
from luopan_summary.default import DefaultSummarizer

SIMULATIONS = 2000


# ---------------------------------------------------------------- coverage


def _coverage(draw) -> float:
    """The share of SIMULATIONS intervals that hold the truth; each simulation has its own fixed seed."""
    hits = 0
    for i in range(SIMULATIONS):
        truth, est = draw(random.Random(i))
        hits += est.ci is not None and est.ci[0] <= truth <= est.ci[1]
    return hits / SIMULATIONS


def _bernoulli(rng: random.Random, p: float, n: int) -> list[float]:
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


def _binary_mean(rng):
    return 0.3, stats.estimate_mean(_bernoulli(rng, 0.3, 200))


def _continuous_mean(rng):  # scores in [0, 1] that are not 0/1 (a judge's rating, pass@k): Beta(2, 5), mean 2/7
    return 2 / 7, stats.estimate_mean([rng.betavariate(2, 5) for _ in range(60)])


P = [0.2, 0.5, 0.7, 0.9, 0.4]
N = [40, 80, 120, 60, 100]


def _mean_of_subsets(rng):  # "overall (mean)": fixed subjects, each counting once
    parts = [stats.estimate_mean(_bernoulli(rng, p, 80)) for p in P]
    return sum(P) / len(P), stats.mean_of_means(parts)


def _weighted_strata(rng):  # "overall (weighted)" with few subsets: the subsets as strata
    parts = [stats.estimate_mean(_bernoulli(rng, p, n)) for p, n in zip(P, N)]
    return sum(p * n for p, n in zip(P, N)) / sum(N), stats.weighted_mean(parts)


def _weighted_clustered(rng):  # "overall (weighted)" with many subsets drawn from a population of subjects
    parts = []
    for _ in range(40):
        p = rng.betavariate(2, 3)  # each subject's own difficulty: questions within it are correlated
        parts.append(stats.estimate_mean(_bernoulli(rng, p, rng.randint(10, 40))))
    est = stats.weighted_mean(parts)
    assert est.method == "clustered"
    return 0.4, est  # E[p] of Beta(2, 3); sizes independent of difficulty


def _perplexity(lls):
    return math.exp(-sum(lls) / len(lls))


def _bootstrapped(rng):  # a statistic that is not a mean: perplexity of 30 log-likelihoods ~ -U(0, 3)
    lls = [-rng.uniform(0, 3) for _ in range(30)]
    return math.exp(1.5), stats.bootstrap(lls, _perplexity, resamples=400, seed=rng.randrange(1 << 30))


@pytest.mark.parametrize("draw", [_binary_mean, _continuous_mean, _mean_of_subsets, _weighted_strata,
                                  _weighted_clustered, _bootstrapped], ids=lambda f: f.__name__.strip("_"))
def test_95_percent_intervals_cover_the_truth_95_percent_of_the_time(draw):
    assert 0.93 <= _coverage(draw) <= 0.97


def test_ignoring_the_clusters_would_not_cover():
    """Why the weighted row is clustered: with correlated questions, the per-item SE is far too small."""
    def naive(rng):
        truth, est = _weighted_clustered(rng)
        return truth, stats.from_moments(est.n, est.value, est.sd)
    assert _coverage(naive) < 0.6


# ---------------------------------------------------------------- tests against scipy / statsmodels

TABLES = [(0, 0), (0, 1), (1, 0), (5, 5), (3, 9), (10, 2), (0, 25), (7, 8), (120, 80), (600, 520), (2000, 2100)]


@pytest.mark.parametrize("b,c", TABLES)
def test_mcnemar_exact_matches_scipy_binomtest_and_statsmodels(b, c):
    scipy_stats = pytest.importorskip("scipy.stats")
    tables = pytest.importorskip("statsmodels.stats.contingency_tables")
    p = stats.mcnemar_exact(b, c)
    assert p == pytest.approx(tables.mcnemar([[13, b], [c, 21]], exact=True).pvalue, rel=1e-9, abs=1e-300)
    if b + c:
        assert p == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)
    assert 0.0 <= p <= 1.0


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = random.Random(7)
    cases = [[0.01, 0.04, 0.03, 0.005], [0.5], [1.0, 1.0, 0.02], [0.01, 0.01, 0.2, 0.04]]
    cases += [[rng.random() ** 3 for _ in range(rng.randint(2, 12))] for _ in range(50)]
    for ps in cases:
        expected = multitest.multipletests(ps, method="holm")[1]
        assert stats.holm(ps) == pytest.approx(list(expected), abs=1e-12), ps


def test_paired_bootstrap_agrees_with_scipy_and_the_analytic_standard_error():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    a = _bernoulli(rng, 0.6, 400)
    b = [x if rng.random() < 0.7 else _bernoulli(rng, 0.7, 1)[0] for x in a]  # correlated with a
    ours = stats.paired_bootstrap(a, b, resamples=4000, seed=1)
    ref = scipy_stats.bootstrap((a, b), lambda x, y: sum(y - x) / len(x), paired=True, vectorized=False,
                                n_resamples=4000, method="percentile", random_state=1)
    diff = sum(b) / len(b) - sum(a) / len(a)
    assert ours.value == pytest.approx(diff)
    assert ours.se == pytest.approx(ref.standard_error, rel=0.08)
    assert ours.ci[0] == pytest.approx(ref.confidence_interval.low, abs=0.3 * ours.se)
    assert ours.ci[1] == pytest.approx(ref.confidence_interval.high, abs=0.3 * ours.se)
    analytic = stats.estimate_mean([y - x for x, y in zip(a, b)])
    assert ours.se == pytest.approx(analytic.se, rel=0.08)
    # seeded: the same interval every time, another seed another one
    assert stats.paired_bootstrap(a, b, resamples=4000, seed=1) == ours
    assert stats.paired_bootstrap(a, b, resamples=4000, seed=2).ci != ours.ci


def test_percentile_and_t_quantile_match_numpy_and_scipy():
    np = pytest.importorskip("numpy")
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(5)
    for n in (1, 2, 7, 100):
        values = sorted(rng.random() for _ in range(n))
        for q in (0.0, 0.025, 0.5, 0.975, 1.0):
            assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, 100 * q)))
    for df in [1, 2, 3, 4, 5, 9, 20, 66, 1000, 3.5, 12.7]:
        assert stats.t_quantile(0.975, df) == pytest.approx(float(scipy_stats.t.ppf(0.975, df)), rel=2e-3)
    for df in [1.2, 1.5, 1.9, 2.3, 2.7]:  # Welch-Satterthwaite's fractional df: interpolated, never narrower
        exact = float(scipy_stats.t.ppf(0.975, df))
        assert exact <= stats.t_quantile(0.975, df) <= 1.2 * exact


def test_clustered_se_matches_statsmodels_cluster_robust_ols():
    np = pytest.importorskip("numpy")
    sm = pytest.importorskip("statsmodels.api")
    rng = random.Random(11)
    values, clusters = [], []
    for g in range(15):
        p = rng.random()
        for _ in range(rng.randint(3, 30)):
            values.append(1.0 if rng.random() < p else 0.0)
            clusters.append(g)
    fit = sm.OLS(np.array(values), np.ones(len(values))).fit(cov_type="cluster", cov_kwds={"groups": np.array(clusters)})
    # statsmodels' small-sample factor G/(G-1) * (N-1)/(N-K) is G/(G-1) for a mean (K = 1): inspect_ai's
    assert stats.clustered_se(values, clusters) == pytest.approx(float(fit.bse[0]), rel=1e-9)


# ---------------------------------------------------------------- propagation against direct computation


def _items(seed: int, sizes: list[int]) -> tuple[list[list[float]], list[float], list[int]]:
    rng = random.Random(seed)
    per = [[float(rng.random() < rng.random()) if k % 2 else rng.random() for _ in range(n)]
           for k, n in enumerate(sizes)]
    flat = [x for part in per for x in part]
    labels = [k for k, part in enumerate(per) for _ in part]
    return per, flat, labels


def _sd(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def test_estimate_mean_and_pooling_of_parts_are_exact():
    per, flat, _ = _items(1, [5, 17, 2, 40])
    whole = stats.estimate_mean(flat)
    assert whole.value == pytest.approx(sum(flat) / len(flat))
    assert whole.sd == pytest.approx(_sd(flat)) and whole.se == pytest.approx(_sd(flat) / math.sqrt(len(flat)))
    parts = [stats.estimate_mean(p) for p in per]
    n, mean, sd = stats.pool([(p.n, p.value, p.sd) for p in parts])
    assert (n, mean, sd) == (len(flat), pytest.approx(whole.value), pytest.approx(whole.sd))
    assert stats.estimate_mean([0.5]).se is None and stats.estimate_mean([]).value is None


def test_mean_of_subsets_and_weighted_rows_against_direct_computation():
    per, flat, labels = _items(2, [12, 30, 7, 50, 21])
    parts = [stats.estimate_mean(p) for p in per]
    k, big_n = len(per), len(flat)
    unweighted = stats.mean_of_means(parts)
    assert unweighted.value == pytest.approx(sum(sum(p) / len(p) for p in per) / k)
    assert unweighted.se == pytest.approx(math.sqrt(sum(_sd(p) ** 2 / len(p) for p in per)) / k)
    strata = stats.weighted_mean(parts)  # 5 subsets: fewer than MIN_CLUSTERS
    assert strata.method == "strata" and strata.value == pytest.approx(sum(flat) / big_n)
    assert strata.se == pytest.approx(math.sqrt(sum((len(p) / big_n) ** 2 * _sd(p) ** 2 / len(p) for p in per)))
    assert strata.sd == pytest.approx(_sd(flat))

    per, flat, labels = _items(3, [9, 4, 30, 12, 18, 7, 22, 5, 16, 11, 3, 25])
    clustered = stats.weighted_mean([stats.estimate_mean(p) for p in per])
    mean = sum(flat) / len(flat)
    g = len(per)
    # inspect_ai's formula, item by item: sum over clusters of the outer product of the residuals
    direct = math.sqrt(sum(sum((x - mean) * (y - mean) for x in p for y in p) for p in per) * g / (g - 1)) / len(flat)
    assert clustered.method == "clustered" and clustered.value == pytest.approx(mean)
    assert clustered.se == pytest.approx(direct) and stats.clustered_se(flat, labels) == pytest.approx(direct)
    lo, hi = clustered.ci
    assert (hi - lo) / 2 == pytest.approx(stats.t_quantile(0.975, g - 1) * direct)


def _unit(model: str, per: list[list[float]], names: list[str]) -> UnitResult:
    samples, scored = [], []
    for name, values in zip(names, per):
        for i, v in enumerate(values):
            samples.append(Sample(f"{name}/{i}", name, "q", 0))
            scored.append(ScoredSample(f"{name}/{i}", name, v, None, {"half": v / 2}))
    return UnitResult(model, "bench", "accuracy", subset_entries(samples, scored),
                      {"AB": names[:2], "rest": names[2:]}, version="abc123")


def test_summary_rows_carry_the_propagated_intervals():
    names = ["a", "b", "c", "d"]
    per, flat, _ = _items(4, [20, 35, 8, 40])
    [t] = DefaultSummarizer().summarize([_unit("m", per, names)])
    rows = {r[1]: (r, st) for r, st in zip(t.rows, t.stats)}
    assert t.columns == ["dataset", "subset", "metric", "n", "m", "version"]
    for name, values in zip(names, per):
        row, st = rows[name]
        assert row[4] == pytest.approx(100 * sum(values) / len(values))
        assert st["m"]["se"] == pytest.approx(100 * _sd(values) / math.sqrt(len(values)))
        assert st["m"]["n"] == len(values) and st["m"]["version"] == "abc123" and row[5] == "abc123"
    ab = per[:2]
    row, st = rows["category: AB"]
    assert row[4] == pytest.approx(100 * sum(sum(p) / len(p) for p in ab) / 2)
    assert st["m"]["se"] == pytest.approx(100 * math.sqrt(sum(_sd(p) ** 2 / len(p) for p in ab)) / 2)
    row, st = rows["overall (mean)"]
    assert st["m"]["se"] == pytest.approx(100 * math.sqrt(sum(_sd(p) ** 2 / len(p) for p in per)) / 4)
    assert st["m"]["method"] == "mean of subsets" and st["m"]["n"] == len(flat)
    row, st = rows["overall (weighted)"]
    big_n = len(flat)
    assert row[4] == pytest.approx(100 * sum(flat) / big_n)
    assert st["m"]["se"] == pytest.approx(100 * math.sqrt(sum((len(p) / big_n) ** 2 * _sd(p) ** 2 / len(p)
                                                               for p in per)))
    lo, hi = st["m"]["ci"]
    assert lo < row[4] < hi


def test_shards_merge_to_the_unsharded_intervals():
    names = ["a", "b"]
    per, _, _ = _items(5, [30, 17])
    whole = _unit("m", per, names)
    shards = [_unit("m", [p[:10] for p in per], names), _unit("m", [p[10:] for p in per], names)]
    [merged] = merge_shards(shards)
    for s, w in zip(merged.subsets, whole.subsets):
        for key in ("score", "half"):
            assert s["stats"][key]["n"] == w["stats"][key]["n"]
            assert s["stats"][key]["se"] == pytest.approx(w["stats"][key]["se"])
            assert s["stats"][key]["ci"] == pytest.approx(w["stats"][key]["ci"])


def test_a_derived_metric_is_computed_from_its_source_and_bootstrapped_reproducibly():
    rng = random.Random(6)
    lls = [-rng.uniform(0, 4) for _ in range(300)]
    samples = [Sample(str(i), "s", "q", 0) for i in range(300)]
    scored = [ScoredSample(str(i), "s", 1.0, None, {"logprob": ll, "perplexity": 0.0}) for i, ll in enumerate(lls)]
    rule = {"perplexity": ("logprob", _perplexity)}
    [entry] = subset_entries(samples, scored, rule)
    assert entry["metrics"]["perplexity"] == pytest.approx(_perplexity(lls))
    st = entry["stats"]["perplexity"]
    assert st["method"] == "bootstrap" and st["ci"][0] < entry["metrics"]["perplexity"] < st["ci"][1]
    assert subset_entries(samples, scored, rule)[0]["stats"] == entry["stats"]  # seeded
    # the delta method's SE for exp(-mean): ppl * SE(mean log-likelihood); the bootstrap agrees within 15%
    delta = _perplexity(lls) * _sd(lls) / math.sqrt(len(lls))
    assert st["se"] == pytest.approx(delta, rel=0.15)


def test_bootstrap_resamples_are_bounded():
    assert stats._resamples(100, None) == stats.DEFAULT_RESAMPLES
    assert stats._resamples(100_000, None) == max(200, stats.MAX_DRAWS // 100_000)
    assert stats._resamples(10**9, None) == 200


def test_the_kernel_module_uses_the_standard_library_only():
    tree = ast.parse(Path(stats.__file__).read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
