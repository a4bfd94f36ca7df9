"""A gymnasium plant with noise of its own (``GymPlant(LinearEnv(noise_std=..., obs_noise_std=...))``): its reset
seeds come from the task's generator, one per noise path, so paired rollouts share their noise, repeats do not,
the run measures the noise and learns."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import azopg
from azopg.method.rules import make_rule
from azopg.method.tasks import run_task
from azopg.model.noise import expected_cost
from azopg.plants.envs import LinearEnv
from azopg.plants.envs_vector import LinearVectorEnv
from azopg.plants.gym import GymPlant


def _vector(env, num_envs: int) -> LinearVectorEnv:
    return LinearVectorEnv(num_envs, env=env())


def _plant(name: str, w: float = 0.0, v: float = 0.0, vector: str = "native", dt: float = 0.02) -> GymPlant:
    p = azopg.get_problem(name)
    env = functools.partial(LinearEnv.from_problem, p, dt=dt, noise_std=w, obs_noise_std=v)
    return GymPlant(env, p.n, p.m, R=p.R, vector=vector,
                    vector_factory=functools.partial(_vector, env) if vector == "native" else None)


def test_noise_rows_share_a_path_and_repeats_do_not() -> None:
    plant = _plant("he1", w=0.1, v=0.01)
    assert plant.common_noise
    p = azopg.get_problem("he1")
    K = np.broadcast_to(p.K0, (4, p.m, p.n))
    x0 = np.ones((4, p.n))
    plant.bind_rng(np.random.default_rng(0))
    c = plant.rollout(K, x0, 1.0, noise_rows=np.array([0, 1, 0, 1])).cost
    assert c[0] == c[2] and c[1] == c[3] and c[0] != c[1]
    again = plant.rollout(K, x0, 1.0, noise_rows=np.array([0, 1, 0, 1])).cost  # a new call: fresh paths
    assert again[0] != c[0]
    plant.bind_rng(np.random.default_rng(0))  # the same generator: the same paths, in every vector mode
    for mode in ("native", "loop", "sync"):
        other = _plant("he1", w=0.1, v=0.01, vector=mode)
        other.bind_rng(np.random.default_rng(0))
        np.testing.assert_array_equal(other.rollout(K, x0, 1.0, noise_rows=np.array([0, 1, 0, 1])).cost, c)
    # without a bound generator (the plant on its own) a rollout's seed is a function of (x0, tau)
    alone = _plant("he1", w=0.1)
    a, b = alone.rollout(K[:2], x0[:2], 1.0).cost
    assert a == b


@pytest.mark.parametrize("v", [0.0, 0.05])
def test_two_point_difference_variance_shrinks_like_r_squared_with_common_noise(v: float) -> None:
    # f(K + rU) - f(K - rU) over 200 noise paths from one state: on common paths it is r times a path's
    # derivative (variance ratio 1e-2 for r / 10, up to O(r) terms); on independent paths its variance stays
    # at twice a cost's (ratio 1; 200 samples: each variance within ~20 % at 2 SE, bounds far from both)
    p = azopg.get_problem("he1")
    plant = _plant("he1", w=0.1, v=v)
    K = np.asarray(p.K0)
    U = np.random.default_rng(7).standard_normal(K.shape)
    b = 200
    x0 = np.ones((2 * b, p.n))

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


def test_calibration_measures_the_environments_noise() -> None:
    # the noise is found (before: every repeat of a state was the same rollout, the plant looked exact) and the
    # horizon is not doubled by the noise's own cost, which grows with tau
    settings = azopg.Settings(method="natural", seed=0)
    p = azopg.get_problem("he1")
    for w, noisy in ((0.1, True), (0.0, False)):
        plant = _plant("he1", w=w)
        rule = make_rule(np.array(p.K0), settings, R=np.array(p.R))
        rule.calibrate(functools.partial(run_task, plant))
        assert rule.noisy is noisy and (rule.noise > 0) is noisy
        assert rule.tuning.tau <= 32


def test_learns_through_gym_under_process_noise_and_is_never_costlier_than_K0() -> None:
    # a short run (a rollout budget, serial: the same run on any machine) moves far from K0 by the exact oracle;
    # the gain returned is no costlier than K0 in expected cost at the run's horizon (W = 0.01 I)
    p = azopg.get_problem("rea1")
    res = azopg.train(_plant("rea1", w=0.1), K0=p.K0, seed=0, max_rollouts=4000)
    assert p.relative_gap(res.K) < 0.02 * p.relative_gap(p.K0)
    tau = float(res.settings["tau"])
    noisy = p.with_noise(W=0.01 * np.eye(p.n))
    assert expected_cost(noisy, res.K, tau) <= expected_cost(noisy, p.K0, tau)
