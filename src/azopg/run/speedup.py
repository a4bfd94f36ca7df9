"""Measured speedup: wall time to a target gap against the number of workers.

For every W and repeat, one run with the same problem, seed and calibrated settings
(horizon, radius, initial step: chosen once per repeat by a quick serial calibration,
so every W starts identically); the time to target counts from the end of that
calibration. ``S(W) = T(1) / T(W)`` with ``T`` the median over repeats, efficiency
``S(W) / W``.
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
from ..plants.discrete import plant_for
from ..settings import Settings
from .records import Result
from .train import train

__all__ = ["SPEEDUP_FIELDS", "SpeedupRun", "calibrated_settings", "run_speedup", "summarize", "write_speedup_csv"]

SPEEDUP_FIELDS = ("workers", "backend", "repeat", "time_to_target_s", "updates", "rollouts", "max_delay",
                  "mean_delay", "speedup", "efficiency")


@dataclass
class SpeedupRun:
    """One run of a speedup study."""

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
    result: Result | None = field(default=None, repr=False)

    def row(self) -> list[Any]:
        return [self.workers, self.backend, self.repeat, self.time_to_target_s, self.updates, self.rollouts,
                self.max_delay, self.mean_delay, self.speedup, self.efficiency]


def calibrated_settings(problem: LQRProblem, settings: Settings) -> Settings:
    """``settings`` with ``tau``, ``r`` and ``step`` fixed by a serial calibration at ``K0`` (and
    ``method="auto"`` resolved for the problem's plant)."""
    settings = resolve_settings(settings, plant_for(problem))
    rule = make_rule(np.array(problem.K0), settings, R=np.array(problem.R), discrete_time=problem.discrete_time)
    executor = make_executor("serial", lambda: plant_for(problem), 1)
    executor.start()
    rule.calibrate(executor.run)
    t = rule.tuning
    return Settings.from_dict({**settings.to_dict(), "tau": t.tau, "r": t.r, "step": t.alpha})


def run_speedup(problem: LQRProblem, workers: Sequence[int], *, backend: str = "async", repeats: int = 3,
                base: Settings | None = None, report: Callable[[SpeedupRun], None] | None = None,
                ) -> list[SpeedupRun]:
    """Run every W ``repeats`` times; fill in speedup and efficiency against W = min(workers)."""
    base = base or Settings()
    if backend == "ray":  # one Ray instance (or connection) for every run
        from ..engine.ray_session import ray_session

        with ray_session(base.ray_address, max(workers)):
            return _run_all(problem, workers, backend, repeats, base, report)
    return _run_all(problem, workers, backend, repeats, base, report)


def _run_all(problem: LQRProblem, workers: Sequence[int], backend: str, repeats: int, base: Settings,
             report: Callable[[SpeedupRun], None] | None) -> list[SpeedupRun]:
    runs: list[SpeedupRun] = []
    for repeat in range(repeats):
        cal = calibrated_settings(problem, Settings.from_dict({**base.to_dict(), "seed": base.seed + repeat}))
        for W in workers:
            s = Settings.from_dict({**cal.to_dict(), "workers": W})
            res = train(problem, s, backend=backend)
            ttt = res.stats.get("time_to_target_s")
            run = SpeedupRun(W, backend, repeat, math.inf if ttt is None else ttt, res.updates, res.rollouts,
                             res.stats["max_delay_seen"], res.stats["mean_delay"], result=res)
            runs.append(run)
            if report is not None:
                report(run)
    summarize(runs)
    return runs


def summarize(runs: list[SpeedupRun]) -> list[dict[str, Any]]:
    """Fill each run's speedup/efficiency; return one summary row per W (medians)."""
    ws = sorted({r.workers for r in runs})
    med = {w: statistics.median(r.time_to_target_s for r in runs if r.workers == w) for w in ws}
    w0 = ws[0]
    t_ref = med[w0] * w0  # time one worker would take, if W0 > 1 scaled ideally
    for r in runs:
        r.speedup = t_ref / r.time_to_target_s if r.time_to_target_s > 0 else math.nan
        r.efficiency = r.speedup / r.workers
    rows = []
    for w in ws:
        sel = [r for r in runs if r.workers == w]
        s = t_ref / med[w] if med[w] > 0 else math.nan
        rows.append({"workers": w, "time_to_target_s": med[w], "updates": statistics.median(r.updates for r in sel),
                     "rollouts": statistics.median(r.rollouts for r in sel), "speedup": s, "efficiency": s / w,
                     "mean_delay": statistics.mean(r.mean_delay for r in sel),
                     "max_delay": max(r.max_delay for r in sel), "reached": sum(math.isfinite(r.time_to_target_s)
                                                                                for r in sel), "runs": len(sel)})
    return rows


def write_speedup_csv(path: Path, runs: list[SpeedupRun]) -> Path:
    """``speedup.csv``: one row per run."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SPEEDUP_FIELDS)
        for r in runs:
            w.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in r.row()])
    return path
