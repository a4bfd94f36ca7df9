"""``azopg.train``: learn an LQR gain from rollouts, with any backend.

The loop below is the asynchronous one of AZOPG; with the serial backend (one worker,
tasks run in turn) it is the serial zero-order policy gradient method.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.backends import SYNCHRONOUS, Executor, make_executor
from ..errors import ProblemError, SettingsError
from ..method.master import HistoryRow, Master
from ..model.problem import LQRProblem, as_matrix
from ..plants.base import Plant
from ..plants.linear import LinearPlant
from ..settings import Settings

__all__ = ["train", "Result"]

log = logging.getLogger("azopg")


@dataclass
class Result:
    """What a run learned and how.

    Attributes
    ----------
    K : ndarray, shape (m, n)
        Learned gain (``u = -K x``); never costlier than ``K0``.
    cost, optimal_cost, relative_gap : float
        Exact cost of ``K``, the optimum and their relative gap (``nan`` for a
        black-box plant with no oracle).
    stabilizing : bool
        Whether ``A - B K`` is Hurwitz (``True`` if unknown but rollouts stayed bounded).
    updates, rollouts : int
        Applied updates and rollouts spent (estimates, checks and calibration).
    wall_time_s : float
    status : str
        ``"converged"`` (target gap reached), ``"max_updates"``, ``"max_rollouts"``,
        ``"max_time"`` or ``"interrupted"``.
    settings : dict
        Settings as given, plus the values chosen automatically.
    history : list of HistoryRow
    """

    problem: str
    K: np.ndarray
    cost: float
    optimal_cost: float
    relative_gap: float
    stabilizing: bool
    updates: int
    rollouts: int
    wall_time_s: float
    seed: int
    status: str
    settings: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    history: list[HistoryRow] = field(default_factory=list, repr=False)
    given_settings: dict[str, Any] = field(default_factory=dict, repr=False)
    arrivals: list[tuple[int, int, str, int, float, float, int]] = field(default_factory=list, repr=False)
    problem_data: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` document."""

        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "problem": self.problem,
            "K": self.K.tolist(),
            "cost": num(self.cost),
            "optimal_cost": num(self.optimal_cost),
            "relative_gap": num(self.relative_gap),
            "stabilizing": bool(self.stabilizing),
            "updates": self.updates,
            "rollouts": self.rollouts,
            "wall_time_s": self.wall_time_s,
            "seed": self.seed,
            "status": self.status,
            "settings": self.settings,
            "given_settings": self.given_settings,
            "stats": self.stats,
        }


def _plant_of(problem: LQRProblem) -> Plant:
    return LinearPlant(problem)


