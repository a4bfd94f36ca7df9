"""Rollout snapshots and policy iteration on interval equations, against the exact oracle.

Every interval ``[t_j, t_{j+1}]`` of a rollout of ``K + D`` satisfies, exactly,
``c_j = x_j'P x_j - x_{j+1}'P x_{j+1} + tr(S_j (D'H D + 2 D'E))`` with ``(P, E)`` of ``K``
(``H = R`` in continuous time, ``R + B'P B`` in discrete time).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import azopg
from _support import random_problem
from azopg.cli import main
from azopg.method.equations import IntervalEquations
from azopg.model.hard import rescaled
from azopg.plants.discrete import plant_for


def oracle(p: azopg.LQRProblem, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return p.value_matrix(K), p.E(K), p.input_hessian(K)


def snapshots(p: azopg.LQRProblem, K: np.ndarray, b: int, scale: float, tau: float, k: int, rng):
    """``b`` rollouts of ``K + scale N(0, 1)`` in ``k`` intervals: ``(Ki, x, S, cost)``."""
    plant = plant_for(p)
    Ki = K + scale * rng.standard_normal((b, p.m, p.n))
    tr = plant.rollout_snapshots(Ki, plant.initial_states(rng, b), tau, k)
    assert not tr.blown_up.any()
    return Ki, tr.x, tr.S, tr.cost


PROBLEMS = ["he1", "ac1", "dean3", "toso4"]


@pytest.mark.parametrize("name", PROBLEMS)
def test_every_interval_satisfies_the_identity_of_the_exact_oracle(name):
    p = azopg.get_problem(name)
    K = np.asarray(p.K0)
    P, E, H = oracle(p, K)
    rng = np.random.default_rng(0)
    Ki, x, S, cost = snapshots(p, K, 5, 0.05, 17.0, 7, rng)
    D = (Ki - K)[:, None]
    xa, xb = x[:, :-1], x[:, 1:]
    rhs = (np.einsum("bji,ik,bjk->bj", xa, P, xa) - np.einsum("bji,ik,bjk->bj", xb, P, xb)
           + np.einsum("bjik,bjki->bj", S, np.swapaxes(D, 2, 3) @ H @ D + 2 * np.swapaxes(D, 2, 3) @ E))
    np.testing.assert_allclose(cost, rhs, rtol=1e-9, atol=1e-12 * np.max(cost))
    # the intervals add up to the whole rollout, and each is the rollout from its own first state
    plant = plant_for(p)
    whole = plant.rollout(Ki, x[:, 0], 17.0, moments=True)
    np.testing.assert_allclose(cost.sum(axis=1), whole.cost, rtol=1e-12)
    np.testing.assert_allclose(S.sum(axis=1), whole.S, rtol=1e-10, atol=1e-13 * np.max(np.abs(whole.S)))
    np.testing.assert_allclose(x[:, -1], whole.x_end, rtol=1e-10, atol=1e-13)
    t = plant.rollout_snapshots(Ki, x[:, 0], 17.0, 7).t
    assert t[0] == 0 and t[-1] == pytest.approx(17.0) and np.all(np.diff(t) > 0)
    for j in (0, 3, len(t) - 2):
        one = plant.rollout(Ki, x[:, j], float(t[j + 1] - t[j]), moments=True)
        np.testing.assert_allclose(cost[:, j], one.cost, rtol=1e-10)
        np.testing.assert_allclose(S[:, j], one.S, rtol=1e-9, atol=1e-12 * np.max(np.abs(one.S)))


def test_discrete_intervals_cover_the_horizon_in_whole_steps():
    plant = plant_for(azopg.get_problem("dean3"))
    assert plant._intervals(17.0, 7) == [(3.0, 5), (2.0, 1)]
    assert plant._intervals(8.0, 200) == [(1.0, 8)]
    parts = plant_for(azopg.get_problem("he1"))._intervals(3.0, 20)  # groups of doubling lengths
    assert sum(c for _, c in parts) == 20 and sum(h * c for h, c in parts) == pytest.approx(3.0)
    assert all(b == pytest.approx(2 * a) for (a, _), (b, _) in itertools.pairwise(parts))


def test_blown_up_snapshots_are_nan():
    p = azopg.get_problem("he1")
    tr = plant_for(p).rollout_snapshots(np.stack([p.K0, -1e3 * np.ones((p.m, p.n))]), np.ones((2, p.n)), 50.0, 5)
    assert list(tr.blown_up) == [False, True]
    assert np.isnan(tr.S[1]).all() and np.isnan(tr.x[1]).all() and np.isfinite(tr.S[0]).all()


@pytest.mark.parametrize("k", [20, 1], ids=["20-intervals", "one-equation-per-rollout"])
@pytest.mark.parametrize("estimate_R", [False, True], ids=["R-known", "R-estimated"])
@pytest.mark.parametrize("name", ["he1", "dis4", "dean3"])
def test_rows_of_any_age_in_any_order_give_the_batch_fit(name, estimate_R, k):
    """Rollouts around three successive gains, told in shuffled order while the center moves
    (re-centred each time): the fit at the last gain equals the fit of all rows added at once
    about it, and the oracle's ``(P, E)`` -- with many intervals per rollout and with one
    (``snapshots=1``: as many rollouts per batch as half the unknowns, three times the unknowns in all)."""
    p = azopg.get_problem(name)
    R = None if estimate_R or p.discrete_time else np.asarray(p.R)
    gains = [np.asarray(p.K0)]
    for _ in range(2):
        gains.append(p.kleinman_step(gains[-1]))
    rng = np.random.default_rng(1)
    b = 2 if k > 1 else -(-IntervalEquations(p.K0, R).unknowns // 2)
    batches = [snapshots(p, K, b, 0.05, 12.0, k, rng) for K in gains for _ in range(2)]
    K = gains[-1]
    batch = IntervalEquations(K, R)
    for data in batches:
        batch.add(*data)
    moving = IntervalEquations(gains[0], R)
    for t, i in enumerate(rng.permutation(len(batches))):
        moving.recenter(gains[t % 3])
        moving.add(*batches[i])
    moving.recenter(K)
    one, inc = batch.solve(), moving.solve()
    assert one.condition < 1e10 and inc.equations == one.equations == batch.rows
    for a, b in ((inc.P, one.P), (inc.E, one.E), (inc.R, one.R)):
        assert np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b))
    P, E, H = oracle(p, K)
    assert estimate_R or p.discrete_time or np.array_equal(H, p.R)
    assert np.max(np.abs(one.P - P)) <= 1e-8 * np.max(np.abs(P))
    assert np.max(np.abs(one.E - E)) <= 1e-8 * np.max(np.abs(E))
    assert one.residual <= 1e-6 * one.target_norm  # from the Gram matrix: to about sqrt(eps)


def test_incremental_normal_equations_agree_with_a_fresh_least_squares_solve():
    """The Cholesky solve of the accumulated (re-centred) Gram matrix against an SVD least-squares
    solve of the explicit rows about the same gain (W columns dropped)."""
    p = random_problem(np.random.default_rng(2), 4, 2)
    K0 = np.asarray(p.K0)
    K = p.kleinman_step(K0)
    rng = np.random.default_rng(3)
    eq = IntervalEquations(K0, p.R)
    data = [snapshots(p, K0, 3, 0.1, 8.0, 12, rng), snapshots(p, K, 3, 0.1, 8.0, 12, rng)]
    for d in data:
        eq.add(*d)
    eq.recenter(K)
    fresh = IntervalEquations(K, p.R)
    rows = np.concatenate([fresh.rows_of(*d) for d in data])
    theta = np.linalg.lstsq(rows[:, :fresh.p], rows[:, -1], rcond=None)[0]  # W columns (zero at K) dropped
    ev = eq.solve()
    q = p.n * (p.n + 1) // 2
    got = np.concatenate([ev.P[np.triu_indices(p.n)], ev.E.ravel()])
    np.testing.assert_allclose(got, theta, rtol=1e-9, atol=1e-11 * np.max(np.abs(theta)))
    assert q + p.m * p.n == eq.unknowns


def test_too_few_rollouts_leave_the_fit_singular():
    """Two rollouts of many intervals: ``E`` is seen only along two perturbations -- ``m(m-1)/2``
    directions stay unseen, whatever the number of intervals."""
    p = azopg.get_problem("dis4")  # m = 4
    K = np.asarray(p.K0)
    eq = IntervalEquations(K, p.R).add(*snapshots(p, K, 2, 0.05, 20.0, 200, np.random.default_rng(4)))
    assert eq.rows > 2 * eq.unknowns and not eq.solve().condition < 1e14


@pytest.mark.parametrize("name", ["he1", "dean3"])
def test_policy_iteration_on_snapshots_converges_and_ignores_the_state_units(name):
    p = azopg.get_problem(name)
    res = azopg.train(p, seed=0, target_gap=1e-9, max_rollouts=2000)
    assert res.status == "converged" and res.settings["method"] == "policy-iteration"
    res2 = azopg.train(rescaled(p, np.logspace(-3, 3, p.n)), seed=0, target_gap=1e-9, max_rollouts=2000)
    assert res2.status == "converged"


def test_snapshots_option_is_validated_on_the_command_line(tmp_path, capsys):
    assert main(["train", "--snapshots", "0", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "snapshots" in err[0]


def test_latency_wrapper_forwards_snapshots_only_of_plants_that_have_them():
    from azopg.plants.base import returns_snapshots
    from azopg.plants.callable import CallablePlant
    from azopg.plants.latency import LatencyPlant

    p = azopg.get_problem("he1")
    x0 = np.ones((2, p.n))
    slow = LatencyPlant(azopg.LinearPlant(p), 1e-4)
    assert returns_snapshots(slow)
    a, b = slow.rollout_snapshots(p.K0, x0, 5.0, 8), azopg.LinearPlant(p).rollout_snapshots(p.K0, x0, 5.0, 8)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    bare = CallablePlant(lambda K, x0, tau, rng: 0.0, 2, 1)
    assert not returns_snapshots(bare) and not returns_snapshots(LatencyPlant(bare, 1e-4))


def test_default_snapshots_follow_the_unknowns_and_the_noise():
    from azopg.method.policy_iteration import default_snapshots
    from azopg.settings import Settings

    assert default_snapshots(Settings(), 4, 2) == 64  # 18 unknowns: 36 -> 64
    assert default_snapshots(Settings(), 1, 1) == 16 and default_snapshots(Settings(), 20, 10) == 256
    assert default_snapshots(Settings(cost_noise=1e-3), 4, 2) == 1
    assert default_snapshots(Settings(snapshots=5), 4, 2) == 5
    # a factor of more than MAX_FACTOR_COLUMNS columns: the buffered method (the master's cost per rollout)
    assert default_snapshots(Settings(), 30, 3) == 256 and default_snapshots(Settings(), 40, 1) == 1
    assert default_snapshots(Settings(snapshots=8), 40, 1) == 8


def test_a_plant_that_changes_the_rollouts_does_not_offer_the_exact_snapshots():
    from azopg.plants.base import returns_snapshots
    from azopg.plants.discrete import DiscreteLinearPlant
    from azopg.plants.linear import LinearPlant

    class Changed(LinearPlant):
        def rollout(self, K, x0, tau, *, moments=False):  # e.g. a noisy plant
            return super().rollout(K, x0, tau, moments=moments)

    assert returns_snapshots(LinearPlant(azopg.get_problem("he1")))
    assert returns_snapshots(DiscreteLinearPlant(azopg.get_problem("dean3")))
    assert not returns_snapshots(Changed(azopg.get_problem("he1")))


def test_a_recenter_that_overflows_raises_and_keeps_the_equations():
    """Re-centring about an absurd gain (1e200 away) cannot be represented: it raises and the
    equations stay about the old center, their fit unchanged (a run then refuses that step)."""
    p = azopg.get_problem("he1")
    K = np.asarray(p.K0)
    eq = IntervalEquations(K, p.R).add(*snapshots(p, K, 4, 0.05, 12.0, 20, np.random.default_rng(5)))
    before = eq.solve()
    with pytest.raises(FloatingPointError):
        eq.recenter(K + 1e200)
    after = eq.solve()
    assert np.array_equal(eq.C, K) and np.array_equal(after.P, before.P) and np.array_equal(after.E, before.E)


@pytest.mark.parametrize("name", ["he1", "chain3"])
def test_one_equation_per_rollout_spends_no_more_rollouts_on_more_workers(name):
    """``snapshots=1`` on 8 simulated workers (virtual time, seeded: the counts are deterministic) reaches
    the target with at most one round of rollouts in flight more than on one: every rollout in flight is an
    equation of the fit, whatever gain it was asked at (before: 2.6 times as many rollouts at W = 8)."""
    p = azopg.get_problem(name)
    spent = []
    for workers in (1, 8):
        res = azopg.train(p, snapshots=1, workers=workers, backend="simulated", target_gap=1e-6, max_time=60, seed=0)
        assert res.status == "converged" and p.relative_gap(res.K) <= 1e-6
        spent.append(next(h.rollouts for h in res.history if h.relative_gap <= 1e-6))
    assert spent[1] <= spent[0] + 8
