"""GymPlant: a gymnasium environment as a black-box plant (observation = state, action = input).

A rollout of the gain ``K`` from ``x0`` over the horizon ``tau`` applies ``u = -K obs``
for ``round(tau / dt)`` steps (``round(tau)`` for a discrete-time environment) and costs
minus the sum of the rewards. The batch of a task is stepped in lockstep through a vector
environment (:mod:`azopg.plants.lockstep`): gymnasium's ``SyncVectorEnv`` or
``AsyncVectorEnv`` of copies, or the environment's own batched form; the costs are the same
as those of the one-rollout-at-a-time loop (``vector="loop"``) for the same seeds.

Starting a rollout from a given state needs an environment whose ``reset`` accepts the
option ``{"x0": x0}``. One that does not is used as it is: its initial states are the
observations of ``reset(seed=s)`` for seeds drawn from the run's generator, and a rollout
from such a state resets with the same seed -- the two rollouts of a two-point sample, and
the checks of two gains, then start from the same state under the same noise (common
random numbers through the reset seed).

Noise (process or measurement noise drawn from the environment's own generator, which
``reset(seed=s)`` seeds, as :class:`~azopg.plants.envs.LinearEnv` does): on an environment with the
``x0`` option the plant has :attr:`GymPlant.common_noise`. Within a run every task binds it to its
own generator (``bind_rng``, from ``(seed, worker, task)``) and the reset seeds come from that
generator, one per noise path (``rollout(..., noise_rows=rows)``, :func:`~azopg.plants.blackbox.path_seeds`):
``K + rU`` and ``K - rU``, and a check and its anchor, are reset with the same seed -- the same
disturbances and sensor noise, so their difference carries the noise only through the gains'
difference -- while repeats of a state, the horizons ``tau`` and ``2 tau`` and the continuation from
``x(tau)`` get independent noise. The learner then measures the noise at calibration and judges the
horizon by the transient's tail on common noise, as for the exact noisy plant
(:mod:`azopg.method.noisy_eval`); an async run replays bit for bit. (Seeding each rollout from its
``(x0, tau)`` alone, as before, made every repeat of a state identical -- the plant looked noise-free --
while the rollouts to ``tau`` and to ``2 tau`` saw different noise: the tail grew with ``tau`` and the
horizon was doubled until the budget ran out.) Without a bound generator (the plant used on its own)
a rollout's seed is still a function of ``(x0, tau)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import PlantProtocolError, SettingsError
from ..model.problem import as_matrix
from .base import RolloutResult, finalize, with_moments
from .blackbox import FixedStates, Sampler, check_size, path_seeds, rollout_batch, sample_states
from .lockstep import ListStepper, SingleStepper, Stepper, VectorStepper, lockstep

__all__ = ["EXACT_WRAPPERS", "VECTOR_MODES", "GymPlant", "accepts_x0", "env_dt"]

#: How a task's rollouts are stepped (see :class:`GymPlant`).
VECTOR_MODES = ("auto", "loop", "sync", "async", "native")
#: Wrappers of ``gymnasium.make`` that change neither observations nor rewards (see :attr:`GymPlant.exact_moments`).
EXACT_WRAPPERS = frozenset({"TimeLimit", "OrderEnforcing", "PassiveEnvChecker"})
#: Reset seeds remembered for the initial states of an environment without the ``x0`` option.
_SEED_MEMORY = 1 << 16


def env_dt(env: Any) -> float | None:
    """Seconds per step of a gymnasium environment: ``env.unwrapped.dt`` or ``env.dt``
    (``None`` if neither exists).

    Raises
    ------
    SettingsError
        If it exists but is not a finite number > 0.
    """
    for owner in (getattr(env, "unwrapped", None), env):
        dt = getattr(owner, "dt", None)
        if dt is not None:
            break
    if dt is None:
        return None
    try:
        value = float(dt)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"the environment's dt (seconds per step) must be a finite number > 0, got {dt!r}")
    return value


def accepts_x0(env: Any, n: int) -> bool:
    """Whether ``env.reset(options={"x0": x})`` starts from ``x``: tried with two states unlike
    the environment's own, under one seed (an exception, or observations that do not differ by the
    states' difference, means no). The difference, not the observation itself, so that measurement
    noise, the same under the same seed, does not hide the option."""
    try:
        obs, _ = env.reset(seed=0)
        probe = 0.5 * np.asarray(obs, dtype=float).reshape(n) + 0.25 + np.arange(n) / (4.0 * n)
        shift = 1.0 + np.abs(probe)
        first, _ = env.reset(seed=0, options={"x0": probe.copy()})
        second, _ = env.reset(seed=0, options={"x0": probe + shift})
        seen = np.asarray(second, dtype=float).reshape(n) - np.asarray(first, dtype=float).reshape(n)
        return bool(np.allclose(seen, shift, rtol=1e-9, atol=0.0))
    except Exception:  # an environment that refuses the option
        return False


def _async_env(factory: Callable[[], Any], num_envs: int) -> Any:
    import gymnasium as gym

    return gym.vector.AsyncVectorEnv([factory] * num_envs, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


class GymPlant:
    """A gymnasium environment as a plant: observation = state, action = input.

    A rollout of the gain ``K`` from ``x0`` over the horizon ``tau``:

    1. ``obs, info = env.reset(seed=s, options={"x0": x0})`` (``s`` is drawn from the task's
       generator per noise path within a run, else derived from ``(x0, tau)``:
       :func:`~azopg.plants.blackbox.path_seeds`) -- or, for an
       environment without the ``"x0"`` option, ``env.reset(seed=s)`` with the seed whose
       reset gave ``x0`` (module docstring);
    2. ``steps = round(tau / dt)`` times (``round(tau)`` in discrete time; at most ``max_steps``):
       ``obs, reward, terminated, truncated, info = env.step(-K @ obs)``;
    3. cost = minus the sum of the rewards.

    With ``rollout(..., moments=True)`` it also returns ``S = dt * sum_k obs_k obs_k'``
    over the observations the actions were computed from (``k = 0 .. steps-1``, a Riemann
    sum of ``int_0^tau x x' dt``) and ``x_end`` = the last observation.

    Sign convention: the cost is **minus the summed reward**. ``dt`` is the argument, else
    ``env.unwrapped.dt`` or ``env.dt``. With a ``dt`` the plant is continuous-time: for the
    cost to approximate ``int_0^tau (x'Qx + u'Ru) dt`` the reward of a step should be minus
    the stage cost integrated over the step, e.g. ``-(x'Qx + u'Ru) dt``. Without one it is
    **discrete-time** (:attr:`discrete_time`): the horizon counts steps, the cost is
    ``sum_k (x_k'Qx_k + u_k'Ru_k)`` if the reward is minus the stage cost, and
    ``S = sum_k obs_k obs_k'`` (no ``dt`` scaling).

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
    eval_states : int or array_like of shape (k, n), optional
        Fixed states from which the learner's checks evaluate a gain (see
        :class:`~azopg.plants.callable.CallablePlant`; they need the ``x0`` option), or how
        many to draw once from the initial-state distribution. Default: ``max(n, 8)`` drawn.
    dt : float, optional
        Seconds per step, for an environment without a ``dt`` attribute (or to override it).
    x0_option : bool, optional
        Whether ``reset`` accepts the ``"x0"`` option. Default: tried once (:func:`accepts_x0`).
    vector : {"auto", "loop", "sync", "async", "native"}
        How a task's rollouts are stepped: ``"loop"`` one after the other on one
        environment; ``"sync"`` in lockstep over ``env_factory`` copies stepped in turn
        (as gymnasium's ``SyncVectorEnv``); ``"async"`` through gymnasium's
        ``AsyncVectorEnv`` (one process per copy; not inside process workers, which cannot
        have children);
        ``"native"`` through ``vector_factory``. ``"auto"`` (default): native if a
        ``vector_factory`` is given, else sync. The costs are the same in every mode.
    vector_factory : callable, optional
        ``vector_factory(num_envs) -> gymnasium.vector.VectorEnv``: the environment's own
        batched form (e.g. ``functools.partial(gymnasium.make_vec, id,
        vectorization_mode="vector_entry_point")``, or a class of
        :mod:`azopg.plants.envs_vector` for the example environments); its reset option ``x0`` takes an
        array (num_envs, n) and it must not auto-reset a copy before the next ``reset``
        of all (the rollouts ignore what an ended copy returns, either way).
    max_envs : int, optional
        Most copies stepped together (a larger batch goes in chunks). Default 64, and 1024 for
        ``"native"`` (a copy of a batched form is a row of its arrays: the larger the chunk,
        the fewer steps for the batch; ``benchmarks/gym_rollouts.py``).
    R : array_like, shape (m, m), optional
        The input weight of the reward, given to the update rules that use it.

    Attributes
    ----------
    steps : int
        Environment steps taken by this copy of the plant.
    eval_count : int or None
        How many evaluation states to draw (``eval_states`` given as a number).
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
        dt: float | None = None,
        x0_option: bool | None = None,
        vector: str = "auto",
        vector_factory: Callable[[int], Any] | None = None,
        max_envs: int | None = None,
        R: Any = None,
    ) -> None:
        for name, fn in (("env_factory", env_factory), ("x0_sampler", x0_sampler), ("vector_factory", vector_factory)):
            if (fn is not None and not callable(fn)) or (fn is None and name == "env_factory"):
                raise SettingsError(f"{name} must be callable, got {fn!r}")
        if vector not in VECTOR_MODES:
            raise SettingsError(f"vector must be one of {', '.join(VECTOR_MODES)}, got {vector!r}")
        if vector == "native" and vector_factory is None:
            raise SettingsError("vector='native' needs a vector_factory (the environment's batched form)")
        self.env_factory = env_factory
        self.n = check_size(n, "n")
        self.m = check_size(m, "m")
        self.x0_sampler = x0_sampler
        self.max_steps = None if max_steps is None else check_size(max_steps, "max_steps")
        if dt is not None and not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise SettingsError(f"dt must be a finite number > 0, got {dt!r}")
        self.given_dt = None if dt is None else float(dt)
        self.x0_option = x0_option
        self.vector = "native" if vector == "auto" and vector_factory is not None else vector
        self.max_envs = check_size((1024 if self.vector == "native" else 64) if max_envs is None else max_envs,
                                   "max_envs")
        self.vector_factory = vector_factory
        if R is not None:
            self.R = as_matrix(R, "R", self.m, self.m)
        self.steps = 0
        self.eval_count: int | None = None
        self._env: Any = None
        self._dt: float | None = None
        self._steppers: dict[int, Stepper] = {}
        self._seeds: OrderedDict[bytes, int] = OrderedDict()
        self._rng: np.random.Generator | None = None
        if isinstance(eval_states, (int, np.integer)) and not isinstance(eval_states, bool):
            self.eval_count = check_size(eval_states, "eval_states")
        elif eval_states is not None:
            self.evaluation_states = FixedStates(eval_states, self.n)

    def __repr__(self) -> str:
        return f"GymPlant({getattr(self.env_factory, '__name__', self.env_factory)!r}, n={self.n}, m={self.m})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_env=None, _steppers={}, _seeds=OrderedDict(), _rng=None)  # each copy builds its own environments
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
            own = env_dt(env)
            for space, size, what in ((getattr(env, "observation_space", None), self.n, "observation"),
                                      (getattr(env, "action_space", None), self.m, "action")):
                shape = getattr(space, "shape", None)
                if shape is not None and tuple(shape) != (size,):
                    raise SettingsError(f"the environment's {what} space has shape {tuple(shape)}, "
                                        f"expected ({size},)")
            if self.x0_option is None:
                self.x0_option = accepts_x0(env, self.n)
            if self.vector == "auto":
                self.vector = "sync"
            if self.eval_count is None and hasattr(self, "evaluation_states") and not self.x0_option:
                raise SettingsError("fixed eval_states need an environment whose reset accepts the 'x0' option; "
                                    "give a number of states to draw from its own resets instead")
            self._dt = self.given_dt if self.given_dt is not None else own
            self._env = env
        return self._env

    @property
    def dt(self) -> float | None:
        """Seconds per environment step (``None``: a discrete-time environment)."""
        _ = self.env
        return self._dt

    @property
    def exact_moments(self) -> bool:
        """True when the moments are those of a linear model exactly, so ``method="auto"`` may
        choose policy iteration: a discrete-time environment (no ``dt``: the sums are the
        model's own, not samples of an integral) whose unwrapped form declares a true
        ``exact_moments`` (:class:`~azopg.plants.discrete_env.DiscreteLinearEnv` does), under no
        wrapper but gymnasium's bookkeeping ones (:data:`EXACT_WRAPPERS`) -- a wrapper that
        changes observations or rewards would break the identity."""
        if self.dt is not None:  # builds the environment
            return False
        env = self.env
        while env is not getattr(env, "unwrapped", env):
            if type(env).__name__ not in EXACT_WRAPPERS:
                return False
            env = env.env
        return getattr(env, "exact_moments", False) is True

    @property
    def common_noise(self) -> bool:
        """Whether ``rollout`` takes ``noise_rows`` (common random numbers, module docstring): an environment
        with the ``x0`` reset option (builds the environment)."""
        _ = self.env
        return bool(self.x0_option)

    def bind_rng(self, rng: np.random.Generator) -> None:
        """Draw the reset seeds of the following rollouts from ``rng`` (module docstring)."""
        self._rng = rng

    @property
    def discrete_time(self) -> bool:
        """True for an environment without ``dt``: horizons count steps, costs are plain sums."""
        return self.dt is None

    def _stepper(self, b: int) -> Stepper:
        E = 1 if self.vector == "loop" else min(b, self.max_envs)
        stepper = self._steppers.get(E)
        if stepper is None:
            if self.vector == "loop":
                stepper = SingleStepper(self.env)
            elif self.vector == "native":
                assert self.vector_factory is not None
                stepper = VectorStepper(self.vector_factory(E), batched_x0=True)
            elif self.vector == "sync":
                stepper = ListStepper([self.env_factory() for _ in range(E)])
            else:
                stepper = VectorStepper(_async_env(self.env_factory, E), batched_x0=False)
            if len(self._steppers) >= 4:  # a few batch sizes recur (2N, N, the evaluation states)
                self._steppers.pop(next(iter(self._steppers))).close()
            self._steppers[E] = stepper
        return stepper

    def close(self) -> None:
        """Close the environments (new ones are built if the plant is used again)."""
        for stepper in self._steppers.values():
            if not isinstance(stepper, SingleStepper):
                stepper.close()
        self._steppers = {}
        if self._env is not None:
            self._env.close()
            self._env = None

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` initial states from ``x0_sampler`` or the environment's resets."""
        if self.x0_sampler is not None:
            return sample_states(self.x0_sampler, rng, size, self.n)
        env = self.env
        seeds = rng.integers(0, 2**63 - 1, size=size)
        X = np.empty((size, self.n))
        for i in range(size):
            obs, _ = env.reset(seed=int(seeds[i]))
            X[i] = np.asarray(obs, dtype=float).reshape(self.n)
            if not self.x0_option:
                key = X[i].tobytes()
                self._seeds[key] = int(seeds[i])
                self._seeds.move_to_end(key)
                if len(self._seeds) > _SEED_MEMORY:
                    self._seeds.popitem(last=False)
        return X

    def _reset_seeds(self, x0: np.ndarray, tau: float, rows: Any) -> list[int]:
        if self.x0_option:
            out = []
            for seq in path_seeds(self._rng, x0, tau, rows):
                seed = seq.generate_state(2, np.uint32)
                out.append(int(seed[0]) << 32 | int(seed[1]))
            return out
        try:
            return [self._seeds[x.tobytes()] for x in x0]
        except KeyError:
            raise SettingsError("this environment's reset does not accept the 'x0' option: a GymPlant can only "
                                "start its rollouts from states its own initial_states gave") from None

    def rollout(self, K: Any, x0: Any, tau: float, *, moments: bool = False,
                noise_rows: Any = None) -> RolloutResult:
        """Run one episode per rollout of the batch, in lockstep (see the class docstring).

        Parameters
        ----------
        K : array_like, shape (b, m, n) or (m, n)
            Gains (one per rollout, or one for all).
        x0 : array_like, shape (b, n)
            Initial states.
        tau : float
            Horizon; ``round(tau / dt)`` steps (``round(tau)`` in discrete time; at least 1).
        moments : bool, optional
            Also return ``S = dt * sum obs obs'`` (``sum obs obs'`` in discrete time) and the
            last observation ``x_end``.
        noise_rows : array_like of int, shape (b,), optional
            Row ``i`` is reset with the seed of noise path ``noise_rows[i]`` (default: its own); see the
            module docstring. Ignored without the ``x0`` option (the seed then gives the state).

        Returns
        -------
        RolloutResult

        Raises
        ------
        PlantProtocolError
            If an environment without the ``x0`` option does not reproduce an initial state
            from its reset seed.
        """
        if not (tau > 0 and math.isfinite(tau)):
            raise ValueError(f"tau must be a finite number > 0, got {tau}")
        K, x0 = rollout_batch(K, x0, self.m, self.n)
        dt = self.dt
        steps = max(1, round(tau if dt is None else tau / dt))
        if self.max_steps is not None:
            steps = min(steps, self.max_steps)
        seeds = self._reset_seeds(x0, tau, noise_rows)
        cost, bad, S, x_end, taken, first = lockstep(self._stepper(x0.shape[0]), K, x0, seeds,
                                                     bool(self.x0_option), steps, moments)
        self.steps += taken
        if not self.x0_option and not np.array_equal(first, x0):
            raise PlantProtocolError("the environment's reset(seed=s) did not give the same initial state twice; "
                                     "without the 'x0' reset option its resets must be a function of the seed")
        res = finalize(cost, bad)
        return res if S is None else with_moments(res, S if dt is None else S * dt, x_end)
