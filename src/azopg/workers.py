"""Worker processes on this machine (the ``async`` and ``sync`` backends).

Each worker is a process with its own plant, connected to the master by a duplex pipe:
it receives a :class:`~azopg.tasks.Task`, runs it, sends the
:class:`~azopg.tasks.Report` back and waits for the next task (which carries the
master's latest gain). The master waits on all pipes at once
(:func:`multiprocessing.connection.wait`) and so applies reports in arrival order.

Workers start from a fork server with BLAS limited to one thread, ignore SIGINT (the
master stops them), exit when their pipe closes (or the fork server, their parent, exits), and are
terminated, then killed, by :meth:`ProcessExecutor.close`.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

from .plant import Plant
from .tasks import Report, Task, run_task

__all__ = ["ProcessExecutor", "worker_main"]

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
    _die_with_parent()  # the fork server, which exits when the master does
    plant = plant_factory()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            conn.send(run_task(plant, task))
        except (BrokenPipeError, OSError):
            return


class ProcessExecutor:
    """``workers`` worker processes; tasks and reports travel over pipes.

    Parameters
    ----------
    plant_factory : callable
        Picklable; builds each worker's own plant.
    workers : int
        Number of processes.
    """

    def __init__(self, plant_factory: Callable[[], Plant], workers: int) -> None:
        self.workers = int(workers)
        self._factory = plant_factory
        self._procs: list[mp.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._ready: deque[Report] = deque()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [p.pid for p in self._procs if p.pid is not None]

    def start(self) -> None:
        saved = {k: os.environ.get(k) for k in _THREAD_VARS}
        os.environ.update({k: "1" for k in _THREAD_VARS})
        try:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["numpy", "scipy.linalg", "azopg.tasks"])
            for w in range(self.workers):
                parent, child = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=worker_main, args=(child, self._factory),
                                   name=f"azopg-worker-{w}", daemon=True)
                proc.start()
                child.close()
                self._procs.append(proc)
                self._conns.append(parent)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def run(self, task: Task) -> Report:
        """Run ``task`` and wait for it; reports of other tasks that arrive meanwhile
        stay queued, in order, for :meth:`next_report`."""
        self.submit(task)
        while True:
            for i, rep in enumerate(self._ready):
                if rep.task_id == task.task_id:
                    del self._ready[i]
                    return rep
            self._fill(timeout=None)

    def submit(self, task: Task) -> None:
        self._conns[task.worker].send(task)

    def next_report(self, timeout: float | None = None) -> Report | None:
        if not self._ready:
            self._fill(timeout)
        return self._ready.popleft() if self._ready else None

    def _fill(self, timeout: float | None) -> None:
        """Read every pipe that is ready, so no worker starves behind a lower-numbered one."""
        for conn in wait(self._conns, timeout):
            try:
                self._ready.append(conn.recv())
            except (EOFError, OSError):
                w = self._conns.index(conn)
                raise RuntimeError(f"worker {w} (pid {self._procs[w].pid}) died") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        deadline = time.monotonic() + 2.0
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        for conn in self._conns:
            conn.close()
