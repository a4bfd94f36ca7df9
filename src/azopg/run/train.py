"""``azopg.train`` and ``azopg.resume``: learn an LQR gain from rollouts, with any backend.

:func:`train` parses its arguments once into a :class:`Job` (what is learned, from which
gain, with which plants) and hands off to :func:`_run`, which wires the parts together:
an executor (:mod:`azopg.engine`), an update rule (:mod:`azopg.method`), the run's log and,
with a run directory, its recorder. :func:`resume` restores a rule from a checkpoint and
hands off to the same :func:`_run`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.backends import Executor, ExecutorOptions, SerialExecutor, executor_kind, loop_policy, make_executor
from ..engine.executor import WorkerLoss
from ..engine.loops import LOOPS, Throttle
from ..errors import OutOfTime, SettingsError
from ..method.kinds import Event
from ..method.lifecycle import CostInterval, closing_reserve, cost_interval
from ..method.rule import UpdateRule
from ..model.compare import relative_gain_error as gain_error
from ..model.noise import expected_cost
from ..model.problem import LQRProblem
from ..plants.base import Plant
from ..settings import Settings
from .checkpoint import FINISHED, RunFinished, RunRecorder, open_run, read_checkpoint
from .history import RunLog
from .job import Job
from .judge import TauJudge, measured_noisily, unjudged
from .records import HistoryRow, Result
from .rule_choice import make_run_rule
from .rundir import RunDir

__all__ = ["Job", "Result", "resume", "stop_reason", "time_to_target", "train"]

log = logging.getLogger("azopg")

#: Progress callback: called with the run's log (``updates``, ``last_cost``, ``last_gap``) about every 0.1 s.
Progress = Callable[[RunLog], None]


def train(
    problem: LQRProblem | Plant,
    settings: Settings | None = None,
    *,
    K0: Any = None,
    backend: str = "serial",
    plant_factory: Callable[[], Plant] | None = None,
    progress: Progress | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    judge: LQRProblem | None = None,
    env: dict[str, Any] | None = None,
    **options: Any,
) -> Result:
    """Learn a gain from rollout costs.

    Parameters
    ----------
    problem : LQRProblem or Plant
        A known LQR problem (its exact oracle is used only to *report* the gap and
        stop at ``target_gap``; under measurement noise the gap of the expected cost at the run's
        horizon to its optimum ``K_tau``, :mod:`azopg.run.judge`), or any object following the
        :class:`~azopg.plants.base.Plant` protocol (then give ``K0`` and a budget).
    settings : Settings, optional
        All settings; or pass them as keyword ``options`` (``seed=1, max_time=30``).
        ``plain=True`` runs the paper's rule exactly as published: fixed ``alpha``, ``r``,
        ``tau``, ``N`` (calibrated once at ``K0`` where not given), no checks, no rollback; a
        blown-up estimate is skipped and counted (see :attr:`Settings.plain <azopg.settings.Settings>`
        and :mod:`azopg.method.plain`).
    K0 : array_like, optional
        Initial stabilizing gain (default: the problem's ``K0``).
    backend : str
        ``"serial"`` (one worker, in process), ``"async"`` (worker processes, AZOPG),
        ``"sync"`` (worker processes, a barrier each round, estimates averaged),
        ``"simulated"`` / ``"simulated-sync"`` (virtual workers on a virtual clock),
        ``"ray"`` (Ray actors, locally or on the cluster at ``settings.ray_address``);
        see :data:`azopg.engine.backends.BACKENDS`.
    plant_factory : callable, optional
        Builds a worker's plant (default: the problem's exact plant, :func:`~azopg.plants.discrete.plant_for`).
    progress : callable, optional
        Called with the run's :class:`~azopg.run.history.RunLog` about every 0.1 s.
    out_dir : path, optional
        Run directory kept up to date during the run, so that a run whose master is
        killed can be continued with :func:`resume`: ``history.csv`` and
        ``arrivals.csv`` appended as the run goes, ``checkpoint.json`` (see
        :mod:`azopg.run.checkpoint`) and ``problem.json``. ``result.json`` and the plots are
        written by :func:`azopg.run.output.write_run` (as the command line does).
        A directory that holds a run is refused, and one that another run uses is locked
        (see :func:`azopg.run.rundir.claim`).
    overwrite : bool
        Replace the run ``out_dir`` holds (its run files are removed, nothing else).
    judge : LQRProblem, optional
        For a black-box plant: a known problem whose exact oracle reports the gap of the
        gains (and stops the run at ``target_gap``), e.g. the linear system a gymnasium
        environment simulates.
    env : dict, optional
        The :class:`~azopg.run.envspec.EnvSpec` (``to_dict()``) the plant was built from:
        stored in the checkpoint, so that :func:`resume` can rebuild the plant.

    Returns
    -------
    Result

    Raises
    ------
    SettingsError
        On invalid settings or a black-box plant without a budget.
    NotStabilizingError
        If rollouts from ``K0`` blow up.

    Examples
    --------
    A known problem, learned serially to a relative gap of 1e-6 (at most 5000 rollouts):

    >>> import azopg
    >>> problem = azopg.get_problem("ac17")
    >>> result = azopg.train(problem, seed=0, target_gap=1e-6, max_rollouts=5000)
    >>> result.status
    'converged'
    >>> bool(result.relative_gap <= 1e-6), result.K.shape
    (True, (1, 4))
    >>> result.settings["method"]   # what method="auto" picked for the exact linear plant
    'policy-iteration'

    Worker processes (``backend="async"``, ``workers=W``) need the script's entry point under
    ``if __name__ == "__main__":``; a black-box plant needs ``K0`` and a budget
    (``max_updates``, ``max_rollouts`` or ``max_time``).
    """
    if settings is None:
        settings = Settings(**options)
    elif options:
        settings = Settings.from_dict({**settings.to_dict(), **options})
    job = Job.of(problem, settings, K0, plant_factory, judge=judge)
    if env is not None:
        job.name, job.env = str(env.get("env", job.name)), env
    return _run(job, settings, backend, progress, out_dir, overwrite=overwrite)


def resume(run_dir: str | os.PathLike[str], *, progress: Progress | None = None) -> Result:
    """Continue the run in ``run_dir`` from its checkpoint, with its own settings and
    backend, until its target or budget (``max_time`` counts the time already spent).

    Parameters
    ----------
    run_dir : path or RunDir
        A :class:`~azopg.run.rundir.RunDir` from :func:`~azopg.run.checkpoint.open_run` stays
        locked on return; a path is locked for the resumed run's life.

    Returns
    -------
    Result
        Of the whole run: history and arrivals include the part before the resume;
        ``stats["resumes"]`` counts the resumes.

    Raises
    ------
    SettingsError
        If ``run_dir`` is not a resumable run directory, its checkpoint or logs are
        damaged or do not belong together, or another run holds its lock.
    RunFinished
        If the run already finished (its result is in ``run_dir/result.json``).

    Examples
    --------
    A run given ``out_dir`` keeps its checkpoint up to date; if its process is stopped
    (Ctrl-C, SIGTERM, killed), ``resume`` continues it to its target. A run that already
    finished says so:

    >>> import os, tempfile, azopg
    >>> run = os.path.join(tempfile.mkdtemp(), "run")
    >>> problem = azopg.get_problem("ac17")
    >>> result = azopg.train(problem, seed=0, target_gap=1e-6, max_rollouts=5000, out_dir=run)
    >>> sorted(f for f in os.listdir(run) if not f.startswith("."))
    ['arrivals.csv', 'checkpoint.json', 'history.csv', 'problem.json']
    >>> try:
    ...     azopg.resume(run)
    ... except azopg.RunFinished as finished:
    ...     print(finished.status)
    converged
    """
    owned: contextlib.AbstractContextManager[Any]
    if isinstance(run_dir, RunDir):
        locked, ckpt, owned = run_dir, read_checkpoint(run_dir), contextlib.nullcontext()
    else:
        locked, ckpt = open_run(run_dir)
        owned = locked
    with owned:
        if ckpt["status"] in FINISHED:
            raise RunFinished(run_dir, ckpt)
        settings = Settings.from_dict(ckpt["settings"])
        if ckpt.get("env") is not None:  # a black-box run of an environment spec: rebuild its plant
            from .envspec import EnvSpec

            spec = EnvSpec.from_dict(ckpt["env"])
            plant = spec.plant()
            judge = LQRProblem.from_dict(ckpt["problem"]) if ckpt.get("problem") is not None else None
            job = Job.of(plant, settings, ckpt["K0"], plant.copy, judge=judge)
            job.name, job.env = spec.env, spec.to_dict()
            return _run(job, settings, ckpt["backend"], progress, locked, ckpt)
        if ckpt.get("problem") is None:
            raise SettingsError(f"{str(run_dir)!r}: the run learned a black-box plant; only runs of an LQR "
                                "problem can be resumed")
        problem = LQRProblem.from_dict(ckpt["problem"])  # both checked by read_checkpoint
        return _run(Job.of(problem, settings, ckpt["K0"]), settings, ckpt["backend"], progress, locked, ckpt)


def _executor(job: Job, settings: Settings, backend: str, elapsed: float) -> Executor:
    plant_factory = job.plant_factory
    if executor_kind(backend) in ("processes", "ray"):  # the factory travels to the workers: refuse one that cannot
        try:
            pickle.dumps(plant_factory)
        except Exception as exc:
            raise SettingsError(f"the {backend} backend builds each worker's plant with plant_factory, which must be "
                                f"picklable: pass plant_factory= a module-level function (or plant.copy) that "
                                f"returns a {job.name} ({type(exc).__name__}: {exc})") from None
    if settings.rollout_latency > 0 and executor_kind(backend) != "simulated":
        from ..plants.latency import LatencyPlantFactory

        deadline = None if settings.max_time is None else time.monotonic() + settings.max_time - elapsed
        plant_factory = LatencyPlantFactory(plant_factory, settings.rollout_latency, settings.latency_model,
                                            deadline=deadline)
    executor = make_executor(backend, plant_factory, settings.workers, ExecutorOptions.of(settings))
    executor.set_clock(elapsed)  # a resumed run's clock continues
    executor.budget = settings.max_time  # worker start-up and every blocking task count
    return executor


def _run(job: Job, settings: Settings, backend: str, progress: Progress | None,
         out_dir: str | os.PathLike[str] | None, restore: dict[str, Any] | None = None, *,
         overwrite: bool = False) -> Result:
    """Learn ``job``: the one place where executor, rule, log and recorder meet."""
    executor = _executor(job, settings, backend, float(restore["elapsed_s"]) if restore is not None else 0.0)
    clock = executor.clock
    judge = TauJudge.of(job.oracle)  # measurement noise: judged against K_tau, not K*
    runlog = RunLog(judge.monitor if judge is not None else job.monitor(), clock, settings.workers)
    plant = job.plant_factory()  # the master's questions to the plant (and the serial executor's plant)
    if isinstance(executor, SerialExecutor):
        executor.adopt(plant, job.plant_factory)
    rule = make_run_rule(job, plant, settings, runlog, restore)
    # the closing measurement's time (under noise), kept by the loop and the serial executor
    executor.reserve = functools.partial(closing_reserve, rule, getattr(executor, "pace", None))
    executor.on_lost = functools.partial(_worker_lost, rule, clock)
    recorder = None
    if out_dir is not None:
        oracle = job.oracle
        recorder = RunRecorder(out_dir, rule, runlog, given=settings.to_dict(), backend=backend, K0=job.K0,
                               problem_data=oracle.to_dict() if oracle is not None else None, previous=restore,
                               overwrite=overwrite, env_data=job.env)

    def ticked() -> None:
        if recorder is not None:
            recorder.maybe_save()
        if progress is not None:
            progress(runlog)

    try:
        status, K, calibrated_at, interval = _learn(job, rule, executor, recorder, restore is not None,
                                                    loop_policy(backend),
                                                    functools.partial(stop_reason, rule, runlog, clock,
                                                                      executor.reserve),
                                                    Throttle(ticked), judge)
    except BaseException:
        if recorder is not None:
            with contextlib.suppress(Exception):
                if recorder.calibration_s is not None or restore is not None:
                    recorder.save("failed")
                recorder.close()
        raise
    finally:
        executor.close()
    if recorder is not None:
        if math.isfinite(calibrated_at) or restore is not None:  # an uncalibrated run cannot be resumed
            recorder.save(status, K=K)
        else:
            recorder.flush()
        recorder.close()
    result = _result(job, rule, runlog, K, status, clock(), judge)
    result.cost_interval = _interval(job, interval, judge)
    result.settings["backend"] = backend
    result.given_settings = {**settings.to_dict(), "backend": backend}
    result.stats["calibration_s"] = calibrated_at if math.isfinite(calibrated_at) else None
    result.stats["time_to_target_s"] = (time_to_target(result.history, settings.target_gap, calibrated_at)
                                        if math.isfinite(calibrated_at) else None)
    result.stats["resumes"] = recorder.resumes if recorder is not None else 0
    result.stats.update(getattr(executor, "summary", dict)())  # worker processes: their CPU, bytes, idle time
    return result


def _learn(job: Job, rule: UpdateRule, executor: Executor, recorder: RunRecorder | None, resumed: bool, policy: str,
           should_stop: Callable[[], str | None], tick: Throttle,
           judge: TauJudge | None = None) -> tuple[str, np.ndarray, float, CostInterval | None]:
    """Calibrate (or resume), run the loop, choose the final gain and, under noise, measure its cost:
    ``(status, K, calibrated_at, interval)`` (:func:`~azopg.method.lifecycle.cost_interval`); ``judge``
    (measurement noise) judges at the rule's horizon from the calibration's end on."""
    clock = executor.clock
    if rule.settings.max_time is not None:
        rule.out_of_time = functools.partial(_out_of_time, clock, rule.settings.max_time)
        rule.time_left = functools.partial(_time_left, clock, rule.settings.max_time)
    calibrated_at = math.nan
    try:
        executor.start()
        if not resumed:
            rule.calibrate(executor.run)
            calibrated_at = clock()
        else:
            calibrated_at = recorder.calibration_s if recorder and recorder.calibration_s is not None else math.nan
            if judge is not None:
                judge.horizon = lambda: rule.tuning.tau
            rule.log(Event.RESUME, 0, -1, rule.version)
        if judge is not None:
            judge.horizon = lambda: rule.tuning.tau
        if recorder is not None:
            recorder.calibration_s = calibrated_at if math.isfinite(calibrated_at) else None
            recorder.save()
        status = LOOPS[policy](rule, executor, should_stop, tick)
        K = rule.final_gain(status, executor.run)
    except OutOfTime:  # in a calibration (or step search): K0 if uncalibrated, else the anchor (plain: the gain)
        rule.log(Event.OUT_OF_TIME if math.isfinite(calibrated_at) or resumed else Event.CALIBRATION_CUT_SHORT)
        cap = rule.settings.max_rollouts
        status = "max_rollouts" if rule.budget_spent or (cap is not None and rule.stats.rollouts >= cap) else "max_time"
        if status == "max_rollouts" and not (math.isfinite(calibrated_at) or resumed):
            log.warning("azopg: max_rollouts = %d holds no complete calibration (%d rollouts used); K0 returned",
                        cap, rule.stats.rollouts)
        return status, rule.final_gain("interrupted", executor.run), calibrated_at, None  # no time for more
    except KeyboardInterrupt:
        return "interrupted", rule.final_gain("interrupted", executor.run), calibrated_at, None
    if status == "max_rollouts":  # the measurement would exceed the rollout budget
        return status, K, calibrated_at, None
    oracle = job.oracle if job.oracle is not None and job.oracle.noisy else None
    ref, name = (job.K0, "K0") if oracle is None else (oracle.optimal_gain, "K*")
    if judge is not None:  # the optimum of the expected cost at the horizon measured
        ref, name = judge.optimum(rule.tuning.tau)[0], "K_tau"
    try:  # under noise, confidence intervals for the returned gain's cost, from a measurement of its own
        interval = cost_interval(rule, executor.run, K, ref, name)
    except OutOfTime:  # its measurement stops at the budget's end (a task carries the deadline): no interval
        log.warning("azopg: the time budget ran out during the returned gain's cost measurement; no cost interval")
        interval = None
    except KeyboardInterrupt:
        interval = None
    return status, K, calibrated_at, interval


def _interval(job: Job, interval: CostInterval | None, judge: TauJudge | None = None) -> dict[str, Any] | None:
    """``result.json``'s ``cost_interval``: the intervals, and with a noisy problem's exact oracle (the difference
    measured to the optimum: ``K_tau`` under measurement noise, else ``K*``) the difference's interval as a
    relative gap to the optimum's exact expected cost at the horizon, and that expected cost."""
    if interval is None:
        return None
    out: dict[str, Any] = interval.to_dict()
    oracle = job.oracle
    if oracle is not None and oracle.noisy:  # the difference was measured against the optimum
        ref = (judge.optimum(interval.tau)[1] if judge is not None
               else expected_cost(oracle, oracle.optimal_gain, interval.tau))
        out.update(optimal_expected_cost=ref)
        # K* under measurement noise (K_tau unaffordable) is not the optimum: a relative difference, not a gap
        name = "relative_diff" if judge is None and measured_noisily(oracle) else "gap"
        out.update({f"{name}_low": interval.diff_low / ref, f"{name}_high": interval.diff_high / ref})
    return out


