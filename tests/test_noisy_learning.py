"""Learning on a plant with its own noise: common random numbers, the transient's tail check, never worse than K0."""

from __future__ import annotations

import numpy as np
import pytest

import azopg
from azopg.method.kinds import TaskKind
from azopg.method.noisy_eval import noisy_measure
from azopg.method.rule import UpdateRule
from azopg.method.rules import make_rule
from azopg.method.state import NOISE_FIELDS, LearnerState
from azopg.method.tasks import run_task
from azopg.model.noise import average_cost, expected_cost
from azopg.plants.base import is_deterministic
from azopg.plants.checked import CheckedPlant
from azopg.plants.discrete import plant_for
from azopg.plants.linear import LinearPlant
from azopg.plants.noisy import NoisyLinearPlant


def _noisy(name: str, w: float = 0.0, v: float = 0.0, dt: float = 0.01) -> azopg.LQRProblem:
    p = azopg.get_problem(name)
    Om = np.asarray(p.x0_cov)
    return p.with_noise(W=w**2 * Om if w else None, V=v**2 * Om if v else None, dt=dt if v else None)


def _difference_variance(plant: NoisyLinearPlant, K: np.ndarray, r: float, common: bool) -> float:
    """Variance over noise paths of ``f(K + rU) - f(K - rU)`` from one fixed state, one fixed ``U``."""
    b = 400
    U = np.random.default_rng(7).standard_normal(K.shape)
    x0 = np.tile(np.asarray(plant.problem.x0_cov)[:, :1].T, (b, 1))
    plant.bind_rng(np.random.default_rng(11))
    rows = np.concatenate([np.arange(b), np.arange(b)]) if common else np.arange(2 * b)
    res = plant.rollout(np.concatenate([np.broadcast_to(K + r * U, (b, *K.shape)),
                                        np.broadcast_to(K - r * U, (b, *K.shape))]),
                        np.concatenate([x0, x0]), 2.0, noise_rows=rows)
    d = res.cost[:b] - res.cost[b:]
    return float(np.var(d, ddof=1))


@pytest.mark.parametrize("v", [0.0, 0.05])
def test_two_point_difference_variance_shrinks_like_r_squared_with_common_noise(v: float) -> None:
    # K + rU and K - rU on one noise path: the difference's variance goes like r^2 (ratio 1e-2 for r/10);
    # on independent paths it stays at twice a cost's variance (ratio 1). 400 samples: the variance
    # estimates are within ~15 % (2 SE), so the bounds below are far from both expected ratios.
    problem = _noisy("he1", w=0.1, v=v)
    plant = NoisyLinearPlant(problem)
    K = np.asarray(problem.K0)
    r = 1e-4 * np.linalg.norm(K)
    common = _difference_variance(plant, K, r / 10, True) / _difference_variance(plant, K, r, True)
    independent = _difference_variance(plant, K, r / 10, False) / _difference_variance(plant, K, r, False)
    assert 0.005 < common < 0.02
    assert 0.7 < independent < 1.4


def test_estimate_gradient_pairs_its_rollouts_on_common_noise() -> None:
    # the same through estimate_gradient: the weights' spread shrinks 10x with r (independent paths: ~1x)
    problem = _noisy("he1", w=0.1)
    plant = NoisyLinearPlant(problem)
    spread = []
    for r in (1e-4, 1e-5):
        est = azopg.estimate_gradient(plant, problem.K0, r=r, N=400, tau=2.0, rng=np.random.default_rng(3))
        spread.append(float(np.std(est.weights * 2 * r)))
    assert spread[1] < 0.15 * spread[0]


