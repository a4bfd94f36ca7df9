"""Policy evaluation by least squares from rollout moments, against the exact oracle.

The data are exact (LinearPlant rollouts with moments), so the regression must return
the oracle's ``P(K)``, ``E(K) = RK - B'P(K)`` and Kleinman step to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import azopg
from _support import kron_value_matrix, random_problem
from azopg.method.regression import NORMAL_CONDITION, NormalEquations, evaluate_policy, features, unknowns


def rollouts(p: azopg.LQRProblem, center: np.ndarray, b: int, scale: float, taus, rng):
    """``b`` rollouts of gains ``center + scale * N(0, 1)`` per horizon in ``taus``,
    blown-up ones dropped: ``(Ki, x0, x_end, S, cost)``."""
    plant = azopg.LinearPlant(p)
    parts = []
    for tau in taus:
        Ki = center + scale * rng.standard_normal((b, p.m, p.n))
        x0 = rng.standard_normal((b, p.n))
        res = plant.rollout(Ki, x0, tau, moments=True)
        ok = ~res.blown_up
        parts.append((Ki[ok], x0[ok], res.x_end[ok], res.S[ok], res.cost[ok]))
    return tuple(np.concatenate(z) for z in zip(*parts, strict=True))


def oracle(p: azopg.LQRProblem, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P = kron_value_matrix(p, K)
    return P, np.asarray(p.R) @ K - np.asarray(p.B).T @ P


def rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


PROBLEMS = [("he1", azopg.get_problem("he1")), ("ac1", azopg.get_problem("ac1")),
            ("dis4", azopg.get_problem("dis4")), ("random-5x3", random_problem(np.random.default_rng(3), 5, 3))]


@pytest.mark.parametrize("solver", ["svd", "auto"])
@pytest.mark.parametrize("estimate_R", [False, True], ids=["R-known", "R-estimated"])
@pytest.mark.parametrize(("label", "p"), PROBLEMS, ids=[c[0] for c in PROBLEMS])
def test_one_policy_iteration_step_from_exact_rollouts_is_kleinmans(label, p, estimate_R, solver):
    rng = np.random.default_rng(0)
    K = np.asarray(p.K0)
    data = rollouts(p, K, 2 * unknowns(p.n, p.m, True), 0.1, [2.0], rng)
    ev = evaluate_policy(K, *data, R=None if estimate_R else p.R, solver=solver)
    P, E = oracle(p, K)
    assert rel(ev.P, P) <= 1e-8 and rel(ev.E, E) <= 1e-8
    assert rel(ev.R, np.asarray(p.R)) <= 1e-8
    assert rel(ev.kleinman_step(K), p.kleinman_step(K)) <= 1e-8
    assert ev.equations == data[-1].size and np.isfinite(ev.condition)
    assert ev.residual <= 1e-10 * ev.target_norm


def test_stale_rollouts_around_an_old_gain_give_the_same_evaluation():
    """The identity holds for any D: rollouts of gains around an older K_old, at other
    horizons, evaluate the new base gain K as well as fresh rollouts around K do."""
    p = random_problem(np.random.default_rng(4), 4, 2)
    rng = np.random.default_rng(5)
    K_old = np.asarray(p.K0)
    K = p.kleinman_step(K_old)  # the base gain moved on
    fresh = evaluate_policy(K, *rollouts(p, K, 40, 0.05, [3.0], rng), R=p.R)
    stale = evaluate_policy(K, *rollouts(p, K_old, 20, 0.3, [0.5, 3.0, 20.0], rng), R=p.R)
    P, E = oracle(p, K)
    for ev in (fresh, stale):
        assert rel(ev.P, P) <= 1e-8 and rel(ev.E, E) <= 1e-8
    assert rel(stale.E, fresh.E) <= 1e-8


def test_condition_number_grows_as_the_perturbations_become_collinear():
    p = random_problem(np.random.default_rng(6), 4, 2)
    K = np.asarray(p.K0)
    plant = azopg.LinearPlant(p)
    rng = np.random.default_rng(7)
    b = 3 * unknowns(p.n, p.m)
    x0 = rng.standard_normal((b, p.n))
    base = rng.standard_normal((p.m, p.n))
    G = rng.standard_normal((b, p.m, p.n))
    c = rng.uniform(0.5, 1.5, b)[:, None, None] * rng.choice([-1.0, 0.0, 1.0], b)[:, None, None]
    conds = []
    for eps in (1.0, 1e-2, 1e-4):
        Ki = K + 0.1 * (c * base + eps * G)
        res = plant.rollout(Ki, x0, 2.0, moments=True)
        assert not res.blown_up.any()
        conds.append(evaluate_policy(K, Ki, x0, res.x_end, res.S, res.cost, R=p.R).condition)
    assert conds[0] < conds[1] < conds[2]
    assert conds[2] > 1e4 * conds[0]  # ~ eps^-2: m(m-1)/2 directions of E go unseen along one D


def test_too_few_equations_are_reported_singular():
    p = random_problem(np.random.default_rng(8), 3, 2)
    K = np.asarray(p.K0)
    data = rollouts(p, K, unknowns(p.n, p.m) - 1, 0.1, [1.0], np.random.default_rng(9))
    assert evaluate_policy(K, *data, R=p.R).condition == np.inf
    ne = NormalEquations(K, p.R).add(*data)
    ev = ne.solve()
    assert ev.condition > 1e12 and np.isfinite(ev.E).all()  # ridge keeps the solve finite


@pytest.mark.parametrize("estimate_R", [False, True], ids=["R-known", "R-estimated"])
def test_normal_equations_in_any_order_or_merged_match_one_batch(estimate_R):
    p = random_problem(np.random.default_rng(10), 4, 2)
    K = np.asarray(p.K0)
    R = None if estimate_R else p.R
    rng = np.random.default_rng(11)
    data = rollouts(p, K, 60, 0.2, [1.0, 5.0], rng)
    batch = evaluate_policy(K, *data, R=R)
    b = data[-1].size
    chunks = np.array_split(rng.permutation(b), 5)
    one = NormalEquations(K, R)
    for idx in chunks[::-1]:
        one.add(*(z[idx] for z in data))
    left, right = NormalEquations(K, R), NormalEquations(K, R)
    for j, idx in enumerate(chunks):
        (left if j % 2 else right).add(*(z[idx] for z in data))
    merged = left.merge(right)
    for ne in (one, merged):
        ev = ne.solve()
        assert ev.equations == b
        assert rel(ev.P, batch.P) <= 1e-8 and rel(ev.E, batch.E) <= 1e-8 and rel(ev.R, batch.R) <= 1e-8
        assert ev.condition == pytest.approx(batch.condition, rel=1e-6)
        assert ev.target_norm == pytest.approx(batch.target_norm, rel=1e-12)
    with pytest.raises(ValueError, match="same base gain"):
        one.merge(NormalEquations(K + 1.0, R))


def test_residual_measures_inconsistent_data():
    p = random_problem(np.random.default_rng(12), 3, 1)
    K = np.asarray(p.K0)
    Ki, x0, xe, S, cost = rollouts(p, K, 40, 0.1, [2.0], np.random.default_rng(13))
    noisy = cost * (1 + 1e-3 * np.random.default_rng(14).standard_normal(cost.size))
    exact = evaluate_policy(K, Ki, x0, xe, S, cost, R=p.R)
    off = evaluate_policy(K, Ki, x0, xe, S, noisy, R=p.R)
    ne = NormalEquations(K, p.R).add(Ki, x0, xe, S, noisy).solve()
    assert exact.residual <= 1e-12 * exact.target_norm
    assert 1e-5 * off.target_norm < off.residual <= 1e-3 * off.target_norm
    assert ne.residual == pytest.approx(off.residual, rel=1e-4)


def test_features_reject_non_finite_or_misshapen_data():
    p = random_problem(np.random.default_rng(15), 3, 1)
    K = np.asarray(p.K0)
    Ki, x0, xe, S, cost = rollouts(p, K, 8, 0.1, [1.0], np.random.default_rng(16))
    Phi, y = features(K, Ki, x0, xe, S, cost, p.R)
    assert Phi.shape == (8, unknowns(3, 1)) and y.shape == (8,)
    S_bad = S.copy()
    S_bad[2] = np.nan  # a blown-up rollout left in
    with pytest.raises(ValueError, match="finite"):
        evaluate_policy(K, Ki, x0, xe, S_bad, cost, R=p.R)
    with pytest.raises(ValueError):
        features(K, Ki, x0[:5], xe, S, cost, p.R)
    with pytest.raises(ValueError, match="matrix"):
        NormalEquations(K.ravel())


def test_auto_solver_keeps_the_normal_equations_only_when_well_conditioned():
    """``solver="auto"``: on well-conditioned data the Cholesky solution of the normal
    equations (condition estimated by LAPACK below NORMAL_CONDITION); on data whose scaled
    normal matrix is worse conditioned than that, exactly the SVD solution."""
    p = random_problem(np.random.default_rng(8), 4, 2)
    K = np.asarray(p.K0)
    rng = np.random.default_rng(9)
    good = rollouts(p, K, 3 * unknowns(p.n, p.m), 0.1, [2.0], rng)
    svd, auto = evaluate_policy(K, *good, R=p.R), evaluate_policy(K, *good, R=p.R, solver="auto")
    assert svd.condition < NORMAL_CONDITION and auto.condition < NORMAL_CONDITION
    assert rel(auto.E, svd.E) <= 1e-12 and rel(auto.P, svd.P) <= 1e-12
    assert not np.array_equal(auto.E, svd.E)  # a different solver did run
    # perturbations all but along one direction: m(m-1)/2 directions of E barely excited
    Ki, x0, _, _, _ = good
    base = rng.standard_normal((p.m, p.n))
    c = rng.uniform(0.5, 1.5, len(x0))[:, None, None] * rng.choice([-1.0, 1.0], len(x0))[:, None, None]
    for spread, normal in ((1e-4, True), (1e-8, False)):
        Kf = K + 0.1 * (c * base + spread * (Ki - K))
        res = azopg.LinearPlant(p).rollout(Kf, x0, 2.0, moments=True)
        bad = (Kf, x0, res.x_end, res.S, res.cost)
        svd, auto = evaluate_policy(K, *bad, R=p.R), evaluate_policy(K, *bad, R=p.R, solver="auto")
        if normal:  # cond ~1e10: the refined Cholesky solution agrees with the SVD one to ~1e-11
            assert 1e9 < svd.condition < NORMAL_CONDITION and not np.array_equal(auto.E, svd.E)
            assert rel(auto.E, svd.E) <= 1e-9 and rel(auto.P, svd.P) <= 1e-9
        else:
            assert svd.condition > NORMAL_CONDITION
            assert np.array_equal(auto.E, svd.E) and auto.condition == svd.condition