def train(
    problem: LQRProblem | Plant,
    settings: Settings | None = None,
    *,
    K0: Any = None,
    backend: str = "serial",
    plant_factory: Callable[[], Plant] | None = None,
    progress: Callable[[Master], None] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    _resume: dict[str, Any] | None = None,
    **options: Any,
) -> Result:
    """Learn a gain from rollout costs.

    Parameters
    ----------
    problem : LQRProblem or Plant
        A known LQR problem (its exact oracle is used only to *report* the gap and
        stop at ``target_gap``), or any object following the :class:`~azopg.plants.base.Plant`
        protocol (then give ``K0`` and a budget).
    settings : Settings, optional
        All settings; or pass them as keyword ``options`` (``seed=1, max_time=30``).
    K0 : array_like, optional
        Initial stabilizing gain (default: the problem's ``K0``).
    backend : str
        ``"serial"`` (one worker, in process), ``"async"`` (worker processes, AZOPG),
        ``"sync"`` (worker processes, a barrier each round, estimates averaged),
        ``"simulated"`` / ``"simulated-sync"`` (virtual workers on a virtual clock),
        ``"ray"`` (Ray actors, locally or on the cluster at ``settings.ray_address``);
        see :data:`azopg.engine.backends.BACKENDS`.
    plant_factory : callable, optional
        Builds a worker's plant (default: the problem's :class:`LinearPlant`).
    progress : callable, optional
        Called with the master about every 0.1 s.
    out_dir : path, optional
        Run directory kept up to date during the run, so that a run whose master is
        killed can be continued with :func:`azopg.resume`: ``history.csv`` and
        ``arrivals.csv`` appended as the run goes, ``checkpoint.json`` (see
        :mod:`azopg.run.checkpoint`) and ``problem.json``. ``result.json`` and the plot are
        written by :func:`azopg.run.output.write_run` (as the command line does).
        A directory that holds a run is refused, and one that another run uses is locked
        (see :func:`azopg.run.rundir.claim`).
    overwrite : bool
        Replace the run ``out_dir`` holds (its run files are removed, nothing else).

    Returns
    -------
    Result

    Raises
    ------
    SettingsError
        On invalid settings or a black-box plant without a budget.
    NotStabilizingError
        If rollouts from ``K0`` blow up.
    """
    if settings is None:
        settings = Settings(**options)
    elif options:
        settings = Settings.from_dict({**settings.to_dict(), **options})
    oracle = problem if isinstance(problem, LQRProblem) else None
    if oracle is not None:
        plant_factory = plant_factory or functools.partial(_plant_of, oracle)
        K0 = oracle.K0 if K0 is None else as_matrix(K0, "K0", oracle.m, oracle.n)
        name = oracle.name
    else:
        plant = problem
        if K0 is None:
            raise SettingsError("K0 is required for a black-box plant")
        K0 = as_matrix(K0, "K0", plant.m, plant.n)
        plant_factory = plant_factory or (lambda: plant)
        name = type(plant).__name__
        if not (settings.max_updates or settings.max_rollouts or settings.max_time):
            raise SettingsError("a black-box plant needs a budget: max_updates, max_rollouts or max_time")
    simulated = backend.startswith("simulated")
    if settings.rollout_latency > 0 and not simulated:
        from ..plants.latency import LatencyPlantFactory

        plant_factory = LatencyPlantFactory(plant_factory, settings.rollout_latency, settings.latency_model)
    executor = make_executor(backend, plant_factory, settings.workers,
                             per_rollout=settings.rollout_latency or 0.01, model=settings.latency_model,
                             seed=settings.seed, task_timeout=settings.task_timeout,
                             ray_address=settings.ray_address)
    clock = getattr(executor, "clock", None)

    monitor = None
    if oracle is not None:
        fstar = oracle.optimal_cost
        if not fstar > 0:
            raise ProblemError("the optimal cost is 0 (is Q zero?): there is nothing to learn")

        def monitor(K: np.ndarray) -> tuple[float, float]:
            f = oracle.cost(K)
            return f, (f - fstar) / fstar

    elapsed = float(_resume["elapsed_s"]) if _resume is not None else 0.0
    t0 = time.perf_counter() - elapsed  # a resumed run's clock continues
    if clock is None:
        def clock() -> float:
            return time.perf_counter() - t0
    elif hasattr(executor, "now"):
        executor.now = elapsed
    master = Master(np.array(K0, dtype=float), settings, monitor, clock=clock)
    master.light = settings.light
    if _resume is not None:
        master.load_state(_resume["master"])
    if hasattr(executor, "on_lost"):
        executor.on_lost = functools.partial(_worker_lost, master)
    recorder = None
    if out_dir is not None:
        from .checkpoint import RunRecorder

        recorder = RunRecorder(out_dir, master, given=settings.to_dict(), backend=backend, K0=K0,
                               problem_data=oracle.to_dict() if oracle is not None else None, previous=_resume,
                               overwrite=overwrite)
    tick = progress
    if recorder is not None:
        def tick(m: Master) -> None:
            recorder.maybe_save()
            if progress is not None:
                progress(m)
    status = "interrupted"
    K = master.anchor_K
    calibrated_at = math.nan
    try:
        executor.start()
        if _resume is None:
            master.calibrate(executor.run)
            calibrated_at = clock()
        else:
            calibrated_at = recorder.calibration_s if recorder and recorder.calibration_s is not None else math.nan
            master._log("resume", 0, -1, master.version)
        if recorder is not None:
            recorder.calibration_s = calibrated_at if math.isfinite(calibrated_at) else None
            recorder.save()
        loop = run_sync_loop if backend in SYNCHRONOUS else run_loop
        status = loop(master, executor, clock, tick)
        K = master.final_gain(status, executor.run)
    except KeyboardInterrupt:
        status, K = "interrupted", master.anchor_K.copy()
    except BaseException:
        if recorder is not None:
            with contextlib.suppress(Exception):
                if recorder.calibration_s is not None or _resume is not None:
                    recorder.save("failed")
                recorder.close()
        raise
    finally:
        executor.close()
    if recorder is not None:
        if math.isfinite(calibrated_at) or _resume is not None:  # an uncalibrated master cannot be resumed
            recorder.save(status, K=K)
        else:
            recorder.flush()
        recorder.close()
    result = _result(name, oracle, master, K, status, clock())
    result.settings["backend"] = backend
    result.given_settings = {**settings.to_dict(), "backend": backend}
    result.arrivals = master.arrivals
    result.problem_data = oracle.to_dict() if oracle is not None else None
    result.stats["calibration_s"] = calibrated_at if math.isfinite(calibrated_at) else None
    result.stats["time_to_target_s"] = (time_to_target(result.history, settings.target_gap, calibrated_at)
                                        if math.isfinite(calibrated_at) else None)
    result.stats["resumes"] = recorder.resumes if recorder is not None else 0
    return result


