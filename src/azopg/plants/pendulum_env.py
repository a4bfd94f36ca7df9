"""The example non-linear gymnasium environment: a damped pendulum near upright (see :mod:`azopg.plants.envs`).

:class:`PendulumEnv` steps by :func:`pendulum_step`, shared with its batched form
(:class:`~azopg.plants.envs_vector.PendulumVectorEnv`), so both give the same bits per copy.
Registered as ``azopg/Pendulum-v0`` by :func:`azopg.plants.envs.register_envs`. Requires the
``gym`` extra (``pip install azopg[gym]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..errors import ProblemError
from ..model.problem import LQRProblem, as_matrix
from .envs import _check_dt, _check_std

__all__ = ["PendulumEnv", "pendulum_step"]


class PendulumEnv(gym.Env):
    """A damped pendulum balanced near upright by a torque (non-linear).

    ``ml^2 theta'' = m g l sin(theta) - b theta' + u`` with ``theta = 0`` upright. The
    torque is held over each step of ``dt`` seconds and the motion integrated by
    ``substeps`` Runge-Kutta-4 steps. Observation: ``[theta, theta_dot]``. Action:
    ``[u]`` (no saturation). Reward: ``-(x'Qx + u'Ru) dt`` at the state where the step
    starts. The episode terminates with ``info["blown_up"] = True`` when ``|theta|``
    exceeds ``theta_limit`` (the pendulum has fallen) or the state is not finite.

    Parameters
    ----------
    mass, length, gravity, damping : float
        ``m`` [kg], ``l`` [m], ``g`` [m/s^2], ``b`` [N m s].
    dt : float
        Seconds per step.
    substeps : int
        RK4 steps per environment step.
    Q : array_like, shape (2, 2), optional
        State weight (default identity).
    R : float
        Input weight.
    theta_limit : float
        Angle [rad] beyond which the episode ends as blown up.
    init_high : float
        ``reset()`` without ``options["x0"]`` draws ``theta`` and ``theta_dot``
        uniformly in ``[-init_high, init_high]``.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 -- gymnasium's convention

    def __init__(
        self,
        *,
        mass: float = 1.0,
        length: float = 1.0,
        gravity: float = 9.81,
        damping: float = 0.05,
        dt: float = 0.02,
        substeps: int = 1,
        Q: Any = None,
        R: float = 1.0,
        theta_limit: float = math.pi / 2,
        init_high: float = 0.2,
    ) -> None:
        super().__init__()
        for name, v in (("mass", mass), ("length", length), ("gravity", gravity), ("R", R),
                        ("theta_limit", theta_limit), ("init_high", init_high)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ProblemError(f"{name} must be a finite number > 0, got {v!r}")
        self.mass, self.length, self.gravity = float(mass), float(length), float(gravity)
        self.damping = _check_std(damping, "damping")
        self.dt = _check_dt(dt)
        if not (isinstance(substeps, int) and substeps >= 1):
            raise ProblemError(f"substeps must be an integer >= 1, got {substeps!r}")
        self.substeps = substeps
        self.Q = as_matrix(np.eye(2) if Q is None else Q, "Q", 2, 2)
        self.R = float(R)
        self.theta_limit = float(theta_limit)
        self.init_high = float(init_high)
        self._inertia = self.mass * self.length**2
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float64)
        self.state = np.zeros(2)
        self._buf = np.empty(1)

    def _sin(self, t: float) -> float:
        """numpy's ``sin`` of one number, taken on an array as the batched form takes it (``math.sin``
        may differ from it in the last bit where numpy has a SIMD ``sin`` of its own)."""
        if not math.isfinite(t):
            return math.nan
        self._buf[0] = t
        return float(np.sin(self._buf)[0])

    def linearization(self, K0: Any = None) -> LQRProblem:
        """The linearization at upright, ``A = [[0, 1], [g/l, -b/(ml^2)]]``,
        ``B = [[0], [1/(ml^2)]]``, with this environment's ``Q``, ``R`` and
        ``K0`` (default :attr:`nominal_gain`)."""
        A = [[0.0, 1.0], [self.gravity / self.length, -self.damping / self._inertia]]
        B = [[0.0], [1.0 / self._inertia]]
        return LQRProblem(A, B, self.Q, [[self.R]], K0=self.nominal_gain if K0 is None else K0,
                          name="pendulum-linearized", title="Pendulum linearized at upright")

    @property
    def nominal_gain(self) -> np.ndarray:
        """A crude stabilizing gain from the physical parameters alone,
        ``K0 = [[1.5 m g l, 0.5 ml^2 sqrt(g/l)]]`` (shape (1, 2)): a stiffness one and
        a half times the gravity torque's, light damping -- stable near upright but
        far from optimal (44 % above the optimal cost of the linearization with the
        default parameters)."""
        return np.array([[1.5 * self.mass * self.gravity * self.length,
                          0.5 * self._inertia * math.sqrt(self.gravity / self.length)]])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start from ``options["x0"]`` if given, else uniformly in ``[-init_high, init_high]^2``."""
        super().reset(seed=seed)
        x0 = (options or {}).get("x0")
        if x0 is None:
            self.state = self.np_random.uniform(-self.init_high, self.init_high, 2)
        else:
            x0 = np.array(x0, dtype=float).reshape(-1)
            if x0.shape != (2,) or not np.all(np.isfinite(x0)):
                raise ValueError(f"options['x0'] must be 2 finite numbers, got {x0!r}")
            self.state = x0
        return self.state.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Hold the torque for ``dt`` seconds (RK4); reward ``-(x'Qx + u'Ru) dt``."""
        th, om, cost, blown = self.advance(float(self.state[0]), float(self.state[1]),
                                           float(np.asarray(action, dtype=float).reshape(-1)[0]))
        self.state = np.array([th, om])
        return self.state.copy(), -cost, blown, False, {"blown_up": blown} if blown else {}

    def advance(self, th: float, om: float, u: float) -> tuple[float, float, float, bool]:
        """One step from ``[th, om]`` under the torque ``u``, in floats: the next state (both NaN
        if either is not finite), the step cost and whether the pendulum has fallen."""
        th, om, cost = pendulum_step(self, th, om, u, self._sin)
        if not (math.isfinite(th) and math.isfinite(om)):
            th = om = math.nan
        return th, om, cost, not (abs(th) <= self.theta_limit and math.isfinite(om))


