"""The executor contract: everything the master's loop asks of a backend.

An executor moves :class:`~azopg.method.tasks.Task` objects out to its workers and
:class:`~azopg.method.tasks.Report` objects back; the update rules live in
:mod:`azopg.method` (:class:`~azopg.method.rule.UpdateRule`) and the loop in
:mod:`azopg.engine.loops`. :class:`Executor` lists every member the loop uses;
:class:`ExecutorBase` gives the defaults, so a backend writes only what differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from ..errors import AzopgError
from ..method.tasks import Report, Task

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["THREAD_VARS", "Executor", "ExecutorBase", "ExecutorOptions", "WorkerError", "WorkerLoss",
           "single_thread_env"]

#: Environment variables that set the thread count of the numerical libraries.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def single_thread_env() -> dict[str, str]:
    """Environment of a worker: every numerical library on one thread (W workers share the cores)."""
    return {k: "1" for k in THREAD_VARS}


@dataclass
class WorkerLoss:
    """A worker that died or hung, and what was lost with it (given to :attr:`Executor.on_lost`).

    Attributes
    ----------
    worker : int
        Worker id (the replacement keeps it).
    pid, new_pid : int or None
        Process ids of the lost worker and of its replacement (``None``: not known).
    reason : str
        ``"died (exit code -9)"``, ``"timed out ..."``.
    tasks : list of Task
        Tasks that were in flight on it and are abandoned (a task sent again to the
        replacement is not listed).
    """

    worker: int
    pid: int | None
    new_pid: int | None
    reason: str
    tasks: list[Task] = field(default_factory=list)


class WorkerError(AzopgError, RuntimeError):
    """Workers keep failing: a plant that raises, or processes that die again and again."""


@dataclass(frozen=True)
class ExecutorOptions:
    """What a backend may need beyond the plant factory and the worker count; each executor
    takes only its own (see :func:`azopg.engine.backends.make_executor`).

    Attributes
    ----------
    per_rollout : float
        Virtual seconds per rollout (simulated workers).
    latency_model : str
        Random factor of a task's duration (simulated workers; see
        :func:`azopg.plants.latency.latency_factor`).
    seed : int
        Root seed of the simulated durations.
    task_timeout : float, optional
        Seconds after which a task is abandoned (worker processes, Ray actors).
    ray_address : str, optional
        Ray cluster to join (Ray actors).
    depth : int, optional
        Tasks each worker holds at once (Ray actors; default
        :data:`~azopg.engine.ray_actors.RAY_DEPTH`).
    """

    per_rollout: float = 0.01
    latency_model: str = "constant"
    seed: int = 0
    task_timeout: float | None = None
    ray_address: str | None = None
    depth: int | None = None

    @classmethod
    def of(cls, settings: Settings) -> ExecutorOptions:
        """The options a run with ``settings`` gives its executor."""
        return cls(per_rollout=settings.rollout_latency or 0.01, latency_model=settings.latency_model,
                   seed=settings.seed, task_timeout=settings.task_timeout, ray_address=settings.ray_address,
                   depth=settings.depth)


class Executor(Protocol):
    """Moves tasks to workers and reports back to the master."""

    workers: int
    #: Tasks the asynchronous loop keeps in flight per worker (a worker runs them one after the other).
    depth: int
    #: Called with a :class:`WorkerLoss` when a worker was replaced or dropped (``None``: nobody listens).
    on_lost: Callable[[WorkerLoss], None] | None
    #: Seconds on :meth:`clock` after which a blocking ``run`` gives up (``None``: no budget).
    budget: float | None
    #: Seconds at the end of the budget kept for the run's closing measurement.
    reserve: Callable[[], float]

    def start(self) -> None:
        """Bring the workers up."""

    def set_clock(self, elapsed: float = 0.0) -> None:
        """Start :meth:`clock` at ``elapsed`` seconds now (a resumed run's clock continues)."""

    def clock(self) -> float:
        """Seconds since the run's start: wall clock for real workers, virtual for simulated ones."""

    def run(self, task: Task) -> Report:
        """Run one task to completion (calibration, checks); reports of other tasks stay queued."""

    def submit(self, task: Task) -> None:
        """Hand a task to its worker (``task.worker``) without waiting."""

    def next_report(self, timeout: float | None = None) -> Report | None:
        """The next finished report, or ``None`` if none arrived within ``timeout``."""

    def ready_reports(self) -> list[Report]:
        """The reports that have already arrived, in order, without waiting (the rest of a take)."""

    def idle_workers(self) -> list[int]:
        """Workers with no task in flight and no report waiting (one replaced after a loss)."""

    def close(self) -> None:
        """Stop every worker; safe to call twice."""


def _no_reserve() -> float:
    return 0.0


class ExecutorBase:
    """Defaults of the :class:`Executor` contract: a wall clock, no idle workers, nothing to close.

    Parameters
    ----------
    workers : int
    """

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        #: Tasks the asynchronous loop keeps in flight per worker: one by default.
        self.depth = 1
        self.on_lost: Callable[[WorkerLoss], None] | None = None
        #: Seconds on :meth:`clock` after which a blocking ``run`` gives up (raises :class:`~azopg.errors.OutOfTime`).
        self.budget: float | None = None
        #: Seconds at the end of the budget kept for the run's closing measurement (the serial executor's
        #: tasks end before; see :class:`~azopg.engine.backends.SerialExecutor`).
        self.reserve: Callable[[], float] = _no_reserve
        self._t0 = time.perf_counter()

    def start(self) -> None:
        """Bring the workers up (nothing to do by default)."""

    def set_clock(self, elapsed: float = 0.0) -> None:
        """Start :meth:`clock` at ``elapsed`` seconds now."""
        self._t0 = time.perf_counter() - elapsed

    def clock(self) -> float:
        """Wall-clock seconds since :meth:`set_clock` (or since the executor was made)."""
        return time.perf_counter() - self._t0

    def idle_workers(self) -> list[int]:
        """No worker is ever lost, so none is idle."""
        return []

    def with_deadline(self, task: Task) -> Task:
        """``task`` stamped with the end of :attr:`budget` as its deadline (:attr:`~azopg.method.tasks.Task.deadline`,
        on :func:`time.monotonic`), past which it stops between rollouts; unchanged without a budget. Not the loop's
        end (less :attr:`reserve`): a task cut there, when the reserve shrinks later, would leave its worker idle
        while the loop goes on; a cut task means the budget is spent, so the run ends."""
        if self.budget is None:
            return task
        return replace(task, deadline=time.monotonic() + self.budget - self.clock())

    def ready_reports(self) -> list[Report]:
        """None: the serial and simulated executors hand reports over one at a time (a simulated
        master takes no time, so it never has a backlog)."""
        return []

    def _notify(self, loss: WorkerLoss) -> None:
        """Tell :attr:`on_lost` about ``loss``, if anyone listens."""
        if self.on_lost is not None:
            self.on_lost(loss)

    def close(self) -> None:
        """Stop every worker (nothing to do by default)."""
