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
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import SettingsError
from ..method.tasks import Report, Task
from ..plants.base import Plant
from .processes import TaskFailed, TaskTimer, WorkerError, WorkerLoss, run_or_fail, take_report

__all__ = ["MAX_RESTARTS", "RayExecutor", "connect", "import_ray", "ray_session"]

log = logging.getLogger("azopg")

#: Times Ray restarts a worker actor whose process died before the actor is dropped.
MAX_RESTARTS = 3
#: Environment of the worker actors: numerical libraries on one thread each.
WORKER_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
#: Seconds to wait for a TCP connection to a cluster's address before giving up.
CONNECT_TIMEOUT = 5.0
#: Seconds :meth:`RayExecutor.close` waits for the calls in flight on a shared connection.
CLOSE_WAIT = 2.0
#: Object store of a private local instance, bytes (tasks and reports are a few hundred bytes).
LOCAL_OBJECT_STORE = 100 * 1024**2
#: Ray's switch that makes every listener of an instance started here bind to 127.0.0.1;
#: read once, when Ray is first imported.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Ray's authentication mode switch (``token`` or ``disabled``).
AUTH_MODE_ENV = "RAY_AUTH_MODE"


def import_ray(address: str | None = None) -> Any:
    """Import Ray, or raise :class:`SettingsError` with the install hint.

    For a private local instance (no ``address``) or a cluster on this machine's loopback
    interface, Ray is told before its first import to keep every address on 127.0.0.1
    (else it swaps 127.0.0.1 for the machine's outward address).
    """
    loopback = address is None or _is_loopback(address)
    if loopback:
        os.environ.setdefault(LOOPBACK_ENV, "0")  # for Ray's processes, and Ray if not yet imported
    try:
        import ray
    except ImportError:
        raise SettingsError("the ray backend needs Ray: pip install 'azopg[ray]'") from None
    if loopback and os.environ.get(LOOPBACK_ENV) == "0":
        # Ray read the switch when it was first imported (perhaps before us): apply it now
        with contextlib.suppress(Exception):
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def _host_port(address: str) -> tuple[str, int | None]:
    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host:
        return text, None
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return text, None


