"""Black-box plants: CallablePlant, GymPlant, the example gymnasium envs, the examples.

References are independent of the code under test: rollout costs of the continuous-time
loop come from :class:`azopg.LinearPlant` or RK4 (``_support``), those of the
sampled-data loop (input held over each env step) from RK4 with many sub-steps, and the
quality of a learned gain from the exact LQR oracle.
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import azopg
from _support import rk4_rollout_costs
from azopg.errors import SettingsError
from azopg.plants.base import BLOWUP_COST
from azopg.plants.blackbox import rollout_seed
from azopg.plants.callable import CallablePlant
from azopg.plants.gym import GymPlant

gym = pytest.importorskip("gymnasium")
from azopg.plants.envs import LinearEnv, register_envs  # noqa: E402
from azopg.plants.pendulum_env import PendulumEnv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------- CallablePlant
def _linear_cost(plant: azopg.LinearPlant, K: np.ndarray, x0: np.ndarray, tau: float,
                 rng: np.random.Generator) -> float:
    """A one-rollout callable: the exact cost, or NaN where the LinearPlant flags a blow-up."""
    res = plant.rollout(K[None], x0[None], tau)
    return float("nan") if res.blown_up[0] else float(res.cost[0])


def _rk4_cost(problem: azopg.LQRProblem, K: np.ndarray, x0: np.ndarray, tau: float,
              rng: np.random.Generator) -> float:
    return float(rk4_rollout_costs(problem, K[None], x0[None], tau, 2000)[0])


def test_callable_plant_matches_linear_plant():
    p = azopg.get_problem("he1")
    lp = azopg.LinearPlant(p)
    rng = np.random.default_rng(0)
    b = 12
    K = p.optimal_gain + 0.3 * rng.standard_normal((b, p.m, p.n))
    K[3] = -20.0 * np.asarray(p.optimal_gain)  # destabilizing: must be flagged by both
    x0 = lp.initial_states(rng, b)
    ref = lp.rollout(K, x0, 8.0)
    assert ref.blown_up[3]
    # the callable passes the LinearPlant's answer through: identical costs and flags
    cp = CallablePlant(functools.partial(_linear_cost, lp), p.n, p.m)
    out = cp.rollout(K, x0, 8.0)
    np.testing.assert_array_equal(out.blown_up, ref.blown_up)
    np.testing.assert_array_equal(out.cost, ref.cost)
    assert out.cost[3] == BLOWUP_COST
    # an independent simulator (RK4, 2000 steps, error ~ (h |A - BK|)^4) agrees closely
    ok = ~ref.blown_up
    cp = CallablePlant(functools.partial(_rk4_cost, p), p.n, p.m)
    out = cp.rollout(K[ok], x0[ok], 8.0)
    np.testing.assert_allclose(out.cost, ref.cost[ok], rtol=1e-7)
    # a single gain for the whole batch
    out = cp.rollout(p.optimal_gain, x0[:3], 8.0)
    np.testing.assert_allclose(out.cost, lp.rollout(p.optimal_gain, x0[:3], 8.0).cost, rtol=1e-7)


def _flaky(K: np.ndarray, x0: np.ndarray, tau: float, rng: np.random.Generator) -> float:
    kind = int(x0[0])
    if kind == 0:
        return 1.5
    if kind == 1:
        return float("nan")
    if kind == 2:
        return float("inf")
    if kind == 3:
        raise ValueError("simulator crashed")
    if kind == 4:
        return 1e250  # finite but absurd: overflowing as LinearPlant's limit does
    return "not a number"  # type: ignore[return-value]  # float() raises


def test_callable_plant_flags_nan_inf_and_exceptions():
    cp = CallablePlant(_flaky, n=2, m=1)
    x0 = np.array([[k, 0.0] for k in range(6)], dtype=float)
    with pytest.warns(RuntimeWarning, match="simulator crashed"):
        out = cp.rollout(np.zeros((1, 2)), x0, 1.0)
    np.testing.assert_array_equal(out.blown_up, [False, True, True, True, True, True])
    assert out.cost[0] == 1.5
    assert np.all(out.cost[1:] == BLOWUP_COST) and np.all(np.isfinite(out.cost))
    assert cp.errors == 2 and "could not convert" in cp.last_error
    # a copy (the factory of process workers) starts with fresh counters and pickles
    clone = pickle.loads(pickle.dumps(cp.copy()))
    assert clone.errors == 0 and clone.rollout(np.zeros((1, 2)), x0[:1], 1.0).cost[0] == 1.5


def _noisy(K: np.ndarray, x0: np.ndarray, tau: float, rng: np.random.Generator) -> float:
    return float(x0 @ x0 + rng.standard_normal())


def test_callable_plant_random_streams():
    """Each rollout's generator depends on (x0, tau) only: common random numbers."""
    cp = CallablePlant(_noisy, n=3, m=1)
    x0 = np.random.default_rng(1).standard_normal((4, 3))
    K = np.random.default_rng(2).standard_normal((4, 1, 3))
    a = cp.rollout(K, x0, 2.0).cost
    b = cp.rollout(-K, x0, 2.0).cost  # other gains, same states: same noise
    np.testing.assert_array_equal(a, b)
    c = cp.rollout(K, x0, 3.0).cost
    assert np.all(a != c)
    assert len(set(np.round(a - np.sum(x0 * x0, axis=1), 12))) == 4  # distinct streams per state
    s1, s2 = rollout_seed(x0[0], 2.0), rollout_seed(x0[0].copy(), 2.0)
    assert s1.entropy == s2.entropy


