"""Example gymnasium environments: a linear plant and a non-linear pendulum.

Both follow the conventions :class:`~azopg.plants.gym.GymPlant` relies on: the
observation is the state, the action is the input ``u``, the reward of a step is minus
its quadratic stage cost, the environment has a ``dt`` attribute (seconds per step) and
``reset(options={"x0": x0})`` starts from a given state.

* :class:`LinearEnv` -- ``dx/dt = A x + B u`` discretized **exactly** under a
  zero-order hold (the input is held constant over each step of length ``dt``): with
  ``F = [[A, B], [0, 0]]`` the step is ``[x; u] -> expm(F dt) [x; u]`` and the reward is
  ``-[x; u]' W [x; u]`` with ``W = int_0^dt expm(F's) diag(Q, R) expm(F s) ds``, the
  exact integral of ``x'Qx + u'Ru`` over the step (Van Loan's block exponential). The
  sum of the rewards of an episode is therefore the exact continuous-time cost of the
  *sampled-data* loop ``u(t) = -K x(k dt)``; it differs from the continuous-time cost of
  ``u = -K x`` by ``O(dt)``, and the best sampled-data gain from ``K*`` by ``O(dt)``
  (so its continuous-time cost from ``f*`` by ``O(dt^2)``).
* :class:`~azopg.plants.pendulum_env.PendulumEnv` (:mod:`azopg.plants.pendulum_env`) -- a damped rigid
  pendulum near its upright (unstable)
  equilibrium, state ``[theta, theta_dot]`` (``theta = 0`` upright), input torque;
  integrated by fourth-order Runge-Kutta with the torque held over each step. An episode
  terminates with ``info["blown_up"] = True`` once ``|theta|`` exceeds ``theta_limit``.

Both step with elementwise arithmetic (:func:`zoh_step`, :func:`~azopg.plants.pendulum_env.pendulum_step`, shared with
their batched forms in :mod:`azopg.plants.envs_vector`, which step all copies at once with
the same bits per copy). Nothing is registered with gymnasium at import. :func:`register_envs` registers
``azopg/Linear-v0``, ``azopg/Pendulum-v0`` and ``azopg/HE1-v0`` (:func:`he1_env`, the
user-style environment: no ``x0`` option, 200-step episodes) on request, for ``gymnasium.make``,
with their batched forms as ``vector_entry_point`` (``gymnasium.make_vec(id,
vectorization_mode="vector_entry_point")``), and the discrete-time ``azopg/DiscreteLinear-v0``
and ``azopg/Dean3-v0`` of :mod:`azopg.plants.discrete_env`.
Requires the ``gym`` extra (``pip install azopg[gym]``).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import scipy.linalg as sla
from gymnasium import spaces

from ..errors import ProblemError
from ..model.noise import Segment
from ..model.problem import LQRProblem, as_matrix
from .lockstep import matvec, rowdots, sq_norms

__all__ = ["LinearEnv", "he1_env", "register_envs", "zoh_matrices", "zoh_step"]


def _check_dt(dt: float) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (math.isfinite(dt) and dt > 0):
        raise ProblemError(f"dt must be a finite number > 0, got {dt!r}")
    return float(dt)


def _check_std(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ProblemError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def linear_system(A: Any, B: Any, Q: Any, R: Any, x0_cov: Any) -> tuple[np.ndarray, ...]:
    """``A, B, Q, R`` checked (``Q``, ``R`` default to identities) and the Cholesky factor ``L``
    of ``x0_cov`` (default ``I``): what a linear environment needs, as one check for all of them.

    Raises
    ------
    ProblemError
        On shapes that do not fit or an ``x0_cov`` that is not positive definite.
    """
    A = as_matrix(A, "A")
    n = A.shape[0]
    if A.shape[1] != n:
        raise ProblemError(f"A must be square, got {A.shape[0]}x{A.shape[1]}")
    B = as_matrix(B, "B", n)
    m = B.shape[1]
    Q = as_matrix(np.eye(n) if Q is None else Q, "Q", n, n)
    R = as_matrix(np.eye(m) if R is None else R, "R", m, m)
    cov = as_matrix(np.eye(n) if x0_cov is None else x0_cov, "x0_cov", n, n)
    try:
        L = np.linalg.cholesky(0.5 * (cov + cov.T))
    except np.linalg.LinAlgError:
        raise ProblemError("x0_cov is not positive definite") from None
    return A, B, Q, R, L


def zoh_matrices(A: Any, B: Any, Q: Any, R: Any, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact zero-order-hold discretization of a linear plant and of its quadratic cost.

    Parameters
    ----------
    A, B : array_like, shapes (n, n) and (n, m)
        Continuous-time plant ``dx/dt = A x + B u``.
    Q, R : array_like, shapes (n, n) and (m, m)
        Cost weights of ``x'Qx + u'Ru``.
    dt : float
        Step length; the input is constant over each step.

    Returns
    -------
    Ad : ndarray, shape (n, n)
        ``expm(A dt)``.
    Bd : ndarray, shape (n, m)
        ``int_0^dt expm(A s) ds B``.
    W : ndarray, shape (n + m, n + m)
        Symmetric weight with ``[x; u]' W [x; u] = int_0^dt (x'Qx + u'Ru) dt`` along the
        step from ``x`` under the held input ``u``.
    """
    A, B, Q, R = (np.asarray(M, dtype=float) for M in (A, B, Q, R))
    n, m = B.shape
    F = np.zeros((n + m, n + m))
    F[:n, :n], F[:n, n:] = A, B
    Qc = sla.block_diag(Q, R)
    d = n + m
    # Van Loan: expm([[-F', Qc], [0, F]] dt) = [[., G12], [0, expm(F dt)]], W = expm(F dt)' G12
    C = np.zeros((2 * d, 2 * d))
    C[:d, :d], C[:d, d:], C[d:, d:] = -F.T, Qc, F
    G = sla.expm(C * dt)
    Phi = G[d:, d:]
    W = Phi.T @ G[:d, d:]
    return Phi[:n, :n].copy(), Phi[:n, n:].copy(), 0.5 * (W + W.T)


