"""Discrete-time LQR: oracle, exact plant, the identity behind the regression, rules, problems, CLI.

The identity (method/discrete.py): for ``P = P_K`` and a rollout of ``K + D``,
``x_{t+1} = (Acl - B D) x_t`` with ``Acl = A - B K``, so

    x_t'P x_t - x_{t+1}'P x_{t+1} = x_t'[P - (Acl - BD)'P(Acl - BD)] x_t
                                  = x_t'[Q + K'RK + Acl'PBD + D'B'P Acl - D'B'PBD] x_t,

and the stage cost is ``x_t'[Q + (K + D)'R(K + D)] x_t``; their difference is
``x_t'[2 D'(RK - B'P Acl) + D'(R + B'PB) D] x_t`` (symmetrized) with
``RK - B'P Acl = (R + B'PB) K - B'PA = E_K``. Summed over ``t < T``:
``f = x0'P x0 - x_T'P x_T + tr(S (D'H D + 2 D'E_K))``, ``H = R + B'PB``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg as sla

import azopg
from azopg.errors import NotStabilizingError, ProblemError
from azopg.method.regression import evaluate_policy
from azopg.model.compare import compare
from azopg.model.library import get_problem, load_problem
from azopg.model.problem import LQRProblem
from azopg.plants.discrete import DiscreteLinearPlant, plant_for
from azopg.plants.linear import LinearPlant
from test_cli import run_cli

DISCRETE = ("dean3", "toso4")


def dean() -> LQRProblem:
    return get_problem("dean3")


def random_discrete(seed: int, n: int = 4, m: int = 2) -> LQRProblem:
    """A random unstable discrete plant with a stabilizing K0 (a heavy-input DARE gain)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n)) / math.sqrt(n)
    A *= 1.2 / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.standard_normal((n, m))
    Q = np.eye(n) + 0.3 * np.diag(rng.random(n))
    R = np.diag(1.0 + rng.random(m))
    P = sla.solve_discrete_are(A, B, Q, 30 * R)
    K0 = np.linalg.solve(30 * R + B.T @ P @ B, B.T @ P @ A)
    cov = np.eye(n) + 0.2 * np.ones((n, n))
    return LQRProblem(A, B, Q, R, x0_cov=cov, K0=K0, discrete_time=True, name=f"rd{seed}")


# ------------------------------------------------------------------ oracle

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimum_matches_scipy_and_control(seed):
    import control

    p = random_discrete(seed)
    P = sla.solve_discrete_are(p.A, p.B, p.Q, p.R)
    K = np.linalg.solve(p.R + p.B.T @ P @ p.B, p.B.T @ P @ p.A)
    np.testing.assert_allclose(p.optimal_gain, K, rtol=1e-9, atol=1e-12)
    assert p.optimal_cost == pytest.approx(np.trace(P @ p.x0_cov), rel=1e-10)
    Kc = control.dlqr(p.A, p.B, p.Q, p.R)[0]
    np.testing.assert_allclose(p.optimal_gain, Kc, rtol=1e-8, atol=1e-12)
    assert p.spectral_radius(p.optimal_gain) < 1
    np.testing.assert_allclose(p.E(p.optimal_gain), 0, atol=1e-9 * np.max(np.abs(K)))


def test_scalar_closed_form():
    a, b, q, r = 1.3, 0.7, 2.0, 0.5
    p = LQRProblem([[a]], [[b]], [[q]], [[r]], x0_cov=[[1.5]], K0=[[1.0]], discrete_time=True)
    c = r * (1 - a * a) - q * b * b  # b^2 P^2 + c P - q r = 0
    Pstar = (-c + math.sqrt(c * c + 4 * b * b * q * r)) / (2 * b * b)
    assert p.optimal_cost == pytest.approx(1.5 * Pstar, rel=1e-12)
    assert p.optimal_gain[0, 0] == pytest.approx(a * b * Pstar / (r + b * b * Pstar), rel=1e-12)
    for k in (0.9, 1.5, 2.2):
        Pk = (q + r * k * k) / (1 - (a - b * k) ** 2)
        assert p.cost([[k]]) == pytest.approx(1.5 * Pk, rel=1e-12)
        Xk = 1.5 / (1 - (a - b * k) ** 2)
        Ek = (r + b * b * Pk) * k - b * Pk * a
        assert p.gradient([[k]])[0, 0] == pytest.approx(2 * Ek * Xk, rel=1e-10)
        assert p.kleinman_step([[k]])[0, 0] == pytest.approx(b * Pk * a / (r + b * b * Pk), rel=1e-12)
    assert p.cost([[0.0]]) == math.inf  # |a| > 1
    with pytest.raises(NotStabilizingError):
        p.value_matrix([[0.0]])