def _out_of_time(clock: Callable[[], float], max_time: float) -> bool:
    return clock() >= max_time


def _time_left(clock: Callable[[], float], max_time: float) -> float:
    return max_time - clock()


def _worker_lost(rule: UpdateRule, clock: Callable[[], float], loss: WorkerLoss) -> None:
    """A worker died or hung and was replaced or dropped (see :class:`azopg.engine.executor.WorkerLoss`)."""
    rule.worker_lost(loss.worker, loss.tasks)
    lost = ", ".join(f"{t.kind} task {t.task_id}" for t in loss.tasks) or "no task"
    then = f"; restarted as pid {loss.new_pid}" if loss.new_pid is not None else ""
    log.warning("azopg: worker %d (pid %s) %s at %.2f s; %s lost%s",
                loss.worker, loss.pid, loss.reason, clock(), lost, then)


def time_to_target(history: list[HistoryRow], target: float | None, start: float = 0.0) -> float | None:
    """Seconds from ``start`` to the first event at or below the target gap (``None`` if never)."""
    if target is None:
        return None
    for row in history:
        if row.relative_gap <= target:
            return max(row.time_s - start, 0.0)
    return None


def stop_reason(rule: UpdateRule, runlog: RunLog, clock: Callable[[], float],
                reserve: Callable[[], float] | None = None) -> str | None:
    """Why the run should stop now, or ``None`` ("converged": every given target is met and the rule has
    settled, :meth:`~azopg.method.rule.UpdateRule.settled`); ``reserve()``: seconds of the time budget kept for
    the closing measurement."""
    s = rule.settings
    if runlog.targets_met(s.target_gap, s.target_gain_error) and rule.settled(s.target_gap):
        return "converged"
    if s.max_updates is not None and rule.stats.updates >= s.max_updates:
        return "max_updates"
    if rule.budget_spent or (s.max_rollouts is not None and rule.stats.rollouts >= s.max_rollouts):
        return "max_rollouts"
    if s.max_time is not None and clock() >= s.max_time - (reserve() if reserve is not None else 0.0):
        return "max_time"
    if rule.safeguards.stuck():
        return "blown_up"
    return None