def _is_loopback(address: str) -> bool:
    host, _ = _host_port(address)
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _check_reachable(address: str) -> None:
    """Fail fast, in one line, if nothing listens at ``HOST:PORT`` (Ray itself retries for minutes)."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, port = _host_port(address)
    if port is None:
        raise SettingsError(f"cannot join the Ray cluster at {address!r}: expected HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise SettingsError(f"cannot join the Ray cluster at {address!r}: "
                            f"{exc.strerror or type(exc).__name__} (is `ray start --head` running there?)") from None


class RayWorker:
    """A worker actor: its own plant, built once; one task per call.

    Tasks and reports cross as pickled bytes (Ray moves bytes faster than dataclasses
    holding arrays). A call returns ``(pid, report)`` so the master notices a restarted
    process; a plant that raises returns a :class:`~azopg.engine.processes.TaskFailed` instead.
    """

    def __init__(self, plant_factory: Callable[[], Plant]) -> None:
        self.plant = plant_factory()

    def run(self, payload: bytes) -> bytes:
        msg = run_or_fail(self.plant, pickle.loads(payload))
        return pickle.dumps((os.getpid(), msg), protocol=pickle.HIGHEST_PROTOCOL)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor:
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
        (:class:`~azopg.engine.processes.TaskTimer`).
    """

    def __init__(self, plant_factory: Callable[[], Plant], workers: int, *, address: str | None = None,
                 task_timeout: float | None = None) -> None:
        self.workers = int(workers)
        self.address = address
        self._factory = plant_factory
        self._ray: Any = None
        self._started = False  # whether this executor started Ray (and so shuts it down)
        self._actors: list[Any] = []
        self._pids: list[int | None] = []
        self._route: list[int] = list(range(self.workers))  # worker id -> index of the actor running it
        self._alive: list[bool] = []
        #: calls in flight: object ref -> [task, actor index, start time or None while queued]
        self._pending: dict[Any, list[Any]] = {}
        self._ready: deque[Report] = deque()
        self._timer = TaskTimer(task_timeout)
        self._next_scan = 0.0  # when the calls' deadlines are next scanned
        self._restarting: set[int] = set()  # actors Ray is restarting (reported, not yet seen back)
        self._attempts: dict[int, int] = {}  # task id -> times sent again after its actor died
        self._closed = False
        self.namespace = f"azopg-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        #: called with a :class:`~azopg.engine.processes.WorkerLoss` when an actor was restarted or dropped
        self.on_lost: Callable[[WorkerLoss], None] | None = None
        self.replaced = 0
        self.dropped = 0

    # --------------------------------------------------------------- set-up
    @property
    def actor_names(self) -> list[str]:
        """Names of the worker actors (in :attr:`namespace`), for ``ray.get_actor``."""
        return [f"azopg-worker-{w}" for w in range(self.workers)]

    @property
    def pids(self) -> list[int]:
        """Process ids of the live actors (as last seen)."""
        return [p for p, alive in zip(self._pids, self._alive, strict=True) if alive and p is not None]

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
        options = dict(num_cpus=cpus, max_restarts=MAX_RESTARTS, max_task_retries=0,
                       scheduling_strategy="SPREAD", namespace=self.namespace, runtime_env={"env_vars": WORKER_ENV})
        self._actors = [actor_class.options(name=name, **options).remote(self._factory) for name in self.actor_names]
        self._alive = [True] * self.workers
        try:
            self._pids = list(ray.get([a.pid.remote() for a in self._actors]))
        except ray.exceptions.RayActorError as exc:
            raise WorkerError(f"a Ray worker actor failed to start: {_first_line(exc)}") from None

    # ------------------------------------------------------------ messaging
    def submit(self, task: Task) -> None:
        a = self._route[task.worker]
        ref = self._actors[a].run.remote(pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL))
        busy = any(entry[1] == a for entry in self._pending.values())
        self._pending[ref] = [task, a, None if busy else time.monotonic()]

    def run(self, task: Task) -> Report:
        """Run ``task`` and wait for it; other reports that arrive meanwhile stay queued."""
        self.submit(task)
        while (rep := take_report(self._ready, task.task_id)) is None:
            self._fill(timeout=None)
        return rep

    def next_report(self, timeout: float | None = None) -> Report | None:
        if not self._ready:
            self._fill(timeout)
        return self._ready.popleft() if self._ready else None

    def idle_workers(self) -> list[int]:
        """Worker ids with no call in flight and no report waiting."""
        busy = {entry[0].worker for entry in self._pending.values()} | {rep.worker for rep in self._ready}
        return [w for w in range(self.workers) if w not in busy]

    def _fill(self, timeout: float | None) -> None:
        """Collect a finished call (the oldest ready one), unless ``timeout`` passes first;
        deadlines are scanned at most every :data:`~azopg.engine.processes.DEADLINE_SCAN` seconds."""
        refs = list(self._pending)
        if not refs:
            return
        now = time.monotonic()
        scan_in = max(0.0, self._next_scan - now)
        timeout = scan_in if timeout is None else min(timeout, scan_in)
        ready, _ = self._ray.wait(refs, num_returns=1, timeout=timeout)
        for ref in ready:
            self._collect(ref)
        if time.monotonic() >= self._next_scan:
            self._check_deadlines()
            self._next_scan = time.monotonic() + self._timer.scan_period

    def _collect(self, ref: Any) -> None:
        ray = self._ray
        task, a, started = self._pending.pop(ref)
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
                              f"{type(cause).__name__}: {_first_line(cause)}") from None
        self._attempts.pop(task.task_id, None)
        if isinstance(msg, TaskFailed):
            raise WorkerError(f"worker {msg.worker}: task {msg.task_id} failed: {msg.error}")
        if pid != self._pids[a]:  # a new process: Ray restarted the actor
            old, self._pids[a] = self._pids[a], pid
            if a in self._restarting:  # reported when its call failed
                self._restarting.discard(a)
            else:
                self.replaced += 1
                self._notify(WorkerLoss(task.worker, old, pid, "was restarted by Ray"))
        if started is not None and msg.rollouts > 0:
            self._timer.observe((now - started) / msg.rollouts)
        self._ready.append(msg)

    def _start_next(self, a: int, now: float) -> None:
        """Actor ``a`` finished a call: its next queued call starts now."""
        for entry in self._pending.values():
            if entry[1] == a:
                if entry[2] is None:
                    entry[2] = now
                return

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
                self.replaced += 1
                self._notify(WorkerLoss(task.worker, self._pids[a], None,
                                        "lost its process; Ray restarts it and the task in flight is sent again"))
            self.submit(task)
        else:
            self._drop(a, task, _first_line(exc))

    def _drop(self, a: int, task: Task, reason: str) -> None:
        """Ray gave up on actor ``a``: stop using it, run its workers' tasks elsewhere."""
        if self._alive[a]:
            self._alive[a] = False
            self.dropped += 1
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

    def _notify(self, loss: WorkerLoss) -> None:
        if self.on_lost is not None:
            self.on_lost(loss)

    # ------------------------------------------------------------- timeouts
    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for task, a, started in list(self._pending.values()):
            limit = self._timer.timeout_for(task)
            if started is not None and limit is not None and now >= started + limit:
                first = True
                for entry in self._pending.values():
                    if entry[1] == a:  # its calls fail and are sent again: no deadline until then
                        entry[2], first = (now if first else None), False
                with contextlib.suppress(Exception):
                    self._ray.kill(self._actors[a], no_restart=False)
                self._restarting.add(a)
                self.replaced += 1
                self._notify(WorkerLoss(task.worker, self._pids[a], None,
                                        f"timed out: task {task.task_id} not back after {now - started:.1f} s "
                                        f"(timeout {limit:.3g} s); killed for Ray to restart it and retry the task"))
                return

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


