"""What travels between the master and a worker, and what a worker does with it.

A :class:`Task` names the gain to work at (and its version), the rollout settings and
the task's identity; every random draw of the task comes from
``numpy.random.default_rng([seed, worker, task_id])``, so a task is reproducible from
its identity alone. :func:`run_task` is the whole of a worker's job; every backend
calls it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .estimators import estimate_gradient
from .plant import Plant

__all__ = ["Task", "Report", "run_task", "task_rng", "evaluation_states"]

_EVAL_STREAM = 2**31 - 1  # generator stream of the fixed evaluation states


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
    elapsed: float = 0.0

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


def evaluation_states(plant: Plant, seed: int) -> np.ndarray:
    """Fixed states whose mean rollout cost estimates the expected cost.

    A plant may provide ``evaluation_states()`` (the :class:`~azopg.plant.LinearPlant`
    returns exact square-root factors of the covariance, so the estimate is exact);
    otherwise ``max(n, 8)`` states are drawn once from the plant's distribution.
    """
    own = getattr(plant, "evaluation_states", None)
    if callable(own):
        return np.asarray(own(), dtype=float)
    return plant.initial_states(np.random.default_rng([seed, _EVAL_STREAM]), max(plant.n, 8))


def run_task(plant: Plant, task: Task, eval_states: np.ndarray | None = None) -> Report:
    """Do one task on ``plant`` and return the report."""
    t0 = time.perf_counter()
    if task.kind == "estimate":
        est = estimate_gradient(
            plant, task.K, r=task.r, N=task.N, tau=task.tau,
            rng=task_rng(task.seed, task.worker, task.task_id), method=task.method,  # type: ignore[arg-type]
        )
        return Report(
            task.task_id, task.worker, task.kind, task.version, est.rollouts, est.blown_up,
            grad=None if task.light else est.grad, weights=est.weights if task.light else None,
            center_cost=est.center_cost, elapsed=time.perf_counter() - t0,
        )
    if task.kind == "evaluate":
        X = evaluation_states(plant, task.seed) if eval_states is None else eval_states
        k = X.shape[0]
        r1 = plant.rollout(np.broadcast_to(task.K, (k, *task.K.shape)), X, task.tau)
        r2 = plant.rollout(np.broadcast_to(task.K, (k, *task.K.shape)), X, 2.0 * task.tau)
        blown = int(r1.blown_up.sum() + r2.blown_up.sum())
        return Report(
            task.task_id, task.worker, task.kind, task.version, 2 * k, blown,
            cost=float(np.mean(r1.cost)), cost2=float(np.mean(r2.cost)),
            elapsed=time.perf_counter() - t0,
        )
    raise ValueError(f"unknown task kind {task.kind!r}")
