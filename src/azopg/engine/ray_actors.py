"""Workers as Ray actors (the ``ray`` backend): the same master, on one machine or a cluster.

Each worker is a Ray actor that keeps its own plant; a task is an actor call
(``actor.run.remote(task)``) and the master's loop waits on the calls in flight with
:func:`ray.wait`, applying whichever report is ready and handing that worker a new task
with the current gain -- the asynchronous loop of :mod:`azopg.engine.loops`, unchanged. Per
update, a :class:`~azopg.method.tasks.Task` travels out (the gain ``K``, its version and a few
scalars) and a :class:`~azopg.method.tasks.Report` travels back (the ``m x n`` estimate, or in
communication-light mode the seed's ``N`` scalar weights).

A Ray call costs milliseconds of CPU (the driver's and the actor's) whatever it carries, so
each worker holds :data:`RAY_DEPTH` tasks (``depth``) and one call carries them all: the tasks
handed to a worker while the master applied the reports of its last call are sent together,
just before the master waits again. Each task keeps its own identity (its draws), version
and report; the reports come back together and are applied one by one.

Connecting (a private local instance, or a cluster's address) is :mod:`azopg.engine.ray_session`'s;
with an address, :meth:`RayExecutor.close` only kills this run's actors: the cluster keeps running.

Faults: an actor whose process dies -- alone, or with its whole node -- is restarted by Ray
(up to :data:`MAX_RESTARTS` times, on any node with room). Once its call in flight has failed
(so the loss is reported to the master at once, like a replaced worker process) the master
sends that call, and the worker's next ones, to the least busy live actor until a probe call
finds the actor back: a restart that waits for room (its node is gone and the others are
full) does not stall the run, and a node that joins later gets the waiting actors. An actor
that keeps dying is dropped with a warning and its worker's tasks run on the remaining
actors (a task's random draws depend on its worker id, not on the process that runs it).
"""

from __future__ import annotations

import contextlib
import logging
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
from .ray_session import actor_cpus, connect, first_line, import_ray

__all__ = ["MAX_RESTARTS", "RayExecutor"]

#: Times Ray restarts a worker actor whose process died before the actor is dropped.
MAX_RESTARTS = 3
#: Seconds :meth:`RayExecutor.close` waits for the calls in flight on a shared connection.
CLOSE_WAIT = 2.0
#: Seconds between probes of an actor Ray is restarting (a call to it fails at once until it is up).
PROBE_PERIOD = 0.5
#: Tasks each worker actor holds by default, carried by one call.
RAY_DEPTH = 2

log = logging.getLogger("azopg")