def zoh_step(MW: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One exact step of the rows ``z = [x; u]`` of ``Z`` (b, n + m), ``MW = [[Ad, Bd], [W]]``
    (:func:`zoh_matrices`): the next states ``Ad x + Bd u`` (b, n) and the step costs ``z'Wz`` (b,),
    elementwise (:func:`~azopg.plants.lockstep.matvec`: the same bits for any ``b``)."""
    Y = matvec(MW[None], Z)
    n = MW.shape[0] - Z.shape[1]
    return Y[:, :n], rowdots(Z, Y[:, n:])


class LinearEnv(gym.Env):
    """A linear plant ``dx/dt = A x + B u`` as a gymnasium environment (exact ZOH).

    Observation: the state ``x`` (plus Gaussian measurement noise of standard deviation
    ``obs_noise_std``). Action: the input ``u``, held constant for ``dt`` seconds.
    Reward: minus the exact integral of ``x'Qx + u'Ru`` over the step. Episodes never
    end by themselves (wrap with ``gymnasium.wrappers.TimeLimit`` if needed) except
    when the state's 2-norm exceeds ``blowup_norm`` or turns non-finite: then
    ``terminated = True`` and ``info["blown_up"] = True``.

    Parameters
    ----------
    A, B, Q, R : array_like
        Plant and weights (``Q``, ``R`` default to identities).
    dt : float
        Seconds per step.
    x0_cov : array_like, optional
        Covariance of the initial state drawn by ``reset()`` without ``options["x0"]``
        (default identity).
    noise_std : float
        Process noise: after each step a Gaussian increment of covariance
        ``noise_std**2 * dt * I`` is added to the state (Euler approximation of white
        noise of intensity ``noise_std**2``). Default 0.
    obs_noise_std : float
        Standard deviation of additive Gaussian measurement noise on the observation.
        Default 0.
    blowup_norm : float
        Largest state 2-norm before the episode is ended as blown up.
    accept_x0 : bool
        Honour ``reset(options={"x0": x0})`` (default); False ignores it, as a plain
        environment would.

    Attributes
    ----------
    dt : float
    state : ndarray, shape (n,)
        The true state.
    Ad, Bd, W : ndarray
        The exact discretization (see :func:`zoh_matrices`).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 -- gymnasium's convention

    def __init__(
        self,
        A: Any,
        B: Any,
        Q: Any = None,
        R: Any = None,
        *,
        dt: float = 0.01,
        x0_cov: Any = None,
        noise_std: float = 0.0,
        obs_noise_std: float = 0.0,
        blowup_norm: float = 1e8,
        accept_x0: bool = True,
    ) -> None:
        super().__init__()
        A, B, Q, R, self._L = linear_system(A, B, Q, R, x0_cov)
        n, m = B.shape
        self.n, self.m = n, m
        self.A, self.B, self.Q, self.R = A, B, Q, R
        self.dt = _check_dt(dt)
        self.noise_std = _check_std(noise_std, "noise_std")
        self.obs_noise_std = _check_std(obs_noise_std, "obs_noise_std")
        self.blowup_norm = float(blowup_norm)
        self.accept_x0 = bool(accept_x0)
        self.Ad, self.Bd, self.W = zoh_matrices(A, B, Q, R, self.dt)
        self._zoh = np.vstack([np.hstack([self.Ad, self.Bd]), self.W])  # for zoh_step
        self._blowup2 = self.blowup_norm**2
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float64)
        self.action_space = spaces.Box(-np.inf, np.inf, shape=(m,), dtype=np.float64)
        self.state = np.zeros(n)

    @classmethod
    def from_problem(cls, problem: LQRProblem, dt: float = 0.01, **kwargs: Any) -> LinearEnv:
        """The environment of an :class:`~azopg.model.problem.LQRProblem` (its ``A, B, Q, R``
        and ``x0_cov``); ``kwargs`` go to the constructor."""
        return cls(problem.A, problem.B, problem.Q, problem.R, dt=dt, x0_cov=problem.x0_cov, **kwargs)

    def expected_cost(self, K: Any, steps: int, x0_cov: Any = None) -> Any:
        """``E[sum of the step costs]`` of ``steps`` steps of the feedback ``u_k = -K y_k`` on the observations
        ``y_k = x_k + e_k`` (``e_k ~ N(0, obs_noise_std**2 I)``, the reset's observation the first) from
        ``x0 ~ N(0, x0_cov)`` (default the environment's), over both noises: the exact oracle of what a learner
        on this environment minimizes at a horizon of ``steps * dt``. Any ``K``, real or complex (so its
        gradient is exact by complex steps, :func:`azopg.model.noise.complex_gradient`).

        With ``Sigma_k = E[x_k x_k']``: ``Sigma_{k+1} = L Sigma_k L' + Bd K V K' Bd' + noise_std**2 dt I``,
        ``L = Ad - Bd K``, and a step costs ``tr(G'WG Sigma_k) + tr(K'W_uu K V)`` with ``G = [I; -K]``:
        one :class:`~azopg.model.noise.Segment`, composed ``steps`` times by binary powering.
        """
        Kc = np.asarray(K)
        Kc = (Kc.astype(complex) if np.iscomplexobj(Kc) else Kc.astype(float)).reshape(self.m, self.n)
        n = self.n
        V = self.obs_noise_std**2 * np.eye(n)
        G = np.vstack([np.eye(n), -Kc])
        BK = self.Bd @ Kc
        drive = BK @ V @ BK.T + self.noise_std**2 * self.dt * np.eye(n)
        step = Segment((self.Ad - BK)[None], drive[None], (G.T @ self.W @ G)[None],
                       np.array([np.trace(Kc.T @ self.W[n:, n:] @ Kc @ V)]), self.dt)
        seg = step.times(int(steps))
        Om = self._L @ self._L.T if x0_cov is None else np.asarray(x0_cov, dtype=float)
        total = np.trace(seg.M[0] @ Om) + seg.c[0]
        return total if np.iscomplexobj(total) else float(total)

    def _observe(self) -> np.ndarray:
        if self.obs_noise_std > 0:
            return self.state + self.obs_noise_std * self.np_random.standard_normal(self.n)
        return self.state.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode from ``options["x0"]`` if given, else from ``N(0, x0_cov)``."""
        super().reset(seed=seed)
        x0 = (options or {}).get("x0") if self.accept_x0 else None
        if x0 is None:
            self.state = matvec(self._L[None], self.np_random.standard_normal((1, self.n)))[0]
        else:
            x0 = np.array(x0, dtype=float).reshape(-1)
            if x0.shape != (self.n,) or not np.all(np.isfinite(x0)):
                raise ValueError(f"options['x0'] must be {self.n} finite numbers, got {x0!r}")
            self.state = x0
        return self._observe(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Hold ``u = action`` for ``dt`` seconds; reward = minus the exact step cost."""
        z = np.concatenate((self.state, np.asarray(action, dtype=float).reshape(self.m)))
        X, cost = zoh_step(self._zoh, z[None])  # Ad x + Bd u, z'Wz
        x = X[0]
        if self.noise_std > 0:
            x += self.noise_std * math.sqrt(self.dt) * self.np_random.standard_normal(self.n)
        self.state = x
        blown = not sq_norms(X)[0] <= self._blowup2  # also true for NaN
        return self._observe(), -float(cost[0]), blown, False, {"blown_up": blown} if blown else {}


