"""The instrumented policy-evaluation fit under process noise, against plain least squares."""

from __future__ import annotations

import numpy as np
import pytest

from azopg.method.instrumented import instrumented_fit, least_squares_fit
from azopg.model.problem import LQRProblem
from azopg.plants.linear import LinearPlant
from azopg.plants.noisy import NoisyLinearPlant

K = np.array([[0.4, 1.1]])


def base() -> LQRProblem:
    return LQRProblem([[-1.0, 2.0], [0.0, -0.5]], [[0.0], [1.0]], np.eye(2), [[1.0]],
                      x0_cov=[[1.0, 0.2], [0.2, 0.5]], name="two")


def intervals(plant, rollouts: int, count: int, dt: float, seed: int) -> list[np.ndarray]:
    """Interval data ``(D, x_j, x_{j+1}, S_j, c_j)`` of ``rollouts`` rollouts of ``K + D`` (``D`` drawn per
    rollout), each cut into ``count`` intervals of length ``dt`` (a rollout continued from its last state:
    the plant is Markov, so this is one rollout observed at the interval ends)."""
    rng = np.random.default_rng(seed)
    D = 0.2 * rng.standard_normal((rollouts, *K.shape))
    x = plant.initial_states(rng, rollouts)
    out = []
    for _ in range(count):
        r = plant.rollout(K + D, x, dt, moments=True)
        assert not r.blown_up.any()
        out.append((D, x, r.x_end, r.S, r.cost))
        x = r.x_end
    return [np.concatenate([o[i] for o in out]) for i in range(5)]


def test_the_fits_are_exact_without_noise() -> None:
    p = base()
    data = intervals(LinearPlant(p), 20, 5, 0.4, seed=1)
    P, E = p.value_matrix(K), p.E(K)
    for ev in (instrumented_fit(*data, 0.4, p.R), instrumented_fit(*data, 0.4, p.R, overidentify=True),
               least_squares_fit(*data, 0.4, p.R)):
        np.testing.assert_allclose(ev.P, P, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(ev.E, E, rtol=1e-7, atol=1e-9)
        assert abs(ev.trPW) <= 1e-7 * np.trace(P)


@pytest.mark.parametrize("overidentify", [False, True])
def test_instrumented_fit_is_unbiased_where_least_squares_is_not(overidentify: bool) -> None:
    """The test: ``|tr(P_hat Omega) - tr(P Omega)| <= 4 se`` (the robust standard error of the fit).

    Power: the data (3000 rollouts x 10 intervals, ``W = 0.05 Omega``) give ``se <= 0.89 %`` of
    ``tr(P Omega)`` (asserted), so a fit biased by 5 % sits more than 5.6 standard errors off and
    fails the test with probability >= 0.95; an unbiased fit fails it with probability 6e-5.
    Plain least squares (bias about -6 % here, from the disturbance shared by ``x_{j+1}``, ``S_j``
    and the Ito term) fails it; the instrumented fit passes, just identified or over-identified, and also
    estimates ``tr(PW)``."""
    p = base()
    Om = np.array(p.x0_cov)
    W = 0.05 * Om
    q = p.with_noise(W=W)
    data = intervals(NoisyLinearPlant(q, np.random.default_rng(5)), 3000, 10, 0.5, seed=4)
    P = p.value_matrix(K)
    g0 = float(np.trace(P @ Om))

    def z(ev) -> float:
        se = ev.value_se(Om)
        assert se <= 0.0089 * g0
        return (float(np.trace(ev.P @ Om)) - g0) / se

    iv, ls = instrumented_fit(*data, 0.5, p.R, overidentify=overidentify), least_squares_fit(*data, 0.5, p.R)
    assert abs(z(iv)) <= 4.0
    assert abs(z(ls)) > 4.0
    cov = iv.cov[-1, -1] ** 0.5
    assert abs(iv.trPW - np.trace(P @ W)) <= 4.0 * cov
    nE = p.E(K).size
    q_ = P.shape[0] * (P.shape[0] + 1) // 2
    zE = (iv.E - p.E(K)).ravel() / np.sqrt(np.diag(iv.cov)[q_:q_ + nE])
    assert np.max(np.abs(zE)) <= 4.0


def test_instrumented_fit_refuses_unidentifiable_data() -> None:
    p = base()
    D, x0, x1, S, c = intervals(LinearPlant(p), 10, 3, 0.4, seed=2)
    with pytest.raises(ValueError, match="D all zero"):
        instrumented_fit(np.zeros_like(D), x0, x1, S, c, 0.4, p.R)
    with pytest.raises(ValueError, match="dt"):
        instrumented_fit(D, x0, x1, S, c, -1.0, p.R)
