"""Backends: a name for the user, an executor and a loop policy for the run.

A backend only moves :class:`~azopg.method.tasks.Task` objects out and
:class:`~azopg.method.tasks.Report` objects back (the contract is
:class:`~azopg.engine.executor.Executor`); the algorithm lives in
:mod:`azopg.method` and the loops in :mod:`azopg.engine.loops`. Whether the loop
waits for every worker each round (``"sync"``) or applies each report at once
(``"async"``) is the loop's policy, not the executor's: :data:`BACKENDS` maps each name to both.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import numpy as np

from ..errors import OutOfTime, SettingsError
from ..method.lifecycle import OVERRUN, PACE_MARGIN
from ..method.tasks import Report, Task, run_task
from ..plants.base import Plant
from ..plants.latency import latency_factor
from .executor import Executor, ExecutorBase, ExecutorOptions

__all__ = ["BACKENDS", "Executor", "ExecutorOptions", "SerialExecutor", "SimulatedExecutor", "check_backend",
           "executor_kind", "loop_policy", "make_executor"]

ExecutorKind = Literal["serial", "processes", "simulated", "ray"]
LoopPolicy = Literal["async", "sync"]


class SerialExecutor(ExecutorBase):
    """One worker in the calling process: tasks run when their report is asked for.

    The time budget (:attr:`budget`) is held however long a task runs (a noisy plant's rollouts take
    time in proportion to the horizon): a task that the last task of its kind predicts (seconds per unit
    of horizon and of :attr:`~azopg.method.tasks.Task.size` -- a batch that doubled doubles a task's time --,
    times :data:`~azopg.method.lifecycle.PACE_MARGIN`) would end more than
    :data:`~azopg.method.lifecycle.OVERRUN` s past the budget (less :attr:`reserve`) is not started; the
    executor waits out the budget instead and reports nothing.
    """

    def __init__(self, plant_factory: Callable[[], Plant]) -> None:
        super().__init__(1)
        self._factory = plant_factory
        self._queue: deque[Task] = deque()
        self.plant: Plant | None = None
        #: Seconds per unit of horizon and of size (:attr:`~azopg.method.tasks.Task.size`) of the last task, by kind.
        self.pace: dict[str, float] = {}

    def start(self) -> None:
        if self.plant is None:
            self.plant = self._factory()

    def adopt(self, plant: Plant, factory: Callable[[], Plant]) -> None:
        """Run on ``plant``, which the caller built with ``factory``, if this executor's plants come from that
        factory (not, e.g., wrapped with a latency): one plant is built, not two."""
        if factory is self._factory:
            self.plant = plant

    def run(self, task: Task) -> Report:
        assert self.plant is not None, "start() first"
        return run_task(self.plant, self.with_deadline(task))

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def next_report(self, timeout: float | None = None) -> Report | None:
        if not self._queue:
            return None
        task = self._queue[0]
        start = self.clock()
        if self.budget is not None:
            end = self.budget - self.reserve()
            if start + PACE_MARGIN * self.pace.get(task.kind, 0.0) * task.tau * task.size > end + OVERRUN:
                time.sleep(max(end - start, 0.0))  # the budget ends before the task would
                return None
        self._queue.popleft()
        assert self.plant is not None, "start() first"
        try:
            rep = run_task(self.plant, self.with_deadline(task))
        except OutOfTime:  # cut at the budget's end: no report, the loop ends the run
            return None
        self.pace[task.kind] = (self.clock() - start) / (task.tau * task.size)
        return rep

    def close(self) -> None:
        self._queue.clear()


class SimulatedExecutor(ExecutorBase):
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
                 model: str = "constant", seed: int = 0) -> None:
        super().__init__(workers)
        self._factory = plant_factory
        self.per_rollout = per_rollout
        self.model = model
        self.seed = seed
        self._now = 0.0
        self._heap: list[tuple[float, int, Report]] = []
        self.plant: Plant | None = None

    def set_clock(self, elapsed: float = 0.0) -> None:
        """Set the virtual clock to ``elapsed`` seconds."""
        self._now = elapsed

    def clock(self) -> float:
        """Virtual seconds since the start."""
        return self._now

    def start(self) -> None:
        self.plant = self._factory()

    def _duration(self, task: Task, rollouts: int) -> float:
        if self.model == "constant":  # no draw: spares building a generator per task
            return rollouts * self.per_rollout
        rng = np.random.default_rng([self.seed, task.worker, task.task_id, 1])
        return rollouts * self.per_rollout * latency_factor(self.model, rng)

    def run(self, task: Task) -> Report:
        assert self.plant is not None, "start() first"
        rep = run_task(self.plant, task)
        self._now += self._duration(task, rep.rollouts)
        return rep

    def submit(self, task: Task) -> None:
        assert self.plant is not None, "start() first"
        rep = run_task(self.plant, task)
        heapq.heappush(self._heap, (self._now + self._duration(task, rep.rollouts), task.task_id, rep))

    def next_report(self, timeout: float | None = None) -> Report | None:
        if not self._heap:
            return None
        done, _, rep = heapq.heappop(self._heap)
        self._now = max(self._now, done)  # a report done during a blocking probe is received after it
        return rep

    def close(self) -> None:
        self._heap.clear()


def _serial(plant_factory: Callable[[], Plant], workers: int, o: ExecutorOptions) -> Executor:
    return SerialExecutor(plant_factory)


def _simulated(plant_factory: Callable[[], Plant], workers: int, o: ExecutorOptions) -> Executor:
    return SimulatedExecutor(plant_factory, workers, per_rollout=o.per_rollout, model=o.latency_model, seed=o.seed)


#: Resident memory of one worker process (measured: about 50 MB RSS with numpy and scipy loaded).
WORKER_BYTES = 50 * 2**20


def _processes(plant_factory: Callable[[], Plant], workers: int, o: ExecutorOptions) -> Executor:
    from ..model.validation import require_memory
    from .processes import ProcessExecutor

    require_memory(workers * WORKER_BYTES, f"workers {workers}: starting {workers} worker processes (about "
                   f"{WORKER_BYTES >> 20} MB each)", SettingsError)

    return ProcessExecutor(plant_factory, workers, task_timeout=o.task_timeout)


def _ray(plant_factory: Callable[[], Plant], workers: int, o: ExecutorOptions) -> Executor:
    from .ray_actors import RayExecutor

    return RayExecutor(plant_factory, workers, address=o.ray_address, task_timeout=o.task_timeout, depth=o.depth)


#: Executor kind -> constructor, given only the options that kind takes.
_EXECUTORS: dict[str, Callable[[Callable[[], Plant], int, ExecutorOptions], Executor]] = {
    "serial": _serial, "processes": _processes, "simulated": _simulated, "ray": _ray,
}
#: Backend name (``--backend``, ``train(backend=...)``, ``result.json``) -> (executor kind, loop policy).
BACKENDS: dict[str, tuple[ExecutorKind, LoopPolicy]] = {
    "serial": ("serial", "async"),
    "async": ("processes", "async"),
    "sync": ("processes", "sync"),
    "simulated": ("simulated", "async"),
    "simulated-sync": ("simulated", "sync"),
    "ray": ("ray", "async"),
}


def check_backend(name: str, workers: int, ray_address: str | None = None) -> None:
    """Check that backend ``name`` can run ``workers`` workers (at ``ray_address``).

    Raises
    ------
    SettingsError
        For an unknown backend, a serial backend with more than one worker, a Ray
        address without the ray backend, or the ray backend without Ray installed.
    """
    _known(name)
    if name == "serial" and workers != 1:
        raise SettingsError(f"workers {workers}: the serial backend has exactly one worker")
    if ray_address is not None and name != "ray":
        raise SettingsError(f"ray_address {ray_address!r}: only with the ray backend")
    if name == "ray":
        from .ray_session import import_ray

        import_ray(ray_address)  # fails here, in one line, if Ray is not installed


def _known(name: str) -> tuple[ExecutorKind, LoopPolicy]:
    if name not in BACKENDS:
        raise SettingsError(f"backend {name!r}: unknown backend (choose from {', '.join(BACKENDS)})")
    return BACKENDS[name]


def executor_kind(name: str) -> ExecutorKind:
    """The executor of backend ``name``: ``"serial"``, ``"processes"``, ``"simulated"`` or ``"ray"``.

    Raises
    ------
    SettingsError
        For an unknown backend.
    """
    return _known(name)[0]


def loop_policy(name: str) -> LoopPolicy:
    """The loop of backend ``name``: ``"async"`` (each report applied at once) or ``"sync"``
    (every worker each round, one averaged update).

    Raises
    ------
    SettingsError
        For an unknown backend.
    """
    return _known(name)[1]


def make_executor(name: str, plant_factory: Callable[[], Plant], workers: int,
                  options: ExecutorOptions | None = None) -> Executor:
    """Executor of backend ``name`` with ``workers`` workers, each building its plant with ``plant_factory``.

    Raises
    ------
    SettingsError
        If :func:`check_backend` refuses the backend.
    """
    options = options or ExecutorOptions()
    check_backend(name, workers, options.ray_address)
    return _EXECUTORS[executor_kind(name)](plant_factory, workers, options)
