"""A noisy simulator as a ``CallablePlant``: its generators are seeded from the task's generator, one per
noise path, so paired rollouts share their noise, repeats do not, the run measures the noise, learns and
replays."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy.linalg import expm

import azopg
from _noise_checks import (
    assert_calibration_measures_the_noise,
    assert_learns_and_is_never_costlier_than_K0,
    assert_two_point_variance_shrinks_like_r_squared,
)
from azopg.plants.callable import CallablePlant

DT = 0.02


def _simulate(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, w: float, K: np.ndarray,
              X0: np.ndarray, tau: float, rngs: list[np.random.Generator]) -> tuple[np.ndarray, ...]:
    """The batched form: the linear plant under zero-order hold at ``DT`` with a Gaussian increment of
    covariance ``w^2 DT I`` after each step (process noise of intensity ``w^2 I``); rollout ``i`` draws its
    increments from ``rngs[i]``. Returns the costs ``sum (x'Qx + u'Ru) DT``, ``S = DT sum x x'`` and ``x(tau)``."""
    n, m = B.shape
    M = expm(DT * np.block([[A, B], [np.zeros((m, n + m))]]))
    Ad, Bd = M[:n, :n], M[:n, n:]
    steps = max(1, round(tau / DT))
    E = w * np.sqrt(DT) * np.stack([g.standard_normal((steps, n)) for g in rngs], axis=1)  # (steps, b, n)
    x = np.array(X0, dtype=float)
    cost = np.zeros(len(x))
    S = np.zeros((len(x), n, n))
    with np.errstate(all="ignore"):
        for k in range(steps):
            u = -np.einsum("bij,bj->bi", K, x)
            cost += (np.einsum("bi,ij,bj->b", x, Q, x) + np.einsum("bi,ij,bj->b", u, R, u)) * DT
            S += np.einsum("bi,bj->bij", x, x) * DT
            x = np.einsum("ij,bj->bi", Ad, x) + np.einsum("ij,bj->bi", Bd, u) + E[k]  # elementwise, no BLAS
    return cost, S, x


def _one(sim: functools.partial, K: np.ndarray, x0: np.ndarray, tau: float,
         rng: np.random.Generator) -> tuple[float, np.ndarray, np.ndarray]:
    """The unbatched form of the same simulator."""
    c, S, x = sim(K[None], x0[None], tau, [rng])
    return float(c[0]), S[0], x[0]


def _plant(name: str, w: float, batched: bool = True) -> CallablePlant:
    p = azopg.get_problem(name)
    sim = functools.partial(_simulate, *(np.asarray(M, dtype=float) for M in (p.A, p.B, p.Q, p.R)), w)
    cost = sim if batched else functools.partial(_one, sim)
    return CallablePlant(cost, p.n, p.m, x0_cov=p.x0_cov, returns_moments=True, batched=batched)


def test_noise_rows_share_a_path_and_repeats_do_not() -> None:
    plant = _plant("he1", w=0.1)
    assert plant.common_noise
    p = azopg.get_problem("he1")
    K = np.broadcast_to(p.K0, (4, p.m, p.n))
    x0 = np.ones((4, p.n))
    rows = np.array([0, 1, 0, 1])
    plant.bind_rng(np.random.default_rng(0))
    c = plant.rollout(K, x0, 1.0, noise_rows=rows).cost
    assert c[0] == c[2] and c[1] == c[3] and c[0] != c[1]
    again = plant.rollout(K, x0, 1.0, noise_rows=rows).cost  # a new call: fresh paths
    assert again[0] != c[0]
    for other in (_plant("he1", w=0.1), _plant("he1", w=0.1, batched=False)):  # the same generator: the same paths
        other.bind_rng(np.random.default_rng(0))
        np.testing.assert_array_equal(other.rollout(K, x0, 1.0, noise_rows=rows).cost, c)
    # a copy (a process worker's plant) is unbound; without a bound generator a rollout's seed is (x0, tau)'s
    alone = plant.copy()
    a, b = alone.rollout(K[:2], x0[:2], 1.0).cost
    assert a == b


def test_two_point_difference_variance_shrinks_like_r_squared_with_common_noise() -> None:
    assert_two_point_variance_shrinks_like_r_squared(_plant("he1", w=0.1), azopg.get_problem("he1"))


def test_calibration_measures_the_callables_noise() -> None:
    assert_calibration_measures_the_noise(functools.partial(_plant, "he1"), azopg.get_problem("he1"))


def test_learns_through_a_noisy_callable_and_is_never_costlier_than_K0() -> None:
    assert_learns_and_is_never_costlier_than_K0(_plant("he1", w=0.1), azopg.get_problem("he1"), 0.05)


@pytest.mark.parametrize("seed", [2])
def test_async_run_on_a_noisy_callable_replays_bit_for_bit(seed: int) -> None:
    # simulated workers (W = 3, random latencies) share one plant: each task binds it to its own generator, so
    # a task's rollouts do not depend on which tasks ran before it, and the run is a function of its seed
    p = azopg.get_problem("he1")
    runs = [azopg.train(_plant("he1", w=0.1), K0=p.K0, backend="simulated", workers=3, seed=seed,
                        max_rollouts=4000, latency_model="exponential") for _ in range(2)]
    assert runs[0].stats["max_delay_seen"] > 0 and p.relative_gap(runs[0].K) < 0.05 * p.relative_gap(p.K0)
    assert np.array_equal(runs[0].K, runs[1].K)
    assert [(a.task_id, a.worker) for a in runs[0].arrivals] == [(a.task_id, a.worker) for a in runs[1].arrivals]
