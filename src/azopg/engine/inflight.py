"""Tasks in flight on remote workers: the part worker processes and Ray actors share.

:class:`RemoteExecutor` keeps the queue of reports that arrived, :meth:`~RemoteExecutor.run`
(in terms of ``submit`` and the transport's wait), the start time of each worker's task
and the scan for overdue ones (:class:`TaskTimer`); a subclass adds its transport
(``submit``, :meth:`~RemoteExecutor._wait`, the records of its calls) and what it does
with a worker that died or hung (:meth:`~RemoteExecutor._overdue`).
"""

from __future__ import annotations

import os
import statistics
import time
import traceback
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import OutOfTime
from ..method.kinds import TaskKind
from ..method.tasks import Report, Task, estimate_rollouts, run_task
from ..plants.base import Plant
from .executor import ExecutorBase, WorkerError

__all__ = ["DEADLINE_SCAN", "MIN_SAMPLES", "MIN_TIMEOUT", "TIMEOUT_FACTOR", "InFlight", "RemoteExecutor",
           "TaskFailed", "TaskTimer", "expected_rollouts", "run_or_fail", "take_report"]

#: Default task timeout: ``max(TIMEOUT_FACTOR * median seconds per rollout * rollouts of the task,
#: MIN_TIMEOUT)``, once ``MIN_SAMPLES`` tasks have returned (no timeout before).
TIMEOUT_FACTOR, MIN_TIMEOUT, MIN_SAMPLES = 10.0, 5.0, 3
#: Seconds between scans of the tasks' deadlines (a tenth of ``task_timeout`` if that is shorter).
DEADLINE_SCAN = 0.1


class TaskFailed(NamedTuple):
    """Sent by a worker instead of a report when its plant raised, or (``cut``) when the task stopped at the run's
    deadline (:class:`~azopg.errors.OutOfTime`: the master drops it)."""

    task_id: int
    worker: int
    error: str
    cut: bool = False


def run_or_fail(plant: Plant, task: Task) -> Report | TaskFailed:
    """A worker's answer to ``task``: its report, or a :class:`TaskFailed` naming the error and
    where it was raised if the plant raised (the master then stops the run)."""
    try:
        return run_task(plant, task)
    except OutOfTime as exc:
        return TaskFailed(task.task_id, task.worker, str(exc), cut=True)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return TaskFailed(task.task_id, task.worker,
                          f"{type(exc).__name__}: {exc} ({os.path.basename(where.filename)}:{where.lineno})")


def expected_rollouts(task: Task) -> int:
    """Rollouts a task will run (an upper bound for a check: plants choose their evaluation states)."""
    if task.kind == TaskKind.ESTIMATE:
        return estimate_rollouts(task.method, task.N)
    return 2 * max(int(np.shape(task.K)[-1]), 8)


def take_report(ready: deque[Report], task_id: int) -> Report | None:
    """Remove and return the report of task ``task_id`` from ``ready`` (``None`` if not there)."""
    for i, rep in enumerate(ready):
        if rep.task_id == task_id:
            del ready[i]
            return rep
    return None


class TaskTimer:
    """When a task is overdue: ``task_timeout`` if given, else ``max(TIMEOUT_FACTOR x median
    seconds per rollout x rollouts of the task, MIN_TIMEOUT)`` once ``MIN_SAMPLES`` tasks
    have returned (no timeout before)."""

    def __init__(self, task_timeout: float | None = None) -> None:
        self.task_timeout = task_timeout
        self._per_rollout: deque[float] = deque(maxlen=101)
        self._median: float | None = None  # of _per_rollout, kept up to date

    def timeout_for(self, task: Task, *more: Task) -> float | None:
        """Seconds after which ``task`` (run before ``more``, the other tasks of its call, if
        any) is abandoned (``None``: no timeout yet). A ``task_timeout`` given bounds the whole call."""
        if self.task_timeout is not None:
            return self.task_timeout
        if len(self._per_rollout) < MIN_SAMPLES:
            return None
        if self._median is None:
            self._median = statistics.median(self._per_rollout)
        rollouts = sum(expected_rollouts(t) for t in (task, *more))
        return max(TIMEOUT_FACTOR * self._median * rollouts, MIN_TIMEOUT)

    def observe(self, per_rollout: float) -> None:
        """Record a returned task's seconds per rollout."""
        self._per_rollout.append(per_rollout)
        self._median = None

    @property
    def scan_period(self) -> float:
        """Seconds between scans for overdue tasks: :data:`DEADLINE_SCAN`, or a tenth of
        ``task_timeout`` if that is shorter."""
        return DEADLINE_SCAN if self.task_timeout is None else min(DEADLINE_SCAN, self.task_timeout / 10)


@dataclass
class InFlight:
    """A task sent to a worker and not yet answered.

    Attributes
    ----------
    task : Task
    slot : int
        Where it runs: the worker process (its worker id) or the Ray actor (its index).
    started : float or None
        :func:`time.monotonic` when the slot started on it; ``None`` while it waits behind
        an earlier task of the same slot (only a running task can be overdue).
    more : tuple of Task
        Tasks sent in the same call, run after ``task`` (a Ray call carries a worker's
        tasks together); they are timed, answered and lost with it.
    """

    task: Task
    slot: int
    started: float | None
    more: tuple[Task, ...] = ()

    @property
    def tasks(self) -> tuple[Task, ...]:
        """``task`` and the tasks of its call, in the order they run."""
        return (self.task, *self.more)


