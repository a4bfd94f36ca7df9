"""What the black-box plants share: per-rollout seeds, argument checks, fixed evaluation states.

Every rollout of :class:`~azopg.plants.callable.CallablePlant` and
:class:`~azopg.plants.gym.GymPlant` gets its own random stream seeded from its initial
state and horizon (:func:`rollout_seed`): rollouts from the same state see the same noise
(common random numbers -- the two rollouts of a two-point sample, and the checks of two
gains from the fixed evaluation states, compare under identical noise), and a run stays
reproducible from its seed, whether the batch is rolled out one by one or in lockstep.

Inside a run a plant with noise paths (:class:`~azopg.plants.callable.CallablePlant`, and
:class:`~azopg.plants.gym.GymPlant` on an environment with the ``x0`` reset option) is instead bound to
the task's generator (``bind_rng``, from ``(seed, worker, task)``) and takes ``noise_rows``:
:func:`path_seeds` gives every call fresh seeds from that generator, one per noise path, and rows with
the same path number the same seed. Repeats of a state then see
independent noise (the spread a noisy plant is recognised by), the horizons ``tau`` and ``2 tau`` and a
continuation from ``x(tau)`` too, while ``K + rU`` and ``K - rU``, or a check and its anchor, share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import SettingsError

__all__ = ["FixedStates", "Sampler", "check_size", "rollout_batch", "path_seeds", "rollout_seed",
           "sample_states"]

#: ``sampler(rng, size) -> (size, n)`` array of initial states.
Sampler = Callable[[np.random.Generator, int], Any]


def rollout_seed(x0: np.ndarray, tau: float) -> np.random.SeedSequence:
    """The seed of a rollout: a function of its initial state and horizon only."""
    words = np.frombuffer(np.ascontiguousarray(x0, dtype=np.float64).tobytes() + np.float64(tau).tobytes(),
                          dtype=np.uint32)
    return np.random.SeedSequence([int(w) for w in words])


def path_seeds(rng: np.random.Generator | None, x0: np.ndarray, tau: float,
               rows: np.ndarray | None = None) -> list[np.random.SeedSequence]:
    """The seed of each rollout of a batch from ``x0`` (b, n): row ``i`` takes noise path ``rows[i]``
    (default: its own); rows with equal numbers get equal seeds.

    With a generator (a run's task, module docstring) the paths' seeds are drawn from it, one per
    path, afresh at every call; without one (a plant used on its own) a path's seed is
    :func:`rollout_seed` of its first row's state and ``tau``, so rollouts from equal states repeat.
    """
    b = x0.shape[0]
    rows = np.arange(b) if rows is None else np.asarray(rows, dtype=int).reshape(b)
    if rows.size and rows.min() < 0:
        raise ValueError("noise_rows must be >= 0")
    if rng is not None:
        drawn = rng.integers(0, 2**63 - 1, size=int(rows.max()) + 1 if rows.size else 0)
        return [np.random.SeedSequence(int(drawn[r])) for r in rows]
    first: dict[int, np.random.SeedSequence] = {}
    return [first.setdefault(int(r), rollout_seed(x0[i], tau)) for i, r in enumerate(rows)]


def check_size(n: Any, name: str) -> int:
    """``n`` as an int >= 1, or :class:`SettingsError` naming ``name``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SettingsError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


def rollout_batch(K: Any, x0: Any, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``K`` (b, m, n) -- broadcast from (m, n) -- and ``x0`` (b, n) as float arrays."""
    x0 = np.atleast_2d(np.asarray(x0, dtype=float))
    K = np.asarray(K, dtype=float)
    if K.ndim == 2:
        K = np.broadcast_to(K, (x0.shape[0], *K.shape))
    if K.shape != (x0.shape[0], m, n) or x0.shape[1] != n:
        raise ValueError(f"expected K of shape (b, {m}, {n}) and x0 of shape (b, {n}), "
                         f"got {K.shape} and {x0.shape}")
    return K, x0


def sample_states(sampler: Sampler, rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``size`` states from a user's ``x0_sampler``, checked to be (size, n)."""
    X = np.asarray(sampler(rng, size), dtype=float).reshape(size, -1)
    if X.shape != (size, n):
        raise ValueError(f"x0_sampler must return an array of shape ({size}, {n}), got {X.shape}")
    return X


class FixedStates:
    """``evaluation_states()`` of a plant given fixed states (picklable)."""

    def __init__(self, states: Any, n: int) -> None:
        X = np.array(states, dtype=float)
        if X.ndim != 2 or X.shape[1] != n or X.shape[0] < 1 or not np.all(np.isfinite(X)):
            raise SettingsError(f"eval_states must be a finite (k, {n}) array, got shape {X.shape}")
        self.states = X

    def __call__(self) -> np.ndarray:
        return self.states.copy()
