"""CallablePlant: a black-box plant given as a Python function.

``cost(K, x0, tau, rng) -> float`` performs one rollout (a simulator, a hardware
experiment, ...); with ``batched=True`` the function takes the whole batch at once,
``cost(K, X0, tau, rngs) -> (b,)``, so a vectorized simulator steps a task's rollouts
together. The random streams are the same either way (one generator per rollout), so both
forms of the same simulator give the same costs.

Noise (the callable draws its disturbances from the ``rng`` it is given): the plant has
:attr:`CallablePlant.common_noise`. Within a run every task binds it to its own generator
(``bind_rng``, from ``(seed, worker, task)``) and each rollout's generator is seeded from that
generator, one seed per noise path (``rollout(..., noise_rows=rows)``,
:func:`~azopg.plants.blackbox.path_seeds`): ``K + rU`` and ``K - rU``, and a check and its anchor,
see the same noise, while repeats of a state and the horizons ``tau`` and ``2 tau`` get independent
noise -- the learner measures the noise and judges the horizon on common noise, and an async run
replays bit for bit. Without a bound generator (the plant used on its own) a rollout's generator is
seeded from its ``(x0, tau)`` (:func:`~azopg.plants.blackbox.rollout_seed`), so repeats are identical.

A rollout whose cost is NaN, infinite or above ``1e200`` is flagged blown up and reported with the finite
:data:`~azopg.plants.base.BLOWUP_COST`.

A :class:`CallablePlant` is picklable if its callable and sampler are (module-level
functions or ``functools.partial`` of them, not lambdas), so each process worker of
``azopg.train(plant, ..., backend="async", plant_factory=plant.copy)`` gets its own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from ..errors import SettingsError
from ..model.problem import as_matrix
from .base import RolloutResult, finalize, with_moments
from .blackbox import FixedStates, Sampler, check_size, path_seeds, rollout_batch, sample_states

__all__ = ["CallablePlant"]


class CallablePlant:
    """A plant given as a function that performs one rollout.

    Parameters
    ----------
    cost : callable
        ``cost(K, x0, tau, rng) -> float``: the cost of one rollout of the gain ``K``
        (ndarray (m, n), ``u = -K x``) from the state ``x0`` (ndarray (n,)) over the
        horizon ``tau``, typically ``int_0^tau (x'Qx + u'Ru) dt``; ``rng`` is a
        :class:`numpy.random.Generator` for any noise of the rollout: within a run, seeded
        from the task's generator per noise path (module docstring); on its own, from
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
    batched : bool, optional
        ``cost(K, X0, tau, rngs)`` takes the whole batch: ``K`` (b, m, n), ``X0`` (b, n)
        and ``rngs`` the ``b`` generators (rollout ``i`` draws its noise from ``rngs[i]``, the
        generator the unbatched form would get), and returns the ``b`` costs (with
        ``returns_moments``: ``(costs (b,), S (b, n, n), x_end (b, n))``). An exception or a
        malformed answer flags the whole batch as blown up. Default False.

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

    #: ``rollout`` takes ``noise_rows`` (common random numbers, module docstring).
    common_noise = True

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
        batched: bool = False,
    ) -> None:
        if not callable(cost):
            raise SettingsError(f"cost must be callable, got {cost!r}")
        if x0_sampler is not None and not callable(x0_sampler):
            raise SettingsError(f"x0_sampler must be callable, got {x0_sampler!r}")
        self.cost = cost
        self.n = check_size(n, "n")
        self.m = check_size(m, "m")
        self.x0_sampler = x0_sampler
        cov = as_matrix(np.eye(self.n) if x0_cov is None else x0_cov, "x0_cov", self.n, self.n)
        try:
            self._L = np.linalg.cholesky(0.5 * (cov + cov.T))
        except np.linalg.LinAlgError:
            raise SettingsError("x0_cov is not positive definite") from None
        self.errors = 0
        self.last_error: str | None = None
        self.returns_moments = bool(returns_moments)
        self.batched = bool(batched)
        self._rng: np.random.Generator | None = None
        if eval_states is not None:
            self.evaluation_states = FixedStates(eval_states, self.n)

    def __repr__(self) -> str:
        return f"CallablePlant({getattr(self.cost, '__name__', self.cost)!r}, n={self.n}, m={self.m})"

    def copy(self) -> CallablePlant:
        """A copy with fresh error counters -- a picklable ``plant_factory`` for process
        workers: ``azopg.train(plant, ..., backend="async", plant_factory=plant.copy)``."""
        clone = CallablePlant.__new__(CallablePlant)
        clone.__dict__.update(self.__dict__)
        clone.errors, clone.last_error, clone._rng = 0, None, None
        return clone

    def bind_rng(self, rng: np.random.Generator) -> None:
        """Seed the noise of the following rollouts from ``rng`` (module docstring)."""
        self._rng = rng

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` initial states from ``x0_sampler`` or ``N(0, x0_cov)``, shape (size, n)."""
        if self.x0_sampler is not None:
            return sample_states(self.x0_sampler, rng, size, self.n)
        return rng.standard_normal((size, self.n)) @ self._L.T

    def rollout(self, K: Any, x0: Any, tau: float, *, moments: bool = False,
                noise_rows: Any = None) -> RolloutResult:
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
        noise_rows : array_like of int, shape (b,), optional
            Rollout ``i`` gets the generator of noise path ``noise_rows[i]`` (default: its own);
            rows of one path get equal, separate generators (module docstring).

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
        K, x0 = rollout_batch(K, x0, self.m, self.n)
        b, n = x0.shape
        cost = np.full(b, math.nan)
        S = np.full((b, n, n), np.nan)
        x_end = np.full((b, n), np.nan)
        rngs = [np.random.default_rng(seq) for seq in path_seeds(self._rng, x0, tau, noise_rows)]
        if self.batched:
            try:
                batch_cost = cast(Callable[..., Any], self.cost)  # the batched form takes a list of generators
                self._answer(slice(None), batch_cost(K.copy(), x0.copy(), tau, rngs), cost, S, x_end, (b,))
            except Exception as exc:  # a failed batch is reported, not raised
                self._failed(exc)
        else:
            for i in range(b):
                try:
                    self._answer(i, self.cost(K[i].copy(), x0[i].copy(), tau, rngs[i]), cost, S, x_end, ())
                except Exception as exc:  # a failed rollout is reported, not raised
                    self._failed(exc)
        res = finalize(cost, np.zeros(b, dtype=bool))
        return with_moments(res, 0.5 * (S + np.swapaxes(S, 1, 2)), x_end) if moments else res

    def _answer(self, i: Any, out: Any, cost: np.ndarray, S: np.ndarray, x_end: np.ndarray,
                shape: tuple[int, ...]) -> None:
        """Store the answer of ``cost`` for the rollout(s) ``i`` (``shape`` () or (b,)), or raise."""
        n = self.n
        if self.returns_moments:
            out, Si, xi = out
            S[i] = np.asarray(Si, dtype=float).reshape(*shape, n, n)
            x_end[i] = np.asarray(xi, dtype=float).reshape(*shape, n)
        if not shape:
            cost[i] = float(out)
            return
        c = np.asarray(out, dtype=float)
        if c.shape != shape:
            raise ValueError(f"cost returned shape {c.shape}, expected {shape}")
        cost[i] = c

    def _failed(self, exc: Exception) -> None:
        if self.errors == 0:
            warnings.warn(f"CallablePlant: cost raised {exc!r}; the rollout is flagged as blown up "
                          "(further errors are only counted in .errors)", RuntimeWarning, stacklevel=3)
        self.errors += 1
        self.last_error = repr(exc)
