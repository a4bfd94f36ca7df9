"""`azopg train --env`: gymnasium environments from the command line, and rollouts in lockstep.

Reduced sizes: a two-state system, a few dozen updates.
"""

from __future__ import annotations

import functools
import json
import textwrap

import gymnasium as gym
import numpy as np
import pytest

import azopg
from azopg.cli import main
from azopg.plants.callable import CallablePlant
from azopg.plants.envs import LinearEnv, he1_env, register_envs
from azopg.plants.envs_vector import LinearVectorEnv, PendulumVectorEnv
from azopg.plants.gym import GymPlant
from azopg.plants.lockstep import matvec, rowdots
from azopg.plants.pendulum_env import PendulumEnv
from azopg.run.envspec import EnvSpec

A2, B2 = [[-1.0, 1.0], [0.0, -2.0]], [[0.0], [1.0]]
KW2 = json.dumps({"A": A2, "B": B2, "dt": 0.1})
PROBLEM2 = {"name": "osc2", "A": A2, "B": B2, "Q": [[1, 0], [0, 1]], "R": [[1]], "K0": [[0.0, 0.0]]}

#: A user-style environment: discrete time (no dt), no x0 reset option, its own resets.
USER_ENV = textwrap.dedent('''
    import gymnasium as gym
    import numpy as np

    class Plain(gym.Env):
        def __init__(self, a=0.9):
            self.A = np.array([[a, 0.1], [0.0, 0.95]])
            self.B = np.array([[0.0], [0.1]])
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
            self.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.x = self.np_random.uniform(-1, 1, 2)
            return self.x.copy(), {}

        def step(self, u):
            u = np.asarray(u, dtype=float).reshape(1)
            r = -(self.x @ self.x + u @ u)
            self.x = self.A @ self.x + self.B @ u
            return self.x.copy(), float(r), False, False, {}

    def make(**kw):
        return Plain(**kw)

    def broken():
        raise RuntimeError("no simulator licence")
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_envs.py").write_text(USER_ENV)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_envs"


def _train(args, capsys):
    code = main(["train", "--quiet", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_env_cli_learns_the_linear_example_judged_by_its_problem(tmp_path, capsys):
    (tmp_path / "osc2.json").write_text(json.dumps(PROBLEM2))
    out = tmp_path / "run"
    code, _, err = _train(["--env", "azopg/Linear-v0", "--env-kwargs", KW2, "--K0", "[[0, 0]]",
                                "--judge", str(tmp_path / "osc2.json"), "--max-updates", "40", "--out", str(out)],
                               capsys)
    assert code == 0, err
    res = json.loads((out / "result.json").read_text())
    problem = azopg.LQRProblem.from_dict(PROBLEM2)
    assert res["relative_gap"] == pytest.approx(problem.relative_gap(np.array(res["K"])))
    assert res["relative_gap"] < problem.relative_gap(np.zeros((1, 2)))  # learned: better than K0
    for name in ("history.csv", "convergence.png", "responses.png", "checkpoint.json"):
        assert (out / name).exists()
    ckpt = json.loads((out / "checkpoint.json").read_text())
    assert ckpt["env"]["env"] == "azopg/Linear-v0" and ckpt["env"]["kwargs"]["dt"] == 0.1


def test_env_cli_user_style_environment_without_x0_or_dt(user_module, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _train(["--env", f"{user_module}:make", "--K0", "[[0, 0]]", "--eval-states", "4",
                                "--max-updates", "15", "--out", str(out)], capsys)
    assert code == 0, err
    assert "no exact oracle" in stdout
    plant = EnvSpec(f"{user_module}:make").plant()
    assert plant.discrete_time and plant.x0_option is False and plant.vector == "sync"  # no batched form
    K = np.array(json.loads((out / "result.json").read_text())["K"])
    assert K.shape == (1, 2) and np.all(np.isfinite(K))


def test_env_run_resumes_from_its_env_spec(tmp_path):
    spec = EnvSpec("azopg/Linear-v0", {"A": A2, "B": B2, "dt": 0.1})
    plant = spec.plant()
    assert plant.vector == "native"  # the id's vector_entry_point, by default
    out = tmp_path / "run"
    azopg.train(plant, K0=[[0.0, 0.0]], plant_factory=plant.copy, env=spec.to_dict(), out_dir=out, max_updates=8)
    path = out / "checkpoint.json"
    ckpt = json.loads(path.read_text())
    ckpt["status"] = "interrupted"
    ckpt["settings"]["max_updates"] = 16
    path.write_text(json.dumps(ckpt))
    res = azopg.resume(out)
    assert res.updates >= 16 and res.stats["resumes"] == 1 and res.problem == "azopg/Linear-v0"


BAD = {
    "unregistered-id": (["--env", "nope/Missing-v0", "--K0", "[[0, 0]]"], "nope/Missing-v0"),
    "factory-raises": (["--env", "user_envs:broken", "--K0", "[[0, 0]]"], "no simulator licence"),
    "K0-shape": (["--env", "user_envs:make", "--K0", "[[0, 0, 0]]"], "shape"),
    "K0-not-finite": (["--env", "user_envs:make", "--K0", "[[NaN, 0]]"], "NaN"),
    "K0-missing": (["--env", "user_envs:make"], "--K0"),
    "space-shape": (["--env", "azopg/Pendulum-v0", "--K0", "[[1, 1, 1]]"], "shape"),
    "fixed-eval-states-need-x0": (["--env", "user_envs:make", "--K0", "[[0, 0]]", "--eval-states", "[[1, 0]]"], "x0"),
    "no-batched-form": (["--env", "user_envs:make", "--K0", "[[0, 0]]", "--vector", "native"], "--vector native"),
}


@pytest.mark.parametrize(("args", "words"), list(BAD.values()), ids=list(BAD))
def test_env_cli_bad_input_is_one_line_and_exit_2(user_module, tmp_path, capsys, args, words):
    code, _, err = _train([*args, "--max-updates", "2", "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("azopg: error:") and words in lines[0], err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- lockstep
HE1 = azopg.get_problem("he1")
NOISY = {"dt": 0.05, "noise_std": 0.1, "obs_noise_std": 0.01, "blowup_norm": 30.0}
LOCKSTEP = {  # single env, its batched form, horizon: 60, 150 and 240 steps (HE1-v0 truncates at 200)
    "noisy-linear": (functools.partial(LinearEnv.from_problem, HE1, **NOISY),
                     functools.partial(LinearVectorEnv.from_problem, HE1, **NOISY), 3.0),
    "pendulum": (PendulumEnv, PendulumVectorEnv, 3.0),
    "he1": (functools.partial(gym.make, "azopg/HE1-v0"),
            functools.partial(gym.make_vec, "azopg/HE1-v0", vectorization_mode="vector_entry_point"), 12.0),
}


@pytest.mark.parametrize("case", list(LOCKSTEP))
def test_lockstep_costs_identical_to_the_loop(case):
    register_envs()
    factory, vector_factory, tau = LOCKSTEP[case]
    env = factory()
    n, m = env.observation_space.shape[0], env.action_space.shape[0]
    K0 = HE1.K0 if n == 4 else PendulumEnv().nominal_gain
    rng = np.random.default_rng(3)
    K = K0 + 0.3 * rng.standard_normal((11, m, n))
    K[0] = -K0 if n == 4 else 0.0 * K0  # blows up: ended early, by the environment or the growth bound
    outs = {}
    # chunks of 3 (3, 3, 3, 2 padded) and 8 (8, 3 padded): PendulumVectorEnv's per-copy and array paths
    for mode, E in (("loop", 1), ("sync", 3), ("native", 3), ("native", 8)):
        plant = GymPlant(factory, n, m, vector=mode, vector_factory=vector_factory, max_envs=E)
        X = plant.initial_states(np.random.default_rng(0), 11)
        outs[mode, E] = (X, plant.rollout(K, X, tau, moments=True), plant.steps)
    X1, r1, steps1 = outs["loop", 1]
    assert r1.blown_up[0] and not r1.blown_up[1:].all()
    assert steps1 < 11 * (200 if case == "he1" else round(tau / env.unwrapped.dt))  # some ended early
    for key in (("sync", 3), ("native", 3), ("native", 8)):
        X2, r2, steps2 = outs[key]
        assert np.array_equal(X1, X2) and steps1 == steps2
        for a, b in zip(r1, r2, strict=True):
            assert np.array_equal(a, b, equal_nan=True)


def test_elementwise_sums_do_not_depend_on_the_batch():
    """matvec and rowdots sum in one order whatever the size (one accumulate or column by column)."""
    rng = np.random.default_rng(4)
    K = rng.standard_normal((300, 3, 7)) * np.exp(5 * rng.standard_normal((300, 3, 7)))
    X = rng.standard_normal((300, 7))
    whole, shared, dots = matvec(K, X), matvec(K[:1], X), rowdots(X, K[:, 0])
    for i in (0, 17, 299):
        assert np.array_equal(whole[i], matvec(K[i:i + 1], X[i:i + 1])[0])
        assert np.array_equal(shared[i], matvec(K[:1], X[i:i + 1])[0])
        assert dots[i] == rowdots(X[i:i + 1], K[i:i + 1, 0])[0]
    acc = K[:, :, 0] * X[:, None, 0]
    for j in range(1, 7):
        acc = acc + K[:, :, j] * X[:, None, j]
    assert np.array_equal(whole, acc)


def test_batched_envs_step_every_copy_as_the_single_env():
    """Copy i of a batched env: the single env's observations, rewards and ends for its seed
    (random inputs, a strong push on copy 2 that blows it up), until it ends; truncated at the limit."""
    cases = [(functools.partial(LinearEnv.from_problem, HE1, **NOISY),
              LinearVectorEnv.from_problem(HE1, 3, max_episode_steps=30, **NOISY), 2),
             (PendulumEnv, PendulumVectorEnv(3, max_episode_steps=30), 1),
             (PendulumEnv, PendulumVectorEnv(3, max_episode_steps=30), 1)]
    cases[2][1].per_copy_below = 0  # the array path
    for factory, venv, m in cases:
        U = np.random.default_rng(1).standard_normal((30, 3, m)) + np.array([0.0, 0.0, 40.0])[:, None]
        first, _ = venv.reset(seed=[5, 6, 7])
        outs = [venv.step(u) for u in U]
        assert outs[-1][3].all() and not any(out[3].any() for out in outs[:-1])
        ended = []
        for i, seed in enumerate((5, 6, 7)):
            env = factory()
            obs, _ = env.reset(seed=seed)
            assert np.array_equal(obs, first[i])
            for k in range(30):
                obs, reward, terminated, _, info = env.step(U[k, i])
                O, R, T, _, I = outs[k]
                assert np.array_equal(obs, O[i]) and reward == R[i] and terminated == T[i]
                assert info.get("blown_up", False) == bool(I.get("blown_up", T)[i] and I.get("_blown_up", T)[i])
                if terminated:
                    ended.append(i)
                    break
        assert ended == [2]


def _noisy_cost(K, x0, tau, rng):
    return float(x0 @ x0 * tau + np.sum(K**2) + rng.standard_normal())


def _noisy_costs(K, X0, tau, rngs):
    return np.array([_noisy_cost(K[i], X0[i], tau, rngs[i]) for i in range(len(rngs))])


def test_callable_batched_form_gives_the_same_costs():
    one = CallablePlant(_noisy_cost, n=3, m=1)
    many = CallablePlant(_noisy_costs, n=3, m=1, batched=True)
    X = one.initial_states(np.random.default_rng(1), 5)
    K = np.random.default_rng(2).standard_normal((5, 1, 3))
    assert np.array_equal(one.rollout(K, X, 2.0).cost, many.rollout(K, X, 2.0).cost)
    assert not np.array_equal(one.rollout(K, X, 2.0).cost, one.rollout(K, X, 3.0).cost)


def test_env_without_x0_replays_its_initial_states_by_seed():
    plant = GymPlant(he1_env, 4, 2)
    X = plant.initial_states(np.random.default_rng(0), 3)
    K = azopg.get_problem("he1").K0
    a, b = plant.rollout(K, X, 2.0), plant.rollout(K, X[::-1], 2.0)
    assert plant.x0_option is False and np.array_equal(a.cost, b.cost[::-1])
    with pytest.raises(azopg.SettingsError, match="x0"):
        plant.rollout(K, X + 1.0, 2.0)


def test_discrete_time_plant_cost_is_the_plain_sum(user_module):
    import user_envs

    plant = GymPlant(functools.partial(user_envs.make, a=0.5), 2, 1)
    X = plant.initial_states(np.random.default_rng(0), 2)
    K = np.array([[0.2, 0.1]])
    res = plant.rollout(K, X, 5.0, moments=True)
    env = user_envs.make(a=0.5)
    for i in range(2):
        x, total, S = X[i], 0.0, np.zeros((2, 2))
        for _ in range(5):  # tau = 5 counts 5 steps; no dt scaling
            u = -K @ x
            total += x @ x + u @ u
            S += np.outer(x, x)
            x = env.A @ x + env.B @ u
        assert res.cost[i] == pytest.approx(total, rel=1e-12)
        assert res.S[i] == pytest.approx(S, rel=1e-12)
