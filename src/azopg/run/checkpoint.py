"""Checkpoints: a run directory that survives its master being killed.

With an output directory, :func:`azopg.train` appends every history row and every
arrival to ``history.csv`` and ``arrivals.csv`` as the run goes and, at least every
:data:`INTERVAL` seconds and at the end, atomically replaces ``checkpoint.json``: the
master's state (gain, version, step, radius, horizon, anchor, counters -- see
:meth:`azopg.method.rule.UpdateRule.state_dict`), the settings, the backend, the problem, the
elapsed time and how many rows of the two logs belong to that state. There is no
generator state to save: every task's draws come from (seed, worker, task id), and task
ids keep rising after a resume.

:func:`azopg.run.train.resume` continues such a run: no calibration, the master restored, the logs cut
back to the checkpoint (rows written after it described tasks whose effect is lost) and
appended to, update numbers and time continuing from where they were. Tasks that were in
flight when the master stopped are lost, so a resumed run is not bit-for-bit the run it
would have been, and ``azopg replay`` refuses it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import astuple
from pathlib import Path
from typing import Any

from ..errors import AzopgError, SettingsError
from ..method.rule import UpdateRule
from .files import csv_text, prepare_out_dir, write_json_atomic, write_text_atomic
from .history import RunLog
from .records import ARRIVAL_FIELDS, ARRIVAL_TYPES, HISTORY_FIELDS, HISTORY_TYPES, HistoryRow, csv_value, parse_row

__all__ = ["CHECKPOINT", "FINISHED", "INTERVAL", "RunFinished", "RunRecorder", "read_checkpoint"]

CHECKPOINT = "checkpoint.json"
#: Seconds between two checkpoints during a run.
INTERVAL = 1.0
#: Statuses of a run that ended on its own (resuming it has nothing to do).
FINISHED = ("converged", "max_updates", "max_rollouts", "max_time")
_FORMAT = 1


class RunFinished(AzopgError):
    """:func:`resume` of a run that already ended (converged or out of budget)."""

    def __init__(self, run_dir: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
        self.checkpoint = checkpoint
        self.status = checkpoint["status"]
        gap = checkpoint.get("relative_gap")
        gap_text = f", relative gap {gap:.3e}" if isinstance(gap, float) else ""
        super().__init__(f"{str(run_dir)!r}: the run already finished ({self.status}{gap_text} after "
                         f"{checkpoint['master']['updates']} updates); nothing to resume")


def _read_rows(path: Path, header: tuple[str, ...], types: tuple[type, ...], count: int) -> list[tuple[Any, ...]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        if tuple(next(reader, ())) != header:
            raise ValueError(f"{path.name} has an unexpected header")
        rows = []
        for row in reader:
            if len(rows) == count:
                break
            rows.append(parse_row(row, types))
    if len(rows) < count:
        raise ValueError(f"{path.name} has {len(rows)} rows, the checkpoint counts {count}")
    return rows


def read_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint of the run in ``run_dir``.

    Raises
    ------
    SettingsError
        If ``run_dir`` holds no readable checkpoint (not a run directory, or a run that
        stopped before its calibration finished).
    """
    path = Path(run_dir) / CHECKPOINT
    if not Path(run_dir).is_dir():
        what = "not a directory" if Path(run_dir).exists() else "no such directory"
        raise SettingsError(f"{str(run_dir)!r}: {what}")
    if not path.is_file():
        raise SettingsError(f"{str(run_dir)!r}: no {CHECKPOINT} (not an azopg run directory, or the run "
                            "stopped before its calibration finished)")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("unknown checkpoint format")
        for key in ("status", "settings", "backend", "master", "elapsed_s", "history_rows", "arrival_rows"):
            if key not in data:
                raise KeyError(key)
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise SettingsError(f"{str(run_dir)!r}: unreadable {CHECKPOINT} ({exc})") from None
    return data


