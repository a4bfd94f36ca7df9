"""Replay an asynchronous run from its arrival log and reproduce its gain exactly.

An asynchronous run is random only in the *order* in which estimates arrive: every
task's draws come from the generator of (seed, worker, task), and the master's
decisions depend only on the reports. ``arrivals.csv`` records that order (task id,
worker, kind, version read and the task's horizon, radius and batch), so rerunning
the tasks serially in that order rebuilds the same sequence of gains, bit for bit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import SettingsError
from ..method.rules import make_rule
from ..method.tasks import run_task
from ..model.problem import LQRProblem
from ..plants.linear import LinearPlant
from ..settings import Settings

__all__ = ["replay_run"]


def replay_run(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Recompute the final gain of the run in ``run_dir``.

    Returns
    -------
    K_replayed, K_recorded : ndarray
        The gain rebuilt from the log and the one in ``result.json``.
    events : int
        Reports replayed.

    Raises
    ------
    SettingsError
        If ``run_dir`` is not a complete run directory, the run used a synchronous
        backend (whose rounds are not in the log) or was resumed from a checkpoint.
    """
    d = Path(run_dir)
    files = {name: d / name for name in ("result.json", "arrivals.csv", "problem.json")}
    missing = [n for n, f in files.items() if not f.is_file()]
    if missing:
        raise SettingsError(f"{str(run_dir)!r} is not an azopg run directory (missing {', '.join(missing)})")
    try:
        result = json.loads(files["result.json"].read_text())
        problem = LQRProblem.from_dict(json.loads(files["problem.json"].read_text()))
        given = dict(result["given_settings"])
        K_recorded = np.array(result["K"], dtype=float)
        status = result["status"]
        resumes = int((result.get("stats") or {}).get("resumes") or 0)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SettingsError(f"{str(run_dir)!r}: unreadable run files ({exc})") from None
    if resumes:
        raise SettingsError(f"{str(run_dir)!r}: the run was resumed from a checkpoint (the tasks in flight when "
                            "it stopped are lost); replay of a resumed run is not supported")
    backend = given.pop("backend", "serial")
    if backend in ("sync", "simulated-sync"):
        raise SettingsError(f"replay needs an asynchronous or serial run; this one used --backend {backend}")
    settings = Settings.from_dict(given)
    plant = LinearPlant(problem)
    rule = make_rule(np.array(problem.K0), settings, R=np.array(problem.R), keep_all_gains=True)
    rule.calibrate(lambda task: run_task(plant, task))
    events = 0
    with open(files["arrivals.csv"], newline="") as fh:
        for row in csv.DictReader(fh):
            task_id, version = int(row["task_id"]), int(row["version_read"])
            task = rule.make_task(task_id, int(row["worker"]), row["kind"], rule.gain_at(version).copy(), version,
                                  float(row["tau"]), float(row["r"]), int(row["N"]))
            rule.register(task)
            rule.tell(run_task(plant, task))
            events += 1
    K = rule.final_gain(status, lambda task: run_task(plant, task))
    return K, K_recorded, events
