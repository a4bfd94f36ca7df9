"""A gymnasium plant with noise of its own (``GymPlant(LinearEnv(noise_std=..., obs_noise_std=...))``): its reset
seeds come from the task's generator, one per noise path, so paired rollouts share their noise, repeats do not,
the run measures the noise and learns."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import azopg
from _noise_checks import (
    assert_calibration_measures_the_noise,
    assert_learns_and_is_never_costlier_than_K0,
    assert_two_point_variance_shrinks_like_r_squared,
)
from azopg.model.noise import minimize_gain
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
    assert_two_point_variance_shrinks_like_r_squared(_plant("he1", w=0.1, v=v), azopg.get_problem("he1"))


def test_calibration_measures_the_environments_noise() -> None:
    assert_calibration_measures_the_noise(functools.partial(_plant, "he1"), azopg.get_problem("he1"))


def test_learns_through_gym_under_process_noise_and_is_never_costlier_than_K0() -> None:
    assert_learns_and_is_never_costlier_than_K0(_plant("rea1", w=0.1), azopg.get_problem("rea1"), 0.02)


@pytest.mark.parametrize(("w", "v"), [(0.1, 0.0), (0.0, 0.05), (0.1, 0.05)])
def test_expected_cost_of_the_environment_matches_monte_carlo(w: float, v: float) -> None:
    """``LinearEnv.expected_cost`` (the exact sampled-data oracle under both noises) against 4000 episodes from
    ``x0 = 0`` through ``GymPlant``: all the cost is the noise's, the standard error below 2 % of it, so a bias
    of 10 % is 5 standard errors (fails with probability above 0.84); within Z = 4 standard errors (two-sided
    false alarm 6e-5). The transient (the cost without noise, from another state) is one episode, to rounding."""
    p = azopg.get_problem("he1")
    plant = _plant("he1", w=w, v=v)
    plant.bind_rng(np.random.default_rng(1))
    N, tau, dt = 4000, 2.0, 0.02
    c = plant.rollout(p.K0, np.zeros((N, p.n)), tau).cost
    env = LinearEnv.from_problem(p, dt=dt, noise_std=w, obs_noise_std=v)
    exact = env.expected_cost(p.K0, round(tau / dt), np.zeros((p.n, p.n)))
    se = c.std(ddof=1) / np.sqrt(N)
    assert se < 0.02 * exact
    assert abs(c.mean() - exact) <= 4.0 * se
    x0 = np.array([1.0, -0.5, 0.3, 0.2])
    free = LinearEnv.from_problem(p, dt=dt).expected_cost(p.K0, round(tau / dt), np.outer(x0, x0))
    quiet = _plant("he1")
    assert quiet.rollout(p.K0, x0[None], tau).cost[0] == pytest.approx(free, rel=1e-10)


@pytest.mark.parametrize(("w", "v"), [(0.0, 0.05), (0.1, 0.0)])
def test_never_costlier_than_K0_by_the_environments_exact_oracle(w: float, v: float) -> None:
    """A short run through ``GymPlant`` (a rollout budget, serial: the same run on any machine) under measurement
    or process noise: the gain returned is no costlier than ``K0`` by the exact expected cost of the sampled-data
    loop at the run's horizon, with the environment's own noise (``LinearEnv.expected_cost``), and the run
    moved (its gain at least 10 times closer to the optimum than ``K0``: the test is not vacuous)."""
    p = azopg.get_problem("rea1")
    res = azopg.train(_plant("rea1", w=w, v=v), K0=p.K0, seed=0, max_rollouts=4000)
    steps = round(float(res.settings["tau"]) / 0.02)
    env = LinearEnv.from_problem(p, dt=0.02, noise_std=w, obs_noise_std=v)
    assert env.expected_cost(res.K, steps) <= env.expected_cost(p.K0, steps)
    assert p.relative_gap(res.K) < 0.1 * p.relative_gap(p.K0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_started_at_the_measurement_noise_optimum_never_returns_a_costlier_gain(seed: int) -> None:
    """``K0`` = the exact optimum of the sampled-data loop's expected cost under measurement noise 0.05 at the
    horizon these runs calibrate (2 s): every other gain is costlier there, so a run that let a noisy
    measurement pick a gain (a lucky draw) would fail."""
    p = azopg.get_problem("rea1")
    env = LinearEnv.from_problem(p, dt=0.02, obs_noise_std=0.05)
    steps = 100
    K_opt = minimize_gain(functools.partial(env.expected_cost, steps=steps), np.array(p.optimal_gain),
                          lambda K: bool(np.max(np.abs(np.linalg.eigvals(env.Ad - env.Bd @ K))) < 1.0))
    res = azopg.train(_plant("rea1", v=0.05), K0=K_opt, seed=seed, max_rollouts=3000)
    assert float(res.settings["tau"]) == 2.0
    assert env.expected_cost(res.K, steps) <= env.expected_cost(K_opt, steps)
