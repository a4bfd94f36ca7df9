"""Measured speedup: wall time to a target gap against the number of workers.

For every repeat one serial calibration at ``K0`` (horizon, radius, step and batch; the
values given in the settings are kept) is shared by every W of that repeat, so a repeat's
runs start identically and differ only in W; the time to target counts from the end of each
run's own (one-check) start-up. Each repeat gives *paired* figures, within the repeat:
``S_k(W) = W0 T_k(W0) / T_k(W)`` and the updates ratio ``U_k(W) / U_k(W0)`` (``W0`` the smallest
W, 1 by default). The summary gives, per W, the medians over repeats, the speedup of the
medians ``W0 med T(W0) / med T(W)``, and the median, minimum and maximum of the paired
figures -- their spread shows how much of a speedup is the calibration of a repeat.

A run interrupted (SIGINT or SIGTERM, which train turns into ``status="interrupted"``) stops
the whole study at once: :class:`SpeedupInterrupted` carries the runs completed so far.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.backends import make_executor
from ..method.auto import resolve_settings
from ..method.rules import make_rule
from ..model.problem import LQRProblem
from ..plants.base import is_deterministic
from ..plants.discrete import plant_for
from ..settings import Settings
from .records import Result
from .train import train

__all__ = ["SPEEDUP_FIELDS", "SUMMARY_FIELDS", "SpeedupInterrupted", "SpeedupRun", "calibrated_settings",
           "run_speedup", "summarize", "write_speedup_csv", "write_summary_csv"]

SPEEDUP_FIELDS = ("workers", "backend", "repeat", "status", "time_to_target_s", "updates", "rollouts",
                  "blown_estimates", "max_delay", "mean_delay", "speedup", "efficiency", "updates_ratio",
                  "step", "r", "tau", "batch")
#: Columns of ``speedup_summary.csv`` (one row per W; see :func:`summarize`).
SUMMARY_FIELDS = ("workers", "runs", "reached", "time_to_target_s", "updates", "rollouts", "speedup", "efficiency",
                  "paired_speedup", "paired_speedup_min", "paired_speedup_max", "updates_ratio",
                  "updates_ratio_min", "updates_ratio_max", "mean_delay", "max_delay", "blown_estimates")


@dataclass
class SpeedupRun:
    """One run of a speedup study; ``speedup``, ``efficiency`` and ``updates_ratio`` are paired
    with the run of the smallest W in the same repeat (filled in by :func:`summarize`)."""

    workers: int
    backend: str
    repeat: int
    time_to_target_s: float
    updates: int
    rollouts: int
    max_delay: int
    mean_delay: float
    speedup: float = math.nan
    efficiency: float = math.nan
    updates_ratio: float = math.nan
    status: str = ""
    blown_estimates: int = 0
    settings: dict[str, Any] = field(default_factory=dict, repr=False)
    result: Result | None = field(default=None, repr=False)

    def row(self) -> list[Any]:
        s = self.settings
        return [self.workers, self.backend, self.repeat, self.status, self.time_to_target_s, self.updates,
                self.rollouts, self.blown_estimates, self.max_delay, self.mean_delay, self.speedup, self.efficiency,
                self.updates_ratio, s.get("step"), s.get("r"), s.get("tau"), s.get("batch")]


class SpeedupInterrupted(KeyboardInterrupt):
    """The study was interrupted (SIGINT/SIGTERM); ``runs`` are the runs completed before."""

    def __init__(self, runs: list[SpeedupRun]) -> None:
        super().__init__("interrupted")
        self.runs = runs


def calibrated_settings(problem: LQRProblem, settings: Settings) -> Settings:
    """``settings`` with ``tau``, ``r``, ``step`` and ``batch`` fixed by one serial calibration at
    ``K0`` (values given are kept; nothing is run if ``tau``, ``r`` and ``step`` are all given) and
    ``method="auto"`` resolved for the problem's plant."""
    plant = plant_for(problem)
    settings = resolve_settings(settings, plant)
    rule = make_rule(np.array(problem.K0), settings, R=np.array(problem.R), discrete_time=problem.discrete_time,
                     deterministic_plant=is_deterministic(plant))
    t = rule.tuning
    if settings.tau is None or settings.r is None or settings.step is None:
        executor = make_executor("serial", lambda: plant_for(problem), 1)
        executor.start()
        try:
            rule.calibrate(executor.run)
        finally:
            executor.close()
    return Settings.from_dict({**settings.to_dict(), "tau": t.tau, "r": t.r, "step": t.alpha, "batch": t.N})


def run_speedup(problem: LQRProblem, workers: Sequence[int], *, backend: str = "async", repeats: int = 3,
                base: Settings | None = None, report: Callable[[SpeedupRun], None] | None = None,
                ) -> list[SpeedupRun]:
    """Run every W ``repeats`` times (one calibration per repeat, shared by its W); fill in the
    paired speedup, efficiency and updates ratio against W = min(workers).

    Raises
    ------
    SpeedupInterrupted
        On SIGINT/SIGTERM (or KeyboardInterrupt), at once; it carries the runs completed.
    """
    base = base or Settings()
    if backend == "ray":  # one Ray instance (or connection) for every run
        from ..engine.ray_session import ray_session

        with ray_session(base.ray_address, max(workers)):
            return _run_all(problem, workers, backend, repeats, base, report)
    return _run_all(problem, workers, backend, repeats, base, report)


