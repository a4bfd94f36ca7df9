"""Executors: how tasks reach workers. One small protocol, several backends.

A backend only moves :class:`~azopg.tasks.Task` objects out and
:class:`~azopg.tasks.Report` objects back; the algorithm lives in
:mod:`azopg.master` and the loop in :mod:`azopg.learner`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from .plant import Plant
from .tasks import Report, Task, run_task

__all__ = ["Executor", "SerialExecutor", "BACKENDS", "make_executor"]


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

    def __init__(self, plant_factory: Callable[[], Plant], workers: int = 1) -> None:
        if workers != 1:
            raise ValueError("the serial backend has exactly one worker")
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


BACKENDS: dict[str, type] = {"serial": SerialExecutor}


def make_executor(name: str, plant_factory: Callable[[], Plant], workers: int) -> Executor:
    """Executor ``name`` with ``workers`` workers, each building its plant with ``plant_factory``."""
    from .errors import SettingsError

    if name not in BACKENDS:
        raise SettingsError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return BACKENDS[name](plant_factory, workers)
