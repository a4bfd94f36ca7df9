"""State moments of rollouts (S = int x x' dt, x_end = x(tau)) against closed forms.

References: Kronecker-product Lyapunov solves, ``scipy.linalg.expm`` and RK4 on the
augmented state ``[x; vec(x x')]`` -- none calls the code under test.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.linalg as sla

import azopg
from _support import kron_value_matrix, random_problem, stiff_problem
from azopg.plants.base import BLOWUP_COST, RolloutResult, returns_moments
from azopg.plants.callable import CallablePlant
from azopg.plants.gym import GymPlant
from azopg.plants.latency import LatencyPlant


def kron_lyapunov(Acl: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``X`` with ``Acl X + X Acl' + C = 0`` by a dense Kronecker solve."""
    n = Acl.shape[0]
    L = np.kron(np.eye(n), Acl) + np.kron(Acl, np.eye(n))
    X = np.linalg.solve(L, -C.reshape(-1, order="F")).reshape((n, n), order="F")
    return 0.5 * (X + X.T)


def finite_horizon_moments(Acl: np.ndarray, x0: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """``S(tau)`` from ``Acl S + S Acl' = x_end x_end' - x0 x0'`` and ``x_end = expm(Acl tau) x0``."""
    xe = sla.expm(Acl * tau) @ x0
    return kron_lyapunov(Acl, np.outer(x0, x0) - np.outer(xe, xe)), xe


def rk4_moments(Acl: np.ndarray, x0: np.ndarray, tau: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """RK4 on ``dx/dt = Acl x``, ``dS/dt = x x'``."""
    def f(x):
        return Acl @ x, np.outer(x, x)

    h = tau / steps
    x, S = np.array(x0, dtype=float), np.zeros((x0.size, x0.size))
    for _ in range(steps):
        k1, s1 = f(x)
        k2, s2 = f(x + 0.5 * h * k1)
        k3, s3 = f(x + 0.5 * h * k2)
        k4, s4 = f(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        S = S + h / 6 * (s1 + 2 * s2 + 2 * s3 + s4)
    return S, x


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


CASES = [("stiff-0", stiff_problem(0)), ("stiff-1", stiff_problem(1)),
         ("he1", azopg.get_problem("he1")), ("random-4x2", random_problem(np.random.default_rng(5), 4, 2))]


@pytest.mark.parametrize("tau", [0.05, 3.0, 50.0, 1000.0])
@pytest.mark.parametrize(("label", "p"), CASES, ids=[c[0] for c in CASES])
def test_moments_match_finite_horizon_lyapunov_closed_form(label, p, tau):
    rng = np.random.default_rng(1)
    K = np.asarray(p.K0)
    x0 = rng.standard_normal((5, p.n))
    out = azopg.LinearPlant(p).rollout(K, x0, tau, moments=True)
    assert not out.blown_up.any()
    assert out.S.shape == (5, p.n, p.n) and out.x_end.shape == (5, p.n)
    Acl = p.closed_loop(K)
    for i in range(5):
        S, xe = finite_horizon_moments(Acl, x0[i], tau)
        assert rel(out.S[i], S) <= 1e-9
        np.testing.assert_allclose(out.x_end[i], xe, rtol=1e-9, atol=1e-12 * np.abs(x0[i]).max())
        np.testing.assert_array_equal(out.S[i], out.S[i].T)


def test_moments_tend_to_the_infinite_horizon_lyapunov_solution():
    p = random_problem(np.random.default_rng(2), 5, 2)
    x0 = np.random.default_rng(3).standard_normal((3, p.n))
    out = azopg.LinearPlant(p).rollout(p.K0, x0, 400.0, moments=True)  # abscissa -0.5: e^-400 is nothing
    for i in range(3):
        assert rel(out.S[i], kron_lyapunov(p.closed_loop(p.K0), np.outer(x0[i], x0[i]))) <= 1e-10


def test_moments_match_fine_rk4_at_short_horizon():
    p = random_problem(np.random.default_rng(4), 4, 2)
    rng = np.random.default_rng(5)
    Ks = np.asarray(p.K0) + 0.5 * rng.standard_normal((3, p.m, p.n))
    x0 = rng.standard_normal((3, p.n))
    out = azopg.LinearPlant(p).rollout(Ks, x0, 0.8, moments=True)
    for i in range(3):
        S, xe = rk4_moments(p.closed_loop(Ks[i]), x0[i], 0.8, 2000)
        assert rel(out.S[i], S) <= 1e-10
        assert rel(out.x_end[i], xe) <= 1e-10


@pytest.mark.parametrize("tau", [0.3, 20.0])
def test_cost_is_the_weighted_moment_and_unchanged_bits(tau):
    p = azopg.get_problem("ac1")
    rng = np.random.default_rng(6)
    Ks = np.asarray(p.K0) + 0.05 * rng.standard_normal((7, p.m, p.n))
    x0 = rng.standard_normal((7, p.n))
    plant = azopg.LinearPlant(p)
    with_m = plant.rollout(Ks, x0, tau, moments=True)
    without = plant.rollout(Ks, x0, tau)
    assert without.S is None and without.x_end is None
    np.testing.assert_array_equal(with_m.cost, without.cost)
    np.testing.assert_array_equal(with_m.blown_up, without.blown_up)
    Qk = np.asarray(p.Q) + np.swapaxes(Ks, 1, 2) @ np.asarray(p.R) @ Ks
    np.testing.assert_allclose(np.einsum("bij,bji->b", Qk, with_m.S), with_m.cost, rtol=1e-12)


def test_mixed_batch_moments_equal_single_rollouts():
    # rollouts with very different step counts share one batch (the masked doubling)
    p = stiff_problem(2)
    rng = np.random.default_rng(7)
    Ks = np.stack([np.asarray(p.K0), 0.0 * np.asarray(p.K0), 20.0 * np.asarray(p.B).T])  # A symmetric Hurwitz
    assert all(p.is_stabilizing(K) for K in Ks)
    x0 = rng.standard_normal((3, p.n))
    plant = azopg.LinearPlant(p)
    batch = plant.rollout(Ks, x0, 30.0, moments=True)
    for i in range(3):
        one = plant.rollout(Ks[i][None], x0[i][None], 30.0, moments=True)
        assert rel(batch.S[i], one.S[0]) <= 1e-13
        np.testing.assert_allclose(batch.x_end[i], one.x_end[0], rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("seed", range(4))
def test_rollout_identity_holds_for_any_perturbation(seed):
    """f_tau(x0; K + D) = x0'P x0 - x_end'P x_end + tr(S (D'RD + 2 D'E)), P, E of K."""
    rng = np.random.default_rng(seed)
    p = random_problem(rng, 4, 2)
    K = np.asarray(p.K0) + 0.1 * rng.standard_normal((p.m, p.n))
    assert p.is_stabilizing(K)
    P = kron_value_matrix(p, K)
    E = np.asarray(p.R) @ K - np.asarray(p.B).T @ P
    D = rng.standard_normal((6, p.m, p.n)) * np.array([0.0, 1e-3, 0.1, 0.3, 0.6, 1.0])[:, None, None]
    x0 = rng.standard_normal((6, p.n))
    tau = float(rng.uniform(0.2, 10.0))
    out = azopg.LinearPlant(p).rollout(K + D, x0, tau, moments=True)
    assert not out.blown_up.any()
    W = np.swapaxes(D, 1, 2) @ np.asarray(p.R) @ D + 2.0 * np.swapaxes(D, 1, 2) @ E
    rhs = (np.einsum("bi,ij,bj->b", x0, P, x0) - np.einsum("bi,ij,bj->b", out.x_end, P, out.x_end)
           + np.einsum("bij,bji->b", out.S, W))
    np.testing.assert_allclose(out.cost, rhs, rtol=1e-10)


def test_blown_up_rollouts_have_nan_moments():
    p = azopg.get_problem("he1")
    x0 = np.ones((2, p.n))
    out = azopg.LinearPlant(p).rollout(np.stack([p.K0, -1e3 * np.ones((p.m, p.n))]), x0, 50.0, moments=True)
    assert out.blown_up.tolist() == [False, True] and out.cost[1] == BLOWUP_COST
    assert np.isfinite(out.S[0]).all() and np.isnan(out.S[1]).all() and np.isnan(out.x_end[1]).all()


def test_protocol_attribute_and_positional_result():
    p = azopg.get_problem("he1")
    assert returns_moments(azopg.LinearPlant(p))
    assert not returns_moments(object())
    assert not returns_moments(CallablePlant(lambda K, x0, tau, rng: 0.0, 2, 1))
    r = RolloutResult(np.zeros(1), np.zeros(1, dtype=bool))
    assert r.S is None and r.x_end is None and len(r) == 4


def test_latency_wrapper_forwards_moments():
    p = azopg.get_problem("he1")
    slow = LatencyPlant(azopg.LinearPlant(p), 0.0)
    assert returns_moments(slow)
    x0 = np.ones((2, p.n))
    out = slow.rollout(p.K0, x0, 3.0, moments=True)
    ref = azopg.LinearPlant(p).rollout(p.K0, x0, 3.0, moments=True)
    np.testing.assert_array_equal(out.S, ref.S)
    assert slow.rollout(p.K0, x0, 3.0).S is None


# ------------------------------------------------------------------ adapters
def _moment_cost(plant: azopg.LinearPlant, K, x0, tau, rng):
    out = plant.rollout(K[None], x0[None], tau, moments=True)
    return float(out.cost[0]), out.S[0], out.x_end[0]


def test_callable_plant_passes_moments_through():
    p = azopg.get_problem("he1")
    lp = azopg.LinearPlant(p)
    cp = CallablePlant(functools.partial(_moment_cost, lp), p.n, p.m, returns_moments=True)
    assert returns_moments(cp)
    rng = np.random.default_rng(8)
    x0 = rng.standard_normal((3, p.n))
    ref = lp.rollout(p.K0, x0, 4.0, moments=True)
    out = cp.rollout(p.K0, x0, 4.0, moments=True)
    np.testing.assert_allclose(out.S, ref.S, rtol=1e-14)
    np.testing.assert_allclose(out.x_end, ref.x_end, rtol=1e-14)
    assert cp.rollout(p.K0, x0, 4.0).S is None
    with pytest.raises(ValueError, match="does not return moments"):
        CallablePlant(lambda K, x0, tau, rng: 0.0, p.n, p.m).rollout(p.K0, x0, 4.0, moments=True)


def test_callable_plant_malformed_moments_flag_the_rollout():
    def bad(K, x0, tau, rng):
        return 1.0, np.ones(3), x0  # S of the wrong shape
    cp = CallablePlant(bad, 2, 1, returns_moments=True)
    with pytest.warns(RuntimeWarning):
        out = cp.rollout(np.zeros((1, 2)), np.ones((2, 2)), 1.0, moments=True)
    assert out.blown_up.all() and np.isnan(out.S).all() and cp.errors == 2


def test_gym_plant_moments_are_the_riemann_sum_of_observations():
    gym = pytest.importorskip("gymnasium")  # noqa: F841
    from azopg.plants.envs import LinearEnv, zoh_matrices

    p = azopg.get_problem("rea1")
    dt, steps = 0.05, 40
    plant = GymPlant(functools.partial(LinearEnv.from_problem, p, dt=dt), p.n, p.m)
    assert returns_moments(plant)
    rng = np.random.default_rng(9)
    K = np.asarray(p.K0) + 0.1 * rng.standard_normal((2, p.m, p.n))
    x0 = rng.standard_normal((2, p.n))
    out = plant.rollout(K, x0, steps * dt, moments=True)
    Ad, Bd, _ = zoh_matrices(p.A, p.B, p.Q, p.R, dt)
    for i in range(2):
        x, S = x0[i].copy(), np.zeros((p.n, p.n))
        for _ in range(steps):
            S += np.outer(x, x) * dt
            x = (Ad - Bd @ K[i]) @ x
        np.testing.assert_allclose(out.S[i], S, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.x_end[i], x, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(out.cost, plant.rollout(K, x0, steps * dt).cost)