def he1_env(dt: float = 0.05) -> LinearEnv:
    """The HE1 helicopter (``azopg problems --show he1``) as a plain environment: exact
    zero-order hold at ``dt``, its own reset distribution ``N(0, x0_cov)`` and **no** ``x0``
    reset option (``azopg/HE1-v0`` adds 200-step episodes)."""
    from ..model.library import get_problem

    return LinearEnv.from_problem(get_problem("he1"), dt=dt, accept_x0=False)


_REGISTERED = False


def register_envs() -> None:
    """Register ``azopg/Linear-v0`` (:class:`LinearEnv`, constructor keywords as
    ``gymnasium.make`` keywords), ``azopg/Pendulum-v0`` (:class:`~azopg.plants.pendulum_env.PendulumEnv`) and
    ``azopg/HE1-v0`` (:func:`he1_env`) with gymnasium, each with its batched form
    (:mod:`azopg.plants.envs_vector`) as ``vector_entry_point``, and ``azopg/DiscreteLinear-v0``
    and ``azopg/Dean3-v0`` (see :mod:`azopg.plants.discrete_env`). Idempotent; importing
    :mod:`azopg.plants.envs` registers nothing."""
    global _REGISTERED
    if _REGISTERED:
        return
    vec = "azopg.plants.envs_vector:"
    gym.register(id="azopg/Linear-v0", entry_point="azopg.plants.envs:LinearEnv",
                 vector_entry_point=vec + "LinearVectorEnv")
    gym.register(id="azopg/Pendulum-v0", entry_point="azopg.plants.pendulum_env:PendulumEnv",
                 vector_entry_point=vec + "PendulumVectorEnv")
    gym.register(id="azopg/HE1-v0", entry_point="azopg.plants.envs:he1_env", max_episode_steps=200,
                 vector_entry_point=vec + "he1_vector_env")
    gym.register(id="azopg/DiscreteLinear-v0", entry_point="azopg.plants.discrete_env:DiscreteLinearEnv")
    gym.register(id="azopg/Dean3-v0", entry_point="azopg.plants.discrete_env:dean3_env", max_episode_steps=300)
    _REGISTERED = True
