"""Checkpoints: a run directory that survives its master being killed.

With an output directory, :func:`azopg.train` appends every history row and every
arrival to ``history.csv`` and ``arrivals.csv`` as the run goes and, at least every
:data:`INTERVAL` seconds and at the end, atomically replaces ``checkpoint.json``: the
master's state (gain, version, step, radius, horizon, anchor, counters -- see
:meth:`azopg.method.master.Master.state_dict`), the settings, the backend, the problem, the
elapsed time and how many rows of the two logs belong to that state. There is no
generator state to save: every task's draws come from (seed, worker, task id), and task
ids keep rising after a resume.

:func:`resume` continues such a run: no calibration, the master restored, the logs cut
back to the checkpoint (rows written after it described tasks whose effect is lost) and
appended to, update numbers and time continuing from where they were. Tasks that were in
flight when the master stopped are lost, so a resumed run is not bit-for-bit the run it
would have been, and ``azopg replay`` refuses it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AzopgError, SettingsError
from ..method.master import HISTORY_FIELDS, HistoryRow, Master

if TYPE_CHECKING:
    from .train import Result

__all__ = ["CHECKPOINT", "FINISHED", "INTERVAL", "RunFinished", "RunRecorder", "read_checkpoint", "resume"]

CHECKPOINT = "checkpoint.json"
#: Seconds between two checkpoints during a run.
INTERVAL = 1.0
#: Statuses of a run that ended on its own (resuming it has nothing to do).
FINISHED = ("converged", "max_updates", "max_rollouts", "max_time")
_FORMAT = 1
_ARRIVAL_FIELDS = ("task_id", "worker", "kind", "version_read", "tau", "r", "N")
_ARRIVAL_TYPES = (int, int, str, int, float, float, int)
_HISTORY_TYPES = (int, float, int, float, float, int, int, int, float, str)


class RunFinished(AzopgError):
    """:func:`resume` of a run that already ended (converged or out of budget)."""

    def __init__(self, run_dir: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
        self.checkpoint = checkpoint
        self.status = checkpoint["status"]
        gap = checkpoint.get("relative_gap")
        gap_text = f", relative gap {gap:.3e}" if isinstance(gap, float) else ""
        super().__init__(f"{str(run_dir)!r}: the run already finished ({self.status}{gap_text} after "
                         f"{checkpoint['master']['updates']} updates); nothing to resume")


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return value


def _parse(row: list[str], types: tuple[type, ...]) -> tuple[Any, ...]:
    if len(row) != len(types):
        raise ValueError(f"expected {len(types)} columns, got {len(row)}")
    return tuple(math.nan if (t is float and v == "") else t(v) for t, v in zip(types, row, strict=True))


def _read_rows(path: Path, header: tuple[str, ...], types: tuple[type, ...], count: int) -> list[tuple[Any, ...]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        if tuple(next(reader, ())) != header:
            raise ValueError(f"{path.name} has an unexpected header")
        rows = []
        for row in reader:
            if len(rows) == count:
                break
            rows.append(_parse(row, types))
    if len(rows) < count:
        raise ValueError(f"{path.name} has {len(rows)} rows, the checkpoint counts {count}")
    return rows


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _csv_text(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows([_fmt(v) for v in row] for row in rows)
    return buf.getvalue()


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
    master : Master
    given : dict
        Settings as given (``Settings.to_dict()``), stored for :func:`resume`.
    backend : str
    problem_data : dict, optional
        The problem (``LQRProblem.to_dict()``); without it the run cannot be resumed.
    previous : dict, optional
        The checkpoint being resumed: the logs are cut back to it and loaded into the master.
    """

    def __init__(self, out: str | os.PathLike[str], master: Master, *, given: dict[str, Any], backend: str,
                 problem_data: dict[str, Any] | None, K0: Any, previous: dict[str, Any] | None = None) -> None:
        from .output import prepare_out_dir, write_json_atomic

        self.out = prepare_out_dir(out)
        self.master = master
        self.given, self.backend, self.problem_data = given, backend, problem_data
        self.K0 = [list(map(float, row)) for row in K0]
        self.resumes = 0
        self.calibration_s: float | None = None
        history_path, arrivals_path = self.out / "history.csv", self.out / "arrivals.csv"
        if previous is not None:
            self.resumes = int(previous.get("resumes", 0)) + 1
            self.calibration_s = previous.get("calibration_s")
            try:
                hist = _read_rows(history_path, HISTORY_FIELDS, _HISTORY_TYPES, previous["history_rows"])
                arr = _read_rows(arrivals_path, _ARRIVAL_FIELDS, _ARRIVAL_TYPES, previous["arrival_rows"])
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                raise SettingsError(f"{str(out)!r}: cannot resume, the run's logs are damaged ({exc})") from None
            master.history = [HistoryRow(*row) for row in hist]
            master.arrivals = list(arr)  # type: ignore[arg-type]
        else:  # a new run: what an earlier run left in this directory is not its own
            for name in (CHECKPOINT, "result.json"):
                (self.out / name).unlink(missing_ok=True)
        if problem_data is not None:
            write_json_atomic(self.out / "problem.json", problem_data)
        # logs as of the checkpoint (cut back: later rows described work the restored master never saw)
        _write_atomic(history_path, _csv_text(HISTORY_FIELDS, [astuple(h) for h in master.history]))
        _write_atomic(arrivals_path, _csv_text(_ARRIVAL_FIELDS, master.arrivals))
        self._rows = [len(master.history), len(master.arrivals)]
        self._files = [open(history_path, "a", newline=""), open(arrivals_path, "a", newline="")]
        self._writers = [csv.writer(fh) for fh in self._files]
        self._saved = -math.inf

    def flush(self) -> None:
        """Append the history rows and arrivals logged since the last call, and flush them."""
        m = self.master
        self._writers[0].writerows([_fmt(v) for v in astuple(row)] for row in m.history[self._rows[0]:])
        self._writers[1].writerows(m.arrivals[self._rows[1]:])
        self._rows = [len(m.history), len(m.arrivals)]
        for fh in self._files:
            fh.flush()

    def save(self, status: str = "running", *, K: Any = None) -> None:
        """Flush the logs, then atomically replace ``checkpoint.json``."""
        from .output import write_json_atomic

        self.flush()
        m = self.master
        gap = m.last_gap
        data = {
            "format": _FORMAT, "status": status, "saved_at": time.time(), "elapsed_s": m.clock(),
            "calibration_s": self.calibration_s, "resumes": self.resumes, "backend": self.backend,
            "settings": self.given, "K0": self.K0, "problem": self.problem_data, "master": m.state_dict(),
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


def resume(run_dir: str | os.PathLike[str], *, progress: Any = None) -> Result:
    """Continue the run in ``run_dir`` from its checkpoint, with its own settings and
    backend, until its target or budget (``max_time`` counts the time already spent).

    Returns
    -------
    Result
        Of the whole run: history and arrivals include the part before the resume;
        ``stats["resumes"]`` counts the resumes.

    Raises
    ------
    SettingsError
        If ``run_dir`` is not a resumable run directory.
    RunFinished
        If the run already finished (its result is in ``run_dir/result.json``).
    """
    from ..model.problem import LQRProblem
    from ..settings import Settings
    from .train import train

    ckpt = read_checkpoint(run_dir)
    if ckpt["status"] in FINISHED:
        raise RunFinished(run_dir, ckpt)
    if ckpt.get("problem") is None:
        raise SettingsError(f"{str(run_dir)!r}: the run learned a black-box plant; only runs of an LQR problem "
                            "can be resumed")
    try:
        problem = LQRProblem.from_dict(ckpt["problem"])
        settings = Settings.from_dict(ckpt["settings"])
    except (AzopgError, TypeError, ValueError) as exc:
        raise SettingsError(f"{str(run_dir)!r}: unreadable {CHECKPOINT} ({exc})") from None
    return train(problem, settings, K0=ckpt["K0"], backend=ckpt["backend"], progress=progress, out_dir=run_dir,
                 _resume=ckpt)
