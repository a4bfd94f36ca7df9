"""Worker processes on this machine (the ``async`` and ``sync`` backends).

Each worker is a process with its own plant, connected to the master by a duplex pipe:
it receives a :class:`~azopg.method.tasks.Task`, runs it, sends the
:class:`~azopg.method.tasks.Report` back and waits for the next task (which carries the
master's latest gain). The master waits on all pipes at once (one selector) and so
applies reports in arrival order.

Workers start from a fork server with BLAS limited to one thread, ignore SIGINT (the
master stops them), exit when their pipe closes (or the fork server, their parent, exits), and are
terminated, then killed, by :meth:`ProcessExecutor.close`.

Faults: a worker that dies (end of file on its pipe, or its process sentinel) or keeps a
task longer than the task timeout is killed and replaced by a fresh process with the same
worker id; its tasks in flight are reported lost (:class:`WorkerLoss`) and never applied.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import pickle
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import forkserver
from multiprocessing.connection import Connection

from ..method.tasks import Report, Task
from ..plants.base import Plant
from .executor import THREAD_VARS, WorkerError, WorkerLoss, single_thread_env
from .inflight import InFlight, RemoteExecutor, TaskFailed, run_or_fail
from .traffic import WorkerTraffic

__all__ = ["ProcessExecutor", "worker_main"]

#: Workers run at a lower scheduling priority than the master, whose prompt replies keep them busy.
WORKER_NICENESS = 5
_NOT_STARTED = "the process executor has no workers yet (call start() first)"


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while a worker is being started; they are delivered when it is.

    Starting a worker connects to the fork server and then writes the process's data to the new
    child. A SIGTERM handled in between (the CLI raises it as an exception in the main thread)
    left the child reading end of file, and it printed a traceback on the user's terminal. The fork
    server itself is started first, outside: a process inherits the signal mask across fork and exec,
    and workers must stay terminable.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    forkserver.ensure_running()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def worker_main(conn: Connection, plant_factory: Callable[[], Plant]) -> None:
    """A worker's loop: task in, report out, until the pipe closes (the master stopped or
    died: only the master holds the other end) or a ``None`` task arrives.

    Each answer travels as ``(report, cpu, sent)``: the worker's CPU seconds on the task (running it and
    pickling the report) and :func:`time.monotonic` when it was sent (the clock is the machine's, shared
    with the master): :class:`WorkerTraffic`."""
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
        c0 = time.process_time()
        msg = run_or_fail(plant, task)
        body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            conn.send_bytes(pickle.dumps((body, time.process_time() - c0, time.monotonic()),
                                         protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, OSError):
            return


class ProcessExecutor(RemoteExecutor):
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
        median time per rollout (see :class:`~azopg.engine.inflight.TaskTimer`).
    """

    def __init__(self, plant_factory: Callable[[], Plant], workers: int, *, task_timeout: float | None = None) -> None:
        super().__init__(workers, task_timeout)
        self._factory = plant_factory
        self._procs: list[mp.process.BaseProcess | None] = []
        self._conns: list[Connection | None] = []
        self._closed = False
        self._selector = selectors.DefaultSelector()
        #: per worker, the tasks sent and not yet answered, oldest first
        self._inflight: list[deque[InFlight]] = [deque() for _ in range(self.workers)]
        self._retries: dict[int, int] = {}
        self._losses_in_row = 0
        self.traffic = WorkerTraffic()
        self._freed: dict[int, float] = {}  # worker -> time.monotonic when it sent a report and had no task left

    def start(self) -> None:
        t0 = time.perf_counter()
        self._procs = [None] * self.workers
        self._conns = [None] * self.workers
        for w in range(self.workers):
            self._spawn(w)
        self.traffic.start += time.perf_counter() - t0
        self.traffic.started = time.monotonic()

    def summary(self) -> dict[str, float | int | None]:
        """The workers' traffic (:class:`WorkerTraffic`) for ``result.json`` stats."""
        return self.traffic.summary(self.workers)

    def _spawn(self, w: int) -> None:
        saved = {k: os.environ.get(k) for k in THREAD_VARS}
        os.environ.update(single_thread_env())
        try:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["numpy", "scipy.linalg", "azopg.method.tasks"])
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=worker_main, args=(child, self._factory),
                               name=f"azopg-worker-{w}", daemon=True)
            with _signals_held():  # a signal is delivered once the worker is started and recorded
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

    # ----------------------------------------------------------- messaging
    def _records(self) -> Iterable[InFlight]:
        return itertools.chain.from_iterable(self._inflight)

    def _slot_records(self, slot: int) -> Iterable[InFlight]:
        return self._inflight[slot]

    def submit(self, task: Task) -> None:
        w = task.worker
        task = self.with_deadline(task)
        body = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._conn(w).send_bytes(body)
        except (BrokenPipeError, ConnectionResetError):
            self._drain(w)
            self._replace(w, self._death_reason(w))
            self._conn(w).send_bytes(body)
        now = time.monotonic()
        t = self.traffic
        t.bytes_out += len(body)
        t.tasks += 1
        t.first = min(t.first, now)
        if len(t.sent_to) < self.workers:
            t.sent_to.add(w)
            if len(t.sent_to) == self.workers:
                t.all_busy = now - t.started
        freed = self._freed.pop(w, None)
        if freed is not None:
            t.idle += max(now - freed, 0.0)
        self._inflight[w].append(self._record(task, w))

    def _conn(self, w: int) -> Connection:
        conn = self._conns[w]
        if conn is None:
            raise RuntimeError(_NOT_STARTED)
        return conn

    def _proc(self, w: int) -> mp.process.BaseProcess:
        proc = self._procs[w]
        if proc is None:
            raise RuntimeError(_NOT_STARTED)
        return proc

    def _wait(self, timeout: float) -> None:
        """Read one message from every pipe that is ready, so no worker starves behind a
        lower-numbered one; replace workers that died.

        The pipes and process sentinels stay registered with one selector (epoll on Linux)
        for the executor's life, so a wait costs one system call whatever ``W``."""
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

    def _overdue(self, rec: InFlight, waited: float, limit: float) -> None:
        self._replace(rec.slot, f"timed out: task {rec.task.task_id} not back after {waited:.1f} s "
                                f"(timeout {limit:.3g} s)")

    def _read(self, w: int) -> bool:
        """Read one message from worker ``w``'s pipe (it is ready); ``False`` at end of file."""
        try:
            self._accept(w, self._conn(w).recv_bytes())
        except (EOFError, OSError):
            return False
        return True

    def _drain(self, w: int) -> bool:
        """Read every message waiting on worker ``w``'s pipe; ``False`` at end of file."""
        conn = self._conn(w)
        try:
            while conn.poll():
                self._accept(w, conn.recv_bytes())
        except (EOFError, OSError):
            return False
        return True

    def _accept(self, w: int, raw: bytes) -> None:
        """A worker's answer, ``(report, cpu, sent)`` pickled (:func:`worker_main`), counted in :attr:`traffic`."""
        body, cpu, sent = pickle.loads(raw)
        msg: Report | TaskFailed = pickle.loads(body)
        t = self.traffic
        t.bytes_in += len(body)
        t.worker_cpu += cpu
        t.reports += 1
        t.rollouts += msg.rollouts if isinstance(msg, Report) else 0
        t.last = max(t.last, time.monotonic())
        queue = self._inflight[w]
        i = next((i for i, rec in enumerate(queue) if rec.task.task_id == msg.task_id), None)
        if i is None:  # a task abandoned meanwhile: ignore its report
            return
        rec = queue[i]
        del queue[i]
        if not queue:  # the worker waits for its next task from now on
            self._freed[w] = sent
        self._losses_in_row = 0
        self._answered(rec, msg, time.monotonic())

    # -------------------------------------------------------------- faults
    def _death_reason(self, w: int) -> str:
        proc = self._proc(w)
        proc.join(1.0)
        return f"died (exit code {proc.exitcode})" if proc.exitcode is not None else "closed its pipe"

    def _replace(self, w: int, reason: str) -> None:
        """Kill worker ``w`` if still alive, start a fresh process with its id and tell :attr:`on_lost`."""
        old = self._proc(w)
        if old.is_alive():
            old.kill()
        old.join(2.0)
        for obj in (self._conns[w], old.sentinel):
            with contextlib.suppress(KeyError, ValueError):
                if obj is not None:
                    self._selector.unregister(obj)
        with contextlib.suppress(Exception):
            self._conn(w).close()
        self._freed.pop(w, None)
        lost = [rec.task for rec in self._inflight[w]]
        self._inflight[w].clear()
        self._losses_in_row += 1
        if self._losses_in_row > 2 * self.workers + 3:
            raise WorkerError(f"worker {w} (pid {old.pid}) {reason}; {self._losses_in_row} workers lost "
                              "without a report in between: giving up")
        self._spawn(w)
        retry = [task for task in lost if task.task_id == self._waiting_for]
        lost = [task for task in lost if task.task_id != self._waiting_for]
        new = self._procs[w]
        self._notify(WorkerLoss(w, old.pid, new.pid if new is not None else None, reason, lost))
        for task in retry:
            self._retries[task.task_id] = self._retries.get(task.task_id, 0) + 1
            if self._retries[task.task_id] > 3:
                raise WorkerError(f"task {task.task_id} was lost 4 times (last: worker {w} {reason})")
            self.submit(task)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        t0 = time.perf_counter()
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
        self.traffic.stop = time.perf_counter() - t0
