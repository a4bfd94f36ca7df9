"""azopg.train end to end: convergence, the anchor guarantee, determinism, black-box plants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import azopg
from _support import BlackBoxPlant
from azopg.model.library import DEFAULT_PROBLEM


@pytest.fixture(scope="module")
def default_problem():
    return azopg.get_problem(DEFAULT_PROBLEM)


# ----------------------------------------------------------------- convergence

@pytest.mark.parametrize("seed", [0, 1])
def test_learner_reaches_target_gap_on_default_problem(default_problem, seed):
    p = default_problem
    res = azopg.train(p, seed=seed, target_gap=1e-3, max_time=60)
    assert res.status == "converged"
    assert res.K.shape == (p.m, p.n)
    assert p.is_stabilizing(res.K) and res.stabilizing
    # the reported numbers are the oracle's, recomputed independently here
    f = p.cost(res.K)
    assert (f - p.optimal_cost) / p.optimal_cost <= 1e-3
    assert res.cost == pytest.approx(f, rel=1e-12)
    assert res.optimal_cost == pytest.approx(p.optimal_cost, rel=1e-12)
    assert res.relative_gap == pytest.approx((f - p.optimal_cost) / p.optimal_cost, rel=1e-9, abs=1e-15)
    assert f <= p.cost(p.K0)
    assert res.seed == seed and res.updates > 0 and res.rollouts > 0
    # the learned gain is close to K*: f - f* = tr(dK' R dK X(K)) >= lambda_min(R X) |dK|^2
    dK = res.K - p.optimal_gain
    lam = np.linalg.eigvalsh(p.state_covariance(res.K)).min() * np.linalg.eigvalsh(p.R).min()
    assert np.sum(dK * dK) <= (f - p.optimal_cost) / lam * (1 + 1e-9)
    # automatically chosen settings are filled in
    for key in ("tau", "r", "step", "batch"):
        assert res.settings[key] is not None and res.settings[key] > 0
    # the history ends at the target and its gaps are the oracle's
    assert res.history and res.history[-1].relative_gap <= 1e-3
    json.dumps(res.to_dict(), allow_nan=False)


def test_same_seed_same_gain(default_problem):
    a = azopg.train(default_problem, seed=3, max_updates=40, target_gap=None)
    b = azopg.train(default_problem, seed=3, max_updates=40, target_gap=None)
    assert np.array_equal(a.K, b.K)
    assert a.updates == b.updates and a.rollouts == b.rollouts
    c = azopg.train(default_problem, seed=4, max_updates=40, target_gap=None)
    assert not np.array_equal(a.K, c.K)


def test_same_seed_same_gain_to_convergence(default_problem):
    a = azopg.train(default_problem, seed=0, target_gap=1e-3, max_time=60)
    b = azopg.train(default_problem, seed=0, target_gap=1e-3, max_time=60)
    assert np.array_equal(a.K, b.K)


# ------------------------------------------------------------ anchor guarantee

@pytest.mark.parametrize("name", [*azopg.problem_names(), "random-unstable-n5-m2-s1"])
@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_budget_never_worse_than_K0(name, seed):
    p = azopg.get_problem(name)
    # the time limit is a safety net only: the budget is the 5 updates
    res = azopg.train(p, method="two-point", seed=seed, max_updates=5, target_gap=None, max_time=600)
    assert res.status == "max_updates"
    assert p.is_stabilizing(res.K)
    assert p.cost(res.K) <= p.cost(p.K0)
    assert res.cost == pytest.approx(p.cost(res.K), rel=1e-12)


def test_budgets_stop_the_run(default_problem):
    p = default_problem
    res = azopg.train(p, seed=0, max_rollouts=200, target_gap=None)
    assert res.status == "max_rollouts"
    res = azopg.train(p, seed=0, max_updates=3, target_gap=None)
    assert res.status == "max_updates" and res.updates >= 3


def test_settings_object_and_keyword_options_merge(default_problem):
    s = azopg.Settings(seed=2, target_gap=None)
    res = azopg.train(default_problem, s, max_updates=4)
    assert res.status == "max_updates" and res.seed == 2
    assert res.settings["max_updates"] == 4


@pytest.mark.parametrize("kw", [{"batch": 0}, {"max_time": -1.0}, {"method": "zero-point"}, {"seed": -2}])
def test_train_rejects_bad_settings(default_problem, kw):
    with pytest.raises(azopg.SettingsError):
        azopg.train(default_problem, max_updates=2, **kw)


def test_train_rejects_unknown_backend(default_problem):
    with pytest.raises(azopg.SettingsError):
        azopg.train(default_problem, backend="no-such-backend", max_updates=2)


def test_non_stabilizing_K0_is_reported(default_problem):
    p = azopg.get_problem("he1")  # open loop unstable: K0 = 0 does not stabilize
    with pytest.raises(azopg.NotStabilizingError):
        azopg.train(p, K0=np.zeros((p.m, p.n)), max_updates=5)
    with pytest.raises(azopg.ProblemError):
        azopg.train(p, K0=np.zeros((p.n, p.m)), max_updates=5)  # wrong shape


def test_one_point_method_runs_and_keeps_the_anchor(default_problem):
    p = default_problem
    res = azopg.train(p, seed=0, method="one-point", max_updates=30, target_gap=None)
    assert res.status == "max_updates"
    assert p.cost(res.K) <= p.cost(p.K0)


# ---------------------------------------------------------------- black box

@pytest.mark.parametrize("name", [DEFAULT_PROBLEM, "he1"])
def test_black_box_plant_learns(name):
    p = azopg.get_problem(name)
    plant = BlackBoxPlant(p)
    assert isinstance(plant, azopg.Plant)
    res = azopg.train(plant, K0=p.K0, max_updates=200, seed=0)
    assert plant.calls > 0
    assert res.status == "max_updates"
    assert res.problem == "BlackBoxPlant"
    assert res.K.shape == (p.m, p.n)
    assert math.isnan(res.cost) and math.isnan(res.optimal_cost) and math.isnan(res.relative_gap)
    # judged by the oracle the learner never saw: stabilizing and much better than K0
    assert p.is_stabilizing(res.K)
    assert p.relative_gap(res.K) < 0.5 * p.relative_gap(p.K0)
    d = res.to_dict()
    assert d["cost"] is None and d["relative_gap"] is None
    json.dumps(d, allow_nan=False)


def test_black_box_plant_needs_budget_and_K0():
    p = azopg.get_problem("he1")
    with pytest.raises(azopg.SettingsError, match="budget"):
        azopg.train(BlackBoxPlant(p), K0=p.K0)
    with pytest.raises(azopg.SettingsError, match="K0"):
        azopg.train(BlackBoxPlant(p), max_updates=10)
    with pytest.raises(azopg.ProblemError):
        azopg.train(BlackBoxPlant(p), K0=np.ones((p.n, p.m)), max_updates=10)


def test_zero_cost_problem_is_rejected():
    """Q = 0 makes the optimal cost 0: the relative gap is undefined, so training refuses."""
    with pytest.raises(azopg.ProblemError):
        azopg.train(azopg.LQRProblem(-1.0, 1.0, 0.0, 1.0), max_updates=5)


def test_rollout_rejects_non_finite_horizon():
    plant = azopg.LinearPlant(azopg.get_problem("he1"))
    with pytest.raises(ValueError):
        plant.rollout(plant.problem.K0, np.ones((1, 4)), float("inf"))
    out = plant.rollout(plant.problem.K0, np.ones((1, 4)), 1e300)
    assert np.isfinite(out.cost).all()