def test_gradient_matches_finite_differences_and_hewer_converges():
    p = random_discrete(3)
    K = p.K0
    G = p.gradient(K)
    h = 1e-6 * max(1.0, float(np.max(np.abs(K))))
    num = np.zeros_like(G)
    for i in range(p.m):
        for j in range(p.n):
            Z = np.zeros_like(K)
            Z[i, j] = h
            num[i, j] = (p.cost(K + Z) - p.cost(K - Z)) / (2 * h)
    np.testing.assert_allclose(G, num, rtol=1e-6, atol=1e-7 * np.max(np.abs(G)))
    gaps = []
    for _ in range(6):
        K = p.kleinman_step(K)
        assert p.is_stabilizing(K)
        gaps.append(p.relative_gap(K))
    assert gaps[-1] < 1e-12 and gaps[1] < gaps[0] ** 1.5 * 10  # quadratic


def test_stability_is_the_unit_circle():
    # a Hurwitz A that is not Schur: fine as a continuous problem, refused as a discrete one
    A = [[-3.0, 0.0], [0.0, -0.5]]
    assert LQRProblem(A, [[1.0], [1.0]]).K0.shape == (1, 2)
    with pytest.raises(NotStabilizingError, match="Schur"):
        LQRProblem(A, [[1.0], [1.0]], discrete_time=True)
    with pytest.raises(NotStabilizingError, match="spectral radius"):
        LQRProblem([[2.0]], [[1.0]], K0=[[0.5]], discrete_time=True)


# ------------------------------------------------------------------ plant

def _step_loop(p, K, x0, T):
    x, c, S = x0.copy(), 0.0, np.zeros((p.n, p.n))
    for _ in range(T):
        u = -K @ x
        c += x @ p.Q @ x + u @ p.R @ u
        S += np.outer(x, x)
        x = p.A @ x + p.B @ u
    return c, S, x


@pytest.mark.parametrize("T", [1, 2, 3, 7, 8, 37])
def test_rollouts_match_a_step_loop(T):
    p = random_discrete(4)
    plant = DiscreteLinearPlant(p)
    rng = np.random.default_rng(T)
    x0 = plant.initial_states(rng, 5)
    K = p.K0 + 0.05 * rng.standard_normal((5, p.m, p.n))
    res = plant.rollout(K, x0, float(T), moments=True)
    plain = plant.rollout(K, x0, T + 0.4)  # rounded to T steps
    np.testing.assert_array_equal(res.cost, plain.cost)
    for i in range(5):
        c, S, x = _step_loop(p, K[i], x0[i], T)
        assert res.cost[i] == pytest.approx(c, rel=1e-12)
        np.testing.assert_allclose(res.S[i], S, rtol=1e-12, atol=1e-14 * np.max(np.abs(S)))
        np.testing.assert_allclose(res.x_end[i], x, rtol=1e-11, atol=1e-13 * np.max(np.abs(x0[i])))


def test_long_rollouts_match_the_discrete_lyapunov_solution():
    p = dean()  # spectral radius of A - B K0 is 0.995: thousands of steps to settle
    plant = plant_for(p)
    assert isinstance(plant, DiscreteLinearPlant)
    X0 = plant.evaluation_states()
    res = plant.rollout(p.K0, X0, 2.0**20, moments=True)
    assert np.mean(res.cost) == pytest.approx(p.cost(p.K0), rel=1e-11)
    S = np.mean(res.S, axis=0)
    np.testing.assert_allclose(S, p.state_covariance(p.K0), rtol=1e-10, atol=1e-12 * np.max(np.abs(S)))
    assert np.max(np.abs(res.x_end)) < 1e-100 * np.max(np.abs(X0))


def test_blow_ups_are_flagged():
    p = dean()
    plant = DiscreteLinearPlant(p)
    x0 = plant.evaluation_states()
    K = np.stack([p.K0, np.zeros((3, 3)), -p.K0])
    res = plant.rollout(K, x0[:3], 4096.0, moments=True)
    assert list(res.blown_up) == [False, True, True]
    assert np.all(res.cost[1:] == azopg.plants.base.BLOWUP_COST)
    assert np.isnan(res.S[1]).all()
    with pytest.raises(ValueError, match="tau"):
        plant.rollout(p.K0, x0, 0.0)
    with pytest.raises(ValueError, match="discrete-time"):
        DiscreteLinearPlant(get_problem("ac1"))
    assert type(plant_for(get_problem("ac1"))) is LinearPlant


# ------------------------------------------------------------------ identity and regression