def test_noise_free_measure_is_the_noise_free_tail() -> None:
    # with zero noise the rows from 0 cost nothing: the transient is cost(2 tau), its tail cost(2 tau) - cost(tau)
    problem = azopg.get_problem("he1")
    plant = LinearPlant(problem)
    X = plant.evaluation_states()
    K = np.asarray(problem.K0)
    for tau in (0.5, 4.0):
        nm = noisy_measure(plant, K, K, X, tau, 0.0, 1, np.random.default_rng(0))
        c1 = plant.rollout(np.broadcast_to(K, (len(X), *K.shape)), X, tau).cost.mean()
        c2 = plant.rollout(np.broadcast_to(K, (len(X), *K.shape)), X, 2 * tau).cost.mean()
        assert nm.cost == pytest.approx(c1, rel=1e-9)
        assert nm.cost2 == pytest.approx(c2, rel=1e-7)
        assert nm.transient == pytest.approx(c2, rel=1e-7)
        assert nm.tail == pytest.approx(c2 - c1, rel=1e-6, abs=1e-9 * c2)
        assert nm.tail_se == pytest.approx(0.0, abs=1e-9 * c2) and nm.noise == 0.0 and nm.diff == 0.0


def test_noisy_tail_is_the_transients_not_the_noises() -> None:
    # he1 at K0 under process noise: at a horizon where the noise-free tail is negligible the raw tail
    # (which grows like tau tr(PW)) is not, the transient's is; at a short horizon the transient's tail is long
    problem = _noisy("he1", w=0.3)
    plant = NoisyLinearPlant(problem)
    K = np.asarray(problem.K0)
    X = LinearPlant(azopg.get_problem("he1")).evaluation_states()
    settled, short = 64.0, 0.25
    plant.bind_rng(np.random.default_rng(5))
    nm = noisy_measure(plant, K, None, X, settled, 0.0, 48, np.random.default_rng(0))
    assert nm.cost2 - nm.cost > 0.1 * nm.cost2  # the raw check fires
    rep = azopg.method.tasks.Report(0, 0, TaskKind.EVALUATE, 0, 0, 0, cost=nm.cost, cost2=nm.cost2,
                                    transient=nm.transient, tail=nm.tail, tail_se=nm.tail_se)
    assert not rep.long_tail(1e-2)
    nm = noisy_measure(plant, K, None, X, short, 0.0, 48, np.random.default_rng(0))
    rep = azopg.method.tasks.Report(0, 0, TaskKind.EVALUATE, 0, 0, 0, cost=nm.cost, cost2=nm.cost2,
                                    transient=nm.transient, tail=nm.tail, tail_se=nm.tail_se)
    assert rep.long_tail(1e-2)


