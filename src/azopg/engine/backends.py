"""Executors: how tasks reach workers. One small protocol, several backends.

A backend only moves :class:`~azopg.method.tasks.Task` objects out and
:class:`~azopg.method.tasks.Report` objects back; the algorithm lives in
:mod:`azopg.method.master` and the loop in :mod:`azopg.run.train`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ..method.tasks import Report, Task, run_task
from ..plants.base import Plant
from ..plants.latency import latency_factor

__all__ = ["BACKENDS", "SYNCHRONOUS", "Executor", "SerialExecutor", "SimulatedExecutor", "make_executor"]


class Executor(Protocol):
    """Moves tasks to workers and reports back to the master."""

    workers: int

    def start(self) -> None:
        """Bring the workers up."""

    def run(self, task: Task) -> Report:
        """Run one task to completion (used for calibration)."""

    def submit(self, task: Task) -> None:
        """Hand a task to its worker (``task.worker``) without waiting."""

    def next_report(self, timeout: float | None = None) -> Report | None:
        """The next finished report, or ``None`` if none arrived within ``timeout``."""

    def close(self) -> None:
        """Stop every worker; safe to call twice."""


class SerialExecutor:
    """One worker in the calling process: tasks run when their report is asked for."""

    def __init__(self, plant_factory: Callable[[], Plant], workers: int = 1, **_: Any) -> None:
        if workers != 1:
            from ..errors import SettingsError

            raise SettingsError(f"workers must be 1 with the serial backend, got {workers}")
        self.workers = 1
        self._factory = plant_factory
        self._queue: deque[Task] = deque()
        self.plant: Plant | None = None

    def start(self) -> None:
        self.plant = self._factory()

    def run(self, task: Task) -> Report:
        assert self.plant is not None, "start() first"
        return run_task(self.plant, task)

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def next_report(self, timeout: float | None = None) -> Report | None:
        return self.run(self._queue.popleft()) if self._queue else None

    def close(self) -> None:
        self._queue.clear()


class SimulatedExecutor:
    """W virtual workers on a virtual clock: event-driven, bit-for-bit reproducible.

    Every task runs for real (in this process) when submitted, at the gain current at
    that moment; its *duration* is ``rollouts * per_rollout * factor`` with ``factor``
    drawn from the latency model by the generator of (seed, worker, task). Reports
    come back in order of virtual finish time (ties by task id), so delays arise exactly
    as they would with real workers of those speeds -- without needing W cores.

    Parameters
    ----------
    plant_factory : callable
    workers : int
    per_rollout : float
        Virtual seconds per rollout.
    model : str
        Latency model (see :func:`azopg.plants.latency.latency_factor`).
    seed : int
    """

    def __init__(self, plant_factory: Callable[[], Plant], workers: int, *, per_rollout: float = 0.01,
                 model: str = "constant", seed: int = 0, **_: Any) -> None:
        self.workers = int(workers)
        self._factory = plant_factory
        self.per_rollout = per_rollout
        self.model = model
        self.seed = seed
        self.now = 0.0
        self._heap: list[tuple[float, int, Report]] = []
        self.plant: Plant | None = None

    def clock(self) -> float:
        """Virtual seconds since the start."""
        return self.now

    def start(self) -> None:
        self.plant = self._factory()

    def _duration(self, task: Task, rollouts: int) -> float:
        rng = np.random.default_rng([self.seed, task.worker, task.task_id, 1])
        return rollouts * self.per_rollout * latency_factor(self.model, rng)

    def run(self, task: Task) -> Report:
        assert self.plant is not None, "start() first"
        rep = run_task(self.plant, task)
        self.now += self._duration(task, rep.rollouts)
        return rep

    def submit(self, task: Task) -> None:
        assert self.plant is not None, "start() first"
        rep = run_task(self.plant, task)
        heapq.heappush(self._heap, (self.now + self._duration(task, rep.rollouts), task.task_id, rep))

    def next_report(self, timeout: float | None = None) -> Report | None:
        if not self._heap:
            return None
        self.now, _, rep = heapq.heappop(self._heap)
        return rep

    def close(self) -> None:
        self._heap.clear()


#: Resident memory of one worker process (measured: about 50 MB RSS with numpy and scipy loaded).
WORKER_BYTES = 50 * 2**20


def _process_executor(plant_factory: Callable[[], Plant], workers: int, *, task_timeout: float | None = None,
                      **_: Any) -> Executor:
    from ..errors import SettingsError
    from ..model.validation import require_memory
    from .processes import ProcessExecutor

    require_memory(workers * WORKER_BYTES, f"workers {workers}: starting {workers} worker processes (about "
                   f"{WORKER_BYTES >> 20} MB each)", SettingsError)

    return ProcessExecutor(plant_factory, workers, task_timeout=task_timeout)


def _ray_executor(plant_factory: Callable[[], Plant], workers: int, *, task_timeout: float | None = None,
                  ray_address: str | None = None, **_: Any) -> Executor:
    from .ray_actors import RayExecutor

    return RayExecutor(plant_factory, workers, address=ray_address, task_timeout=task_timeout)


#: Backend name -> executor constructor.
BACKENDS: dict[str, Callable[..., Executor]] = {
    "serial": SerialExecutor,
    "async": _process_executor,
    "sync": _process_executor,
    "simulated": SimulatedExecutor,
    "simulated-sync": SimulatedExecutor,
    "ray": _ray_executor,
}
#: Backends whose loop waits for every worker each round (synchronous baseline).
SYNCHRONOUS = {"sync", "simulated-sync"}


def make_executor(name: str, plant_factory: Callable[[], Plant], workers: int, **options: Any) -> Executor:
    """Executor ``name`` with ``workers`` workers, each building its plant with ``plant_factory``.

    Raises
    ------
    SettingsError
        For an unknown backend.
    """
    from ..errors import SettingsError

    if name not in BACKENDS:
        raise SettingsError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return BACKENDS[name](plant_factory, workers, **options)
