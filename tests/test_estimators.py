"""Zero-order gradient estimators: directions, unbiasedness (Hotelling tests), blow-ups.

Per-sample estimates are recovered from one batched call: ``estimate_gradient`` draws
its directions first from ``rng``, so the same seed rebuilds them and
``g_i = N w_i U_i`` is the i-th single-direction estimate (``grad`` is their mean).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.stats as st

import azopg
from _support import hotelling, hotelling_threshold, random_problem
from azopg.method.estimators import rebuild_estimate
from azopg.plants.base import BLOWUP_COST


def per_sample_estimates(plant, K, *, r, N, tau, seed, method):
    est = azopg.estimate_gradient(plant, K, r=r, N=N, tau=tau, rng=np.random.default_rng(seed), method=method)
    U = azopg.sphere_directions(np.random.default_rng(seed), N, *np.shape(K))
    G = (N * est.weights)[:, None, None] * U
    np.testing.assert_allclose(G.mean(axis=0), est.grad, rtol=1e-10, atol=1e-14 * np.abs(G).max())
    return est, G


# ------------------------------------------------------------------ directions

def test_sphere_directions_norm_and_isotropy():
    m, n, N = 2, 3, 40_000
    d = m * n
    U = azopg.sphere_directions(np.random.default_rng(0), N, m, n)
    assert U.shape == (N, m, n)
    np.testing.assert_allclose(np.sqrt(np.sum(U * U, axis=(1, 2))), math.sqrt(d), rtol=1e-13)
    X = U.reshape(N, d)
    # E[u] = 0 with Var(u_i) = 1; E[u u'] = I with Var(u_i u_j) <= 2
    assert np.max(np.abs(X.mean(axis=0))) < 5 / math.sqrt(N)
    assert np.max(np.abs(X.T @ X / N - np.eye(d))) < 5 * math.sqrt(2 / N)
    # uniform on the sphere: u_1^2 / d ~ Beta(1/2, (d-1)/2)
    assert st.kstest(X[:, 0] ** 2 / d, st.beta(0.5, (d - 1) / 2).cdf).pvalue > 1e-3
    # and the check has power: Gaussian (not normalized) directions fail the norm test
    G = np.random.default_rng(0).standard_normal((N, d))
    assert not np.allclose(np.linalg.norm(G, axis=1), math.sqrt(d), rtol=1e-3)


def test_sphere_directions_reproducible():
    a = azopg.sphere_directions(np.random.default_rng(5), 7, 2, 2)
    b = azopg.sphere_directions(np.random.default_rng(5), 7, 2, 2)
    assert np.array_equal(a, b)


# --------------------------------------------------------- two-point, unbiased

def test_two_point_estimator_is_unbiased():
    rng = np.random.default_rng(2024)
    p = random_problem(rng, 3, 2)
    K = np.array(p.K0) + 0.05 * rng.standard_normal((p.m, p.n))
    g = p.gradient(K)
    d = g.size
    r, tau, M = 1e-4, 100.0, 100_000
    plant = azopg.LinearPlant(p)

    # truncation: relative tail beyond tau, tr(E'PE Omega)/f, is negligible
    P, E = p.value_matrix(K), sla.expm(p.closed_loop(K) * tau)
    assert np.trace(E.T @ P @ E @ p.x0_cov) / p.cost(K) < 1e-15
    assert p.spectral_abscissa(K) < -0.3  # and K +- r U stays that stable (r sqrt(d) B ~ 1e-2)

    est, G = per_sample_estimates(plant, K, r=r, N=M, tau=tau, seed=99, method="two-point")
    assert est.rollouts == 2 * M and est.blown_up == 0
    S = np.cov(G.reshape(M, d), rowvar=False)

    # smoothing bias b = E[(Delta(U) - <g, U>) U], Delta = (f(K+rU) - f(K-rU)) / 2r with the
    # exact cost; |b| <= sqrt(d) sup |Delta - <g,U>|, and its contribution to T^2 is
    # at most M |b|^2 / lambda_min(S)
    Us = azopg.sphere_directions(np.random.default_rng(1), 200, p.m, p.n)
    dev = max(abs((p.cost(K + r * U) - p.cost(K - r * U)) / (2 * r) - np.sum(g * U)) for U in Us)
    bias_bound = 2 * math.sqrt(d) * dev  # x2 for directions not sampled
    assert M * bias_bound**2 / np.linalg.eigvalsh(S).min() < 0.5

    thr = hotelling_threshold(M, d)
    assert thr == pytest.approx(st.chi2.ppf(0.999, d), rel=0.01)
    assert hotelling(G, g) < thr
    # the test has power: a 20 % bias would be detected
    assert hotelling(G, 1.2 * g) > 3 * thr
    assert hotelling(G, 0.0 * g) > 100 * thr

    # centre cost: mean of x'P x over M states, Var(x'Px) = 2 tr((P Omega)^2) for Gaussian x
    PO = P @ p.x0_cov
    sd = math.sqrt(2 * np.trace(PO @ PO) / M)
    assert abs(est.center_cost - p.cost(K)) < 5 * sd


def circle_smoothed_gradient(p, K, r, points=512):
    """For m n = 2 the directions lie on a circle: ``E[f(K + rU) U] / r`` by the (spectrally
    accurate) periodic trapezoid rule on the exact cost."""
    th = np.linspace(0.0, 2 * np.pi, points, endpoint=False)
    Us = math.sqrt(2) * np.stack([np.cos(th), np.sin(th)], axis=1).reshape(points, *np.shape(K))
    costs = np.array([p.cost(K + r * U) for U in Us])
    assert np.all(np.isfinite(costs))
    return np.tensordot(costs, Us, axes=1) / (points * r)


def test_smoothed_gradient_quadrature_converged():
    p = azopg.random_system(2, 1, seed=0)
    K = np.array(p.K0) + np.array([[0.3, -0.2]])
    a = circle_smoothed_gradient(p, K, 0.3, 128)
    b = circle_smoothed_gradient(p, K, 0.3, 512)
    assert np.max(np.abs(a - b)) < 1e-12 * np.abs(b).max()
    # r -> 0 recovers the gradient
    np.testing.assert_allclose(circle_smoothed_gradient(p, K, 1e-4), p.gradient(K), rtol=1e-6)


def test_two_point_with_large_radius_estimates_the_smoothed_gradient():
    # at a large radius the estimator is unbiased for the *smoothed* gradient, and the
    # Hotelling test resolves the difference to the plain gradient
    p = azopg.random_system(2, 1, seed=0)
    K = np.array(p.K0) + np.array([[0.3, -0.2]])
    r, M = 0.3, 20_000
    Gr = circle_smoothed_gradient(p, K, r)
    _, G = per_sample_estimates(azopg.LinearPlant(p), K, r=r, N=M, tau=60.0, seed=3, method="two-point")
    thr = hotelling_threshold(M, 2)
    assert hotelling(G, Gr) < thr
    assert hotelling(G, p.gradient(K)) > 3 * thr


# --------------------------------------------------------- one-point, unbiased

def test_one_point_estimator_scalar_closed_form():
    """n = m = 1: U = +-1, so the one-point mean is exactly the central difference
    (f(k+r) - f(k-r)) / 2r of f(k) = omega (q + R k^2) / (2 (b k - a))."""
    a, b, q, R, k, r = -1.0, 1.0, 1.0, 1.0, 1.0, 0.5
    p = azopg.LQRProblem(a, b, q, R, K0=k)

    def f(k):
        return (q + R * k * k) / (2 * (b * k - a))

    smoothed = (f(k + r) - f(k - r)) / (2 * r)  # 0.2333...
    exact = p.gradient([[k]])[0, 0]  # 0.25
    assert exact == pytest.approx(0.25, rel=1e-12)
    M = 1_000_000
    # slowest closed-loop decay 2 (b (k - r) - a) = 3: tail exp(-3 tau) negligible at tau = 40
    est, G = per_sample_estimates(azopg.LinearPlant(p), np.array([[k]]), r=r, N=M, tau=40.0, seed=17,
                                  method="one-point")
    assert est.rollouts == M and est.blown_up == 0
    thr = hotelling_threshold(M, 1)
    assert hotelling(G, smoothed) < thr
    # power: the 7 % smoothing bias of the plain gradient, and a 20 % bias, are detected
    assert hotelling(G, exact) > 3 * thr
    assert hotelling(G, 1.2 * smoothed) > 10 * thr


def test_one_point_estimator_is_unbiased_for_smoothed_gradient():
    p = azopg.random_system(2, 1, seed=0)
    K = np.array(p.K0) + np.array([[0.3, -0.2]])
    r, M = 0.3, 400_000
    Gr = circle_smoothed_gradient(p, K, r)
    assert max(p.spectral_abscissa(K + r * math.sqrt(2) * np.array([[math.cos(t), math.sin(t)]]))
               for t in np.linspace(0, 2 * np.pi, 64)) < -0.4  # tail at tau = 60: exp(-48)
    est, G = per_sample_estimates(azopg.LinearPlant(p), K, r=r, N=M, tau=60.0, seed=5, method="one-point")
    assert est.blown_up == 0
    thr = hotelling_threshold(M, 2)
    assert hotelling(G, Gr) < thr
    assert hotelling(G, 1.2 * Gr) > 2 * thr
    assert hotelling(G, 0.0 * Gr) > 50 * thr


# ------------------------------------------------------------------ light mode

@pytest.mark.parametrize("method", ["two-point", "one-point"])
def test_rebuild_estimate_from_weights(method):
    p = azopg.get_problem("he1")
    est = azopg.estimate_gradient(azopg.LinearPlant(p), p.K0, r=1e-3, N=7, tau=20.0,
                                  rng=np.random.default_rng(42), method=method)
    assert est.weights.shape == (7,)
    g = rebuild_estimate(est.weights, np.random.default_rng(42), p.m, p.n)
    np.testing.assert_allclose(g, est.grad, rtol=1e-12, atol=1e-15)


def test_unknown_method_rejected():
    p = azopg.get_problem("he1")
    with pytest.raises(ValueError):
        azopg.estimate_gradient(azopg.LinearPlant(p), p.K0, r=1e-3, N=2, tau=1.0,
                                rng=np.random.default_rng(0), method="three-point")


# ------------------------------------------------------------------- blow-ups

def boundary_problem():
    """Upper-triangular closed loop ``[[0.5 - k1, -k2], [0, -1]]``: ``K`` stabilizes iff k1 > 0.5."""
    return azopg.LQRProblem([[0.5, 0.0], [0.0, -1.0]], [[1.0], [0.0]], K0=[[1.5, 0.0]])


@pytest.mark.parametrize("method", ["two-point", "one-point"])
def test_estimate_with_some_blown_up_rollouts(method):
    p = boundary_problem()
    K = np.array([[0.6, 0.0]])  # spectral abscissa -0.1
    plant = azopg.LinearPlant(p)
    r, N, tau, seed = 0.2, 64, 20_000.0, 7
    U = azopg.sphere_directions(np.random.default_rng(seed), N, p.m, p.n)
    plus = np.array([p.spectral_abscissa(K + r * u) for u in U])
    minus = np.array([p.spectral_abscissa(K - r * u) for u in U])
    np.testing.assert_allclose(plus, np.maximum(-1.0, 0.5 - (K[0, 0] + r * U[:, 0, 0])), rtol=1e-12)
    margins = np.abs(np.concatenate([plus, minus]))
    assert margins.min() > 0.002  # every rollout clearly converges or diverges (e^{0.002 tau} = e^40)
    bad = (plus >= 0) | (minus >= 0) if method == "two-point" else plus >= 0
    assert 0 < bad.sum() < N

    est = azopg.estimate_gradient(plant, K, r=r, N=N, tau=tau, rng=np.random.default_rng(seed), method=method)
    assert est.blown_up == int(bad.sum())
    assert np.all(np.isfinite(est.grad)) and np.all(np.isfinite(est.weights))
    assert np.all(est.weights[bad] == 0)
    assert math.isfinite(est.center_cost) and est.center_cost < BLOWUP_COST / 1e100

    # the estimate is the mean over the surviving samples, from independent rollouts
    rng = np.random.default_rng(seed)
    azopg.sphere_directions(rng, N, p.m, p.n)
    x0 = plant.initial_states(rng, N)
    ok = ~bad
    cp = plant.rollout(K + r * U[ok], x0[ok], tau).cost
    if method == "two-point":
        cm = plant.rollout(K - r * U[ok], x0[ok], tau).cost
        w = (cp - cm) / (2 * r)
    else:
        w = cp / r
    expected = np.tensordot(w, U[ok], axes=1) / ok.sum()
    np.testing.assert_allclose(est.grad, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("method", ["two-point", "one-point"])
def test_estimate_where_every_rollout_blows_up(method):
    p = azopg.get_problem("he1")
    K = np.zeros((p.m, p.n))  # open loop unstable
    est = azopg.estimate_gradient(azopg.LinearPlant(p), K, r=1e-4, N=5, tau=500.0,
                                  rng=np.random.default_rng(0), method=method)
    assert est.blown_up == 5
    assert np.array_equal(est.grad, np.zeros((p.m, p.n)))
    assert np.array_equal(est.weights, np.zeros(5))
    assert est.center_cost == math.inf
