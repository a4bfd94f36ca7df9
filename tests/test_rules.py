"""The natural (whitened zero-order) and policy-iteration rules: estimator, exact steps, runs.

References are independent of the code under test: the gradient, ``E_K``, ``X_K`` and the
Kleinman step come from the exact oracle (Lyapunov/CARE), statistics from scipy.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg as sla

import azopg
from _support import hotelling, hotelling_threshold, random_problem
from azopg.method import pi_steps
from azopg.method.policy_iteration import PolicyIteration
from azopg.method.rules import make_rule
from azopg.method.tasks import Task, run_task
from azopg.method.whitening import Whitening
from azopg.run.output import write_run
from azopg.run.replay import replay_run
from azopg.settings import Settings

RULES = ["natural", "policy-iteration"]


@pytest.fixture(scope="module")
def he1():
    return azopg.get_problem("he1")


# ------------------------------------------------------- whitened estimator

def test_whitened_two_point_estimator_is_unbiased_for_the_scaled_gauss_newton_direction():
    rng = np.random.default_rng(7)
    p = random_problem(rng, 2, 2)
    K = np.array(p.K0) + 0.05 * rng.standard_normal((p.m, p.n))
    X = p.state_covariance(K)
    w = Whitening(np.array(p.R), p.n)
    w.add(1.3 * X, 1)  # a stale / wrong-scale Xh: the mean is then L L' grad M' M, whatever M is
    L, M, scale = w.factors()
    np.testing.assert_allclose(L @ L, np.linalg.inv(p.R), rtol=1e-12)
    np.testing.assert_allclose(M @ M / scale, np.linalg.inv(1.3 * X), rtol=1e-10)
    target = L @ L.T @ p.gradient(K) @ M.T @ M  # = c^2 R^-1 grad X^-1 / 1.3
    d, N, r, tau = K.size, 100_000, 1e-4, 100.0
    P, E = p.value_matrix(K), sla.expm(p.closed_loop(K) * tau)
    assert np.trace(E.T @ P @ E @ p.x0_cov) / p.cost(K) < 1e-15  # the tail beyond tau is negligible
    est = azopg.estimate_gradient(azopg.LinearPlant(p), K, r=r, N=N, tau=tau, rng=np.random.default_rng(3),
                                  L=L, M=M, moments=True)
    U = L @ azopg.sphere_directions(np.random.default_rng(3), N, p.m, p.n) @ M
    G = (N * est.weights)[:, None, None] * U  # per-direction estimates
    np.testing.assert_allclose(G.mean(axis=0), est.grad, rtol=1e-9, atol=1e-14 * np.abs(G).max())
    # smoothing bias of the two-point difference is O(r^2): far below the sampling error
    dev = max(abs((p.cost(K + r * u) - p.cost(K - r * u)) / (2 * r) - np.sum(p.gradient(K) * u)) for u in U[:200])
    S = np.cov(G.reshape(N, d), rowvar=False)
    assert N * (2 * math.sqrt(d) * dev * np.abs(U[:200]).max()) ** 2 / np.linalg.eigvalsh(S).min() < 0.5
    thr = hotelling_threshold(N, d)
    assert hotelling(G, target) < thr
    assert hotelling(G, 1.05 * target) > thr  # the test would catch a 5 % bias
    assert hotelling(G, p.gradient(K)) > 10 * thr  # and the unwhitened gradient is not what it estimates
    # the summed moments: E[S] over x0 ~ Omega is X_K(tau) (+- r U), within sampling error
    assert est.S_count == 2 * N
    np.testing.assert_allclose(est.S / est.S_count, X, rtol=0.02)


# ------------------------------------------------------ policy iteration

@pytest.fixture
def one_step(monkeypatch):
    """One Kleinman step per applied update (not several on the same equations)."""
    monkeypatch.setattr(pi_steps, "INNER_STEPS", 1)


def _moments_rule(problem, **settings):
    settings.setdefault("snapshots", 1)  # one equation per rollout
    s = Settings(method="policy-iteration", tau=40.0, r=1e-2, step=1.0, check_every=10**6, **settings)
    return PolicyIteration(np.array(problem.K0), s, R=np.array(problem.R))


class Updates:
    """Records the gain before each update."""

    def __init__(self) -> None:
        self.before: list[np.ndarray] = []
        self.K = None

    def event(self, record):
        if record.event == "update":
            self.before.append(self.K)
        self.K = record.K.copy()

    def arrival(self, row):
        pass


def test_one_policy_iteration_step_on_exact_data_is_the_kleinman_step(he1, one_step):
    rule = _moments_rule(he1)
    plant = azopg.LinearPlant(he1)
    while rule.version == 0:
        rule.tell(run_task(plant, rule.ask(0)))
    assert rule.stats.updates == 1 and rule.equations.rows >= rule.equations.unknowns
    assert rule.safeguards.anchor_cost == pytest.approx(he1.cost(he1.K0), rel=1e-3)  # measured by the first task
    np.testing.assert_allclose(rule.K, he1.kleinman_step(he1.K0), rtol=1e-7, atol=1e-9)
    assert he1.is_stabilizing(rule.K) and he1.cost(rule.K) < he1.cost(he1.K0)


def test_stale_reports_give_the_exact_step_out_of_order(he1, one_step):
    """Tasks issued at old gains and told in reverse order: every update is the exact Kleinman
    step of the gain it was applied to, as with fresh data."""
    rule = _moments_rule(he1, workers=4, batch=3)
    seen = Updates()
    rule.observer = seen
    seen.K = rule.K.copy()
    plant = azopg.LinearPlant(he1)
    for _ in range(6):  # a fit once the equations have grown by SOLVE_GROWTH: a few steps per round
        tasks = [rule.ask(w) for w in range(4) for _ in range(2)]
        for task in reversed(tasks):
            rule.tell(run_task(plant, task))
    assert rule.stats.updates >= 4 and rule.stats.dropped == 0
    assert rule.stats.max_seen_delay >= 2  # steps were taken on reports of older gains
    for K_before, K_after in zip(seen.before, [*seen.before[1:], rule.K], strict=True):
        np.testing.assert_allclose(K_after, he1.kleinman_step(K_before), rtol=1e-6, atol=1e-8)
    assert he1.relative_gap(rule.K) < 1e-9


def test_policy_iteration_halves_the_step_it_takes_even_beyond_the_trust_limit(he1, one_step):
    """Each rollback halves ``alpha``; the step is shortened to the trust limit *before* ``alpha``
    scales it, so a fit whose step is far beyond the limit still takes half the step after a
    rollback (eb5 seed 22: 27 halvings left the step at the limit, and the run at K0)."""
    from types import SimpleNamespace

    rule = _moments_rule(he1)
    huge = SimpleNamespace(condition=1.0, R=np.array(he1.R), E=1e12 * np.ones_like(rule.K))
    rule.equations.solve = lambda stop=None: huge  # one equation per rollout: judged by its condition
    rule.equations.rows = rule.equations.unknowns
    taken = []
    for alpha in (1.0, 0.5, 0.25):
        K = rule.K.copy()
        rule.tuning.alpha, rule.solved_rows = alpha, 0
        rule._tell_round([])
        taken.append(np.linalg.norm(rule.K - K) / np.linalg.norm(K))
        rule.K = K
    np.testing.assert_allclose(taken, [1.0, 0.5, 0.25], rtol=1e-12)


def test_policy_iteration_estimates_R_when_unknown(he1, one_step):
    s = Settings(method="policy-iteration", tau=40.0, r=1e-1, step=1.0, check_every=10**6, snapshots=1)
    rule = make_rule(np.array(he1.K0), s)  # no R
    plant = azopg.LinearPlant(he1)
    while rule.version == 0:
        rule.tell(run_task(plant, rule.ask(0)))
    np.testing.assert_allclose(rule.K, he1.kleinman_step(he1.K0), rtol=1e-5, atol=1e-7)


def test_policy_iteration_refuses_a_plant_without_moments(chain3):
    from _support import BlackBoxPlant

    plant = BlackBoxPlant(chain3)
    if azopg.plants.base.returns_moments(plant):
        pytest.skip("the black-box test plant returns moments")
    with pytest.raises(azopg.SettingsError, match="state moments"):
        azopg.train(plant, K0=chain3.K0, method="policy-iteration", max_updates=5)


# ------------------------------------------------------------------ runs

@pytest.mark.parametrize("backend,workers", [("serial", 1), ("simulated", 4)])
@pytest.mark.parametrize("name", ["chain3", "he1"])
@pytest.mark.parametrize("method", RULES)
def test_rule_reaches_a_tight_gap(method, name, backend, workers):
    p = azopg.get_problem(name)
    res = azopg.train(p, method=method, backend=backend, workers=workers, target_gap=1e-6, max_rollouts=20_000)
    assert res.status == "converged", (res.status, res.relative_gap)
    assert p.relative_gap(res.K) <= 1e-6 and res.rollouts <= 20_000 + 200


@pytest.mark.parametrize("method", RULES)
def test_rules_on_async_sync_light_and_noisy(chain3, method):
    a = azopg.train(chain3, method=method, backend="async", workers=2, target_gap=1e-4, max_time=60,
                    rollout_latency=0.0005)
    assert a.status == "converged" and a.stats["bytes_received"] > 0
    # 1 % cost noise: a coarse target (noise, not the rule, limits the accuracy)
    b = azopg.train(chain3, method=method, backend="simulated-sync", workers=3, target_gap=5e-2,
                    max_rollouts=20_000, light=True, cost_noise=0.01)
    assert b.status == "converged"


@pytest.mark.parametrize("options", [{"target_gap": None, "max_updates": 40},  # on past the optimum: delays arise
                                     {"target_gap": None, "max_updates": 80, "light": True, "cost_noise": 0.01}],
                         ids=["exact", "light-noisy"])
@pytest.mark.parametrize("method", RULES)
def test_replay_reproduces_the_rule_bit_for_bit(chain3, tmp_path, method, options):
    res = azopg.train(chain3, method=method, backend="simulated", workers=3, seed=2, max_rollouts=20_000,
                      latency_model="exponential", **options)
    assert res.status in ("converged", "max_updates") and res.stats["max_delay_seen"] > 0
    write_run(tmp_path, res, plot=False)
    K, K_recorded, events = replay_run(tmp_path)
    assert events == len(res.arrivals)
    assert np.array_equal(K_recorded, res.K) and np.array_equal(K, K_recorded)


@pytest.mark.parametrize("method", RULES)
def test_resume_continues_the_rule(chain3, tmp_path, method):
    from _support import Interrupter

    out = tmp_path / "run"
    first = azopg.train(chain3, method=method, seed=1, target_gap=1e-6, max_time=60, out_dir=out,
                        rollout_latency=0.002, progress=Interrupter(1 if method == "policy-iteration" else 2))
    assert first.status == "interrupted"
    state = json.loads((out / "checkpoint.json").read_text())["master"]
    rule = make_rule(np.array(chain3.K0), Settings(method=method), R=np.array(chain3.R))
    rule.load_state(state)
    saved = json.loads(json.dumps(rule.state_dict()))
    assert saved == {k: state[k] for k in saved}  # a lossless round trip
    if method == "natural":
        assert saved["X_hat"] is not None
    res = azopg.resume(out)
    assert res.status == "converged" and chain3.relative_gap(res.K) <= 1e-6
    assert res.stats["resumes"] == 1


def test_task_carries_whitening_factors(chain3):
    rule = make_rule(np.array(chain3.K0), Settings(method="natural"), R=np.array(chain3.R))
    task = rule.ask(0)
    assert isinstance(task, Task) and task.kind == "estimate" and task.moments and task.method == "two-point"
    assert task.L.shape == (chain3.m, chain3.m) and task.M.shape == (chain3.n, chain3.n)


def test_settings_and_cli_know_the_rules():
    for method in RULES:
        assert Settings(method=method).method == method
    with pytest.raises(azopg.SettingsError, match="method must be one of"):
        Settings(method="newton")


def test_a_run_interrupted_before_its_first_anchor_is_measured_resumes(chain3, tmp_path):
    """Policy iteration measures ``K0``'s cost by the loop's first task; on two simulated workers a
    one-rollout task reports before that check: the checkpoint then holds the anchor's cost as not
    measured ("inf"), and the resumed run measures it and converges."""
    from _support import Interrupter

    out = tmp_path / "run"
    first = azopg.train(chain3, snapshots=1, workers=2, backend="simulated", seed=1, target_gap=1e-6,
                        max_time=60, out_dir=out, progress=Interrupter(1))
    assert first.status == "interrupted"
    assert json.loads((out / "checkpoint.json").read_text())["master"]["anchor_cost"] == "inf"
    res = azopg.resume(out)
    assert res.status == "converged" and chain3.relative_gap(res.K) <= 1e-6