def test_callable_plant_initial_states_and_validation():
    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    cp = CallablePlant(_noisy, n=2, m=1, x0_cov=cov)
    X = cp.initial_states(np.random.default_rng(0), 20000)
    assert X.shape == (20000, 2)
    np.testing.assert_allclose(X.T @ X / len(X), cov, atol=0.06)
    cp = CallablePlant(_noisy, n=2, m=1, x0_sampler=lambda rng, size: np.ones((size, 2)),
                       eval_states=[[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(cp.initial_states(np.random.default_rng(0), 3), np.ones((3, 2)))
    np.testing.assert_array_equal(azopg.method.tasks.evaluation_states(cp, 0), np.eye(2))
    bad = CallablePlant(_noisy, n=2, m=1, x0_sampler=lambda rng, size: np.ones((size, 3)))
    with pytest.raises(ValueError, match="shape"):
        bad.initial_states(np.random.default_rng(0), 2)
    with pytest.raises(SettingsError):
        CallablePlant(_noisy, n=0, m=1)
    with pytest.raises(SettingsError):
        CallablePlant("cost", n=2, m=1)  # type: ignore[arg-type]
    with pytest.raises(SettingsError):
        CallablePlant(_noisy, n=2, m=1, x0_cov=-np.eye(2))
    with pytest.raises(SettingsError):
        CallablePlant(_noisy, n=2, m=1, eval_states=np.ones((3, 4)))
    with pytest.raises(ValueError, match="shape"):
        cp.rollout(np.zeros((1, 3)), np.zeros((2, 2)), 1.0)


# ------------------------------------------------------------------ LinearEnv
def _sampled_data_costs(p: azopg.LQRProblem, K: np.ndarray, x0: np.ndarray, dt: float, steps: int,
                        sub: int = 40) -> np.ndarray:
    """Cost of the sampled-data loop u(t) = -K x(k dt) by RK4 with ``sub`` sub-steps per step."""
    A, B, Q, R = (np.asarray(M) for M in (p.A, p.B, p.Q, p.R))
    out = []
    for x in np.array(x0, dtype=float):
        c = 0.0
        h = dt / sub
        for _ in range(steps):
            u = -K @ x

            def f(x: np.ndarray, u: np.ndarray = u) -> tuple[np.ndarray, float]:
                return A @ x + B @ u, float(x @ Q @ x + u @ R @ u)

            for _ in range(sub):
                k1, c1 = f(x)
                k2, c2 = f(x + 0.5 * h * k1)
                k3, c3 = f(x + 0.5 * h * k2)
                k4, c4 = f(x + h * k3)
                x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                c += h / 6 * (c1 + 2 * c2 + 2 * c3 + c4)
        out.append(c)
    return np.array(out)


def _gym_plant(p: azopg.LQRProblem, dt: float, **kw) -> GymPlant:
    return GymPlant(functools.partial(LinearEnv.from_problem, p, dt=dt, **kw), p.n, p.m)


def test_gym_plant_on_linear_env_is_the_exact_sampled_data_cost():
    """The env holds u over each step and integrates the stage cost exactly (ZOH), so a
    GymPlant rollout is the exact cost of the sampled-data loop -- checked against RK4
    with 40 sub-steps per env step (error ~ (h ||A||)^4 / 120, far below 1e-9)."""
    p = azopg.get_problem("rea1")
    rng = np.random.default_rng(3)
    K = np.asarray(p.K0) + 0.2 * rng.standard_normal((3, p.m, p.n))
    x0 = rng.standard_normal((3, p.n))
    dt, tau = 0.05, 2.0
    plant = _gym_plant(p, dt)
    out = plant.rollout(K, x0, tau)
    assert not out.blown_up.any()
    ref = np.concatenate([_sampled_data_costs(p, K[i], x0[i:i + 1], dt, 40) for i in range(3)])
    np.testing.assert_allclose(out.cost, ref, rtol=1e-9)
    assert plant.steps == 3 * 40 and plant.dt == dt


def test_gym_plant_converges_to_continuous_cost_as_dt_shrinks():
    """Holding u = -K x(k dt) over each step instead of continuous feedback changes the
    cost by O(dt) (the hold acts like a delay of about dt/2), so GymPlant costs on
    LinearEnv approach LinearPlant's f_tau at first order in dt: the relative error
    halves with dt. At the optimal gain K* the first-order term vanishes -- the cost from
    every initial state is stationary at K* and the hold is an O(dt) perturbation of the
    policy -- so there the error falls fourfold."""
    p = azopg.get_problem("he1")
    x0 = azopg.LinearPlant(p).initial_states(np.random.default_rng(4), 4)
    tau = 6.0
    for K, order, last in ((np.asarray(p.K0), 2.0, 2e-2), (np.asarray(p.optimal_gain), 4.0, 2e-4)):
        ref = azopg.LinearPlant(p).rollout(K, x0, tau).cost
        errs = []
        for dt in (0.02, 0.01, 0.005):
            cost = _gym_plant(p, dt).rollout(K, x0, tau).cost
            errs.append(np.max(np.abs(cost - ref) / ref))
        ratios = errs[0] / errs[1], errs[1] / errs[2]
        assert all(0.9 * order < r < 1.15 * order for r in ratios), (errs, ratios)
        assert errs[2] < last


@pytest.mark.filterwarnings("ignore:.*Box .* space:UserWarning")  # check_env: unbounded Box spaces are intended
def test_linear_env_gymnasium_api_and_noise():
    from gymnasium.utils.env_checker import check_env

    p = azopg.get_problem("he1")
    env = LinearEnv.from_problem(p, dt=0.05, noise_std=0.1, obs_noise_std=0.01)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1, options={"x0": np.ones(p.n)})
    assert np.allclose(obs, 1.0, atol=0.1) and np.array_equal(env.state, np.ones(p.n))
    with pytest.raises(ValueError):
        env.reset(options={"x0": np.ones(p.n + 1)})
    # noisy plant: rollouts from one state under two gains share the noise (seeded from x0, tau)
    plant = _gym_plant(p, 0.05, noise_std=0.1)
    x0 = np.ones((2, p.n))
    K = np.stack([p.optimal_gain, p.optimal_gain])
    a, b = plant.rollout(K, x0, 2.0).cost
    assert a == b
    assert plant.rollout(K[:1], x0[:1] * 1.01, 2.0).cost[0] != a
    register_envs()
    register_envs()  # idempotent
    made = gym.make("azopg/Linear-v0", A=p.A, B=p.B, dt=0.05)
    gp = GymPlant(functools.partial(gym.make, "azopg/Linear-v0", A=p.A, B=p.B, dt=0.05), p.n, p.m)
    assert gp.dt == 0.05 and made.unwrapped.dt == 0.05
    assert np.isfinite(gp.rollout(p.K0, x0, 1.0).cost).all()
    check_env(PendulumEnv(), skip_render_check=True)
    with pytest.raises(azopg.ProblemError):
        LinearEnv.from_problem(p, dt=0.0)


class _StubEnv:
    """A minimal env ending its episodes in a chosen way after 3 steps."""

    def __init__(self, mode: str, dt: float | None = 0.1) -> None:
        self.mode = mode
        if dt is not None:
            self.dt = dt
        self.x = np.zeros(1)

    def reset(self, seed=None, options=None):
        self.x = np.array(options["x0"] if options else [1.0], dtype=float)
        self.k = 0
        return self.x.copy(), {}

    def step(self, action):
        self.k += 1
        obs = self.x.copy()
        if self.mode == "nan" and self.k == 2:
            obs = np.array([np.nan])
        end = self.k == 3
        info = {"blown_up": True} if self.mode == "blown" and end else {}
        return obs, -1.0, end and self.mode in ("blown", "goal"), end and self.mode == "truncated", info

    def close(self):
        pass


def test_gym_plant_blowup_rule():
    x0, K = np.ones((1, 1)), np.zeros((1, 1))
    cases = {"blown": True, "goal": False, "truncated": False, "nan": True}
    for mode, flagged in cases.items():
        out = GymPlant(functools.partial(_StubEnv, mode), 1, 1).rollout(K, x0, 1.0)
        assert bool(out.blown_up[0]) is flagged, mode
        if mode in ("goal", "truncated"):
            assert out.cost[0] == 3.0  # ended after 3 of 10 steps: the rewards received until then
    out = GymPlant(functools.partial(_StubEnv, "goal"), 1, 1, max_steps=2).rollout(K, x0, 1.0)
    assert out.cost[0] == 2.0
    # a destabilizing gain on the linear env: flagged (by the env's blow-up bound) like LinearPlant
    p = azopg.get_problem("rea1")
    K_bad = np.stack([-5.0 * np.asarray(p.K0), np.asarray(p.K0)])
    x0 = np.ones((2, p.n))
    out = _gym_plant(p, 0.02).rollout(K_bad, x0, 20.0)
    np.testing.assert_array_equal(out.blown_up, azopg.LinearPlant(p).rollout(K_bad, x0, 20.0).blown_up)
    assert out.blown_up.tolist() == [True, False] and out.cost[0] == BLOWUP_COST
    # the pendulum falling over is reported through info["blown_up"]
    pend = GymPlant(PendulumEnv, 2, 1)
    out = pend.rollout(np.array([[[0.0, 0.0]], [[19.0, 6.0]]]), np.full((2, 2), 0.1), 5.0)
    assert out.blown_up.tolist() == [True, False]


def test_gym_plant_without_dt_is_discrete_time_and_spaces_must_match():
    plant = GymPlant(functools.partial(_StubEnv, "goal", dt=None), 1, 1)
    assert plant.discrete_time and plant.dt is None
    timed = GymPlant(functools.partial(_StubEnv, "goal", dt=None), 1, 1, dt=0.1)
    assert not timed.discrete_time and timed.dt == 0.1
    with pytest.raises(SettingsError, match="dt"):
        GymPlant(functools.partial(_StubEnv, "goal", dt=None), 1, 1, dt=-1.0)
    with pytest.raises(SettingsError, match="observation"):
        _ = GymPlant(PendulumEnv, 3, 1).dt
    with pytest.raises(SettingsError):
        GymPlant("env", 2, 1)  # type: ignore[arg-type]


def test_gym_plant_pickles_and_initial_states_come_from_the_env():
    p = azopg.get_problem("he1")
    plant = _gym_plant(p, 0.05)
    X = plant.initial_states(np.random.default_rng(0), 4000)
    np.testing.assert_allclose(X.T @ X / len(X), np.asarray(p.x0_cov), atol=0.1)
    np.testing.assert_array_equal(X[:5], plant.initial_states(np.random.default_rng(0), 5))
    cost = plant.rollout(p.K0, X[:3], 2.0).cost
    clone = pickle.loads(pickle.dumps(plant))
    assert clone._env is None and plant._env is not None  # each copy builds its own env
    np.testing.assert_array_equal(clone.rollout(p.K0, X[:3], 2.0).cost, cost)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(plant.copy)) ().rollout(p.K0, X[:3], 2.0).cost, cost)


