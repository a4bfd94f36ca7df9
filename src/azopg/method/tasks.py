"""What travels between the master and a worker, and what a worker does with it.

A :class:`Task` names the gain to work at (and its version), the rollout settings and
the task's identity; every random draw of the task comes from
``numpy.random.default_rng([seed, worker, task_id])``, so a task is reproducible from
its identity alone. :func:`run_task` is the whole of a worker's job; every backend
calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..plants.base import Plant, RolloutResult, failed
from ..plants.checked import CheckedPlant, check_states, require_task_memory
from .estimators import estimate_gradient, rebuild_estimate

__all__ = ["Task", "Report", "evaluation_states", "report_gradient", "run_task", "task_rng"]

_EVAL_STREAM = 2**31 - 1  # generator stream of the fixed evaluation states
_NOISE_STREAM = 2**31 - 3  # generator stream of a task's measurement noise


def _noise_factors(rng: np.random.Generator, sigma: float, size: int) -> np.ndarray:
    return np.maximum(1.0 + sigma * rng.standard_normal(size), 0.0)


class NoisyCosts:
    """A plant whose measured rollout costs carry relative noise ``sigma`` (see
    :attr:`azopg.settings.Settings.cost_noise`); blown-up rollouts stay as they are."""

    def __init__(self, plant: Plant, sigma: float, rng: np.random.Generator) -> None:
        self.plant, self.sigma, self.rng = plant, sigma, rng
        self.n, self.m = plant.n, plant.m

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.plant.initial_states(rng, size)

    def rollout(self, K: np.ndarray, x0: np.ndarray, tau: float) -> RolloutResult:
        res = self.plant.rollout(K, x0, tau)
        cost = np.asarray(res.cost, dtype=float)
        noisy = cost * _noise_factors(self.rng, self.sigma, cost.shape[0])
        return RolloutResult(np.where(res.blown_up, cost, noisy), res.blown_up)


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker.

    ``kind`` is ``"estimate"`` (a zero-order gradient estimate at ``K``) or
    ``"evaluate"`` (the cost of ``K`` at horizons ``tau`` and ``2 tau`` from fixed
    evaluation states -- common random numbers, so two gains compare exactly).
    """

    task_id: int
    worker: int
    kind: str
    K: np.ndarray
    version: int
    tau: float
    r: float
    N: int
    method: str
    seed: int
    light: bool = False
    cost_noise: float = 0.0


@dataclass
class Report:
    """A worker's answer to a :class:`Task`.

    In communication-light mode (``task.light``) an estimate travels as its ``N``
    scalar weights only; the master rebuilds the directions from the task's seed.
    """

    task_id: int
    worker: int
    kind: str
    version: int
    rollouts: int
    blown_up: int
    grad: np.ndarray | None = None
    weights: np.ndarray | None = None
    center_cost: float = float("nan")
    cost: float = float("nan")
    cost2: float = float("nan")

    def long_tail(self, tail_tol: float) -> bool:
        """Whether a check's cost between ``tau`` and ``2 tau`` is not negligible (relative
        ``tail_tol``): a slow or unstable mode that has not yet shown."""
        return self.cost2 - self.cost > tail_tol * self.cost2

    def payload_bytes(self) -> int:
        """Bytes of numerical payload this report carries back to the master."""
        size = 8 * 4  # ids and the scalar costs
        for arr in (self.grad, self.weights):
            if arr is not None:
                size += arr.nbytes
        return size


def task_rng(seed: int, worker: int, task_id: int) -> np.random.Generator:
    """The generator of task ``task_id`` run by ``worker`` in a run seeded ``seed``."""
    return np.random.default_rng([seed, worker, task_id])


def report_gradient(rep: Report, seed: int, m: int, n: int) -> np.ndarray:
    """The gradient estimate a report carries, rebuilt from its task's seed in light mode."""
    if rep.grad is not None:
        return rep.grad
    assert rep.weights is not None, "an estimate report carries grad or weights"
    return rebuild_estimate(rep.weights, task_rng(seed, rep.worker, rep.task_id), m, n)


def evaluation_states(plant: Plant, seed: int) -> np.ndarray:
    """Fixed states whose mean rollout cost estimates the expected cost.

    A plant may provide ``evaluation_states()`` (the :class:`~azopg.plants.linear.LinearPlant`
    returns exact square-root factors of the covariance, so the estimate is exact);
    otherwise ``max(n, 8)`` states are drawn once from the plant's distribution.
    """
    own = getattr(plant, "evaluation_states", None)
    if callable(own):
        return check_states(plant, own(), None, "evaluation_states")
    size = max(plant.n, 8)
    return check_states(plant, plant.initial_states(np.random.default_rng([seed, _EVAL_STREAM]), size), size)


def run_task(plant: Plant, task: Task, eval_states: np.ndarray | None = None) -> Report:
    """Do one task on ``plant`` and return the report.

    Raises
    ------
    PlantProtocolError
        If the plant answers outside the protocol (see :mod:`azopg.plants.checked`).
    SettingsError
        If an estimate's batch does not fit in memory.
    """
    raw, plant = plant, CheckedPlant(plant)
    noise = (np.random.default_rng([task.seed, task.worker, task.task_id, _NOISE_STREAM])
             if task.cost_noise > 0 else None)
    if task.kind == "estimate":
        require_task_memory(raw, task.N, 2 * task.N if task.method == "two-point" else task.N)
        est = estimate_gradient(
            plant if noise is None else NoisyCosts(plant, task.cost_noise, noise), task.K,
            r=task.r, N=task.N, tau=task.tau,
            rng=task_rng(task.seed, task.worker, task.task_id), method=task.method,  # type: ignore[arg-type]
        )
        return Report(
            task.task_id, task.worker, task.kind, task.version, est.rollouts, est.blown_up,
            grad=None if task.light else est.grad, weights=est.weights if task.light else None,
            center_cost=est.center_cost,
        )
    if task.kind == "evaluate":
        X = evaluation_states(raw, task.seed) if eval_states is None else eval_states
        k = X.shape[0]
        r1 = plant.rollout(np.broadcast_to(task.K, (k, *task.K.shape)), X, task.tau)
        r2 = plant.rollout(np.broadcast_to(task.K, (k, *task.K.shape)), X, 2.0 * task.tau)
        if noise is not None:  # one noisy measurement per state, at both horizons of its rollout
            f = _noise_factors(noise, task.cost_noise, k)
            r1 = RolloutResult(np.where(r1.blown_up, r1.cost, r1.cost * f), r1.blown_up)
            r2 = RolloutResult(np.where(r2.blown_up, r2.cost, r2.cost * f), r2.blown_up)
        blown = int(np.sum(failed(r1)) + np.sum(failed(r2)))
        return Report(
            task.task_id, task.worker, task.kind, task.version, 2 * k, blown,
            cost=float(np.mean(r1.cost)), cost2=float(np.mean(r2.cost)),
        )
    raise ValueError(f"unknown task kind {task.kind!r}")
