"""The rliable statistics of mpdp_pl.experiments.aggregate against independent truths: a hand-computed
IQM, zero-width intervals when every score is equal, and intervals that cover the known mean
(and the known probability of improvement) of synthetic grids drawn from known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpdp_pl.experiments.aggregate import REFERENCE, iqm, markdown, summarize


def rows_by_key(rows):
    return {(r["scope"], r["algo"], r["metric"]): r for r in rows}


def test_iqm_is_the_mean_of_the_middle_half_by_hand():
    scores = np.array([7.0, 1, 100, 3, 5, 2, 6, 4])  # sorted: 1..7, 100; middle half 3, 4, 5, 6
    assert iqm(scores[:, None]) == pytest.approx((3 + 4 + 5 + 6) / 4)
    r = rows_by_key(summarize({"Hopper-v4": {"mpdp": scores}}, reps=200))
    assert r[("Hopper-v4", "mpdp", "IQM")]["value"] == pytest.approx(4.5)
    assert r[("Hopper-v4", "mpdp", "mean")]["value"] == pytest.approx(128 / 8)
    assert r[("normalized", "mpdp", "IQM")]["value"] == pytest.approx(4.5 / REFERENCE["Hopper"])


def test_equal_scores_give_zero_width_intervals():
    same = np.full(5, 321.0)
    rows = summarize({"Hopper-v4": {"mpdp": same, "sac": same.copy()}}, reps=200)
    for r in rows:
        assert r["ci_low"] == pytest.approx(r["value"]) and r["ci_high"] == pytest.approx(r["value"]), r
    assert rows_by_key(rows)[("P(mpdp > sac)", "sac", "P")]["value"] == 0.5


def test_one_run_per_task_gives_what_rliables_bootstrap_gives_without_resampling():
    """Single seeds (one algorithm on two tasks, a pair for P(X > Y)), mixed with an algorithm of
    several seeds: every row equals rliable's own get_interval_estimates on the same data and
    seed of the global generator."""
    from rliable import library as rly, metrics

    from mpdp_pl.experiments.aggregate import _intervals

    rng = np.random.default_rng(2)
    iqm_mean = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])  # noqa: E731
    data = {"one": rng.normal(size=(1, 2)), "many": rng.normal(size=(4, 2))}
    pairs = {"p": (rng.normal(size=(1, 2)), rng.normal(size=(1, 2)))}
    poi = lambda a, b: np.array([metrics.probability_of_improvement(a, b)])  # noqa: E731
    for scores, func in ((data, iqm_mean), (pairs, poi)):
        mine = _intervals(scores, func, 300, seed=5)
        for key in scores:  # several seeds: resampled by rliable, from the global generator
            np.random.seed(5)
            theirs = rly.get_interval_estimates({key: scores[key]}, func, reps=300)
            np.testing.assert_allclose(mine[0][key], theirs[0][key])
            np.testing.assert_allclose(mine[1][key], theirs[1][key])
    one_point, one_ci = _intervals({"one": data["one"]}, iqm_mean, 300, seed=5)
    assert (one_ci["one"][0] == one_point["one"]).all() and (one_ci["one"][1] == one_point["one"]).all()


def test_the_same_scores_give_the_same_intervals():
    """rliable ignores the random_state it is given; the report's intervals are reproducible
    anyway, and leave NumPy's global generator as they found it."""
    scores = {"Hopper-v4": {"mpdp": np.array([1.0, 5, 2, 8]), "sac": np.array([0.0, 3, 1, 4])}}
    np.random.seed(0)
    first = summarize(scores, reps=300, seed=3)
    after = np.random.random()  # the global generator moves on between the two reports
    again = summarize(scores, reps=300, seed=3)
    np.random.seed(0)
    assert again == first and np.random.random() == after
    assert summarize(scores, reps=300, seed=4) != first


def test_the_improvement_is_of_mpdps_default_form_where_the_report_holds_it():
    """P(X > Y) counted pair by pair: mpdp_pv's [3, 4] against [1, 2] is 1, mpdp's [0, 0] is 0."""
    scores = {"Hopper-v4": {"mpdp": np.zeros(2), "mpdp_pv": np.array([3.0, 4.0]), "sac": np.array([1.0, 2.0])}}
    r = rows_by_key(summarize(scores, reps=200))
    assert r[("P(mpdp_pv > sac)", "sac", "P")]["value"] == 1 and r[("P(mpdp_pv > mpdp)", "mpdp", "P")]["value"] == 1
    assert not any(k[0].startswith("P(mpdp >") for k in r)
    assert ("P(mpdp > sac)", "sac", "P") in rows_by_key(summarize({"Hopper-v4": {k: scores["Hopper-v4"][k] for k in ("mpdp", "sac")}}, reps=200))


def test_intervals_cover_the_known_mean_of_synthetic_grids():
    """20 grids of 10 seeds on 2 tasks from N(1000, 200): the mean's 95% interval covers 1000
    in at least 16 of them (a correct interval misses 4 or more with probability ~1.6%), and the
    normalized aggregate covers the known normalized mean."""
    rng = np.random.default_rng(0)
    covered = covered_norm = 0
    truth_norm = (1000 / REFERENCE["Hopper"] + 1000 / REFERENCE["Walker2d"]) / 2
    for i in range(20):
        scores = {env: {"sac": rng.normal(1000, 200, 10)} for env in ("Hopper-v4", "Walker2d-v4")}
        r = rows_by_key(summarize(scores, reps=1000, seed=i))
        m = r[("Hopper-v4", "sac", "mean")]
        covered += m["ci_low"] <= 1000 <= m["ci_high"]
        n = r[("normalized", "sac", "mean")]
        covered_norm += n["ci_low"] <= truth_norm <= n["ci_high"]
        # and is not trivially wide: at most 1.5 x the normal-theory width with the true sigma
        assert m["ci_high"] - m["ci_low"] < 1.5 * 2 * 1.96 * 200 / math.sqrt(10)
    assert covered >= 16 and covered_norm >= 16, (covered, covered_norm)


def test_probability_of_improvement_covers_its_known_value():
    """X ~ N(1, 1), Y ~ N(0, 1): P(X > Y) = Phi(1 / sqrt 2) = 0.760."""
    rng = np.random.default_rng(1)
    truth = 0.5 * (1 + math.erf(1 / math.sqrt(2) / math.sqrt(2)))
    scores = {"Hopper-v4": {"mpdp": rng.normal(1, 1, 40), "sac": rng.normal(0, 1, 40)}}
    r = rows_by_key(summarize(scores, reps=1000))[("P(mpdp > sac)", "sac", "P")]
    assert r["ci_low"] <= truth <= r["ci_high"] and r["ci_high"] - r["ci_low"] < 0.3, r


def test_the_table_says_where_few_seeds_make_iqm_the_mean():
    scores = {"Hopper-v4": {"mpdp": np.array([1.0, 2, 3]), "sac": np.array([1.0, 2, 3, 4])},
              "Pendulum-v1": {"sac": np.array([-200.0, -150, -100, -120])}}
    md = markdown(summarize(scores, reps=100), scores, {"Hopper-v4": [100], "Pendulum-v1": [50]}, 100)
    rows = {tuple(c.strip() for c in ln.split("|")[1:3]): ln for ln in md.splitlines()
            if ln.startswith("| Hopper") or ln.startswith("| Pendulum")}
    assert "IQM = mean" in rows[("Hopper-v4 @ 100", "mpdp")]
    assert "IQM = mean" not in rows[("Hopper-v4 @ 100", "sac")]
    assert "left out: Pendulum-v1" in md  # no reference return: not in the aggregates