@pytest.mark.parametrize("method", ["two-point", "natural"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_never_costlier_than_K0_under_process_noise(method: str, seed: int) -> None:
    # a short run's gain (the anchor, or K0) by the exact oracles: the noise-free cost and the average cost
    # (at these seeds every run applies ~50-70 updates: the anchor has moved, the test is not vacuous)
    problem = _noisy("he1", w=0.1)
    res = azopg.train(problem, seed=seed, method=method, max_rollouts=3000, target_gap=None)
    for J in (problem.cost, lambda K: average_cost(problem, K)):
        assert J(res.K) <= J(problem.K0)


def test_never_costlier_than_K0_under_measurement_noise() -> None:
    problem = _noisy("he1", w=0.1, v=0.05)
    for seed in (0, 1):
        res = azopg.train(problem, seed=seed, method="natural", max_rollouts=3000, target_gap=None)
        tau = float(res.settings["tau"])
        assert expected_cost(problem, res.K, tau) <= expected_cost(problem, problem.K0, tau)


def test_transient_is_the_noise_free_cost_in_mean() -> None:
    # D(2 tau) = c(x0) - c(0) on common noise is the noise-free cost plus a cross term of mean zero:
    # 30 independent measurements (process and measurement noise) within 4 SE of the exact value
    problem = _noisy("he1", w=0.3, v=0.05)
    plant = NoisyLinearPlant(problem)
    K = np.asarray(problem.K0)
    X = LinearPlant(azopg.get_problem("he1")).evaluation_states()
    tau = 1.5
    exact = LinearPlant(azopg.get_problem("he1")).rollout(np.broadcast_to(K, (len(X), *K.shape)), X,
                                                          2 * tau).cost.mean()
    D = []
    for seed in range(30):
        plant.bind_rng(np.random.default_rng([seed, 9]))
        D.append(noisy_measure(plant, K, None, X, tau, 0.0, 8, np.random.default_rng(0)).transient)
    mean, se = np.mean(D), np.std(D, ddof=1) / np.sqrt(len(D))
    assert se < 0.02 * exact  # a 10 % bias would be > 5 SE
    assert abs(mean - exact) < 4 * se


def test_exact_plants_declare_themselves_deterministic() -> None:
    he1 = azopg.get_problem("he1")
    assert is_deterministic(CheckedPlant(LinearPlant(he1)))
    scalar = azopg.LQRProblem([[0.9]], [[1.0]], [[1.0]], [[1.0]], x0_cov=[[1.0]], K0=[[0.5]], discrete_time=True)
    assert is_deterministic(CheckedPlant(plant_for(scalar)))
    assert not is_deterministic(CheckedPlant(NoisyLinearPlant(_noisy("he1", w=0.1))))
    assert not is_deterministic(object())  # a black box is measured


def _calibrated(plant: object, deterministic: bool) -> UpdateRule:
    problem = plant.problem  # type: ignore[attr-defined]
    settings = azopg.Settings(method="natural", seed=0)
    rule = make_rule(np.array(problem.K0), settings, R=np.array(problem.R), deterministic_plant=deterministic)
    rule.calibrate(lambda task: run_task(plant, task))  # type: ignore[arg-type]
    return rule


def test_noise_is_measured_unless_the_plant_is_deterministic() -> None:
    exact = LinearPlant(azopg.get_problem("he1"))
    told, measured = _calibrated(exact, True), _calibrated(exact, False)
    # measured or not, an exact plant is found noise-free and calibrates alike; the measurement only costs rollouts
    assert not told.noisy and not measured.noisy and measured.noise == 0.0
    assert (told.tuning.tau, told.tuning.r, told.tuning.alpha) == (measured.tuning.tau, measured.tuning.r,
                                                                  measured.tuning.alpha)
    assert measured.stats.rollouts > told.stats.rollouts and measured.stats.tasks == told.stats.tasks
    noisy = _calibrated(NoisyLinearPlant(_noisy("he1", w=0.1)), False)
    assert noisy.noisy and noisy.safeguards.paired and noisy.noise > 0
    # saved and restored through the learner's state; a state without the pair is of a plant not measured noisy
    state = noisy.state_dict()
    assert LearnerState.from_dict(state).noisy and LearnerState.from_dict(state).noise == noisy.noise
    assert not LearnerState.from_dict({k: v for k, v in state.items() if k not in NOISE_FIELDS}).noisy


def test_a_noisy_checks_tail_below_the_noisy_tolerance_is_negligible() -> None:
    # tail_tol 1e-7 for exact plants; a noisy plant's checks count a transient's tail as long only above 1e-4 of it
    from azopg.method.noisy_eval import NOISY_TAIL_TOL
    from azopg.method.tasks import Report

    def check(tail: float, se: float = 0.0, cost2: float = float("nan")) -> Report:
        return Report(0, 0, TaskKind.EVALUATE, 0, 1, 0, cost=1.0, cost2=cost2, transient=1.0, tail=tail, tail_se=se)

    assert not check(0.5 * NOISY_TAIL_TOL).long_tail(1e-7) and check(2 * NOISY_TAIL_TOL).long_tail(1e-7)
    assert not check(2 * NOISY_TAIL_TOL, se=NOISY_TAIL_TOL).long_tail(1e-7)  # within 2 standard errors
    assert check(1e-3).long_tail(1e-7) and not check(1e-3).long_tail(1e-2)  # a larger tail_tol still rules
    assert check(float("nan"), se=float("nan"), cost2=1.0 + 2e-7).long_tail(1e-7)  # exact plants: unchanged


def test_the_noisy_plant_shares_block_exponentials_between_rows_of_one_gain_exactly() -> None:
    from azopg.model.noise import augmented, short_step
    from azopg.plants.noisy import _short_steps

    problem = _noisy("he1", w=0.1, v=0.05)
    K0 = np.asarray(problem.K0)
    K = np.stack([K0, K0 + 0.01, K0, K0, K0 + 0.01])  # a check's rows: two gains
    F, C, Wz = augmented(problem, K, True)
    shared, G = _short_steps(F, C, Wz, 0.01)
    own, G_own = short_step(F, C, Wz, 0.01)
    for a, b in [(shared.Phi, own.Phi), (shared.Qd, own.Qd), (shared.M, own.M), (shared.c, own.c), (G, G_own)]:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15 * np.max(np.abs(b)))


@pytest.mark.parametrize("v", [0.0, 0.05])
def test_an_accepted_check_whose_transient_has_long_decayed_halves_the_horizon(v: float) -> None:
    """he1 under process noise 0.1 (and measurement noise ``v``): a paired check of ``K*`` (slowest rate 0.72)
    against ``K0`` (cheaper by 39-90 standard errors) is accepted at tau = 32 and at tau = 8. At 32 the transient's
    tail beyond tau plus 2 standard errors is 3.4e-11 of the transient (its mean is e^-46 of it), 300 times below
    ``NOISY_TAIL_TOL**2`` = 1e-8: the verdict halves tau. At 8 it is 8e-4 ... 1e-3 (the tail 4e-4, not significantly
    above the tolerance 1e-4: not long, so accepted, but far above 1e-8): tau is kept. A check issued at
    another horizon than the current one, a run with a fixed tau and policy iteration's guards keep it too. (Before,
    an accepted check never changed tau: the first case fails.)"""
    from azopg.method.kinds import Event
    from azopg.method.safeguards import Safeguards
    from azopg.method.tasks import Report
    from azopg.settings import Settings

    q = _noisy("he1", w=0.1, v=v)
    plant = NoisyLinearPlant(q)
    X = np.random.default_rng(3).standard_normal((6, q.n)) @ np.linalg.cholesky(np.asarray(q.x0_cov)).T

    def verdict(tau: float, current: float, settings: Settings | None = None, keeps: bool = False) -> tuple:
        g = Safeguards(np.asarray(q.K0), settings or Settings(), 1)
        g.paired, g.keeps_unresolved = True, keeps
        g.current_tau = lambda: current
        rng = np.random.default_rng(5)
        plant.bind_rng(rng)
        m = noisy_measure(plant, np.asarray(q.optimal_gain), np.asarray(q.K0), X, tau, 0.0, 24, rng)
        g.watch(1, np.asarray(q.optimal_gain), g.anchor_serial, tau)
        rep = Report(1, 0, TaskKind.EVALUATE, 1, m.rollouts, m.blown_up, cost=m.cost, cost2=m.cost2, diff=m.diff,
                     diff_se=m.diff_se, transient=m.transient, tail=m.tail, tail_se=m.tail_se)
        res = g.judge(rep, 0)
        return res.event, res.tau

    assert verdict(32.0, 32.0) == (Event.CHECK_ACCEPT, 0.5)
    assert verdict(8.0, 8.0) == (Event.CHECK_ACCEPT, 1.0)
    assert verdict(32.0, 16.0) == (Event.CHECK_ACCEPT, 1.0)  # a check issued before the horizon moved
    assert verdict(32.0, 32.0, Settings(tau=32.0)) == (Event.CHECK_ACCEPT, 1.0)
    assert verdict(32.0, 32.0, keeps=True) == (Event.CHECK_ACCEPT, 1.0)
