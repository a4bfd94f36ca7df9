"""Ten times larger: CAREX's scalable examples at any size, the blocked fold of large factors, and ``E``
from antithetic pairs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

import azopg
from azopg.errors import OutOfTime
from azopg.method import folds, pairs, pi_defaults
from azopg.method.equations import IntervalEquations
from azopg.method.folds import fold_blocked, fold_rows
from azopg.method.kinds import TaskKind
from azopg.method.pairs import PairBuffer, evaluate_pairs
from azopg.method.tasks import RolloutData, Task, run_task
from azopg.model.carex import carex_scalable
from azopg.model.library import mass_spring_chain
from azopg.plants.discrete import plant_for
from azopg.run.output import write_run
from azopg.run.replay import replay_run


def shipped(name: str) -> dict:
    return json.loads(resources.files("azopg.data.problems").joinpath("carex", f"{name}.json").read_text())


@pytest.mark.parametrize("name", ["carex3.1-l10", "carex4.1-n10", "carex4.2-n20", "carex4.3-l10"])
def test_the_generator_builds_the_shipped_sizes(name):
    """The shipped files come from the same formulas (and CAREX's own data were checked there)."""
    data, p = shipped(name), carex_scalable(name)
    for key in "ABQR":
        M = getattr(p, key)
        np.testing.assert_array_equal(M, np.asarray(data[key], dtype=float).reshape(M.shape))
    assert "Abels and P. Benner" in p.source and p.name == name


def test_a_generated_k0_follows_the_files_rule():
    """4.3: the LQR gain for 1000 R as in the shipped file (there rounded to a few digits); 4.2: K0 = 0."""
    p = carex_scalable("carex4.3-l10")
    K0 = np.asarray(shipped("carex4.3-l10")["K0"], dtype=float)
    np.testing.assert_allclose(p.K0, K0, rtol=1e-3, atol=1e-3 * np.abs(K0).max())
    assert 1.5 * p.optimal_cost <= p.cost(p.K0) <= 1e4 * p.optimal_cost
    assert not carex_scalable("carex4.2-n30").K0.any()


def test_any_size_by_name_and_bad_names():
    p = azopg.get_problem("carex4.3-l13")
    assert (p.n, p.m) == (26, 2) and p.is_stabilizing(p.K0)
    assert azopg.get_problem("carex4.2-n20").K0.shape == (1, 20)  # the shipped file wins
    for bad in ("carex4.3-n13", "carex4.2-l7", "carex9.9-n5", "carex4.2-n1"):
        with pytest.raises(azopg.ProblemError):
            azopg.get_problem(bad)


@pytest.mark.parametrize("rows", [1, 5, 64, 200])
def test_the_blocked_fold_equals_the_row_by_row_fold(rows):
    """Panels of 64 columns (the last one narrower) applied as block reflectors: the factor of the
    unblocked Householder fold, to rounding, and a factor of ``[T; rows]`` (same Gram matrix)."""
    rng = np.random.default_rng([7, rows])
    p = 150
    T = np.triu(rng.standard_normal((p, p)))
    new = rng.standard_normal((rows, p))
    a, b = fold_rows(T, new), fold_blocked(T, new)
    assert np.abs(a - b).max() <= 1e-10 * np.abs(a).max()
    assert np.allclose(np.tril(b, -1), 0.0)
    gram = T.T @ T + new.T @ new
    np.testing.assert_allclose(b.T @ b, gram, atol=1e-10 * np.abs(gram).max())


def test_interval_equations_with_the_blocked_fold_give_the_exact_value_and_gradient(monkeypatch):
    """The fit of noiseless snapshots through the blocked fold (forced at this small size) against the
    exact oracle, and against the same equations folded row by row."""
    p = azopg.get_problem("he1")
    K = np.asarray(p.K0)
    rng = np.random.default_rng(11)
    plant = plant_for(p)
    Ki = K + 0.05 * rng.standard_normal((12, p.m, p.n))
    tr = plant.rollout_snapshots(Ki, plant.initial_states(rng, 12), 20.0, 16)
    unblocked = IntervalEquations(K, p.R).add(Ki, tr.x, tr.S, tr.cost).solve()
    monkeypatch.setattr(folds, "UNBLOCKED_COLUMNS", 0)
    monkeypatch.setattr(folds, "BLOCK", 8)
    blocked = IntervalEquations(K, p.R).add(Ki, tr.x, tr.S, tr.cost).solve()
    np.testing.assert_allclose(blocked.P, unblocked.P, rtol=1e-10, atol=1e-12 * np.abs(unblocked.P).max())
    np.testing.assert_allclose(blocked.E, unblocked.E, rtol=1e-10, atol=1e-12 * np.abs(unblocked.E).max())
    np.testing.assert_allclose(blocked.P, p.value_matrix(K), rtol=1e-7)
    np.testing.assert_allclose(blocked.E, p.E(K), rtol=1e-6, atol=1e-8 * np.abs(p.E(K)).max())


def pair_rollouts(p, K, b, r, tau, rng):
    """``b`` antithetic pairs ``K +- r Z`` from the same states, as :class:`RolloutData` halves."""
    plant = plant_for(p)
    Z = r * rng.standard_normal((b, p.m, p.n))
    x0 = plant.initial_states(rng, b)
    out = []
    for Ki in (K + Z, K - Z):
        res = plant.rollout(Ki, x0, tau, moments=True)
        out.append(RolloutData(Ki, x0, res.x_end, res.S, res.cost))
    return out


@pytest.mark.parametrize("name", ["he1", "ac1", "he3"])
def test_pairs_give_the_exact_e_without_p(name):
    """``m n`` unknowns from ``2 m n`` pairs of exact rollouts (tails negligible): ``E`` of the oracle, about
    the gain they were run at and about another gain (stale pairs are exact equations too)."""
    p = azopg.get_problem(name)
    K0 = np.asarray(p.K0)
    K1 = p.kleinman_step(K0)
    tau = 60.0 / -max(p.spectral_abscissa(K0), p.spectral_abscissa(K1))
    first, second = pair_rollouts(p, K0, 2 * p.m * p.n, 1e-2, tau, np.random.default_rng(3))
    for K in (K0, K1):
        fit = evaluate_pairs(K, p.R, first, second)
        E = p.E(K)
        assert np.isfinite(fit.condition) and fit.equations == 2 * p.m * p.n
        np.testing.assert_allclose(fit.E, E, rtol=1e-6, atol=1e-7 * np.abs(E).max())
        assert not fit.P.any()


def test_a_long_pair_fit_is_folded_in_chunks_that_hold_the_time_budget(monkeypatch):
    """A pair fit above ``AT_ONCE_FLOPS`` is folded in chunks: the same ``E`` as the fit at once (to rounding), and
    a ``stop`` that says the budget is spent ends it with ``OutOfTime`` (CAREX 3.2's one fit took 26 s at once)."""
    p = azopg.get_problem("he3")
    K0 = np.asarray(p.K0)
    first, second = pair_rollouts(p, K0, 8 * p.m * p.n, 1e-2, 60.0 / -p.spectral_abscissa(K0),
                                  np.random.default_rng(5))
    at_once = evaluate_pairs(K0, p.R, first, second)
    monkeypatch.setattr(pairs, "AT_ONCE_FLOPS", 0.0)
    monkeypatch.setattr(folds, "FOLD_FLOPS", 1.0)  # a chunk a row: many chunks
    asked = []
    chunked = evaluate_pairs(K0, p.R, first, second, stop=lambda: asked.append(1) is None and False)
    assert len(asked) == first.cost.size - 1
    np.testing.assert_allclose(chunked.E, at_once.E, rtol=1e-10, atol=1e-12 * np.abs(at_once.E).max())
    # the condition is LAPACK's 1-norm estimate, which depends on the factor's row signs: within its factor p^2
    assert at_once.condition / (p.m * p.n) ** 2 <= chunked.condition <= at_once.condition * (p.m * p.n) ** 2
    with pytest.raises(OutOfTime):
        evaluate_pairs(K0, p.R, first, second, stop=lambda: True)


def test_the_pair_buffer_keeps_pairs_only():
    p = azopg.get_problem("he1")
    first, second = pair_rollouts(p, np.asarray(p.K0), 6, 1e-2, 40.0, np.random.default_rng(4))
    both = RolloutData(*(np.concatenate([a, b]) for a, b in zip(first.arrays(), second.arrays(), strict=True)))
    buf = PairBuffer(100)
    buf.add(both)
    buf.add(first)  # not pairs: different states in its halves
    buf.add(RolloutData(*(a[:5] for a in both.arrays())))  # odd
    assert len(buf) == 12
    fit = buf.evaluate(np.asarray(p.K0), p.R)
    np.testing.assert_allclose(fit.E, evaluate_pairs(np.asarray(p.K0), p.R, first, second).E, rtol=1e-12)


def test_an_antithetic_task_returns_pairs_from_the_same_states():
    p = azopg.get_problem("he1")
    task = Task(3, 1, TaskKind.MOMENTS, np.asarray(p.K0), 0, 20.0, 0.1, 7, "policy-iteration", 5, antithetic=True)
    rep = run_task(plant_for(p), task)
    d = rep.data
    assert rep.rollouts == 6 and d.cost.size == 6
    np.testing.assert_array_equal(d.x0[:3], d.x0[3:])
    np.testing.assert_allclose(d.Ki[:3] + d.Ki[3:], np.broadcast_to(2 * np.asarray(p.K0), (3, 2, 4)), atol=1e-13)
    again = run_task(plant_for(p), task).data  # the task's own generator: replayed bit for bit
    np.testing.assert_array_equal(d.cost, again.cost)


def test_policy_iteration_on_pairs_converges_where_it_takes_them(pair_fits):
    """The rule with pairs forced on a small problem (where the interval equations would run): the gap
    of the exact oracle, in a rollout budget (no clock)."""
    p = azopg.get_problem("he1")
    r = azopg.train(p, seed=0, max_rollouts=3000, target_gap=1e-8)
    assert r.status == "converged" and p.relative_gap(r.K) <= 1e-8
    assert len(pair_fits) >= r.updates >= 1


def test_equations_too_large_to_hold_are_not_allocated_until_used():
    """Policy iteration on pairs at n = 1000 builds (and never folds) interval equations of 1,003,001
    columns: 7.3 TiB if allocated."""
    eq = IntervalEquations(np.zeros((1, 1000)), np.eye(1))
    assert eq.unknowns == 1000 * 1001 // 2 + 1000 and eq._T is None


@pytest.mark.usefixtures("pair_fits")
def test_a_run_on_pairs_replays_bit_for_bit(tmp_path):
    """Simulated workers with delays: stale pairs in the fits, and the run replays exactly."""
    p = azopg.get_problem("he1")
    res = azopg.train(p, backend="simulated", workers=3, seed=2, max_rollouts=5000, target_gap=None,
                      max_updates=12, latency_model="exponential")
    assert res.updates == 12 and res.stats["max_delay_seen"] > 0
    write_run(tmp_path, res, plot=False)
    K, K_recorded, events = replay_run(tmp_path)
    assert events == len(res.arrivals)
    assert np.array_equal(K_recorded, res.K) and np.array_equal(K, K_recorded)


def test_a_replay_at_another_blas_thread_count_gives_the_same_gain(tmp_path):
    """The blocked fold (msd10: a factor of 620 columns) runs its products on one BLAS thread, so a run
    made at ``OMP_NUM_THREADS=1`` replays bit for bit at 3 (OpenBLAS's products are not bit-identical
    across thread counts: without the limit this replay differed by ~3e-11)."""
    problem = mass_spring_chain(10, damping=1.0)
    res = azopg.train(problem, backend="simulated", workers=4, seed=0, snapshots=1, target_gap=1e-3, max_time=120)
    assert res.status == "converged"
    write_run(tmp_path, res, plot=False)
    env = {**os.environ, "OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-m", "azopg", "replay", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "identical" in out.stdout, out.stdout + out.stderr


def test_pairs_at_the_rules_radius_leave_slow_tails_out():
    """CAREX 2.9 (lightly damped modes, n = 55) at ``K0``: ``1.25 m n`` pairs of ``K0 +- r L Z M`` (scaled to
    the inputs and states as the rule's), horizon 3 times the one where ``K0``'s tail is negligible. At the
    rule's radius (``r^2 m n = PAIR_PERTURBATION``) the fit is ``E`` of the oracle to 1e-4 (3.4e-5 seen; at the
    snapshots' radius, ``1e-2``, perturbed gains nearer instability have tails that spoil it: 3 %)."""
    p = azopg.get_problem("carex2.9")
    K0, (m, n) = np.asarray(p.K0), p.K0.shape
    plant = plant_for(p)
    one = plant.rollout(K0, plant.initial_states(np.random.default_rng(0), 1), 256.0, moments=True)
    L = np.linalg.inv(np.linalg.cholesky(p.R)).T
    M = np.diag(np.sqrt(one.cost[0] / np.diag(one.S[0])))

    def error(perturbation: float) -> float:
        task = Task(1, 0, TaskKind.MOMENTS, K0, 0, 768.0, np.sqrt(perturbation / (m * n)), int(2.5 * m * n),
                    "policy-iteration", 0, L=L, M=M, antithetic=True)
        d = run_task(plant, task).data
        h = d.cost.size // 2
        halves = [RolloutData(*(a[s] for a in d.arrays())) for s in (slice(0, h), slice(h, None))]
        return float(np.linalg.norm(evaluate_pairs(K0, p.R, *halves).E - p.E(K0)) / np.linalg.norm(p.E(K0)))

    assert error(pi_defaults.PAIR_PERTURBATION) <= 1e-4


@pytest.mark.usefixtures("pair_fits")
def test_on_pairs_the_calibrations_batch_is_in_pairs_too(monkeypatch):
    """The first batch (``N`` rollouts at ``K0``, issued by the calibration) reaches the pair buffer as pairs:
    as snapshots it was ignored (CAREX 3.1-l30: 885 rollouts, half of its first minute)."""
    seen = []
    add = PairBuffer.add
    monkeypatch.setattr(PairBuffer, "add", lambda self, data: seen.append(data) or add(self, data))
    p = azopg.get_problem("he1")
    azopg.train(p, seed=0, max_updates=1, target_gap=None, max_rollouts=3000)
    batches = [d for d in seen if d.cost.shape[0] > 1]
    assert batches and all(isinstance(d, RolloutData) for d in batches)


@pytest.mark.parametrize("name", ["ac1", "carex4.2-n20"])
@pytest.mark.usefixtures("pair_fits")
def test_on_exact_pairs_one_update_takes_several_kleinman_steps(name):
    """Pairs are exact equations in ``E`` of any gain: the first fit's pairs also give the next Kleinman steps,
    iterated while they shrink. The first update is beyond two exact Kleinman steps from ``K0`` (ac1: 2e-11
    from ``K*``, where K0's second Kleinman iterate is 0.47; 4.2-n20: 6e-9, the second iterate 3e-7)."""
    p = azopg.get_problem(name)
    res = azopg.train(p, seed=0, max_updates=1, target_gap=None, max_rollouts=5000)
    K2 = p.kleinman_step(p.kleinman_step(np.asarray(p.K0)))
    assert res.updates == 1
    assert np.linalg.norm(res.K - p.optimal_gain) < np.linalg.norm(K2 - p.optimal_gain)
