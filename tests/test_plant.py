"""LinearPlant rollouts against closed forms (Lyapunov, RK4) and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

import azopg
from _support import random_problem, rk4_rollout_costs, stiff_problem
from azopg.plants.base import BLOWUP_COST


def lyapunov_rollout_costs(p: azopg.LQRProblem, K: np.ndarray, x0: np.ndarray, tau: float) -> np.ndarray:
    """Exact ``f_tau(x0) = x0'(P - E'PE)x0`` with ``P = P(K)``, ``E = expm((A - BK) tau)``."""
    P = p.value_matrix(K)
    E = sla.expm(p.closed_loop(K) * tau)
    return np.einsum("bi,ij,bj->b", x0, P - E.T @ P @ E, x0)


def van_loan_rollout_costs(p: azopg.LQRProblem, K: np.ndarray, x0: np.ndarray, tau: float) -> np.ndarray:
    """One block exponential of the whole horizon: ``expm([[-Acl', Qk], [0, Acl]] tau)``,
    ``M = F22' F12``."""
    n = p.n
    Acl = p.closed_loop(K)
    Qk = p.Q + K.T @ p.R @ K
    H = np.block([[-Acl.T, Qk], [np.zeros((n, n)), Acl]]) * tau
    with np.errstate(all="ignore"):
        F = sla.expm(H)
        M = F[n:, n:].T @ F[:n, n:]
        return np.einsum("bi,ij,bj->b", x0, M, x0)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        return float(np.max(np.abs(got - ref) / np.abs(ref)))


def long_horizon_cases():
    cases = []
    for seed in range(3):
        p = stiff_problem(seed)  # closed-loop eigenvalues spanning about -0.01 .. -50
        cases.append((f"stiff-{seed}", p, np.array(p.K0)))
    he1 = azopg.get_problem("he1")
    cases.append(("he1-K0", he1, np.array(he1.K0)))
    cases.append(("he1-Kstar", he1, np.array(he1.optimal_gain)))
    cases.append(("tg1-K0", azopg.get_problem("tg1"), np.array(azopg.get_problem("tg1").K0)))
    p = random_problem(np.random.default_rng(5), 4, 2)
    cases.append(("random-4x2", p, np.array(p.K0)))
    return cases


LONG = long_horizon_cases()


def test_stiff_problem_really_is_stiff():
    for seed in range(3):
        p = stiff_problem(seed)
        re = np.linalg.eigvals(p.closed_loop(p.K0)).real
        assert re.max() > -0.02 and re.max() < 0
        assert re.min() < -40


# ----------------------------------------------------------- 3. long horizons

@pytest.mark.parametrize("tau", [20.0, 50.0, 200.0, 1000.0])
@pytest.mark.parametrize(("label", "p", "K"), LONG, ids=[c[0] for c in LONG])
def test_rollout_matches_lyapunov_closed_form(label, p, K, tau):
    rng = np.random.default_rng(123)
    x0 = rng.standard_normal((16, p.n))
    ref = lyapunov_rollout_costs(p, K, x0, tau)
    out = azopg.LinearPlant(p).rollout(K, x0, tau)
    assert not out.blown_up.any()
    assert out.cost.shape == (16,)
    assert rel_err(out.cost, ref) <= 1e-9


def test_expected_rollout_cost_converges_to_exact_cost():
    # with the evaluation states, mean cost = tr(M(tau) Omega) -> f(K) as tau grows
    p = random_problem(np.random.default_rng(9), 3, 2)
    plant = azopg.LinearPlant(p)
    X = plant.evaluation_states()
    np.testing.assert_allclose(X.T @ X / X.shape[0], p.x0_cov, rtol=1e-12, atol=1e-14)
    f_long = float(np.mean(plant.rollout(p.K0, X, 500.0).cost))
    assert f_long == pytest.approx(p.cost(p.K0), rel=1e-11)
    f_short = float(np.mean(plant.rollout(p.K0, X, 1.0).cost))
    P, E = p.value_matrix(p.K0), sla.expm(p.closed_loop(p.K0))
    assert f_short == pytest.approx(np.trace((P - E.T @ P @ E) @ p.x0_cov), rel=1e-11)
    assert f_short < f_long


@pytest.mark.parametrize(("fast", "seeds"), [(2.0, range(3)), (50.0, range(2))])
def test_single_van_loan_exponential_fails_where_rollout_does_not(fast, seeds):
    """Contrast documenting the doubling scheme: one Van Loan exponential of the horizon
    has entries ~ exp(fast * tau) that swamp the answer (or overflow to NaN), while the
    rollout keeps rounding-level accuracy."""
    tau = 50.0
    for seed in seeds:
        p = stiff_problem(seed, n=4, m=1, slow=0.05, fast=fast)
        K = np.array(p.K0)
        x0 = np.random.default_rng(seed).standard_normal((8, p.n))
        ref = lyapunov_rollout_costs(p, K, x0, tau)
        # the Van Loan formula itself is right: accurate at a short horizon
        short = 0.5 / fast
        assert rel_err(van_loan_rollout_costs(p, K, x0, short), lyapunov_rollout_costs(p, K, x0, short)) < 1e-9
        vl_err = rel_err(van_loan_rollout_costs(p, K, x0, tau), ref)
        assert not vl_err < 1e-3  # inaccurate, or NaN
        assert rel_err(azopg.LinearPlant(p).rollout(K, x0, tau).cost, ref) <= 1e-9


# ------------------------------------------------- 4. short horizons vs RK4

def short_horizon_cases():
    he1 = azopg.get_problem("he1")
    rng = np.random.default_rng(77)
    p = random_problem(rng, 3, 2)
    return [
        ("he1-K0", he1, np.array(he1.K0)),
        ("he1-open-loop-unstable", he1, np.zeros((he1.m, he1.n))),
        ("random-3x2", p, 0.3 * rng.standard_normal((p.m, p.n))),
        ("random-3x2-destabilizing", p, -3.0 * np.ones((p.m, p.n))),
        ("scalar", azopg.LQRProblem(0.3, 1.0, 2.0, 0.5, K0=1.0), np.array([[1.0]])),
    ]


SHORT = short_horizon_cases()


@pytest.mark.parametrize("tau", [0.5, 2.0])
@pytest.mark.parametrize(("label", "p", "K"), SHORT, ids=[c[0] for c in SHORT])
def test_rollout_matches_rk4(label, p, K, tau):
    rng = np.random.default_rng(31)
    b = 6
    x0 = rng.standard_normal((b, p.n))
    Ks = np.broadcast_to(K, (b, p.m, p.n))
    norm = np.abs(p.closed_loop(K)).sum(axis=0).max()
    steps = max(int(np.ceil(tau * norm / 0.02)), 500)  # ||Acl h|| <= 0.02: RK4 error ~ 1e-10
    ref = rk4_rollout_costs(p, Ks, x0, tau, steps)
    out = azopg.LinearPlant(p).rollout(Ks, x0, tau)
    assert not out.blown_up.any()
    assert rel_err(out.cost, ref) <= 1e-8


def test_rk4_reference_is_converged():
    # the reference at the chosen step agrees with one at half the step
    _label, p, K = SHORT[0]
    x0 = np.random.default_rng(0).standard_normal((3, p.n))
    Ks = np.broadcast_to(K, (3, p.m, p.n))
    norm = np.abs(p.closed_loop(K)).sum(axis=0).max()
    steps = int(np.ceil(2.0 * norm / 0.02))
    a = rk4_rollout_costs(p, Ks, x0, 2.0, steps)
    b = rk4_rollout_costs(p, Ks, x0, 2.0, 2 * steps)
    assert rel_err(a, b) < 1e-10


# ------------------------------------------------------ 5. batch semantics

def test_batch_equals_one_at_a_time():
    p = random_problem(np.random.default_rng(4), 4, 2)
    plant = azopg.LinearPlant(p)
    rng = np.random.default_rng(8)
    b = 12
    Ks = np.array(p.K0) + 0.3 * rng.standard_normal((b, p.m, p.n))
    x0 = rng.standard_normal((b, p.n))
    for tau in (0.7, 30.0):
        batch = plant.rollout(Ks, x0, tau)
        single = [plant.rollout(Ks[i][None], x0[i][None], tau) for i in range(b)]
        np.testing.assert_allclose(batch.cost, [s.cost[0] for s in single], rtol=1e-11)
        np.testing.assert_array_equal(batch.blown_up, [s.blown_up[0] for s in single])
        # against the closed form too, per element
        for i in range(b):
            if p.is_stabilizing(Ks[i]):
                ref = lyapunov_rollout_costs(p, Ks[i], x0[i][None], tau)
                assert rel_err(batch.cost[i:i + 1], ref) <= 1e-9


def test_two_dimensional_gain_broadcasts():
    p = azopg.get_problem("he1")
    plant = azopg.LinearPlant(p)
    x0 = np.random.default_rng(2).standard_normal((5, p.n))
    K = np.array(p.K0)
    a = plant.rollout(K, x0, 10.0)
    b = plant.rollout(np.broadcast_to(K, (5, p.m, p.n)), x0, 10.0)
    np.testing.assert_array_equal(a.cost, b.cost)
    np.testing.assert_array_equal(a.blown_up, b.blown_up)
    # a single state given flat is one rollout
    c = plant.rollout(K, x0[0], 10.0)
    assert c.cost.shape == (1,)
    assert c.cost[0] == pytest.approx(a.cost[0], rel=1e-12)


def test_rollout_is_quadratic_in_x0():
    p = azopg.get_problem("he1")
    plant = azopg.LinearPlant(p)
    x = np.random.default_rng(3).standard_normal(p.n)
    c1, c3 = plant.rollout(p.K0, np.stack([x, 3 * x]), 5.0).cost
    assert c3 == pytest.approx(9 * c1, rel=1e-12)
    assert plant.rollout(p.K0, np.zeros((1, p.n)), 5.0).cost[0] == 0.0


def test_batch_result_does_not_depend_on_other_gains_in_the_batch():
    p = azopg.get_problem("he1")
    plant = azopg.LinearPlant(p)
    x0 = np.random.default_rng(0).standard_normal((2, p.n))
    alone = plant.rollout(p.K0, x0[:1], 20.0)
    with np.errstate(all="ignore"):
        mixed = plant.rollout(np.stack([p.K0, np.full((p.m, p.n), 1e12)]), x0, 20.0)
    assert not mixed.blown_up[0]
    assert mixed.cost[0] == pytest.approx(alone.cost[0], rel=1e-9)


# ------------------------------------------------------------- 6. blow-up

@pytest.mark.parametrize("tau", [200.0, 1000.0, 1e6])
def test_non_stabilizing_gain_blows_up_to_a_finite_flag(tau):
    p = azopg.get_problem("he1")  # open loop unstable, spectral abscissa ~ 0.28
    plant = azopg.LinearPlant(p)
    K = np.zeros((p.m, p.n))
    x0 = np.random.default_rng(1).standard_normal((8, p.n))
    out = plant.rollout(K, x0, tau)
    assert np.all(np.isfinite(out.cost))
    assert out.blown_up.dtype == bool and out.blown_up.all()
    assert np.all(out.cost == BLOWUP_COST)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("value", [1e200, -1e200, 1e300])
def test_huge_gain_gives_finite_flagged_cost(value):
    p = azopg.get_problem("he1")
    plant = azopg.LinearPlant(p)
    x0 = np.random.default_rng(1).standard_normal((3, p.n))
    out = plant.rollout(np.full((p.m, p.n), value), x0, 10.0)
    assert np.all(np.isfinite(out.cost))
    assert out.blown_up.all()
    assert np.all(out.cost == BLOWUP_COST)


def test_mildly_unstable_gain_short_horizon_not_flagged():
    # the flag means "diverged at this horizon": a short rollout of an unstable loop is a
    # finite, correct cost
    p = azopg.get_problem("he1")
    K = np.zeros((p.m, p.n))
    x0 = np.random.default_rng(6).standard_normal((4, p.n))
    out = azopg.LinearPlant(p).rollout(K, x0, 1.0)
    assert not out.blown_up.any()
    ref = rk4_rollout_costs(p, np.broadcast_to(K, (4, p.m, p.n)), x0, 1.0, 2000)
    assert rel_err(out.cost, ref) <= 1e-8


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_non_positive_horizon_rejected(tau):
    p = azopg.get_problem("he1")
    with pytest.raises(ValueError):
        azopg.LinearPlant(p).rollout(p.K0, np.ones((1, p.n)), tau)


def test_initial_states_have_the_problem_covariance():
    p = random_problem(np.random.default_rng(12), 3, 1)
    plant = azopg.LinearPlant(p)
    X = plant.initial_states(np.random.default_rng(0), 200_000)
    assert X.shape == (200_000, 3)
    emp = X.T @ X / X.shape[0]
    # entrywise std of the sample second moment is <= sqrt(2/M) * max|Omega|
    assert np.max(np.abs(emp - p.x0_cov)) < 5 * np.sqrt(2 / X.shape[0]) * np.abs(p.x0_cov).max()
    assert isinstance(plant, azopg.Plant)
