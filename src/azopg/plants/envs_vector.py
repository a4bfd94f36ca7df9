"""Batched forms of the example environments: all copies stepped by array operations.

:class:`LinearVectorEnv` and :class:`PendulumVectorEnv` are ``gymnasium.vector.VectorEnv``
subclasses holding ``num_envs`` copies of :class:`~azopg.plants.envs.LinearEnv` and
:class:`~azopg.plants.pendulum_env.PendulumEnv`; :func:`he1_vector_env` is that of
:func:`~azopg.plants.envs.he1_env`. They are the ``vector_entry_point`` of ``azopg/Linear-v0``,
``azopg/Pendulum-v0`` and ``azopg/HE1-v0`` (:func:`~azopg.plants.envs.register_envs`), so
``gymnasium.make_vec(id, num_envs, vectorization_mode="vector_entry_point")``,
``GymPlant(..., vector="native")`` and ``azopg train --env ID`` use them.

Copy ``i`` is the single environment, bit for bit: it has its own generator, seeded at
``reset(seed=seeds)`` with ``seeds[i]`` as ``Env.reset(seed=seeds[i])`` seeds it (an int
``seed`` gives ``seed + i``, as gymnasium's vector envs do), it draws its random numbers in the
single environment's order, and a step is the single environment's elementwise arithmetic
(:func:`~azopg.plants.envs.zoh_step`, :func:`~azopg.plants.pendulum_env.pendulum_step`) over the
batch. ``reset(options={"x0": X})`` takes every copy's initial state at once, an array
(num_envs, n). There is no auto-reset (``metadata["autoreset_mode"]`` is ``DISABLED``): a
copy that has ended goes on stepping until the next ``reset`` (of all copies). A copy is
truncated after ``max_episode_steps`` steps if that is given (``gymnasium.make_vec`` passes
the registered one), as ``gymnasium.wrappers.TimeLimit`` truncates the single environment.
The info of a step holds ``"blown_up"`` and its mask ``"_blown_up"`` when a copy blew up.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ..errors import ProblemError
from ..model.problem import LQRProblem
from .envs import LinearEnv, he1_env, zoh_step
from .lockstep import matvec, sq_norms
from .pendulum_env import PendulumEnv, pendulum_step

__all__ = ["LinearVectorEnv", "PendulumVectorEnv", "he1_vector_env"]

_Step = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


class _Copies(VectorEnv):
    """What both batched environments share: the copies' generators, spaces, time limit, reset.

    Parameters
    ----------
    num_envs : int
        Number of copies.
    env : gymnasium.Env
        The single environment (its parameters, spaces and ``dt``; it is never stepped).
    max_episode_steps : int, optional
        Steps after which a copy is truncated.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}  # noqa: RUF012 -- gymnasium's convention

    def __init__(self, num_envs: int, env: Any, max_episode_steps: int | None) -> None:
        for name, v in (("num_envs", num_envs), ("max_episode_steps", max_episode_steps)):
            if not (v is None and name == "max_episode_steps") and not (
                    isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1):
                raise ProblemError(f"{name} must be an integer >= 1, got {v!r}")
        self.env = env
        self.num_envs = int(num_envs)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.dt = env.dt
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self.observation_space = batch_space(env.observation_space, self.num_envs)
        self.action_space = batch_space(env.action_space, self.num_envs)
        self.n = int(env.observation_space.shape[0])
        self.m = int(env.action_space.shape[0])
        self.rngs: list[np.random.Generator] = []
        self._elapsed = 0

    def _seed(self, seed: int | list[int | None] | None) -> None:
        """Seed the copies' generators :attr:`rngs` as ``Env.reset(seed=...)`` seeds one (a copy
        without a seed keeps its generator, or gets a random one)."""
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds: list[Any] = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset: {len(seeds)} seeds for {self.num_envs} copies")
        self.rngs = [seeding.np_random(int(s))[0] if s is not None else
                     self.rngs[i] if self.rngs else seeding.np_random()[0] for i, s in enumerate(seeds)]

    def _x0(self, options: dict[str, Any] | None) -> np.ndarray | None:
        """The reset option ``x0`` checked: finite, (num_envs, n)."""
        X0 = (options or {}).get("x0")
        if X0 is None:
            return None
        X0 = np.array(X0, dtype=float)
        if X0.shape != (self.num_envs, self.n) or not np.all(np.isfinite(X0)):
            raise ValueError(f"options['x0'] must be {self.num_envs} x {self.n} finite numbers, got {X0!r}")
        return X0

    def _actions(self, actions: Any) -> np.ndarray:
        return np.asarray(actions, dtype=float).reshape(self.num_envs, self.m)

    def _ends(self, blown: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Truncation by the time limit, and the info of a step."""
        self._elapsed += 1
        limit = self.max_episode_steps is not None and self._elapsed >= self.max_episode_steps
        truncated = np.ones(self.num_envs, dtype=bool) if limit else np.zeros(self.num_envs, dtype=bool)
        return truncated, ({"blown_up": blown, "_blown_up": blown.copy()} if blown.any() else {})


class LinearVectorEnv(_Copies):
    """``num_envs`` copies of :class:`~azopg.plants.envs.LinearEnv`, stepped together.

    Parameters
    ----------
    num_envs : int
        Number of copies.
    *args, **kwargs
        Those of :class:`~azopg.plants.envs.LinearEnv` (``A``, ``B``, ``Q``, ``R``, ``dt``,
        ``x0_cov``, ``noise_std``, ``obs_noise_std``, ``blowup_norm``, ``accept_x0``).
    max_episode_steps : int, optional
        Steps after which a copy is truncated.
    env : LinearEnv, optional
        The single environment to copy, instead of ``args`` and ``kwargs``.

    Attributes
    ----------
    env : LinearEnv
        The single environment (parameters and spaces).
    states : ndarray, shape (num_envs, n)
        The copies' true states.
    """

    def __init__(self, num_envs: int = 1, *args: Any, max_episode_steps: int | None = None,
                 env: LinearEnv | None = None, **kwargs: Any) -> None:
        super().__init__(num_envs, env if env is not None else LinearEnv(*args, **kwargs), max_episode_steps)
        self.states = np.zeros((self.num_envs, self.n))
        self._noise = self.env.noise_std * math.sqrt(self.env.dt)  # as LinearEnv.step scales its draws

    @classmethod
    def from_problem(cls, problem: LQRProblem, num_envs: int = 1, dt: float = 0.01,
                     max_episode_steps: int | None = None, **kwargs: Any) -> LinearVectorEnv:
        """The batched form of :meth:`LinearEnv.from_problem <azopg.plants.envs.LinearEnv.from_problem>`."""
        return cls(num_envs, env=LinearEnv.from_problem(problem, dt=dt, **kwargs), max_episode_steps=max_episode_steps)

    def _observe(self) -> np.ndarray:
        if self.env.obs_noise_std > 0:
            D = np.array([rng.standard_normal(self.n) for rng in self.rngs])
            return self.states + self.env.obs_noise_std * D
        return self.states.copy()

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start every copy from its row of ``options["x0"]`` if given (and the environment
        accepts it), else from its own draw of ``N(0, x0_cov)``."""
        self._seed(seed)
        X0 = self._x0(options) if self.env.accept_x0 else None
        if X0 is None:
            Z = np.array([rng.standard_normal(self.n) for rng in self.rngs])
            X0 = matvec(self.env._L[None], Z)
        self.states, self._elapsed = X0, 0
        return self._observe(), {}

    def step(self, actions: Any) -> _Step:
        """Hold ``u_i = actions[i]`` for ``dt`` seconds in every copy; rewards = minus the exact step costs."""
        Z = np.concatenate((self.states, self._actions(actions)), axis=1)
        with np.errstate(all="ignore"):
            X, cost = zoh_step(self.env._zoh, Z)
            if self.env.noise_std > 0:
                X += self._noise * np.array([rng.standard_normal(self.n) for rng in self.rngs])
            self.states = X
            blown = ~(sq_norms(X) <= self.env._blowup2)
        truncated, info = self._ends(blown)
        return self._observe(), -cost, blown, truncated, info


class PendulumVectorEnv(_Copies):
    """``num_envs`` copies of :class:`~azopg.plants.pendulum_env.PendulumEnv`, stepped together.

    Parameters
    ----------
    num_envs : int
        Number of copies.
    max_episode_steps : int, optional
        Steps after which a copy is truncated.
    **kwargs
        Those of :class:`~azopg.plants.pendulum_env.PendulumEnv`.

    Attributes
    ----------
    env : PendulumEnv
        The single environment (parameters and spaces).
    theta, theta_dot : ndarray, shape (num_envs,)
        The copies' states.
    per_copy_below : int
        Fewer copies than this are stepped one by one in floats
        (:meth:`PendulumEnv.advance <azopg.plants.pendulum_env.PendulumEnv.advance>`, the single
        environment's own path: numpy's cost per call outweighs the arithmetic of a few
        copies); the bits are the same either way.
    """

    per_copy_below = 8

    def __init__(self, num_envs: int = 1, *, max_episode_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_envs, PendulumEnv(**kwargs), max_episode_steps)
        self.theta, self.theta_dot = np.zeros(self.num_envs), np.zeros(self.num_envs)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start every copy from its row of ``options["x0"]`` if given, else uniformly in
        ``[-init_high, init_high]^2`` (its own draw)."""
        self._seed(seed)
        X0 = self._x0(options)
        if X0 is None:
            high = self.env.init_high
            X0 = np.array([rng.uniform(-high, high, 2) for rng in self.rngs])
        self.theta, self.theta_dot, self._elapsed = X0[:, 0].copy(), X0[:, 1].copy(), 0
        return X0.copy(), {}

    def step(self, actions: Any) -> _Step:
        """Hold the torques for ``dt`` seconds (RK4) in every copy; rewards ``-(x'Qx + u'Ru) dt``."""
        u = np.ascontiguousarray(self._actions(actions)[:, 0])
        if self.num_envs < self.per_copy_below:
            rows = np.array([self.env.advance(t, o, v) for t, o, v in
                             zip(self.theta.tolist(), self.theta_dot.tolist(), u.tolist(), strict=True)])
            th, om, cost, blown = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] > 0
            obs = rows[:, :2].copy()
        else:
            with np.errstate(all="ignore"):
                th, om, cost = pendulum_step(self.env, self.theta, self.theta_dot, u)
                bad = ~(np.isfinite(th) & np.isfinite(om))
                if bad.any():  # both NaN, as in PendulumEnv.advance
                    th, om = np.where(bad, math.nan, th), np.where(bad, math.nan, om)
                blown = ~((np.abs(th) <= self.env.theta_limit) & np.isfinite(om))
            obs = np.empty((self.num_envs, 2))
            obs[:, 0], obs[:, 1] = th, om
        self.theta, self.theta_dot = th, om
        truncated, info = self._ends(blown)
        return obs, -cost, blown, truncated, info


def he1_vector_env(num_envs: int = 1, dt: float = 0.05, max_episode_steps: int | None = None) -> LinearVectorEnv:
    """The batched form of :func:`~azopg.plants.envs.he1_env` (no ``x0`` option)."""
    return LinearVectorEnv(num_envs, env=he1_env(dt), max_episode_steps=max_episode_steps)
