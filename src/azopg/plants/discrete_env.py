"""A discrete-time linear plant as a gymnasium environment, and the Dean et al. system.

:class:`DiscreteLinearEnv` steps ``x_{t+1} = A x_t + B u_t`` with reward
``-(x_t'Q x_t + u_t'R u_t)``; it has **no** ``dt`` attribute, so
:class:`~azopg.plants.gym.GymPlant` treats it as discrete-time (horizons count steps, the
cost is the plain sum of the stage costs). :func:`dean3_env` is the built-in problem
``dean3`` (Dean, Mania, Matni, Recht & Tu 2017; the LQR instance of the ARS paper) as a plain
environment: its own reset distribution ``N(0, I)``, no ``x0`` reset option;
:func:`azopg.plants.envs.register_envs` registers it as ``azopg/Dean3-v0`` with 300-step
episodes, and :class:`DiscreteLinearEnv` as ``azopg/DiscreteLinear-v0``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..errors import ProblemError
from ..model.problem import LQRProblem
from .envs import linear_system

__all__ = ["DiscreteLinearEnv", "dean3_env"]


class DiscreteLinearEnv(gym.Env):
    """``x_{t+1} = A x_t + B u_t`` as a gymnasium environment.

    Observation: the state ``x``. Action: the input ``u``. Reward: ``-(x'Qx + u'Ru)`` of the
    step. Episodes never end by themselves (wrap with ``gymnasium.wrappers.TimeLimit``)
    except when the state's 2-norm exceeds ``blowup_norm`` or turns non-finite: then
    ``terminated = True`` and ``info["blown_up"] = True``.

    Parameters
    ----------
    A, B, Q, R : array_like
        Plant and weights (``Q``, ``R`` default to identities).
    x0_cov : array_like, optional
        Covariance of the initial state drawn by ``reset()`` without ``options["x0"]``
        (default identity).
    blowup_norm : float
        Largest state 2-norm before the episode is ended as blown up.
    accept_x0 : bool
        Honour ``reset(options={"x0": x0})`` (default); False ignores it, as a plain
        environment would.
    action_bound : float
        Bound of the action space's box (default unbounded; some learners need a finite one).
        Actions are never clipped.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 -- gymnasium's convention
    #: Observations are the state and rewards the exact stage costs, so the moments a
    #: :class:`~azopg.plants.gym.GymPlant` sums are the model's own (``method="auto"`` may
    #: choose policy iteration).
    exact_moments = True

    def __init__(self, A: Any, B: Any, Q: Any = None, R: Any = None, *, x0_cov: Any = None,
                 blowup_norm: float = 1e8, accept_x0: bool = True, action_bound: float = np.inf) -> None:
        super().__init__()
        self.A, self.B, self.Q, self.R, self._L = linear_system(A, B, Q, R, x0_cov)
        n, m = self.B.shape
        self.n, self.m = n, m
        self.blowup_norm = float(blowup_norm)
        self.accept_x0 = bool(accept_x0)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float64)
        self.action_space = spaces.Box(-action_bound, action_bound, shape=(m,), dtype=np.float64)
        self.state = np.zeros(n)

    @classmethod
    def from_problem(cls, problem: LQRProblem, **kwargs: Any) -> DiscreteLinearEnv:
        """The environment of a discrete-time :class:`~azopg.model.problem.LQRProblem` (its
        ``A, B, Q, R`` and ``x0_cov``); ``kwargs`` go to the constructor."""
        if not problem.discrete_time:
            raise ProblemError(f"problem {problem.name!r} is continuous-time: use azopg.plants.envs.LinearEnv")
        return cls(problem.A, problem.B, problem.Q, problem.R, x0_cov=problem.x0_cov, **kwargs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode from ``options["x0"]`` if given (and accepted), else from ``N(0, x0_cov)``."""
        super().reset(seed=seed)
        x0 = (options or {}).get("x0") if self.accept_x0 else None
        if x0 is None:
            self.state = self._L @ self.np_random.standard_normal(self.n)
        else:
            x0 = np.array(x0, dtype=float).reshape(-1)
            if x0.shape != (self.n,) or not np.all(np.isfinite(x0)):
                raise ValueError(f"options['x0'] must be {self.n} finite numbers, got {x0!r}")
            self.state = x0
        return self.state.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply ``u = action`` for one step; reward = minus the stage cost."""
        x, u = self.state, np.asarray(action, dtype=float).reshape(self.m)
        cost = float(x @ self.Q @ x + u @ self.R @ u)
        self.state = self.A @ x + self.B @ u
        blown = not float(self.state @ self.state) <= self.blowup_norm**2  # also true for NaN
        return self.state.copy(), -cost, blown, False, {"blown_up": blown} if blown else {}


def dean3_env(action_bound: float = np.inf) -> DiscreteLinearEnv:
    """The ``dean3`` problem (``azopg problems --show dean3``) as a plain environment: its own
    reset distribution ``N(0, I)`` and **no** ``x0`` reset option (``azopg/Dean3-v0`` adds
    300-step episodes)."""
    from ..model.library import get_problem

    return DiscreteLinearEnv.from_problem(get_problem("dean3"), accept_x0=False, action_bound=action_bound)
