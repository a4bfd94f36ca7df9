"""Replay an asynchronous run from its arrival log and reproduce its gain exactly.

An asynchronous run is random only in the *order* in which estimates arrive: every
task's draws come from the generator of (seed, worker, task), and the master's
decisions depend only on the reports. ``arrivals.csv`` records that order (task id,
worker, kind, version read and the task's horizon, radius and batch) and which reports
the master took together (``taken_with``), so rerunning the tasks serially in that order,
take by take, rebuilds the same sequence of gains, bit for bit. A log without the
``taken_with`` column (written before takes were logged) is replayed one report at a time.
"""

from __future__ import annotations

import collections
import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.backends import BACKENDS, loop_policy
from ..errors import OutOfTime, SettingsError
from ..method.auto import resolve_settings
from ..method.kinds import Event, TaskKind
from ..method.rules import make_rule
from ..method.tasks import TASK_KINDS, Report, run_task
from ..model.problem import LQRProblem
from ..plants.base import is_deterministic
from ..plants.discrete import plant_for
from ..settings import Settings
from .records import ARRIVAL_FIELDS, ARRIVAL_TYPES, parse_row
from .rule_choice import hold_budget

__all__ = ["replay_run"]


_OLD_FIELDS = ARRIVAL_FIELDS[:-1]  # before takes were logged: every report a take of its own


def _arrivals(path: Path, run_dir: str | Path) -> list[tuple[int, tuple[Any, ...]]]:
    """(line number, row) of every report in ``arrivals.csv``, each field parsed.

    Raises
    ------
    SettingsError
        Naming the first line that is not a row of the log.
    """
    rows: list[tuple[int, tuple[Any, ...]]] = []
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = tuple(next(reader, ()))
            if header not in (ARRIVAL_FIELDS, _OLD_FIELDS):
                raise SettingsError(f"{str(run_dir)!r}: arrivals.csv line 1: expected the header "
                                    f"{','.join(ARRIVAL_FIELDS)}")
            for row in reader:
                line = reader.line_num
                try:
                    values = parse_row(row, ARRIVAL_TYPES[:len(header)]) + (0,) * (len(ARRIVAL_TYPES) - len(header))
                    if not all(math.isfinite(v) and v > 0 for v in values[4:6]) or min(values[0:2]) < 0 \
                            or values[3] < 0 or values[6] < 1 or values[2] not in TASK_KINDS or values[7] < 0 \
                            or values[7] > (rows[-1][1][7] + 1 if rows else 0):
                        raise ValueError("a value out of range")
                except ValueError as exc:
                    raise SettingsError(f"{str(run_dir)!r}: arrivals.csv line {line}: not a report ({exc})") from None
                rows.append((line, values))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SettingsError(f"{str(run_dir)!r}: unreadable arrivals.csv ({exc})") from None
    return rows


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
    if backend in BACKENDS and loop_policy(backend) == "sync":
        raise SettingsError(f"replay needs an asynchronous or serial run; this one used --backend {backend}")
    plant = plant_for(problem)
    if given.get("method") == "auto":  # the rule the run resolved (its plant may not have been this one)
        given["method"] = (result.get("settings") or {}).get("method", "auto")
    settings = resolve_settings(Settings.from_dict(given), plant)
    rule = make_rule(np.array(problem.K0), settings, R=np.array(problem.R), keep_all_gains=True,
                     discrete_time=problem.discrete_time, deterministic_plant=is_deterministic(plant))
    hold_budget(rule, plant)
    try:
        rule.calibrate(lambda task: run_task(plant, task))
    except OutOfTime:  # the rollout budget held no complete calibration, as in the run
        return rule.final_gain("interrupted", lambda task: run_task(plant, task)), K_recorded, 0
    events = 0
    take: list[Report] = []
    for line, (task_id, worker, kind, version, tau, r, N, taken_with) in _arrivals(files["arrivals.csv"], run_dir):
        if taken_with == 0 and take:
            rule.tell_many(take)
            take = []
        try:
            K = rule.gain_at(version).copy()
        except KeyError:
            raise SettingsError(f"{str(run_dir)!r}: arrivals.csv line {line}: version {version} was never "
                                "reached in the replay") from None
        task = rule.make_task(task_id, worker, TaskKind(kind), K, version, tau, r, N)
        rule.register(task)
        take.append(run_task(plant, task))
        events += 1
    if take:
        rule.tell_many(take)
    if _closing_cut(d / "history.csv"):  # the run's closing checks stopped at its deadline: it kept what it had
        status = "interrupted"
    K = rule.final_gain(status, lambda task: run_task(plant, task))
    return K, K_recorded, events


def _closing_cut(path: Path) -> bool:
    """Whether the run's history ends with the time budget running out after its calibration (a task, e.g. a
    closing check, stopped at the deadline: the run then returned its gain as if interrupted)."""
    try:
        with open(path, newline="") as fh:
            last = collections.deque(csv.DictReader(fh), maxlen=1)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return bool(last) and last[0].get("event") == Event.OUT_OF_TIME.value