def pendulum_step(env: PendulumEnv, th: Any, om: Any, u: Any,
                  sin: Callable[[Any], Any] = np.sin) -> tuple[Any, Any, Any]:
    """One step of ``env``'s pendulum from angles ``th``, rates ``om`` under torques ``u``: the
    next angles and rates, and the step costs. The same operators serve floats (with ``sin``
    a float function) and arrays (b,) (with ``np.sin``), so both give the same bits."""
    q00, q01, q11 = float(env.Q[0, 0]), float(env.Q[0, 1] + env.Q[1, 0]), float(env.Q[1, 1])
    cost = (q00 * th * th + q01 * th * om + q11 * om * om + env.R * u * u) * env.dt
    a, c, bu = env.gravity / env.length, env.damping / env._inertia, u / env._inertia
    h = env.dt / env.substeps
    for _ in range(env.substeps):
        k1t, k1o = om, a * sin(th) - c * om + bu
        t2, o2 = th + 0.5 * h * k1t, om + 0.5 * h * k1o
        k2t, k2o = o2, a * sin(t2) - c * o2 + bu
        t3, o3 = th + 0.5 * h * k2t, om + 0.5 * h * k2o
        k3t, k3o = o3, a * sin(t3) - c * o3 + bu
        t4, o4 = th + h * k3t, om + h * k3o
        k4t, k4o = o4, a * sin(t4) - c * o4 + bu
        th = th + h / 6.0 * (k1t + 2.0 * k2t + 2.0 * k3t + k4t)
        om = om + h / 6.0 * (k1o + 2.0 * k2o + 2.0 * k3o + k4o)
    return th, om, cost
