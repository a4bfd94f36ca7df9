"""Workers as Ray actors (the ``ray`` backend): the same master, on one machine or a cluster.

Each worker is a Ray actor that keeps its own plant; a task is an actor call
(``actor.run.remote(task)``) and the master's loop waits on the calls in flight with
:func:`ray.wait`, applying whichever report is ready and handing that worker a new task
with the current gain -- the asynchronous loop of :mod:`azopg.run.train`, unchanged. Per
update, a :class:`~azopg.method.tasks.Task` travels out (the gain ``K``, its version and a few
scalars) and a :class:`~azopg.method.tasks.Report` travels back (the ``m x n`` estimate, or in
communication-light mode the seed's ``N`` scalar weights).

Without an address the executor starts a private Ray instance on this machine (no
dashboard, a small object store, every listener on 127.0.0.1, Ray's own log lines kept
out of the terminal) and shuts it down at :meth:`RayExecutor.close`. With
``address="HOST:PORT"`` it joins a cluster started with ``ray start --head`` and, at
close, only kills its own actors: the cluster keeps running.

Faults: an actor whose process dies is restarted by Ray (up to
:data:`MAX_RESTARTS` times) and the master sends its call in flight again, once the call
has failed (so the loss is reported to the master at once, like a replaced worker
process). An actor that keeps dying is dropped with a warning and its worker's tasks run
on the remaining actors (a task's random draws depend on its worker id, not on the process
that runs it).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ..method.tasks import Task
from ..plants.base import Plant
from .executor import WorkerError, WorkerLoss, single_thread_env
from .inflight import InFlight, RemoteExecutor, run_or_fail
from .ray_session import AUTH_MODE_ENV, LOOPBACK_ENV, connect, first_line, import_ray, ray_session

# The connection helpers live in ray_session.py; they stay importable from here.
__all__ = ["AUTH_MODE_ENV", "LOOPBACK_ENV", "MAX_RESTARTS", "RayExecutor", "connect", "import_ray", "ray_session"]

#: Times Ray restarts a worker actor whose process died before the actor is dropped.
MAX_RESTARTS = 3
#: Seconds :meth:`RayExecutor.close` waits for the calls in flight on a shared connection.
CLOSE_WAIT = 2.0


class RayWorker:
    """A worker actor: its own plant, built once; one task per call.

    Tasks and reports cross as pickled bytes (Ray moves bytes faster than dataclasses
    holding arrays). A call returns ``(pid, report)`` so the master notices a restarted
    process; a plant that raises returns a :class:`~azopg.engine.inflight.TaskFailed` instead.
    """

    def __init__(self, plant_factory: Callable[[], Plant]) -> None:
        self.plant = plant_factory()

    def run(self, payload: bytes) -> bytes:
        msg = run_or_fail(self.plant, pickle.loads(payload))
        return pickle.dumps((os.getpid(), msg), protocol=pickle.HIGHEST_PROTOCOL)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(RemoteExecutor):
    """``workers`` Ray actors; the master waits on their calls with :func:`ray.wait`.

    Parameters
    ----------
    plant_factory : callable
        Serializable by Ray (cloudpickle); builds each actor's own plant.
    workers : int
    address : str, optional
        ``"HOST:PORT"`` of a running cluster (``ray start --head``), ``"auto"`` for the
        cluster on this machine. Default: a private local instance. If Ray is already
        initialized in this process, that connection is used and left open.
    task_timeout : float, optional
        Seconds after which a call is given up: its actor is killed, Ray restarts it and
        the master sends the call again. Default: as for worker processes
        (:class:`~azopg.engine.inflight.TaskTimer`).
    """

    def __init__(self, plant_factory: Callable[[], Plant], workers: int, *, address: str | None = None,
                 task_timeout: float | None = None) -> None:
        super().__init__(workers, task_timeout)
        self.address = address
        self._factory = plant_factory
        self._ray: Any = None
        self._started = False  # whether this executor started Ray (and so shuts it down)
        self._actors: list[Any] = []
        self._pids: list[int | None] = []
        self._route: list[int] = list(range(self.workers))  # worker id -> index of the actor running it
        self._alive: list[bool] = []
        #: calls in flight, in the order sent: object ref -> record (its slot is the actor's index)
        self._pending: dict[Any, InFlight] = {}
        self._restarting: set[int] = set()  # actors Ray is restarting (reported, not yet seen back)
        self._attempts: dict[int, int] = {}  # task id -> times sent again after its actor died
        self._closed = False
        self.namespace = f"azopg-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # --------------------------------------------------------------- set-up
    @property
    def actor_names(self) -> list[str]:
        """Names of the worker actors (in :attr:`namespace`), for ``ray.get_actor``."""
        return [f"azopg-worker-{w}" for w in range(self.workers)]

    def start(self) -> None:
        ray = self._ray = import_ray(self.address)
        if not ray.is_initialized():
            connect(self.address, self.workers)
            self._started = True
        total = float(ray.cluster_resources().get("CPU", 1.0))
        # one CPU each while the cluster has enough, else an equal share: many workers that
        # mostly wait (a slow plant) still all get scheduled
        cpus = min(1.0, total / self.workers)
        actor_class = ray.remote(RayWorker)
        options = dict(num_cpus=cpus, max_restarts=MAX_RESTARTS, max_task_retries=0, scheduling_strategy="SPREAD",
                       namespace=self.namespace, runtime_env={"env_vars": single_thread_env()})
        self._actors = [actor_class.options(name=name, **options).remote(self._factory) for name in self.actor_names]
        self._alive = [True] * self.workers
        try:
            self._pids = list(ray.get([a.pid.remote() for a in self._actors]))
        except ray.exceptions.RayActorError as exc:
            raise WorkerError(f"a Ray worker actor failed to start: {first_line(exc)}") from None

    # ------------------------------------------------------------ messaging
    def _records(self) -> Iterable[InFlight]:
        return self._pending.values()

    def submit(self, task: Task) -> None:
        a = self._route[task.worker]
        ref = self._actors[a].run.remote(pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL))
        self._pending[ref] = self._record(task, a)

    def _wait(self, timeout: float) -> None:
        """Collect a finished call (the oldest ready one), unless ``timeout`` passes first."""
        refs = list(self._pending)
        if refs:
            ready, _ = self._ray.wait(refs, num_returns=1, timeout=timeout)
            for ref in ready:
                self._collect(ref)

    def _collect(self, ref: Any) -> None:
        ray = self._ray
        rec = self._pending.pop(ref)
        task, a = rec.task, rec.slot
        now = time.monotonic()
        self._start_next(a, now)
        try:
            pid, msg = pickle.loads(ray.get(ref))
        except ray.exceptions.RayActorError as exc:
            self._actor_failed(a, task, exc)
            return
        except ray.exceptions.RayError as exc:  # e.g. the task could not be unpickled on that node
            cause = getattr(exc, "cause", None) or exc
            raise WorkerError(f"worker {task.worker}: task {task.task_id} failed in Ray: "
                              f"{type(cause).__name__}: {first_line(cause)}") from None
        self._attempts.pop(task.task_id, None)
        self._answered(rec, msg, now)
        if pid != self._pids[a]:  # a new process: Ray restarted the actor
            old, self._pids[a] = self._pids[a], pid
            if a in self._restarting:  # reported when its call failed
                self._restarting.discard(a)
            else:
                self._notify(WorkerLoss(task.worker, old, pid, "was restarted by Ray"))

    # --------------------------------------------------------------- faults
    def _actor_failed(self, a: int, task: Task, exc: BaseException) -> None:
        """A call on actor ``a`` failed because its process died. While Ray restarts the actor
        (up to :data:`MAX_RESTARTS` times) the same task is sent to it again; an actor Ray gave
        up on is dropped."""
        unavailable = getattr(self._ray.exceptions, "ActorUnavailableError", ())
        tries = self._attempts.get(task.task_id, 0)
        if isinstance(exc, unavailable) and tries <= MAX_RESTARTS:  # being restarted
            self._attempts[task.task_id] = tries + 1
            if a not in self._restarting:
                self._restarting.add(a)
                self._notify(WorkerLoss(task.worker, self._pids[a], None,
                                        "lost its process; Ray restarts it and the task in flight is sent again"))
            self.submit(task)
        else:
            self._drop(a, task, first_line(exc))

    def _drop(self, a: int, task: Task, reason: str) -> None:
        """Ray gave up on actor ``a``: stop using it, run its workers' tasks elsewhere."""
        if self._alive[a]:
            self._alive[a] = False
            with contextlib.suppress(Exception):
                self._ray.kill(self._actors[a], no_restart=True)
        live = [b for b in range(len(self._actors)) if self._alive[b]]
        if not live:
            raise WorkerError(f"every Ray worker actor died (last: {reason})")
        moved = [w for w in range(self.workers) if self._route[w] == a]
        for w in moved:
            self._route[w] = min(live, key=lambda b: (sum(r == b for r in self._route), b))
        if moved:
            self._notify(WorkerLoss(task.worker, self._pids[a], None,
                                    f"died more than {MAX_RESTARTS} times ({reason}); dropped, its tasks now run "
                                    f"on worker actor {self._route[task.worker]}"))
        self.submit(task)  # the same task (same draws) on a live actor

    def _overdue(self, rec: InFlight, now: float, limit: float) -> None:
        """Kill the actor for Ray to restart it; its calls fail and are sent again (no deadline until then)."""
        assert rec.started is not None
        started, a = rec.started, rec.slot
        first = True
        for other in self._slot_records(a):
            other.started, first = (now if first else None), False
        with contextlib.suppress(Exception):
            self._ray.kill(self._actors[a], no_restart=False)
        self._restarting.add(a)
        self._notify(WorkerLoss(rec.task.worker, self._pids[a], None,
                                f"timed out: task {rec.task.task_id} not back after {now - started:.1f} s "
                                f"(timeout {limit:.3g} s); killed for Ray to restart it and retry the task"))

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Stop the workers: shut the private instance down, or (on a shared connection) let
        the calls in flight finish (up to :data:`CLOSE_WAIT` seconds) and kill the actors."""
        if self._closed or self._ray is None:
            return
        self._closed = True
        ray = self._ray
        if self._started:
            with contextlib.suppress(Exception):
                ray.shutdown()
            return
        with contextlib.suppress(Exception):  # killing an actor mid-call makes Ray print a retry notice
            refs = list(self._pending)
            if refs:
                ray.wait(refs, num_returns=len(refs), timeout=CLOSE_WAIT)
        self._pending.clear()
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)