class RemoteExecutor(ExecutorBase):
    """Workers elsewhere (processes, Ray actors): reports queue up as they arrive.

    A subclass provides ``submit`` (which records each call with :meth:`_record`),
    :meth:`_records`, :meth:`_wait` and :meth:`_overdue`; it hands every answer to
    :meth:`_answered`.

    Parameters
    ----------
    workers : int
    task_timeout : float, optional
        Seconds after which a task is overdue (default: see :class:`TaskTimer`).
    """

    def __init__(self, workers: int, task_timeout: float | None = None) -> None:
        super().__init__(workers)
        self._ready: deque[Report] = deque()
        self._timer = TaskTimer(task_timeout)
        self._next_scan = 0.0  # when the deadlines are next scanned
        self._waiting_for: int | None = None  # task id run() waits for

    # ---------------------------------------------------------- transport
    def _records(self) -> Iterable[InFlight]:
        """Every task in flight, oldest first for each slot."""
        raise NotImplementedError

    def _slot_records(self, slot: int) -> Iterable[InFlight]:
        """The tasks in flight on ``slot``, oldest first."""
        return (rec for rec in self._records() if rec.slot == slot)

    def _wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for answers and hand them to :meth:`_answered`."""
        raise NotImplementedError

    def _overdue(self, rec: InFlight, waited: float, limit: float) -> None:
        """``rec`` has run for ``waited`` seconds, more than ``limit``: give its slot up."""
        raise NotImplementedError

    # ------------------------------------------------------------- shared
    def run(self, task: Task) -> Report:
        """Run ``task`` and wait for it; reports of other tasks that arrive meanwhile
        stay queued, in order, for :meth:`next_report`.

        Raises
        ------
        OutOfTime
            If :attr:`budget` runs out first (the task is left in flight).
        """
        self._waiting_for = task.task_id
        try:
            self.submit(task)  # type: ignore[attr-defined]
            while (rep := take_report(self._ready, task.task_id)) is None:
                if self.budget is not None and self.clock() >= self.budget:
                    raise OutOfTime(f"the time budget ran out waiting for {task.kind} task {task.task_id}")
                self._fill(timeout=None)
            return rep
        finally:
            self._waiting_for = None

    def next_report(self, timeout: float | None = None) -> Report | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._fill(remaining)
        return self._ready.popleft()

    def ready_reports(self) -> list[Report]:
        """Every report already received or waiting on a pipe now, in order."""
        self._fill(0.0)
        taken = list(self._ready)
        self._ready.clear()
        return taken

    def idle_workers(self) -> list[int]:
        """Worker ids with no task in flight and no report waiting (one just replaced)."""
        busy = {rec.task.worker for rec in self._records()} | {rep.worker for rep in self._ready}
        return [w for w in range(self.workers) if w not in busy]

    def _record(self, task: Task, slot: int, more: tuple[Task, ...] = ()) -> InFlight:
        """The record of ``task`` (and ``more``, sent in the same call) just sent to ``slot``:
        running now unless the slot is busy."""
        busy = next(iter(self._slot_records(slot)), None) is not None
        return InFlight(task, slot, None if busy else time.monotonic(), more)

    def _fill(self, timeout: float | None) -> None:
        """Wait for answers until ``timeout`` (``None``: until the next deadline scan), then
        scan the deadlines if due (at most every :attr:`TaskTimer.scan_period` seconds)."""
        scan_in = max(0.0, self._next_scan - time.monotonic())
        self._wait(scan_in if timeout is None else min(timeout, scan_in))
        if time.monotonic() >= self._next_scan:
            self._check_deadlines()
            self._next_scan = time.monotonic() + self._timer.scan_period

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for rec in list(self._records()):
            limit = self._timer.timeout_for(*rec.tasks)
            if rec.started is not None and limit is not None and now >= rec.started + limit:
                self._overdue(rec, now - rec.started, limit)

    def _answered(self, rec: InFlight, msg: Report | TaskFailed, now: float, *more: Report | TaskFailed) -> None:
        """``rec`` (no longer in :meth:`_records`) was answered at ``now`` with ``msg`` (and
        ``more``, the answers to ``rec.more``): its slot starts on its next task; the reports
        join the queue in order (a failure stops the run)."""
        self._start_next(rec.slot, now)
        reports: list[Report] = []
        for answer in (msg, *more):
            if isinstance(answer, TaskFailed) and answer.cut:  # stopped at the deadline: the run is ending
                continue
            if isinstance(answer, TaskFailed):
                raise WorkerError(f"worker {answer.worker}: task {answer.task_id} failed: {answer.error}")
            reports.append(answer)
        rollouts = sum(rep.rollouts for rep in reports)
        if rec.started is not None and rollouts > 0:
            self._timer.observe((now - rec.started) / rollouts)
        self._ready.extend(reports)

    def _start_next(self, slot: int, now: float) -> None:
        """``slot`` is free: its oldest queued task starts now."""
        head = next(iter(self._slot_records(slot)), None)
        if head is not None and head.started is None:
            head.started = now