class RayWorker:
    """A worker actor: its own plant, built once; a call runs a list of tasks in order.

    Tasks and reports cross as pickled bytes (Ray moves bytes faster than dataclasses
    holding arrays). A call returns ``(pid, answers)`` so the master notices a restarted
    process; the answer of a task whose plant raised is a
    :class:`~azopg.engine.inflight.TaskFailed` instead of its report.
    """

    def __init__(self, plant_factory: Callable[[], Plant]) -> None:
        self.plant = plant_factory()
        self.calls = 0

    def run(self, payload: bytes) -> bytes:
        tasks = pickle.loads(payload)
        self.calls += len(tasks)
        answers = [run_or_fail(self.plant, task) for task in tasks]
        return pickle.dumps((os.getpid(), answers), protocol=pickle.HIGHEST_PROTOCOL)

    def pid(self) -> int:
        return os.getpid()

    def where(self) -> tuple[int, str, int]:
        """This process's id, the id of the Ray node it runs on, and the tasks it ran."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id(), self.calls


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
    depth : int, optional
        Tasks each worker holds, carried by one call (default :data:`RAY_DEPTH`).
    """

    def __init__(self, plant_factory: Callable[[], Plant], workers: int, *, address: str | None = None,
                 task_timeout: float | None = None, depth: int | None = None) -> None:
        super().__init__(workers, task_timeout)
        self.depth = RAY_DEPTH if depth is None else int(depth)
        self.address = address
        self._factory = plant_factory
        self._ray: Any = None
        self._started = False  # whether this executor started Ray (and so shuts it down)
        self._actors: list[Any] = []  # actor a is worker a's own
        self._pids: list[int | None] = []
        self._nodes: list[str | None] = []  # Ray node id of each actor, as last seen
        self._route: list[int] = list(range(self.workers))  # worker id -> index of the actor running it
        self._alive: list[bool] = []
        #: calls in flight, in the order sent: object ref -> record (its slot is the actor's index)
        self._pending: dict[Any, InFlight] = {}
        self._held: dict[int, list[Task]] = {}  # worker id -> tasks handed out, sent as one call at the next wait
        self._restarting: set[int] = set()  # actors Ray is restarting (reported, not yet seen back)
        self._probes: dict[Any, int] = {}  # `where` calls on restarting actors -> actor index
        self._reprobe: dict[int, float] = {}  # restarting actor -> when to probe it again
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
        nodes = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        # no task events: they are for Ray's dashboard and state API, and cost CPU per call
        options = dict(num_cpus=actor_cpus(nodes, self.workers), max_restarts=MAX_RESTARTS, max_task_retries=0,
                       scheduling_strategy="SPREAD", namespace=self.namespace, enable_task_events=False,
                       runtime_env={"env_vars": single_thread_env()})
        actor_class = ray.remote(RayWorker)
        self._actors = [actor_class.options(name=name, **options).remote(self._factory) for name in self.actor_names]
        self._alive = [True] * self.workers
        try:
            where = ray.get([a.where.remote() for a in self._actors])
        except ray.exceptions.RayError as exc:  # died, or could not be scheduled
            raise WorkerError(f"a Ray worker actor failed to start: {first_line(exc)}") from None
        self._pids = [pid for pid, _, _ in where]
        self._nodes = [node for _, node, _ in where]

    # ------------------------------------------------------------ messaging
    def _records(self) -> Iterable[InFlight]:
        return self._pending.values()

    def submit(self, task: Task) -> None:
        """Hold ``task`` for its worker: it is sent, with the worker's other held tasks, just
        before the master next waits (:meth:`_send_held`)."""
        task = self.with_deadline(task)
        self._held.setdefault(task.worker, []).append(task)

    def idle_workers(self) -> list[int]:
        """Worker ids with no task in flight, held or waiting to be applied (none: a lost
        actor's tasks are sent again)."""
        return [w for w in super().idle_workers() if not self._held.get(w)]

    def _send_held(self) -> None:
        """Send each worker's held tasks, up to :attr:`depth` per call, to the actor running its tasks."""
        held, self._held = self._held, {}
        for tasks in held.values():
            for i in range(0, len(tasks), self.depth):
                call = tasks[i:i + self.depth]
                a = self._route[call[0].worker]
                ref = self._actors[a].run.remote(pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL))
                self._pending[ref] = self._record(call[0], a, tuple(call[1:]))

    def _wait(self, timeout: float) -> None:
        """Send the held tasks, then collect every finished call (in the order sent), waiting
        up to ``timeout`` seconds for one if none has finished: one :func:`ray.wait` and one
        :func:`ray.get` for all the reports that queued up while the master was busy."""
        ray = self._ray
        self._send_held()
        now = time.monotonic()
        for a in [a for a, due in self._reprobe.items() if now >= due]:
            del self._reprobe[a]
            self._probes[self._actors[a].where.remote()] = a
        refs = [*self._pending, *self._probes]
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        if not ready and timeout > 0:
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        try:
            values = ray.get(ready)
        except ray.exceptions.RayError:  # one of them failed: take them one by one
            values = [None] * len(ready)
        for ref, value in zip(ready, values, strict=True):
            if ref in self._probes:
                self._probed(ref)
            else:
                self._collect(ref, value)

    def _collect(self, ref: Any, value: bytes | None) -> None:
        ray = self._ray
        rec = self._pending.pop(ref)
        task, a = rec.task, rec.slot
        now = time.monotonic()
        self._start_next(a, now)
        try:
            pid, answers = pickle.loads(value if value is not None else ray.get(ref))
        except ray.exceptions.RayActorError as exc:
            self._actor_failed(a, rec.tasks, exc)
            return
        except ray.exceptions.RayError as exc:  # e.g. the task could not be unpickled on that node
            cause = getattr(exc, "cause", None) or exc
            raise WorkerError(f"worker {task.worker}: task {task.task_id} failed in Ray: "
                              f"{type(cause).__name__}: {first_line(cause)}") from None
        for t in rec.tasks:
            self._attempts.pop(t.task_id, None)
        self._answered(rec, answers[0], now, *answers[1:])
        if pid != self._pids[a]:  # a new process: Ray restarted the actor
            old, self._pids[a] = self._pids[a], pid
            if a not in self._restarting:  # not reported when its call failed
                self._notify(WorkerLoss(task.worker, old, pid, "was restarted by Ray"))

    # --------------------------------------------------------------- faults
    def _actor_failed(self, a: int, tasks: tuple[Task, ...], exc: BaseException) -> None:
        """A call on actor ``a`` failed because its process died. While Ray restarts the actor
        (up to :data:`MAX_RESTARTS` times) the same tasks are sent to a live actor; an actor Ray
        gave up on is dropped."""
        unavailable = getattr(self._ray.exceptions, "ActorUnavailableError", ())
        task = tasks[0]
        tries = self._attempts.get(task.task_id, 0)
        if isinstance(exc, unavailable) and tries <= MAX_RESTARTS:  # being restarted
            for t in tasks:
                self._attempts[t.task_id] = tries + 1
            if a not in self._restarting:
                self._notify(WorkerLoss(task.worker, self._pids[a], None,
                                        f"lost its process{self._node_gone(a)}; {self._restart(a)}"))
            for t in tasks:
                self.submit(t)
        else:
            self._drop(a, tasks, first_line(exc))

    def _node_gone(self, a: int) -> str:
        """``" with its node ID"`` if actor ``a``'s node has left the cluster, else ``""``."""
        with contextlib.suppress(Exception):
            alive = {n["NodeID"] for n in self._ray.nodes() if n.get("Alive")}
            node = self._nodes[a]
            if node is not None and node not in alive:
                return f" with its node {node[:12]}"
        return ""

    def _restart(self, a: int) -> str:
        """Actor ``a`` is being restarted: probe it, and run its workers' tasks on the other
        actors until it is back; says where they run."""
        self._restarting.add(a)
        self._probes[self._actors[a].where.remote()] = a
        usable = [b for b in range(len(self._actors)) if self._alive[b] and b not in self._restarting]
        if not usable:
            return "Ray restarts it and its tasks wait for it"
        for w in range(self.workers):
            if self._route[w] == a:
                self._route[w] = min(usable, key=lambda b: (sum(r == b for r in self._route), b))
        return f"Ray restarts it where there is room, and meanwhile its tasks run on worker actor {self._route[a]}"

    def _probed(self, ref: Any) -> None:
        """A probe of a restarting actor came back: the actor is up again (its worker's tasks go
        back to it), or Ray gave up on it (it is dropped)."""
        ray, a = self._ray, self._probes.pop(ref)
        try:
            pid, node, _ = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            if isinstance(exc, getattr(ray.exceptions, "ActorUnavailableError", ())):
                self._reprobe[a] = time.monotonic() + PROBE_PERIOD  # still restarting: ask again later
            else:
                self._drop(a, (), first_line(exc))
            return
        self._restarting.discard(a)
        self._pids[a], self._nodes[a] = pid, node
        if self._alive[a] and a < self.workers:
            self._route[a] = a
        log.info("azopg: worker actor %d is back (pid %d, node %s); worker %d's tasks run on it again",
                 a, pid, node[:12], a)

    def _drop(self, a: int, tasks: tuple[Task, ...], reason: str) -> None:
        """Ray gave up on actor ``a``: stop using it, run its workers' tasks (and ``tasks``, of
        its failed call) elsewhere."""
        first = self._alive[a]
        if first:
            self._alive[a] = False
            with contextlib.suppress(Exception):
                self._ray.kill(self._actors[a], no_restart=True)
        self._restarting.discard(a)
        live = [b for b in range(len(self._actors)) if self._alive[b]]
        if not live:
            raise WorkerError(f"every Ray worker actor died (last: {reason})")
        for w in range(self.workers):
            if self._route[w] == a:
                self._route[w] = min(live, key=lambda b: (sum(r == b for r in self._route), b))
        worker = tasks[0].worker if tasks else a
        if first:
            self._notify(WorkerLoss(worker, self._pids[a], None,
                                    f"died more than {MAX_RESTARTS} times ({reason}); dropped, its tasks now run "
                                    f"on worker actor {self._route[worker]}"))
        for task in tasks:
            self.submit(task)  # the same task (same draws) on a live actor

    def _overdue(self, rec: InFlight, now: float, limit: float) -> None:
        """Kill the actor for Ray to restart it; its calls fail and are sent again (no deadline until then)."""
        assert rec.started is not None
        started, a = rec.started, rec.slot
        if a in self._restarting:  # already killed: its calls fail soon
            return
        first = True
        for other in self._slot_records(a):
            other.started, first = (now if first else None), False
        with contextlib.suppress(Exception):
            self._ray.kill(self._actors[a], no_restart=False)
        self._notify(WorkerLoss(rec.task.worker, self._pids[a], None,
                                f"timed out: task {rec.task.task_id} not back after {now - started:.1f} s "
                                f"(timeout {limit:.3g} s); killed; {self._restart(a)}"))

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
        self._held.clear()
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)


