"""Checkpoints: a run directory that survives its master being killed.

With an output directory, :func:`azopg.train` appends every history row and every
arrival to ``history.csv`` and ``arrivals.csv`` as the run goes and, at least every
:data:`INTERVAL` seconds and at the end, atomically replaces ``checkpoint.json``: the
master's state (gain, version, step, radius, horizon, anchor, counters -- see
:meth:`azopg.method.rule.UpdateRule.state_dict`), the settings, the backend, the problem, the
elapsed time and how many rows (and bytes, with their sha256) of the two logs belong to
that state. There is no generator state to save: every task's draws come from (seed,
worker, task id), and task ids keep rising after a resume.

:func:`azopg.run.train.resume` continues such a run: no calibration, the master restored, the logs cut
back to the checkpoint (rows written after it described tasks whose effect is lost) and
appended to, update numbers and time continuing from where they were. Tasks that were in
flight when the master stopped are lost, so a resumed run is not bit-for-bit the run it
would have been, and ``azopg replay`` refuses it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

from ..errors import AzopgError, SettingsError
from ..method.kinds import Arrival, TaskKind
from ..method.rule import UpdateRule
from .files import csv_bytes, write_atomic, write_json_atomic
from .history import RunLog
from .records import ARRIVAL_FIELDS, ARRIVAL_TYPES, HISTORY_FIELDS, HISTORY_TYPES, HistoryRow, parse_row
from .rundir import CHECKPOINT, FINISHED, FORMAT, RunDir, claim, validate_checkpoint

__all__ = ["CHECKPOINT", "FINISHED", "INTERVAL", "RunFinished", "RunRecorder", "open_run", "read_checkpoint"]

log = logging.getLogger("azopg")

#: Seconds between two checkpoints during a run.
INTERVAL = 1.0
_LOGS = ("history.csv", "arrivals.csv")


class RunFinished(AzopgError):
    """:func:`resume` of a run that already ended (converged or out of budget)."""

    def __init__(self, run_dir: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
        self.checkpoint = checkpoint
        self.status = checkpoint["status"]
        gap = checkpoint.get("relative_gap")
        gap_text = f", relative gap {gap:.3e}" if isinstance(gap, float) else ""
        super().__init__(f"{str(run_dir)!r}: the run already finished ({self.status}{gap_text} after "
                         f"{checkpoint['master']['updates']} updates); nothing to resume")


def _read_log(path: Path, header: tuple[str, ...], types: tuple[type, ...], count: int,
              entry: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The ``count`` rows of the first ``entry["bytes"]`` bytes of a log, checked against
    their sha256 in the checkpoint (rows after them describe work the checkpoint never saw)."""
    data = path.read_bytes()
    length = entry["bytes"]
    if len(data) < length:
        raise ValueError(f"{path.name} has {len(data)} bytes, fewer than the {length} the checkpoint counts")
    prefix = data[:length]
    if hashlib.sha256(prefix).hexdigest() != entry["sha256"]:
        raise ValueError(f"{path.name} is not the log of this checkpoint (its first {length} bytes differ from "
                         "those the checkpoint recorded)")
    reader = csv.reader(io.StringIO(prefix.decode(), newline=""))
    if tuple(next(reader, ())) != header:
        raise ValueError(f"{path.name} has an unexpected header")
    rows = [parse_row(row, types) for row in reader]
    if len(rows) != count:
        raise ValueError(f"{path.name} has {len(rows)} rows, the checkpoint counts {count}")
    return rows