def connect(address: str | None = None, workers: int = 1) -> Any:
    """Start a private local Ray instance (``address=None``) or join the cluster at ``address``.

    The local instance counts ``max(CPUs, workers)`` CPUs: every worker gets one, as worker
    processes do (Ray otherwise warns about starting more workers than CPUs).

    The local instance is quiet: no dashboard, a small object store, listeners on
    127.0.0.1 only, the workers' output and Ray's log lines kept out of the terminal. The
    caller's SIGINT and SIGTERM handlers are kept (``ray.init`` installs its own).

    Raises
    ------
    SettingsError
        If Ray is missing, or the instance cannot be started or the cluster reached.
    """
    ray = import_ray(address)
    if address is not None:
        _check_reachable(address)
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    if address is None:
        cpus = max(os.cpu_count() or 1, workers)
        kwargs.update(address="local", num_cpus=cpus, object_store_memory=LOCAL_OBJECT_STORE,
                      _system_config={"worker_maximum_startup_concurrency": cpus},
                      _node_ip_address="127.0.0.1")
    else:
        kwargs.update(address=address)
        if _is_loopback(address):
            kwargs.update(_node_ip_address="127.0.0.1")
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    noise = ""
    try:
        with _quiet_logger("ray"), _captured_stderr() as captured:
            try:
                ray.init(**kwargs)
            finally:
                noise = captured()
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        where = f"join the Ray cluster at {address!r}" if address else "start a local Ray instance"
        hint = ""
        if "Authentication" in noise or "auth" in str(exc).lower():
            hint = (f" (the cluster wants token authentication: set {AUTH_MODE_ENV}=token, with the head's token in "
                    "~/.ray/auth_token or RAY_AUTH_TOKEN)")
        raise SettingsError(f"cannot {where}: {_first_line(exc)}{hint}") from None
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, workers: int = 1) -> Iterator[Any]:
    """Ray connected for the block (several runs share it); shut down at its end if started here."""
    ray = import_ray(address)
    started = not ray.is_initialized()
    if started:
        connect(address, workers)
    try:
        yield ray
    finally:
        if started:
            with contextlib.suppress(Exception):
                ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """Send file descriptor 2 to a temporary file for the block (Ray's core prints its
    connection retries there); yields a function returning what was captured."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)

        def text() -> str:
            sys.stderr.flush()
            tmp.seek(0)
            return tmp.read().decode(errors="replace")

        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Only errors from the Python logger ``name`` for the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
