"""Checks shared by the tests of plants with common random numbers (``bind_rng``, ``noise_rows``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

import azopg
from azopg.method.rules import make_rule
from azopg.method.tasks import run_task
from azopg.model.noise import expected_cost


def assert_two_point_variance_shrinks_like_r_squared(plant: Any, problem: azopg.LQRProblem) -> None:
    """``f(K + rU) - f(K - rU)`` over 200 noise paths from one state: on common paths it is r times a path's
    derivative (variance ratio 1e-2 for r / 10, up to O(r) terms); on independent paths its variance stays
    at twice a cost's (ratio 1; 200 samples: each variance within ~20 % at 2 SE, bounds far from both)."""
    K = np.asarray(problem.K0)
    U = np.random.default_rng(7).standard_normal(K.shape)
    b = 200
    x0 = np.ones((2 * b, problem.n))

    def var(r: float, common: bool) -> float:
        plant.bind_rng(np.random.default_rng(11))
        rows = np.tile(np.arange(b), 2) if common else np.arange(2 * b)
        Kb = np.concatenate([np.broadcast_to(K + r * U, (b, *K.shape)), np.broadcast_to(K - r * U, (b, *K.shape))])
        c = plant.rollout(Kb, x0, 2.0, noise_rows=rows).cost
        return float(np.var(c[:b] - c[b:], ddof=1))

    r = 1e-4 * np.linalg.norm(K)
    assert 0.005 < var(r / 10, True) / var(r, True) < 0.02
    assert 0.6 < var(r / 10, False) / var(r, False) < 1.6
    assert var(r, True) < 1e-4 * var(r, False)


def assert_calibration_measures_the_noise(plant_with_noise: Callable[[float], Any], problem: azopg.LQRProblem) -> None:
    """The noise of ``plant_with_noise(0.1)`` is found (a plant seeding every rollout from its ``(x0, tau)``
    looked exact) and the horizon is not doubled by the noise's own cost, which grows with tau; that of
    ``plant_with_noise(0.0)`` is not."""
    settings = azopg.Settings(method="natural", seed=0)
    for w, noisy in ((0.1, True), (0.0, False)):
        rule = make_rule(np.array(problem.K0), settings, R=np.array(problem.R))
        rule.calibrate(functools.partial(run_task, plant_with_noise(w)))
        assert rule.noisy is noisy and (rule.noise > 0) is noisy
        assert rule.tuning.tau <= 32


def assert_learns_and_is_never_costlier_than_K0(plant: Any, problem: azopg.LQRProblem, fraction: float) -> None:
    """A short run of ``plant`` (process noise ``W = 0.01 I``; a rollout budget, serial: the same run on any
    machine) moves far from ``K0`` by the exact oracle (gap below ``fraction`` of ``K0``'s), and the gain
    returned is no costlier than ``K0`` in expected cost at the run's horizon."""
    res = azopg.train(plant, K0=problem.K0, seed=0, max_rollouts=4000)
    assert problem.relative_gap(res.K) < fraction * problem.relative_gap(problem.K0)
    tau = float(res.settings["tau"])
    noisy = problem.with_noise(W=0.01 * np.eye(problem.n))
    assert expected_cost(noisy, res.K, tau) <= expected_cost(noisy, problem.K0, tau)
