"""Adapters: black-box plants behind the :class:`~azopg.plants.base.Plant` protocol.

* :class:`CallablePlant` wraps a plain Python function ``cost(K, x0, tau, rng) -> float``
  that performs one rollout (a simulator, a hardware experiment, ...).
* :class:`GymPlant` wraps a `gymnasium <https://gymnasium.farama.org>`_ environment whose
  observation is the state and whose action is the input: a rollout applies
  ``u = -K obs`` for ``round(tau / dt)`` steps and its cost is minus the summed reward.

Both loop over the batch in Python (the plant is a black box). Every rollout gets its
own random stream seeded from its initial state and horizon: rollouts from the same
state see the same noise (common random numbers -- the two rollouts of a two-point
sample, and the checks of two gains from the fixed evaluation states, compare under
identical noise), and a run stays reproducible from its seed. A rollout whose cost is
NaN, infinite or above ``1e200`` is flagged blown up and reported with the finite
:data:`~azopg.plants.base.BLOWUP_COST`.

Both are picklable (a :class:`GymPlant` builds its environment lazily from
``env_factory``, and drops it when pickled), so each process worker of
``azopg.train(plant, ..., backend="async", plant_factory=plant.copy)`` builds its own;
the callable, the factory and the samplers must then be picklable themselves
(module-level functions or ``functools.partial`` of them, not lambdas).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import SettingsError
from ..model.problem import as_matrix
from .base import COST_LIMIT, GROWTH, RolloutResult, finalize, with_moments

__all__ = ["CallablePlant", "GymPlant", "env_dt", "rollout_seed"]


#: ``sampler(rng, size) -> (size, n)`` array of initial states.
Sampler = Callable[[np.random.Generator, int], Any]


def rollout_seed(x0: np.ndarray, tau: float) -> np.random.SeedSequence:
    """The seed of a rollout: a function of its initial state and horizon only."""
    words = np.frombuffer(np.ascontiguousarray(x0, dtype=np.float64).tobytes() + np.float64(tau).tobytes(),
                          dtype=np.uint32)
    return np.random.SeedSequence([int(w) for w in words])


def _check_size(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SettingsError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


def _batch(K: Any, x0: Any, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    x0 = np.atleast_2d(np.asarray(x0, dtype=float))
    K = np.asarray(K, dtype=float)
    if K.ndim == 2:
        K = np.broadcast_to(K, (x0.shape[0], *K.shape))
    if K.shape != (x0.shape[0], m, n) or x0.shape[1] != n:
        raise ValueError(f"expected K of shape (b, {m}, {n}) and x0 of shape (b, {n}), "
                         f"got {K.shape} and {x0.shape}")
    return K, x0


def _sample(sampler: Sampler, rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    X = np.asarray(sampler(rng, size), dtype=float).reshape(size, -1)
    if X.shape != (size, n):
        raise ValueError(f"x0_sampler must return an array of shape ({size}, {n}), got {X.shape}")
    return X


class _FixedStates:
    """``evaluation_states()`` of an adapter given fixed states (picklable)."""

    def __init__(self, states: Any, n: int) -> None:
        X = np.array(states, dtype=float)
        if X.ndim != 2 or X.shape[1] != n or X.shape[0] < 1 or not np.all(np.isfinite(X)):
            raise SettingsError(f"eval_states must be a finite (k, {n}) array, got shape {X.shape}")
        self.states = X

    def __call__(self) -> np.ndarray:
        return self.states.copy()



class CallablePlant:
    """A plant given as a function that performs one rollout.

    Parameters
    ----------
    cost : callable
        ``cost(K, x0, tau, rng) -> float``: the cost of one rollout of the gain ``K``
        (ndarray (m, n), ``u = -K x``) from the state ``x0`` (ndarray (n,)) over the
        horizon ``tau``, typically ``int_0^tau (x'Qx + u'Ru) dt``; ``rng`` is a
        :class:`numpy.random.Generator` for any noise of the rollout, seeded from
        ``(x0, tau)``. A result that is not a finite number (NaN, inf) or an exception
        raised by ``cost`` flags the rollout as blown up (the first exception is also
        shown as a warning; :attr:`errors` counts them).
    n, m : int
        Numbers of states and inputs.
    x0_sampler : callable, optional
        ``x0_sampler(rng, size) -> (size, n)`` initial states. Default: Gaussian
        ``N(0, x0_cov)``.
    x0_cov : array_like, shape (n, n), optional
        Covariance of the default initial states (identity if omitted).
    eval_states : array_like, shape (k, n), optional
        Fixed states from which the learner's checks evaluate a gain (the mean of their
        rollout costs stands for the expected cost; see :func:`azopg.method.tasks.evaluation_states`).
        For a linear plant with ``E[x0 x0'] = Omega`` the ``n`` rows of
        ``sqrt(n) * cholesky(Omega).T`` make that mean exact. Default: ``max(n, 8)``
        states drawn once from the initial-state distribution.
    returns_moments : bool, optional
        ``cost`` returns ``(cost, S, x_end)`` instead of a number: the state moments
        ``S = int_0^tau x x' dt`` (n, n) and the final state ``x(tau)`` (n,) of the
        rollout, for ``rollout(..., moments=True)`` (ignored otherwise). A malformed
        triple counts like an exception raised by ``cost``. Default False.

    Attributes
    ----------
    errors : int
        Rollouts (in this process) whose ``cost`` raised an exception.
    last_error : str or None
        ``repr`` of the last such exception.

    Examples
    --------
    >>> def cost(K, x0, tau, rng):
    ...     return my_simulator(K, x0, tau)          # doctest: +SKIP
    >>> plant = CallablePlant(cost, n=4, m=2)        # doctest: +SKIP
    >>> azopg.train(plant, K0=K0, max_time=60)       # doctest: +SKIP
    """

    def __init__(
        self,
        cost: Callable[[np.ndarray, np.ndarray, float, np.random.Generator], float],
        n: int,
        m: int,
        *,
        x0_sampler: Sampler | None = None,
        x0_cov: Any = None,
        eval_states: Any = None,
        returns_moments: bool = False,
    ) -> None:
        if not callable(cost):
            raise SettingsError(f"cost must be callable, got {cost!r}")
        if x0_sampler is not None and not callable(x0_sampler):
            raise SettingsError(f"x0_sampler must be callable, got {x0_sampler!r}")
        self.cost = cost
        self.n = _check_size(n, "n")
        self.m = _check_size(m, "m")
        self.x0_sampler = x0_sampler
        cov = as_matrix(np.eye(self.n) if x0_cov is None else x0_cov, "x0_cov", self.n, self.n)
        try:
            self._L = np.linalg.cholesky(0.5 * (cov + cov.T))
        except np.linalg.LinAlgError:
            raise SettingsError("x0_cov is not positive definite") from None
        self.errors = 0
        self.last_error: str | None = None
        self.returns_moments = bool(returns_moments)
        if eval_states is not None:
            self.evaluation_states = _FixedStates(eval_states, self.n)

    def __repr__(self) -> str:
        return f"CallablePlant({getattr(self.cost, '__name__', self.cost)!r}, n={self.n}, m={self.m})"

    def copy(self) -> CallablePlant:
        """A copy with fresh error counters -- a picklable ``plant_factory`` for process
        workers: ``azopg.train(plant, ..., backend="async", plant_factory=plant.copy)``."""
        clone = CallablePlant.__new__(CallablePlant)
        clone.__dict__.update(self.__dict__)
        clone.errors, clone.last_error = 0, None
        return clone

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` initial states from ``x0_sampler`` or ``N(0, x0_cov)``, shape (size, n)."""
        if self.x0_sampler is not None:
            return _sample(self.x0_sampler, rng, size, self.n)
        return rng.standard_normal((size, self.n)) @ self._L.T

    def rollout(self, K: Any, x0: Any, tau: float, *, moments: bool = False) -> RolloutResult:
        """Call ``cost`` once per rollout of the batch.

        Parameters
        ----------
        K : array_like, shape (b, m, n) or (m, n)
            Gains (one per rollout, or one for all).
        x0 : array_like, shape (b, n)
            Initial states.
        tau : float
            Horizon.
        moments : bool, optional
            Also return the moments ``S`` and ``x_end`` given by ``cost`` (needs
            ``returns_moments=True``).

        Returns
        -------
        RolloutResult

        Raises
        ------
        ValueError
            If ``moments`` is asked of a plant whose ``cost`` does not return them.
        """
        if moments and not self.returns_moments:
            raise ValueError("this CallablePlant's cost does not return moments (returns_moments=False)")
        K, x0 = _batch(K, x0, self.m, self.n)
        b, n = x0.shape
        cost = np.empty(b)
        S = np.full((b, n, n), np.nan)
        x_end = np.full((b, n), np.nan)
        for i in range(b):
            rng = np.random.default_rng(rollout_seed(x0[i], tau))
            try:
                out = self.cost(K[i].copy(), x0[i].copy(), tau, rng)
                if self.returns_moments:
                    out, Si, xi = out
                    S[i] = np.asarray(Si, dtype=float).reshape(n, n)
                    x_end[i] = np.asarray(xi, dtype=float).reshape(n)
                c = float(out)
            except Exception as exc:  # a failed rollout is reported, not raised
                if self.errors == 0:
                    warnings.warn(f"CallablePlant: cost raised {exc!r}; the rollout is flagged as blown up "
                                  "(further errors are only counted in .errors)", RuntimeWarning, stacklevel=2)
                self.errors += 1
                self.last_error = repr(exc)
                c = math.nan
            cost[i] = c
        res = finalize(cost, np.zeros(b, dtype=bool))
        return with_moments(res, 0.5 * (S + np.swapaxes(S, 1, 2)), x_end) if moments else res


def env_dt(env: Any) -> float:
    """Seconds per step of a gymnasium environment: ``env.unwrapped.dt`` or ``env.dt``.

    Raises
    ------
    SettingsError
        If neither exists or it is not a finite number > 0.
    """
    for owner in (getattr(env, "unwrapped", None), env):
        dt = getattr(owner, "dt", None)
        if dt is not None:
            break
    try:
        dt = float(dt)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        dt = math.nan
    if not (math.isfinite(dt) and dt > 0):
        raise SettingsError("a GymPlant needs an environment with a `dt` attribute (seconds per step, > 0), "
                            f"got {type(env).__name__} without one")
    return dt


class GymPlant:
    """A gymnasium environment as a plant: observation = state, action = input.

    A rollout of the gain ``K`` from ``x0`` over the horizon ``tau``:

    1. ``obs, info = env.reset(seed=s, options={"x0": x0})`` -- the environment **must**
       accept the ``"x0"`` option and start from that state (``s`` is derived from
       ``(x0, tau)``, see :func:`rollout_seed`);
    2. ``steps = round(tau / dt)`` times (at most ``max_steps``):
       ``obs, reward, terminated, truncated, info = env.step(-K @ obs)``;
    3. cost = minus the sum of the rewards.

    With ``rollout(..., moments=True)`` it also returns ``S = dt * sum_k obs_k obs_k'``
    over the observations the actions were computed from (``k = 0 .. steps-1``, a Riemann
    sum of ``int_0^tau x x' dt``) and ``x_end`` = the last observation.

    ``dt`` is read from ``env.unwrapped.dt`` or ``env.dt`` (**required**). For the cost to
    approximate ``int_0^tau (x'Qx + u'Ru) dt`` the reward of a step should be minus the
    stage cost integrated over the step, e.g. ``-(x'Qx + u'Ru) dt``.

    A discrete-time environment (``discrete_time=True``) needs no ``dt``: the horizon is
    ``round(tau)`` steps, the cost minus the sum of the rewards (e.g. ``sum_t (x_t'Q x_t +
    u_t'R u_t)``) and ``S = sum_k obs_k obs_k'``, as for
    :class:`~azopg.plants.discrete.DiscreteLinearPlant`.

    Blow-up rule: a rollout is flagged blown up (and stopped) when the environment
    **terminates it with ``info["blown_up"]`` true**, when an observation is not finite
    or ``1e6`` times larger (2-norm) than ``x0`` (the growth bound of
    :class:`~azopg.plants.linear.LinearPlant`), or when the summed cost is not finite or
    exceeds ``1e200``. Ending
    early for another reason (``terminated`` without ``info["blown_up"]``, or
    ``truncated``, e.g. by a ``TimeLimit`` wrapper) is *not* a blow-up: the cost is the
    sum of the rewards received until then. Exceptions raised by the environment
    propagate.

    Parameters
    ----------
    env_factory : callable
        ``env_factory() -> gymnasium.Env``; called once, at first use, by each copy of
        the plant (so each process worker builds its own environment).
    n, m : int
        Numbers of states (observation size) and inputs (action size).
    x0_sampler : callable, optional
        ``x0_sampler(rng, size) -> (size, n)`` initial states. Default: the
        environment's own initial-state distribution -- the observation returned by
        ``env.reset(seed=...)`` without options, one reset per state.
    max_steps : int, optional
        Upper bound on the steps of one rollout (caps the horizon of an expensive
        simulator).
    eval_states : array_like, shape (k, n), optional
        Fixed states from which the learner's checks evaluate a gain (see
        :class:`CallablePlant`). Default: ``max(n, 8)`` states drawn once from the
        initial-state distribution.
    discrete_time : bool, optional
        The environment is a discrete-time plant: ``tau`` counts steps and no ``dt`` is read.

    Attributes
    ----------
    steps : int
        Environment steps taken by this copy of the plant.
    """

    #: ``rollout(..., moments=True)`` returns the state moments from the observations.
    returns_moments = True

    def __init__(
        self,
        env_factory: Callable[[], Any],
        n: int,
        m: int,
        *,
        x0_sampler: Sampler | None = None,
        max_steps: int | None = None,
        eval_states: Any = None,
        discrete_time: bool = False,
    ) -> None:
        if not callable(env_factory):
            raise SettingsError(f"env_factory must be callable, got {env_factory!r}")
        if x0_sampler is not None and not callable(x0_sampler):
            raise SettingsError(f"x0_sampler must be callable, got {x0_sampler!r}")
        self.env_factory = env_factory
        self.n = _check_size(n, "n")
        self.m = _check_size(m, "m")
        self.x0_sampler = x0_sampler
        self.max_steps = None if max_steps is None else _check_size(max_steps, "max_steps")
        self.steps = 0
        self._env: Any = None
        self.discrete_time = bool(discrete_time)
        self._dt = math.nan
        if eval_states is not None:
            self.evaluation_states = _FixedStates(eval_states, self.n)

    def __repr__(self) -> str:
        return f"GymPlant({getattr(self.env_factory, '__name__', self.env_factory)!r}, n={self.n}, m={self.m})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_env"] = None  # each copy builds its own environment
        return state

    def copy(self) -> GymPlant:
        """A fresh copy that builds its own environment -- a picklable ``plant_factory``
        for process workers: ``azopg.train(plant, ..., backend="async", plant_factory=plant.copy)``."""
        clone = GymPlant.__new__(GymPlant)
        clone.__dict__.update(self.__getstate__())
        clone.steps = 0
        return clone

    @property
    def env(self) -> Any:
        """The environment (built by ``env_factory`` at first use)."""
        if self._env is None:
            env = self.env_factory()
            self._dt = 1.0 if self.discrete_time else env_dt(env)
            for space, size, what in ((getattr(env, "observation_space", None), self.n, "observation"),
                                      (getattr(env, "action_space", None), self.m, "action")):
                shape = getattr(space, "shape", None)
                if shape is not None and tuple(shape) != (size,):
                    raise SettingsError(f"the environment's {what} space has shape {tuple(shape)}, "
                                        f"expected ({size},)")
            self._env = env
        return self._env

    @property
    def dt(self) -> float:
        """Seconds per environment step (1 step for a discrete-time environment)."""
        _ = self.env
        return self._dt

    def close(self) -> None:
        """Close the environment (a new one is built if the plant is used again)."""
        if self._env is not None:
            self._env.close()
            self._env = None

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` initial states from ``x0_sampler`` or the environment's resets."""
        if self.x0_sampler is not None:
            return _sample(self.x0_sampler, rng, size, self.n)
        env = self.env
        seeds = rng.integers(0, 2**63 - 1, size=size)
        X = np.empty((size, self.n))
        for i in range(size):
            obs, _ = env.reset(seed=int(seeds[i]))
            X[i] = np.asarray(obs, dtype=float).reshape(self.n)
        return X

    def rollout(self, K: Any, x0: Any, tau: float, *, moments: bool = False) -> RolloutResult:
        """Run one episode per rollout of the batch (see the class docstring).

        Parameters
        ----------
        K : array_like, shape (b, m, n) or (m, n)
            Gains (one per rollout, or one for all).
        x0 : array_like, shape (b, n)
            Initial states.
        tau : float
            Horizon; ``round(tau / dt)`` steps (at least 1).
        moments : bool, optional
            Also return ``S = dt * sum obs obs'`` and the last observation ``x_end``.

        Returns
        -------
        RolloutResult
        """
        if not (tau > 0 and math.isfinite(tau)):
            raise ValueError(f"tau must be a finite number > 0, got {tau}")
        K, x0 = _batch(K, x0, self.m, self.n)
        env = self.env
        steps = max(1, round(tau / self._dt))
        if self.max_steps is not None:
            steps = min(steps, self.max_steps)
        b = x0.shape[0]
        cost = np.empty(b)
        bad = np.zeros(b, dtype=bool)
        S = np.zeros((b, self.n, self.n)) if moments else None
        x_end = np.empty((b, self.n)) if moments else None
        with np.errstate(all="ignore"):
            for i in range(b):
                Ki = K[i]
                seed = rollout_seed(x0[i], tau).generate_state(2, np.uint32)
                obs, _ = env.reset(seed=int(seed[0]) << 32 | int(seed[1]), options={"x0": x0[i].copy()})
                obs = np.asarray(obs, dtype=float)
                norm0 = float(x0[i] @ x0[i])
                limit = GROWTH**2 * (norm0 if norm0 > 0 else 1.0)  # on the squared norm
                total = 0.0
                blown = False
                taken = 0
                for _ in range(steps):
                    if S is not None:
                        S[i] += np.outer(obs, obs)
                    obs, reward, terminated, truncated, info = env.step(-(Ki @ obs))
                    obs = np.asarray(obs, dtype=float)
                    total -= float(reward)
                    taken += 1
                    if not float(obs @ obs) <= limit:  # diverged or not finite
                        blown = True
                        break
                    if terminated or truncated:
                        blown = bool(terminated and info.get("blown_up", False))
                        break
                    if not total <= COST_LIMIT:  # the cost overflowed (or is NaN)
                        break
                self.steps += taken
                cost[i] = total
                bad[i] = blown
                if x_end is not None:
                    x_end[i] = obs
        res = finalize(cost, bad)
        return res if S is None else with_moments(res, S * self._dt, x_end)