def _worker_lost(master: Master, loss: Any) -> None:
    """A worker died or hung and was replaced or dropped (see :class:`azopg.engine.processes.WorkerLoss`)."""
    master.worker_lost(loss.worker, loss.tasks)
    lost = ", ".join(f"{t.kind} task {t.task_id}" for t in loss.tasks) or "no task"
    then = f"; restarted as pid {loss.new_pid}" if loss.new_pid is not None else ""
    log.warning("azopg: worker %d (pid %s) %s at %.2f s; %s lost%s",
                loss.worker, loss.pid, loss.reason, master.clock(), lost, then)


def _refill(master: Master, executor: Executor) -> None:
    """Give a task to every worker that has none (one just replaced after a loss)."""
    idle = getattr(executor, "idle_workers", None)
    if idle is not None:
        for w in idle():
            executor.submit(master.make_task(w))


def time_to_target(history: list[HistoryRow], target: float | None, start: float = 0.0) -> float | None:
    """Seconds from ``start`` to the first event at or below the target gap (``None`` if never)."""
    if target is None:
        return None
    for row in history:
        if row.relative_gap <= target:
            return max(row.time_s - start, 0.0)
    return None


def stop_reason(master: Master, clock: Callable[[], float]) -> str | None:
    """Why the run should stop now, or ``None``."""
    s = master.settings
    if s.target_gap is not None and master.last_gap <= s.target_gap:
        return "converged"
    if s.max_updates is not None and master.updates >= s.max_updates:
        return "max_updates"
    if s.max_rollouts is not None and master.rollouts >= s.max_rollouts:
        return "max_rollouts"
    if s.max_time is not None and clock() >= s.max_time:
        return "max_time"
    return None


def run_loop(master: Master, executor: Executor, clock: Callable[[], float],
             progress: Callable[[Master], None] | None = None) -> str:
    """The asynchronous master loop: apply each report at once, hand its worker a new task."""
    for w in range(executor.workers):
        executor.submit(master.make_task(w))
    last = 0.0
    while True:
        reason = stop_reason(master, clock)
        if reason is not None:
            return reason
        rep = executor.next_report(timeout=0.5)
        if rep is None:
            _refill(master, executor)
            continue
        master.receive(rep)
        executor.submit(master.make_task(rep.worker))
        _refill(master, executor)
        if progress is not None and time.perf_counter() - last > 0.1:
            last = time.perf_counter()
            progress(master)


def run_sync_loop(master: Master, executor: Executor, clock: Callable[[], float],
                  progress: Callable[[Master], None] | None = None) -> str:
    """The synchronous baseline: every round all workers start from the same gain and
    the master waits for all of them (a barrier) before one averaged update."""
    last = 0.0
    while True:
        reason = stop_reason(master, clock)
        if reason is not None:
            return reason
        tasks = {w: master.make_task(w) for w in range(executor.workers)}
        for task in tasks.values():
            executor.submit(task)
        got: dict[int, Any] = {}
        idle = getattr(executor, "idle_workers", lambda: [])
        while len(got) < len(tasks):
            rep = executor.next_report(timeout=0.5)
            if rep is not None and rep.task_id == tasks[rep.worker].task_id:
                got[rep.worker] = rep
            elif rep is None and stop_reason(master, clock) == "max_time":
                return "max_time"
            for w in idle():  # a worker replaced after a loss: its task of this round is redone
                if w not in got:
                    tasks[w] = master.make_task(w)
                    executor.submit(tasks[w])
        master.receive_round([got[w] for w in sorted(got)])
        if progress is not None and time.perf_counter() - last > 0.1:
            last = time.perf_counter()
            progress(master)


def _result(name: str, oracle: LQRProblem | None, master: Master, K: np.ndarray,
            status: str, wall: float) -> Result:
    if oracle is not None:
        cost = oracle.cost(K)
        fstar = oracle.optimal_cost
        gap = (cost - fstar) / fstar
        stabilizing = oracle.is_stabilizing(K)
    else:
        cost = fstar = gap = math.nan
        stabilizing = True
    s = master.settings.to_dict()
    s.update(batch=master.N, r=master.r, tau=master.tau, step=master.alpha,
             check_every=master.check_every, max_delay=master.max_delay)
    stats = {
        "tasks": master.tasks, "dropped": master.dropped, "checks_accepted": master.accepted,
        "checks_rejected": master.rejected, "rollbacks": master.rollbacks,
        "max_delay_seen": master.max_seen_delay,
        "mean_delay": master.delay_sum / master.delay_count if master.delay_count else 0.0,
        "bytes_received": master.bytes_received,
        "bytes_per_update": master.bytes_received / max(master.updates, 1),
        "workers_replaced": master.workers_replaced, "tasks_lost": master.lost_tasks,
        "reports_ignored": master.ignored_reports,
    }
    return Result(name, K, cost, fstar, gap, stabilizing, master.updates, master.rollouts, wall,
                  master.settings.seed, status, s, stats, master.history)