def test_identity_and_least_squares_give_the_exact_hewer_step():
    p = random_discrete(5)
    K = p.K0
    P, E, H = p.value_matrix(K), p.E(K), p.input_hessian(K)
    plant = DiscreteLinearPlant(p)
    rng = np.random.default_rng(0)
    b = 60
    x0 = plant.initial_states(rng, b)
    Ki = K + 0.02 * rng.standard_normal((b, p.m, p.n))
    res = plant.rollout(Ki, x0, 13.0, moments=True)  # short horizon, any perturbation: still exact
    D = Ki - K
    rhs = (np.einsum("bi,ij,bj->b", x0, P, x0) - np.einsum("bi,ij,bj->b", res.x_end, P, res.x_end)
           + np.einsum("bij,bji->b", res.S, np.swapaxes(D, 1, 2) @ H @ D + 2 * np.swapaxes(D, 1, 2) @ E))
    np.testing.assert_allclose(res.cost, rhs, rtol=1e-10)
    fit = evaluate_policy(K, Ki, x0, res.x_end, res.S, res.cost, None)  # H_uu estimated in R's place
    np.testing.assert_allclose(fit.P, P, rtol=1e-6, atol=1e-8 * np.max(np.abs(P)))
    np.testing.assert_allclose(fit.E, E, rtol=1e-5, atol=1e-7 * np.max(np.abs(E)))
    np.testing.assert_allclose(fit.R, H, rtol=1e-6)
    np.testing.assert_allclose(fit.kleinman_step(K), p.kleinman_step(K), rtol=1e-6,
                               atol=1e-7 * np.max(np.abs(K)))
    # the continuous-time fit (R given) would be wrong here: B'PB is not zero
    wrong = evaluate_policy(K, Ki, x0, res.x_end, res.S, res.cost, p.R)
    assert wrong.residual > 1e-6 * wrong.target_norm


@pytest.mark.parametrize("whitened", [False, True])
def test_zero_order_estimates_point_along_the_discrete_gradient(whitened):
    """Plain: ``E g ~ grad f = 2 E X``; whitened by ``L = R^-1/2``, ``M = X^-1/2`` (the natural rule's
    factors, with ``X`` the mean moment ``S``): ``E g ~ R^-1 grad f X^-1 = 2 R^-1 E``."""
    from azopg.method.estimators import estimate_gradient

    p = random_discrete(6, n=3, m=2)
    plant = DiscreteLinearPlant(p)
    K = p.K0
    X = p.state_covariance(K)
    L = np.linalg.inv(sla.sqrtm(p.R)).real if whitened else None
    M = np.linalg.inv(sla.sqrtm(X)).real if whitened else None
    want = 2 * np.linalg.solve(p.R, p.E(K)) if whitened else p.gradient(K)
    rng = np.random.default_rng(1)
    r = 1e-4 * float(np.linalg.norm(K))
    g = np.mean([estimate_gradient(plant, K, r=r, N=400, tau=4096.0, rng=rng, L=L, M=M).grad
                 for _ in range(5)], axis=0)
    cos = float(np.sum(g * want) / (np.linalg.norm(g) * np.linalg.norm(want)))
    assert cos > 0.95
    assert np.linalg.norm(g) == pytest.approx(np.linalg.norm(want), rel=0.3)


# ------------------------------------------------------------------ rules end to end

@pytest.mark.parametrize("method", ["two-point", "natural", "policy-iteration"])
def test_every_rule_reaches_the_target_on_dean3(method):
    res = azopg.train(dean(), seed=0, method=method, target_gap=1e-6, max_time=60)
    assert res.status == "converged" and res.relative_gap <= 1e-6
    assert res.settings["tau"] >= 8 and float(res.settings["tau"]).is_integer()


def test_policy_iteration_on_a_discrete_gym_environment():
    gym = pytest.importorskip("gymnasium")
    from azopg.plants.gym import GymPlant

    p = random_discrete(7, n=3, m=1)

    class DiscreteEnv(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64)
        action_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float64)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.x = np.array(options["x0"] if options else self.np_random.standard_normal(3))
            return self.x.copy(), {}

        def step(self, u):
            u = np.asarray(u, dtype=float)
            r = -(self.x @ p.Q @ self.x + u @ p.R @ u)
            self.x = p.A @ self.x + p.B @ u
            return self.x.copy(), r, False, False, {}

    plant = GymPlant(DiscreteEnv, 3, 1)  # no dt attribute: a discrete-time environment
    exact = DiscreteLinearPlant(p)
    x0 = exact.evaluation_states()
    a, e = plant.rollout(p.K0, x0, 20.0, moments=True), exact.rollout(p.K0, x0, 20.0, moments=True)
    np.testing.assert_allclose(a.cost, e.cost, rtol=1e-10)
    np.testing.assert_allclose(a.S, e.S, rtol=1e-10)
    res = azopg.train(plant, K0=p.K0, seed=0, method="policy-iteration", max_updates=8)
    assert p.relative_gap(res.K) < 1e-6