class RunRecorder:
    """Keeps a run directory up to date during a run: logs appended, checkpoint refreshed.

    Parameters
    ----------
    out : path
        The run directory (created if needed).
    rule : UpdateRule
        Whose state the checkpoint holds.
    runlog : RunLog
        Whose history and arrivals the logs hold.
    given : dict
        Settings as given (``Settings.to_dict()``), stored for :func:`resume`.
    backend : str
    problem_data : dict, optional
        The problem (``LQRProblem.to_dict()``); without it the run cannot be resumed.
    previous : dict, optional
        The checkpoint being resumed: the logs are cut back to it and loaded into the master.
    """

    def __init__(self, out: str | os.PathLike[str], rule: UpdateRule, runlog: RunLog, *, given: dict[str, Any],
                 backend: str, problem_data: dict[str, Any] | None, K0: Any,
                 previous: dict[str, Any] | None = None) -> None:
        self.out = prepare_out_dir(out)
        self.rule, self.runlog = rule, runlog
        self.given, self.backend, self.problem_data = given, backend, problem_data
        self.K0 = [list(map(float, row)) for row in K0]
        self.resumes = 0
        self.calibration_s: float | None = None
        history_path, arrivals_path = self.out / "history.csv", self.out / "arrivals.csv"
        if previous is not None:
            self.resumes = int(previous.get("resumes", 0)) + 1
            self.calibration_s = previous.get("calibration_s")
            try:
                hist = _read_rows(history_path, HISTORY_FIELDS, HISTORY_TYPES, previous["history_rows"])
                arr = _read_rows(arrivals_path, ARRIVAL_FIELDS, ARRIVAL_TYPES, previous["arrival_rows"])
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                raise SettingsError(f"{str(out)!r}: cannot resume, the run's logs are damaged ({exc})") from None
            runlog.history = [HistoryRow(*row) for row in hist]
            runlog.arrivals = list(arr)  # type: ignore[arg-type]
            master = previous["master"]
            runlog.last_cost, runlog.last_gap, runlog.last_gain_error = (
                float(master.get(k, math.inf)) for k in ("last_cost", "last_gap", "last_gain_error"))
            runlog.updates = rule.stats.updates
        else:  # a new run: what an earlier run left in this directory is not its own
            for name in (CHECKPOINT, "result.json"):
                (self.out / name).unlink(missing_ok=True)
        if problem_data is not None:
            write_json_atomic(self.out / "problem.json", problem_data)
        # logs as of the checkpoint (cut back: later rows described work the restored master never saw)
        write_text_atomic(history_path, csv_text(HISTORY_FIELDS, [astuple(h) for h in runlog.history]))
        write_text_atomic(arrivals_path, csv_text(ARRIVAL_FIELDS, runlog.arrivals))
        self._rows = [len(runlog.history), len(runlog.arrivals)]
        self._files = [open(history_path, "a", newline=""), open(arrivals_path, "a", newline="")]
        self._writers = [csv.writer(fh) for fh in self._files]
        self._saved = -math.inf

    def flush(self) -> None:
        """Append the history rows and arrivals logged since the last call, and flush them."""
        m = self.runlog
        self._writers[0].writerows([csv_value(v) for v in astuple(row)] for row in m.history[self._rows[0]:])
        self._writers[1].writerows(m.arrivals[self._rows[1]:])
        self._rows = [len(m.history), len(m.arrivals)]
        for fh in self._files:
            fh.flush()

    def save(self, status: str = "running", *, K: Any = None) -> None:
        """Flush the logs, then atomically replace ``checkpoint.json``."""
        self.flush()
        m = self.runlog
        gap = m.last_gap
        state = self.rule.state_dict()
        for key, value in (("last_cost", m.last_cost), ("last_gap", gap), ("last_gain_error", m.last_gain_error)):
            state[key] = value if math.isfinite(value) else repr(value)
        data = {
            "format": _FORMAT, "status": status, "saved_at": time.time(), "elapsed_s": m.clock(),
            "calibration_s": self.calibration_s, "resumes": self.resumes, "backend": self.backend,
            "settings": self.given, "K0": self.K0, "problem": self.problem_data, "master": state,
            "history_rows": self._rows[0], "arrival_rows": self._rows[1],
            "relative_gap": gap if math.isfinite(gap) else None,
            "result_K": None if K is None else [list(map(float, row)) for row in K],
        }
        write_json_atomic(self.out / CHECKPOINT, data)
        self._saved = time.monotonic()

    def maybe_save(self) -> None:
        """:meth:`save` if the last checkpoint is more than :data:`INTERVAL` seconds old."""
        if time.monotonic() - self._saved >= INTERVAL:
            self.save()

    def close(self) -> None:
        for fh in self._files:
            fh.close()