def read_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint of the run in ``run_dir``, every field checked
    (:func:`azopg.run.rundir.validate_checkpoint`).

    Raises
    ------
    SettingsError
        If ``run_dir`` holds no valid checkpoint (not a run directory, a run that
        stopped before its calibration finished, or a damaged checkpoint).
    """
    path = Path(run_dir) / CHECKPOINT
    if not Path(run_dir).is_dir():
        what = "not a directory" if Path(run_dir).exists() else "no such directory"
        raise SettingsError(f"{str(run_dir)!r}: {what}")
    if path.is_dir():
        raise SettingsError(f"{str(run_dir)!r}: {CHECKPOINT} is a directory, not a checkpoint file")
    if not path.exists():
        raise SettingsError(f"{str(run_dir)!r}: no {CHECKPOINT} (not an azopg run directory, or the run "
                            "stopped before its calibration finished)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SettingsError(f"{str(run_dir)!r}: unreadable {CHECKPOINT} ({exc})") from None
    return validate_checkpoint(data, run_dir)


class RunRecorder:
    """Keeps a run directory up to date during a run: logs appended, checkpoint refreshed.

    Nothing is written before the first :meth:`save` or :meth:`flush`, so a run rejected
    during its calibration leaves nothing behind. If the directory stops accepting writes,
    one warning says so and the run goes on without checkpoints.

    Parameters
    ----------
    out : path or RunDir
        The run directory: claimed here (see :func:`azopg.run.rundir.claim`) and released
        by :meth:`close`, unless a :class:`~azopg.run.rundir.RunDir` claimed by the caller.
    rule : UpdateRule
        Whose state the checkpoint holds.
    runlog : RunLog
        Whose history and arrivals the logs hold.
    given : dict
        Settings as given (``Settings.to_dict()``), stored for :func:`azopg.run.train.resume`.
    backend : str
    problem_data : dict, optional
        The problem (``LQRProblem.to_dict()``); without it the run cannot be resumed.
    previous : dict, optional
        The checkpoint being resumed: the logs are checked against it, cut back to it and
        loaded into the run's log.
    overwrite : bool
        Replace a run ``out`` holds (else such a directory is refused).
    env_data : dict, optional
        The environment spec of a black-box run (:meth:`azopg.run.envspec.EnvSpec.to_dict`):
        with it the run can be resumed (``problem_data`` is then its judge, if any).
    """

    def __init__(self, out: str | os.PathLike[str], rule: UpdateRule, runlog: RunLog, *, given: dict[str, Any],
                 backend: str, problem_data: dict[str, Any] | None, K0: Any, previous: dict[str, Any] | None = None,
                 overwrite: bool = False, env_data: dict[str, Any] | None = None) -> None:
        self._owns = not isinstance(out, RunDir)
        self.run_dir: RunDir = out if isinstance(out, RunDir) else claim(out, overwrite=overwrite,
                                                                         resume=previous is not None)
        self.out = self.run_dir.path
        self.rule, self.runlog = rule, runlog
        self.given, self.backend, self.problem_data = given, backend, problem_data
        self.env_data = env_data
        self.K0 = [list(map(float, row)) for row in K0]
        self.resumes = 0
        self.calibration_s: float | None = None
        self.write_error: OSError | None = None
        self._files: list[Any] = []
        if previous is not None:
            self.resumes = previous["resumes"] + 1
            self.calibration_s = previous["calibration_s"]
            try:
                hist, arr = (_read_log(self.out / name, header, types, previous[rows], previous["logs"][name])
                             for name, header, types, rows in zip(
                                 _LOGS, (HISTORY_FIELDS, ARRIVAL_FIELDS), (HISTORY_TYPES, ARRIVAL_TYPES),
                                 ("history_rows", "arrival_rows"), strict=True))
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                self.close()
                raise SettingsError(f"{str(self.out)!r}: cannot resume: {exc}") from None
            runlog.history = [HistoryRow(*row) for row in hist]
            runlog.arrivals = [Arrival(task_id, worker, TaskKind(kind), *rest) for task_id, worker, kind, *rest in arr]
            state = previous["master"]
            runlog.last_cost, runlog.last_gap, runlog.last_gain_error = (
                float(state.get(k, math.inf)) for k in ("last_cost", "last_gap", "last_gain_error"))
            runlog.updates = int(state["updates"])
        self._rows = [0, 0]
        self._hashes = [hashlib.sha256(), hashlib.sha256()]
        self._bytes = [0, 0]
        self._saved = -math.inf

    def _open(self) -> None:
        """Write ``problem.json`` and the logs as of now (a resumed run's cut back to its
        checkpoint), then open the logs for appending."""
        if self.problem_data is not None:
            write_json_atomic(self.out / "problem.json", self.problem_data)
        m = self.runlog
        logs: tuple[Sequence[tuple[Any, ...]], ...] = ([astuple(h) for h in m.history], m.arrivals)
        for i, (header, rows) in enumerate(zip((HISTORY_FIELDS, ARRIVAL_FIELDS), logs, strict=True)):
            data = csv_bytes(header, rows)
            write_atomic(self.out / _LOGS[i], data)
            self._hashes[i], self._bytes[i], self._rows[i] = hashlib.sha256(data), len(data), len(rows)
        self._files = [open(self.out / name, "ab") for name in _LOGS]

    def _failed(self, exc: OSError) -> None:
        self.write_error = exc
        log.warning("azopg: cannot write to %s (%s); the run goes on without checkpoints (it cannot be resumed)",
                    self.out, exc.strerror or exc)
        self._close_logs()

    def flush(self) -> None:
        """Append the history rows and arrivals logged since the last call, and flush them."""
        if self.write_error is not None:
            return
        m = self.runlog
        try:
            if not self._files:
                self._open()
                return
            new: tuple[Sequence[tuple[Any, ...]], ...] = ([astuple(h) for h in m.history[self._rows[0]:]],
                                                          m.arrivals[self._rows[1]:])
            for i, rows in enumerate(new):
                data = csv_bytes(None, rows)
                self._files[i].write(data)
                self._files[i].flush()
                self._hashes[i].update(data)
                self._bytes[i] += len(data)
                self._rows[i] += len(rows)
        except OSError as exc:
            self._failed(exc)

    def save(self, status: str = "running", *, K: Any = None) -> None:
        """Flush the logs, then atomically replace ``checkpoint.json``."""
        self.flush()
        if self.write_error is not None:
            return
        m = self.runlog
        gap = m.last_gap
        state = self.rule.state_dict()
        for key, value in (("last_cost", m.last_cost), ("last_gap", gap), ("last_gain_error", m.last_gain_error)):
            state[key] = value if math.isfinite(value) else repr(value)
        data = {
            "format": FORMAT, "status": status, "saved_at": time.time(), "elapsed_s": m.clock(),
            "calibration_s": self.calibration_s, "resumes": self.resumes, "backend": self.backend,
            "settings": self.given, "K0": self.K0, "problem": self.problem_data, "env": self.env_data, "master": state,
            "history_rows": self._rows[0], "arrival_rows": self._rows[1],
            "logs": {name: {"bytes": self._bytes[i], "sha256": self._hashes[i].hexdigest()}
                     for i, name in enumerate(_LOGS)},
            "relative_gap": gap if math.isfinite(gap) else None,
            "result_K": None if K is None else [list(map(float, row)) for row in K],
        }
        try:
            write_json_atomic(self.out / CHECKPOINT, data)
        except OSError as exc:
            self._failed(exc)
        self._saved = time.monotonic()

    def _close_logs(self) -> None:
        for fh in self._files:
            with contextlib.suppress(OSError):
                fh.close()
        self._files = []

    def maybe_save(self) -> None:
        """:meth:`save` if the last checkpoint is more than :data:`INTERVAL` seconds old."""
        if time.monotonic() - self._saved >= INTERVAL:
            self.save()

    def close(self) -> None:
        """Close the logs and, if this recorder claimed the directory, release it."""
        self._close_logs()
        if self._owns:
            self.run_dir.release()


def open_run(run_dir: str | os.PathLike[str]) -> tuple[RunDir, dict[str, Any]]:
    """Lock the run directory ``run_dir`` and read its checkpoint (release the
    :class:`~azopg.run.rundir.RunDir` when done).

    Raises
    ------
    SettingsError
        If ``run_dir`` holds no valid checkpoint or another run holds its lock.
    """
    read_checkpoint(run_dir)  # a directory that holds no run gets no lock file
    locked = claim(run_dir, resume=True)
    try:
        return locked, read_checkpoint(run_dir)  # as of now, under the lock
    except BaseException:
        locked.release()
        raise