def test_discrete_linear_env_sums_the_stage_costs_of_the_exact_plant():
    gym = pytest.importorskip("gymnasium")
    from azopg.plants.discrete_env import DiscreteLinearEnv
    from azopg.plants.envs import register_envs
    from azopg.plants.gym import GymPlant

    p = random_discrete(11, n=3, m=2)
    plant = GymPlant(lambda: DiscreteLinearEnv.from_problem(p), 3, 2)
    exact = DiscreteLinearPlant(p)
    x0 = exact.evaluation_states()
    a, e = plant.rollout(p.K0, x0, 30.0, moments=True), exact.rollout(p.K0, x0, 30.0, moments=True)
    assert plant.discrete_time
    np.testing.assert_allclose(a.cost, e.cost, rtol=1e-10)
    np.testing.assert_allclose(a.S, e.S, rtol=1e-10)
    register_envs()
    env = gym.make("azopg/Dean3-v0")
    x, _ = env.reset(seed=0, options={"x0": [1.0, 2.0, 3.0]})  # a plain environment: the option is ignored
    d = get_problem("dean3")
    K = d.K0
    total, steps, done = 0.0, 0, False
    while not done:
        x_next, reward, terminated, truncated, _ = env.step(-K @ x)
        np.testing.assert_allclose(x_next, (d.A - d.B @ K) @ x, rtol=1e-12, atol=1e-15)
        total, steps, x, done = total - reward, steps + 1, x_next, terminated or truncated
    assert steps == 300 and total > 0
    from gymnasium.utils.env_checker import check_env

    check_env(DiscreteLinearEnv.from_problem(d), skip_render_check=True)
    with pytest.raises(ProblemError):
        DiscreteLinearEnv.from_problem(get_problem("he1"))


# ------------------------------------------------------------------ problems, python-control, CLI

def test_problem_files_and_statespace_round_trip(tmp_path):
    import control

    p = get_problem("toso4")
    assert p.discrete_time and p.time_domain == "discrete"
    d = p.to_dict()
    assert d["discrete_time"] is True
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**d, "dt": 0.05}))
    q = load_problem(str(path))
    assert q.discrete_time and q.dt == 0.05 and q.time_domain == "discrete, dt=0.05"
    assert q.optimal_cost == p.optimal_cost
    sys = q.to_statespace()
    assert sys.dt == 0.05
    r = LQRProblem.from_statespace(sys, q.Q, q.R, K0=q.K0)
    assert r.discrete_time and r.dt == 0.05 and r.optimal_cost == pytest.approx(q.optimal_cost, rel=1e-12)
    s = LQRProblem.from_statespace(control.ss(q.A, q.B, np.eye(4), 0, True), K0=q.K0)
    assert s.discrete_time and s.dt is None
    bad = control.ss(q.A, q.B, np.eye(4), 0, 0.1)
    bad.dt = -0.1
    with pytest.raises(ProblemError, match="dt"):
        LQRProblem.from_statespace(bad, K0=q.K0)
    assert not get_problem("ac1").discrete_time and "discrete_time" not in get_problem("ac1").to_dict()


@pytest.mark.parametrize("name", DISCRETE)
def test_compare_uses_dlqr(name):
    p = get_problem(name)
    c = compare(p, p.optimal_gain)
    assert c.reference == "control.dlqr" and abs(c.relative_gap) < 1e-10 and c.stabilizing
    assert "control.dlqr" in c.format()
    assert not compare(p, np.zeros((p.m, p.n))).stabilizing


SCALAR = '"A": [[2.0]], "B": [[1.0]], "Q": 1, "R": 1'


@pytest.mark.parametrize("text, words", [
    ('{' + SCALAR + ', "discrete_time": true, "K0": [[0.5]]}', "spectral radius"),  # |2 - 0.5| > 1
    ('{' + SCALAR + ', "discrete_time": true}', "Schur"),
    ('{' + SCALAR + ', "discrete_time": true, "K0": [[1.5]], "dt": 0}', "dt"),
    ('{' + SCALAR + ', "discrete_time": true, "K0": [[1.5]], "dt": -1}', "dt"),
    ('{' + SCALAR + ', "discrete_time": "yes", "K0": [[1.5]]}', "discrete_time"),
], ids=["non-Schur-K0", "no-K0", "dt-zero", "dt-negative", "flag-not-bool"])
def test_bad_discrete_problem_files_exit_2_with_one_line(tmp_path, text, words):
    (tmp_path / "p.json").write_text(text)
    proc = run_cli(["train", "--problem", "p.json"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("azopg: error:") and words in lines[0], proc.stderr


def test_cli_problems_lists_the_time_domain(tmp_path):
    proc = run_cli(["problems"], tmp_path)
    assert proc.returncode == 0
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert proc.stdout.splitlines()[0].split()[3] == "time"
    assert all(rows[name][3] == "discrete" for name in DISCRETE)
    assert rows["ac1"][3] == "continuous"
