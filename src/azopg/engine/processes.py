"""Worker processes on this machine (the ``async`` and ``sync`` backends).

Each worker is a process with its own plant, connected to the master by a duplex pipe:
it receives a :class:`~azopg.method.tasks.Task`, runs it, sends the
:class:`~azopg.method.tasks.Report` back and waits for the next task (which carries the
master's latest gain). The master waits on all pipes at once
(:func:`multiprocessing.connection.wait`) and so applies reports in arrival order.

Workers start from a fork server with BLAS limited to one thread, ignore SIGINT (the
master stops them), exit when their pipe closes (or the fork server, their parent, exits), and are
terminated, then killed, by :meth:`ProcessExecutor.close`.

Faults: a worker that dies (end of file on its pipe, or its process sentinel) or keeps a
task longer than the task timeout is killed and replaced by a fresh process with the same
worker id; its tasks in flight are reported lost (:class:`WorkerLoss`) and never applied.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import selectors
import signal
import statistics
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import numpy as np

from ..errors import AzopgError
from ..method.tasks import Report, Task, run_task
from ..plants.base import Plant

__all__ = ["ProcessExecutor", "TaskFailed", "TaskTimer", "WorkerError", "WorkerLoss", "run_or_fail", "worker_main"]

#: Workers run at a lower scheduling priority than the master, whose prompt replies keep them busy.
WORKER_NICENESS = 5

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                "NUMEXPR_NUM_THREADS")


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def worker_main(conn: Connection, plant_factory: Callable[[], Plant]) -> None:
    """A worker's loop: task in, report out, until the pipe closes (the master stopped or
    died: only the master holds the other end) or a ``None`` task arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)  # the master is the serial bottleneck: let it win the CPU
    _die_with_parent()  # the fork server, which exits when the master does
    plant = plant_factory()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        msg = run_or_fail(plant, task)
        try:
            conn.send(msg)
        except (BrokenPipeError, OSError):
            return


class TaskFailed(NamedTuple):
    """Sent by a worker instead of a report when its plant raised."""

    task_id: int
    worker: int
    error: str


def run_or_fail(plant: Plant, task: Task) -> Report | TaskFailed:
    """A worker's answer to ``task``: its report, or a :class:`TaskFailed` naming the error and
    where it was raised if the plant raised (the master then stops the run)."""
    try:
        return run_task(plant, task)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return TaskFailed(task.task_id, task.worker,
                          f"{type(exc).__name__}: {exc} ({os.path.basename(where.filename)}:{where.lineno})")


@dataclass
class WorkerLoss:
    """A worker process that died or hung, and what was lost with it.

    Attributes
    ----------
    worker : int
        Worker id (the replacement keeps it).
    pid, new_pid : int or None
        Process ids of the lost worker and of its replacement.
    reason : str
        ``"died (exit code -9)"``, ``"timed out ..."``.
    tasks : list of Task
        Tasks that were in flight on it and are abandoned (a task that :meth:`ProcessExecutor.run`
        waits for is re-sent to the replacement instead and is not listed).
    """

    worker: int
    pid: int | None
    new_pid: int | None
    reason: str
    tasks: list[Task] = field(default_factory=list)


class WorkerError(AzopgError, RuntimeError):
    """Workers keep failing: a plant that raises, or processes that die again and again."""


#: Default task timeout: ``max(TIMEOUT_FACTOR * median seconds per rollout * rollouts of the task,
#: MIN_TIMEOUT)``, once ``MIN_SAMPLES`` tasks have returned (no timeout before).
TIMEOUT_FACTOR, MIN_TIMEOUT, MIN_SAMPLES = 10.0, 5.0, 3
#: Seconds between scans of the tasks' deadlines (a tenth of ``task_timeout`` if that is shorter).
DEADLINE_SCAN = 0.1


def expected_rollouts(task: Task) -> int:
    """Rollouts a task will run (an upper bound for a check: plants choose their evaluation states)."""
    if task.kind == "estimate":
        return 2 * task.N if task.method == "two-point" else task.N
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

    def timeout_for(self, task: Task) -> float | None:
        """Seconds after which ``task`` is abandoned (``None``: no timeout yet)."""
        if self.task_timeout is not None:
            return self.task_timeout
        if len(self._per_rollout) < MIN_SAMPLES:
            return None
        if self._median is None:
            self._median = statistics.median(self._per_rollout)
        return max(TIMEOUT_FACTOR * self._median * expected_rollouts(task), MIN_TIMEOUT)

    def observe(self, per_rollout: float) -> None:
        """Record a returned task's seconds per rollout."""
        self._per_rollout.append(per_rollout)
        self._median = None

    @property
    def scan_period(self) -> float:
        """Seconds between scans for overdue tasks: :data:`DEADLINE_SCAN`, or a tenth of
        ``task_timeout`` if that is shorter."""
        return DEADLINE_SCAN if self.task_timeout is None else min(DEADLINE_SCAN, self.task_timeout / 10)


