"""Rollout-time emulation: a physical plant or an expensive simulator takes time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from ..settings import LATENCY_MODELS
from .base import Plant, RolloutResult, Trajectory, returns_snapshots, rollout_of

_T = TypeVar("_T")

__all__ = ["LATENCY_MODELS", "LatencyPlant", "LatencyPlantFactory", "latency_factor"]

#: Rollout-time models: each draws a factor of mean 1 that scales a task's time.


def latency_factor(model: str, rng: np.random.Generator) -> float:
    """A random factor of mean 1 by which a task's duration is scaled.

    ``constant``: 1. ``uniform``: U(0.5, 1.5). ``exponential``: Exp(1).
    ``pareto``: heavy-tailed stragglers, Pareto of shape 1.5 and mean 1 (a task
    takes 10x the mean about once in 150, 30x once in 1400).
    """
    if model == "constant":
        return 1.0
    if model == "uniform":
        return float(rng.uniform(0.5, 1.5))
    if model == "exponential":
        return float(rng.exponential(1.0))
    if model == "pareto":
        shape = 1.5
        xm = (shape - 1.0) / shape  # mean 1
        return float(xm * (1.0 + rng.pareto(shape)))
    raise ValueError(f"unknown latency model {model!r} (choose from {', '.join(LATENCY_MODELS)})")


class LatencyPlant:
    """Wraps a plant so that every rollout also takes ``latency`` seconds of wall time
    (a batch of ``b`` rollouts sleeps ``b * latency``: one plant, one rollout at a time),
    times a random factor from ``model`` drawn per call (see :func:`latency_factor`).
    No sleep lasts past ``deadline`` (:func:`time.monotonic`, the end of the run's time budget):
    once the run is out of time the emulated plant answers at once."""

    def __init__(self, plant: Plant, latency: float, model: str = "constant", seed: int | None = None,
                 deadline: float | None = None) -> None:
        self.plant = plant
        self.deadline = deadline
        self.latency = float(latency)
        self.model = model
        self._rng = np.random.default_rng(seed)
        self.n = plant.n
        self.m = plant.m

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.plant.initial_states(rng, size)

    def __getattr__(self, name: str) -> object:  # e.g. evaluation_states, problem
        if name == "plant":
            raise AttributeError(name)
        return getattr(self.plant, name)

    def rollout(self, K: np.ndarray, x0: np.ndarray, tau: float, *, moments: bool = False) -> RolloutResult:
        """The wrapped plant's rollouts (with moments if asked: ``returns_moments`` is the
        wrapped plant's), slowed down."""
        return self._slowed(np.atleast_2d(x0).shape[0], lambda: rollout_of(self.plant, K, x0, tau, moments))

    @property
    def returns_snapshots(self) -> bool:
        """Whether the wrapped plant has ``rollout_snapshots``."""
        return returns_snapshots(self.plant)

    def rollout_snapshots(self, K: np.ndarray, x0: np.ndarray, tau: float, k: int) -> Trajectory:
        """The wrapped plant's rollouts cut into ``k`` intervals, slowed down as :meth:`rollout`."""
        return self._slowed(np.atleast_2d(x0).shape[0],
                            lambda: self.plant.rollout_snapshots(K, x0, tau, k))  # type: ignore[attr-defined]

    def _slowed(self, b: int, call: Callable[[], _T]) -> _T:
        factor = latency_factor(self.model, self._rng)
        t_end = time.monotonic() + self.latency * factor * b
        if self.deadline is not None:
            t_end = min(t_end, self.deadline)
        out = call()
        remaining = t_end - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        return out


class LatencyPlantFactory:
    """Picklable factory: ``LatencyPlant(factory(), latency, model, deadline=deadline)``, each
    plant with its own generator (``deadline``: :func:`time.monotonic` at the end of the run's
    time budget; the clock is the machine's, shared by worker processes)."""

    def __init__(self, factory: Callable[[], Plant], latency: float, model: str = "constant",
                 deadline: float | None = None) -> None:
        self.factory = factory
        self.latency = latency
        self.model = model
        self.deadline = deadline

    def __call__(self) -> LatencyPlant:
        return LatencyPlant(self.factory(), self.latency, self.model, deadline=self.deadline)
