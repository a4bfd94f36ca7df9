"""Under noise a run reports confidence intervals for the cost of the gain it returns (and its gap).

The intervals (:func:`azopg.method.lifecycle.cost_interval`) are checked against the exact oracle
(:func:`azopg.model.noise.expected_cost`): over independent seeds a 95 % interval must cover the exact
expected cost (and the exact difference to the reference gain) about 95 % of the time.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import azopg
from azopg.method.lifecycle import INTERVAL_ROLLOUTS, cost_interval
from azopg.method.rules import make_rule
from azopg.method.tasks import run_task
from azopg.model.noise import expected_cost
from azopg.plants.noisy import NoisyLinearPlant

SEEDS = 200
#: Coverage counts out of SEEDS accepted: [LOW, HIGH]. With the stated 95 %, P(count < LOW) = 0.3 % and
#: P(count > HIGH) = 0.004 % (binomial); an interval whose true coverage is 85 % passes with probability 2 %
#: (power 98 %), one whose coverage is 99.9 % (four times too wide) with probability 18 %.
LOW, HIGH = 181, 199


def _noisy(name: str, w: float = 0.0, v: float = 0.0) -> azopg.LQRProblem:
    p = azopg.get_problem(name)
    Om = np.asarray(p.x0_cov)
    return p.with_noise(W=w**2 * Om if w else None, V=v**2 * Om if v else None, dt=0.01 if v else None)


def test_the_acceptance_bounds_have_the_stated_size_and_power() -> None:
    assert stats.binom.cdf(LOW - 1, SEEDS, 0.95) < 0.005
    assert stats.binom.sf(HIGH, SEEDS, 0.95) < 1e-4
    assert stats.binom.sf(LOW - 1, SEEDS, 0.85) < 0.025


@pytest.mark.parametrize(("w", "v", "tau"), [(0.1, 0.0, 2.0), (0.0, 0.05, 1.0)])
def test_intervals_cover_the_exact_expected_cost_and_difference_95_percent_of_the_time(w: float, v: float,
                                                                                       tau: float) -> None:
    problem = _noisy("he1", w=w, v=v)
    K0 = np.asarray(problem.K0)
    K = K0 + 0.3 * (np.asarray(problem.optimal_gain) - K0)  # a gain between K0 and K*, as a run returns
    exact = expected_cost(problem, K, tau)
    exact_diff = exact - expected_cost(problem, K0, tau)
    plant = NoisyLinearPlant(problem)
    cost_hits = diff_hits = 0
    for seed in range(SEEDS):
        rule = make_rule(K0, azopg.Settings(seed=seed, tau=tau, method="natural"), R=np.asarray(problem.R))
        rule.noisy = True
        rule.tuning.tau = tau
        ci = cost_interval(rule, lambda task: run_task(plant, task), K, K0, "K0")
        assert ci is not None and ci.rollouts >= INTERVAL_ROLLOUTS and ci.reference == "K0"
        assert ci.low < ci.mean < ci.high and ci.diff_low < ci.diff < ci.diff_high
        cost_hits += ci.low <= exact <= ci.high
        diff_hits += ci.diff_low <= exact_diff <= ci.diff_high
    assert LOW <= cost_hits <= HIGH
    assert LOW <= diff_hits <= HIGH


def test_a_noisy_run_reports_its_intervals_and_a_deterministic_one_none() -> None:
    problem = _noisy("he1", w=0.1)
    res = azopg.train(problem, max_updates=30)
    ci = res.cost_interval
    assert ci is not None and ci["reference"] == "K*" and ci["rollouts"] >= INTERVAL_ROLLOUTS
    assert ci["tau"] == res.settings["tau"] and ci["low"] < ci["mean"] < ci["high"]
    ref = expected_cost(problem, np.asarray(problem.optimal_gain), ci["tau"])
    assert ci["optimal_expected_cost"] == pytest.approx(ref)
    assert ci["gap_low"] == pytest.approx(ci["diff_low"] / ref)
    assert ci["gap_high"] == pytest.approx(ci["diff_high"] / ref)
    assert res.to_dict()["cost_interval"] == ci
    assert azopg.train(azopg.get_problem("he1"), max_rollouts=300).cost_interval is None
    # not measured past a budget: the rollouts' (the calibration's time, likewise)
    assert azopg.train(problem, max_rollouts=1500).cost_interval is None
