"""Bradley-Terry ratings on simulated battles with known strengths: the fit recovers the ordering and the true
ratings fall within their bootstrap intervals; ties count half; the fit agrees with Hunter's MM algorithm."""

from __future__ import annotations

import time

import numpy as np
import pytest

from luopan_judge.bt import Battle, expected_win, fit

TRUE = {"a": 1300.0, "b": 1150.0, "c": 1050.0, "d": 1000.0, "e": 900.0, "f": 750.0}


def simulate(seed: int, questions: int = 150, ratings: dict[str, float] = TRUE) -> list[Battle]:
    rng = np.random.default_rng(seed)
    models = list(ratings)
    out = []
    for q in range(questions):
        for i, m in enumerate(models):
            for n in models[i + 1:]:
                p = expected_win(ratings[m], ratings[n])
                out.append(Battle(m, n, float(rng.random() < p), str(q)))
    return out


def test_recovers_order_and_true_ratings_within_intervals():
    inside = total = 0
    for seed in range(12):
        r = fit(simulate(seed), anchor="d", anchor_rating=1000.0, rounds=300, seed=seed)
        assert r.order() == list(TRUE), f"seed {seed}: {r.rating}"
        centre, true_centre = np.mean(list(r.rating.values())), np.mean(list(TRUE.values()))
        for m, true in TRUE.items():
            assert abs((r.rating[m] - centre) - (true - true_centre)) < 60, (seed, m, r.rating[m])
            if m != "d":  # the anchor's interval is the point itself
                total += 1
                inside += r.low[m] <= true <= r.high[m]
    assert inside / total >= 0.85, f"95% intervals covered the truth {inside} of {total} times"


def test_anchor_and_scale():
    r = fit(simulate(0, questions=400), anchor="d", anchor_rating=1000.0, rounds=0)
    assert r.rating["d"] == pytest.approx(1000.0)
    # the fitted difference reproduces the simulated win probability
    assert expected_win(r.rating["a"], r.rating["f"]) == pytest.approx(expected_win(1300, 750), abs=0.03)


def test_ties_count_half():
    battles = [Battle("x", "y", 0.5, str(q)) for q in range(20)] + [Battle("x", "z", 1.0, str(q)) for q in range(10)] \
        + [Battle("x", "z", 0.0, str(q)) for q in range(10, 20)] + [Battle("y", "z", 1.0, "0"), Battle("y", "z", 0.0, "1")]
    r = fit(battles, rounds=0)
    assert r.rating["x"] == pytest.approx(r.rating["y"], abs=1e-6)
    assert r.rating["x"] == pytest.approx(r.rating["z"], abs=1e-6)
    assert sum(r.rating.values()) / 3 == pytest.approx(1000.0)  # no anchor: the mean is 1000


def test_undefeated_model_gets_a_finite_top_rating():
    battles = [Battle("top", "mid", 1.0, str(q)) for q in range(10)] + simulate(1, 10, {"mid": 1000, "low": 800})
    r = fit(battles, rounds=100)
    assert r.order()[0] == "top" and np.isfinite(r.rating["top"]) and np.isfinite(r.high["top"])


def _mm(battles, models, iters=5000):
    """Hunter (2004)'s MM algorithm for Bradley-Terry, ties as half wins: an independent reference fit."""
    idx = {m: k for k, m in enumerate(models)}
    n = len(models)
    wins = np.zeros((n, n))
    for b in battles:
        wins[idx[b.a], idx[b.b]] += b.outcome
        wins[idx[b.b], idx[b.a]] += 1 - b.outcome
    games = wins + wins.T
    p = np.ones(n)
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :])).sum(1)
        p = wins.sum(1) / denom
        p /= np.exp(np.log(p).mean())
    return {m: 400 * np.log10(p[k]) for m, k in idx.items()}


def test_agrees_with_mm_algorithm():
    battles = simulate(3, questions=60)
    for b in battles[::7]:
        b.outcome = 0.5  # some ties
    r = fit(battles, rounds=0, ridge=1e-9)
    ref = _mm(battles, list(TRUE))
    mean_r = np.mean([r.rating[m] for m in TRUE])
    mean_ref = np.mean(list(ref.values()))
    for m in TRUE:
        assert r.rating[m] - mean_r == pytest.approx(ref[m] - mean_ref, abs=0.5)


def test_bootstrap_is_seeded_and_vectorised():
    battles = simulate(5, questions=200)  # 3,000 battles
    t0 = time.perf_counter()
    r1 = fit(battles, anchor="d", rounds=1000, seed=7)
    elapsed = time.perf_counter() - t0
    r2 = fit(battles, anchor="d", rounds=1000, seed=7)
    assert r1.low == r2.low and r1.high == r2.high
    assert elapsed < 10, f"1,000 resamples took {elapsed:.1f}s"
    assert r1.n_battles == 3000 and r1.n_questions == 200