def _result(job: Job, rule: UpdateRule, runlog: RunLog, K: np.ndarray, status: str, wall: float,
            judge: TauJudge | None = None) -> Result:
    oracle = job.oracle
    judged = None
    if judge is not None:  # measurement noise: the expected cost at the final horizon, against K_tau's
        tau = rule.tuning.tau
        cost, gap, err = judge.judge(K, tau)
        fstar = judge.optimum(tau)[1]
        stabilizing = judge.problem.is_stabilizing(K)
        judged = judge.summary(K, tau)
    elif oracle is not None:
        cost = oracle.cost(K)
        fstar = oracle.optimal_cost
        gap = (cost - fstar) / abs(fstar)
        err = gain_error(K, oracle.optimal_gain)
        stabilizing = oracle.is_stabilizing(K)
        judged = unjudged(oracle) if measured_noisily(oracle) else None
    else:
        cost = fstar = gap = err = math.nan
        stabilizing = True
    t = rule.tuning
    s = rule.settings.to_dict()
    s.update(batch=t.N, r=t.r, tau=t.tau, step=t.alpha, check_every=rule.safeguards.check_every,
             max_delay=rule.max_delay)
    return Result(job.name, K, cost, fstar, gap, stabilizing, rule.stats.updates, rule.stats.rollouts, wall,
                  rule.settings.seed, status, s, {**rule.stats.summary(), **rule.summary()},
                  runlog.history, arrivals=runlog.arrivals,
                  problem_data=oracle.to_dict() if oracle is not None else None, gain_error=err, judge=judged)