# ------------------------------------------------------------------- learning
def test_gym_plant_learns_linear_env_within_one_percent():
    """Through gymnasium only (2-state unstable system, dt = 0.1, sampled-data floor
    1.6e-3), the learned gain's exact continuous-time cost is within 1e-2 of the CARE
    optimum."""
    p = azopg.get_problem("random-unstable-n2-m1-s0")
    plant = _gym_plant(p, 0.1)
    assert p.relative_gap(p.K0) > 0.5
    result = azopg.train(plant, K0=p.K0, max_updates=300, seed=0, tail_tol=1e-5)
    gap = p.relative_gap(result.K)
    assert gap < 1e-2, gap
    assert np.isnan(result.relative_gap)  # a black box has no oracle inside the learner


def test_gym_plant_with_process_workers():
    p = azopg.get_problem("random-unstable-n2-m1-s0")
    plant = _gym_plant(p, 0.1)
    result = azopg.train(plant, K0=p.K0, max_updates=40, seed=0, tail_tol=1e-5, backend="async", workers=2,
                         plant_factory=plant.copy)
    assert result.status == "max_updates", (result.status, result.stats)
    assert p.is_stabilizing(result.K) and result.stats["tasks"] > 40


def test_pendulum_example_gain_stabilizes_the_nonlinear_plant():
    """The gain the pendulum example learns brings the *non-linear* pendulum back upright
    from initial states up to 1 rad away, checked by an independent simulation
    (scipy's adaptive RK45 with continuous feedback u = -K x, 10 s)."""
    from scipy.integrate import solve_ivp

    mod = _load_example("gym_pendulum")
    K, result = mod.learn(quick=True)
    env = PendulumEnv()
    assert result.updates > 0 and not np.allclose(K, env.nominal_gain)
    g, b = env.gravity / env.length, env.damping / (env.mass * env.length**2)
    inertia = env.mass * env.length**2

    def rhs(t: float, x: np.ndarray) -> list[float]:
        u = -float(K[0] @ x)
        return [x[1], g * np.sin(x[0]) - b * x[1] + u / inertia]

    for x0 in mod.CHECK_STATES:
        sol = solve_ivp(rhs, (0.0, 10.0), x0, rtol=1e-9, atol=1e-12, max_step=0.05)
        assert np.max(np.abs(sol.y[0])) < np.pi / 2, x0
        assert np.linalg.norm(sol.y[:, -1]) < 1e-3, x0
    finals = mod.simulate(K, mod.CHECK_STATES)  # the example's own check, on the env
    assert np.all(np.linalg.norm(finals, axis=1) < 1e-3)


# --------------------------------------------------------------- plot, examples
def test_plot_responses(tmp_path):
    from azopg.run.plots import plot_responses

    p = azopg.get_problem("he1")
    out = plot_responses(p, 1.1 * np.asarray(p.optimal_gain), tmp_path / "r.png")
    assert out.stat().st_size > 10_000
    out = plot_responses(p, p.K0, str(tmp_path / "r2.png"), x0s=np.eye(p.n)[:2], tau=5.0)
    assert out.exists()
    q = azopg.get_problem("rea1")
    assert plot_responses(q, np.zeros((q.m, q.n)), tmp_path / "unstable.png").exists()


#: Reduced-size arguments of scripts that predate the ``--quick`` convention.
QUICK_ARGS = {"quickstart.py": ["--max-time", "10", "--target-gap", "1e-2"]}


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs_quick(script, tmp_path):
    args = QUICK_ARGS.get(script, ["--quick"])
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"examples/{script}" in (ROOT / "README.md").read_text(), f"{script} is not referenced in README.md"