class ProcessExecutor:
    """``workers`` worker processes; tasks and reports travel over pipes.

    A worker that dies (its pipe reaches end of file or its process sentinel fires) or
    does not return a task within the timeout is killed and replaced by a fresh process
    with the same worker id; its tasks in flight are abandoned (reported to
    :attr:`on_lost`; a late report of an abandoned task is ignored), except the one
    :meth:`run` waits for, which is re-sent. More than ``2 W + 3`` losses without a report
    in between raise :class:`WorkerError`, as does a plant that raises in a worker.

    Parameters
    ----------
    plant_factory : callable
        Picklable; builds each worker's own plant.
    workers : int
        Number of processes.
    task_timeout : float, optional
        Seconds after which a task is abandoned. Default: derived from the observed
        median time per rollout (see :data:`TIMEOUT_FACTOR`).
    """

    def __init__(self, plant_factory: Callable[[], Plant], workers: int, task_timeout: float | None = None) -> None:
        self.workers = int(workers)
        self._factory = plant_factory
        self._procs: list[mp.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._ready: deque[Report] = deque()
        self._closed = False
        self._selector = selectors.DefaultSelector()
        self._next_scan = 0.0  # when task deadlines are next scanned
        #: per worker, the tasks sent and not yet answered: [task, start time or None while queued]
        self._inflight: list[deque[list[Any]]] = [deque() for _ in range(self.workers)]
        self._timer = TaskTimer(task_timeout)
        self._waiting_for: int | None = None  # task id run() waits for
        self._retries: dict[int, int] = {}
        self._losses_in_row = 0
        #: called with a :class:`WorkerLoss` right after a worker was replaced
        self.on_lost: Callable[[WorkerLoss], None] | None = None
        self.replaced = 0
        self.ignored = 0  # reports of abandoned tasks

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [p.pid for p in self._procs if p is not None and p.pid is not None]

    def start(self) -> None:
        for w in range(self.workers):
            self._procs.append(None)  # type: ignore[arg-type]
            self._conns.append(None)  # type: ignore[arg-type]
            self._spawn(w)

    def _spawn(self, w: int) -> None:
        saved = {k: os.environ.get(k) for k in _THREAD_VARS}
        os.environ.update({k: "1" for k in _THREAD_VARS})
        try:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["numpy", "scipy.linalg", "azopg.method.tasks"])
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=worker_main, args=(child, self._factory),
                               name=f"azopg-worker-{w}", daemon=True)
            proc.start()
            child.close()
            self._procs[w] = proc
            self._conns[w] = parent
            self._selector.register(parent, selectors.EVENT_READ, ("pipe", w))
            self._selector.register(proc.sentinel, selectors.EVENT_READ, ("sentinel", w))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    # ------------------------------------------------------------- timeouts
    def timeout_for(self, task: Task) -> float | None:
        """Seconds after which ``task`` is abandoned (``None``: no timeout yet)."""
        return self._timer.timeout_for(task)

    def observe(self, per_rollout: float) -> None:
        """Record a returned task's seconds per rollout (the default timeout follows their median)."""
        self._timer.observe(per_rollout)

    def _deadline(self, w: int) -> float | None:
        if not self._inflight[w]:
            return None
        task, started = self._inflight[w][0]
        limit = self.timeout_for(task)
        return None if limit is None or started is None else started + limit

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for w in range(self.workers):
            due = self._deadline(w)
            if due is not None and now >= due:
                task, started = self._inflight[w][0]
                self._replace(w, f"timed out: task {task.task_id} not back after {now - started:.1f} s "
                                 f"(timeout {self.timeout_for(task):.3g} s)")

    # ----------------------------------------------------------- messaging
    def run(self, task: Task) -> Report:
        """Run ``task`` and wait for it; reports of other tasks that arrive meanwhile
        stay queued, in order, for :meth:`next_report`. If its worker is lost, the same
        task is sent to the replacement (up to 3 times)."""
        self._waiting_for = task.task_id
        try:
            self.submit(task)
            while (rep := take_report(self._ready, task.task_id)) is None:
                self._fill(timeout=None)
            return rep
        finally:
            self._waiting_for = None

    def submit(self, task: Task) -> None:
        w = task.worker
        try:
            self._conns[w].send(task)
        except (BrokenPipeError, ConnectionResetError):
            self._drain(w)
            self._replace(w, self._death_reason(w))
            self._conns[w].send(task)
        self._inflight[w].append([task, None if self._inflight[w] else time.monotonic()])

    def next_report(self, timeout: float | None = None) -> Report | None:
        if not self._ready:
            self._fill(timeout)
        return self._ready.popleft() if self._ready else None

    def idle_workers(self) -> list[int]:
        """Workers with no task in flight and no report waiting to be read (a replaced worker)."""
        busy = {rep.worker for rep in self._ready}
        return [w for w in range(self.workers) if not self._inflight[w] and w not in busy]

    def _fill(self, timeout: float | None) -> None:
        """Read one message from every pipe that is ready, so no worker starves behind a
        lower-numbered one; replace workers that died or whose task is overdue.

        The pipes and process sentinels stay registered with one selector (epoll on Linux)
        for the executor's life, so a wait costs one system call whatever ``W``; deadlines
        are scanned at most every :data:`DEADLINE_SCAN` seconds."""
        now = time.monotonic()
        scan_in = max(0.0, self._next_scan - now)
        timeout = scan_in if timeout is None else min(timeout, scan_in)
        dead: set[int] = set()
        for key, _ in self._selector.select(timeout):
            kind, w = key.data
            if kind == "sentinel":  # the worker exited: reports it sent before dying still count
                self._drain(w)
                dead.add(w)
            elif not self._read(w):
                dead.add(w)
        for w in sorted(dead):
            self._replace(w, self._death_reason(w))
        if time.monotonic() >= self._next_scan:
            self._check_deadlines()
            self._next_scan = time.monotonic() + self._timer.scan_period

    def _read(self, w: int) -> bool:
        """Read one message from worker ``w``'s pipe (it is ready); ``False`` at end of file."""
        try:
            self._accept(w, self._conns[w].recv())
        except (EOFError, OSError):
            return False
        return True

    def _drain(self, w: int) -> bool:
        """Read every message waiting on worker ``w``'s pipe; ``False`` at end of file."""
        conn = self._conns[w]
        try:
            while conn.poll():
                self._accept(w, conn.recv())
        except (EOFError, OSError):
            return False
        return True

    def _accept(self, w: int, msg: Report | TaskFailed) -> None:
        queue = self._inflight[w]
        i = next((i for i, (task, _) in enumerate(queue) if task.task_id == msg.task_id), None)
        if i is None:  # a task abandoned meanwhile: ignore its report
            self.ignored += 1
            return
        now = time.monotonic()
        started = queue[i][1]
        del queue[i]
        if i == 0 and queue:
            queue[0][1] = now  # the worker starts on its next task now
        if isinstance(msg, TaskFailed):
            raise WorkerError(f"worker {w}: task {msg.task_id} failed: {msg.error}")
        if started is not None and msg.rollouts > 0:
            self.observe((now - started) / msg.rollouts)
        self._losses_in_row = 0
        self._ready.append(msg)

    def _death_reason(self, w: int) -> str:
        proc = self._procs[w]
        proc.join(1.0)
        return f"died (exit code {proc.exitcode})" if proc.exitcode is not None else "closed its pipe"

    def _replace(self, w: int, reason: str) -> None:
        """Kill worker ``w`` if still alive, start a fresh process with its id and tell :attr:`on_lost`."""
        old = self._procs[w]
        if old.is_alive():
            old.kill()
        old.join(2.0)
        for obj in (self._conns[w], old.sentinel):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(obj)
        with contextlib.suppress(Exception):
            self._conns[w].close()
        lost = [task for task, _ in self._inflight[w]]
        self._inflight[w].clear()
        self._losses_in_row += 1
        if self._losses_in_row > 2 * self.workers + 3:
            raise WorkerError(f"worker {w} (pid {old.pid}) {reason}; {self._losses_in_row} workers lost "
                              "without a report in between: giving up")
        self._spawn(w)
        self.replaced += 1
        retry = [task for task in lost if task.task_id == self._waiting_for]
        lost = [task for task in lost if task.task_id != self._waiting_for]
        notice = WorkerLoss(w, old.pid, self._procs[w].pid, reason, lost)
        if self.on_lost is not None:
            self.on_lost(notice)
        for task in retry:
            self._retries[task.task_id] = self._retries.get(task.task_id, 0) + 1
            if self._retries[task.task_id] > 3:
                raise WorkerError(f"task {task.task_id} was lost 4 times (last: worker {w} {reason})")
            self.submit(task)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        procs = [p for p in self._procs if p is not None]
        conns = [c for c in self._conns if c is not None]
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        deadline = time.monotonic() + 2.0
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        for conn in conns:
            conn.close()
        self._selector.close()