def _run_all(problem: LQRProblem, workers: Sequence[int], backend: str, repeats: int, base: Settings,
             report: Callable[[SpeedupRun], None] | None) -> list[SpeedupRun]:
    runs: list[SpeedupRun] = []
    try:
        for repeat in range(repeats):
            cal = calibrated_settings(problem, Settings.from_dict({**base.to_dict(), "seed": base.seed + repeat,
                                                                   "workers": max(workers)}))
            for W in workers:
                s = Settings.from_dict({**cal.to_dict(), "workers": W})
                res = train(problem, s, backend=backend)
                if res.status == "interrupted":  # train caught the signal: the study stops too
                    raise KeyboardInterrupt
                ttt = res.stats.get("time_to_target_s")
                run = SpeedupRun(W, backend, repeat, math.inf if ttt is None else ttt, res.updates, res.rollouts,
                                 res.stats["max_delay_seen"], res.stats["mean_delay"], status=res.status,
                                 blown_estimates=res.stats.get("blown_estimates", 0),
                                 settings={k: cal.to_dict()[k] for k in ("step", "r", "tau", "batch")}, result=res)
                runs.append(run)
                if report is not None:
                    report(run)
    except KeyboardInterrupt:
        summarize(runs)
        raise SpeedupInterrupted(runs) from None
    summarize(runs)
    return runs


def _spread(values: list[float]) -> tuple[float, float, float]:
    """Median, minimum and maximum of the finite ``values`` (nan if none)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    return statistics.median(finite), min(finite), max(finite)


def _ratio(a: float, b: float) -> float:
    """``a / b``; a time ``b`` never reached (inf) gives 0, an unknown reference ``a`` nan."""
    if not math.isfinite(a) or not b > 0:
        return math.nan
    return a / b


def summarize(runs: list[SpeedupRun]) -> list[dict[str, Any]]:
    """Fill each run's paired speedup, efficiency and updates ratio (against the run of the smallest
    W in its repeat); return one summary row per W (keys :data:`SUMMARY_FIELDS`): ``time_to_target_s``
    is the median over all its runs (inf for a run that never reached), ``updates`` and ``rollouts``
    the medians over the runs that reached the target."""
    if not runs:
        return []
    ws = sorted({r.workers for r in runs})
    w0 = ws[0]
    ref = {r.repeat: r for r in runs if r.workers == w0}
    for r in runs:
        r0 = ref.get(r.repeat)
        # time one worker would take, if W0 > 1 scaled ideally
        r.speedup = _ratio(r0.time_to_target_s * w0, r.time_to_target_s) if r0 is not None else math.nan
        r.efficiency = r.speedup / r.workers
        reached = r0 is not None and math.isfinite(r0.time_to_target_s) and math.isfinite(r.time_to_target_s)
        r.updates_ratio = _ratio(r.updates, r0.updates) if reached and r0 is not None else math.nan
    med = {w: statistics.median(r.time_to_target_s for r in runs if r.workers == w) for w in ws}

    def to_target(values: list[float]) -> float:  # medians of updates and rollouts: over the runs that reached
        return statistics.median(values) if values else math.nan

    rows = []
    for w in ws:
        sel = [r for r in runs if r.workers == w]
        s = _ratio(med[w0] * w0, med[w])
        paired, ratio = _spread([r.speedup for r in sel]), _spread([r.updates_ratio for r in sel])
        rows.append({"workers": w, "runs": len(sel), "reached": sum(math.isfinite(r.time_to_target_s) for r in sel),
                     "time_to_target_s": med[w],
                     "updates": to_target([r.updates for r in sel if math.isfinite(r.time_to_target_s)]),
                     "rollouts": to_target([r.rollouts for r in sel if math.isfinite(r.time_to_target_s)]),
                     "speedup": s, "efficiency": s / w,
                     "paired_speedup": paired[0], "paired_speedup_min": paired[1], "paired_speedup_max": paired[2],
                     "updates_ratio": ratio[0], "updates_ratio_min": ratio[1], "updates_ratio_max": ratio[2],
                     "mean_delay": statistics.mean(r.mean_delay for r in sel),
                     "max_delay": max(r.max_delay for r in sel),
                     "blown_estimates": sum(r.blown_estimates for r in sel)})
    return rows


def _cell(v: Any) -> Any:
    return "" if isinstance(v, float) and not math.isfinite(v) else v


def write_speedup_csv(path: Path, runs: list[SpeedupRun]) -> Path:
    """``speedup.csv``: one row per run, with its paired speedup and updates ratio."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SPEEDUP_FIELDS)
        for r in runs:
            w.writerow([_cell(v) for v in r.row()])
    return path


def write_summary_csv(path: Path, runs: list[SpeedupRun]) -> Path:
    """``speedup_summary.csv``: one row per W (:func:`summarize`): medians, and the paired figures'
    median, minimum and maximum over the repeats."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SUMMARY_FIELDS)
        for row in summarize(runs):
            w.writerow([_cell(row[k]) for k in SUMMARY_FIELDS])
    return path
