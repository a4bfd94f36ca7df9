"""Run directories: ``result.json``, ``history.csv`` and the convergence plot."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import astuple
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from ..method.master import HISTORY_FIELDS
from .train import Result

__all__ = ["ARRIVAL_FIELDS", "prepare_out_dir", "write_json_atomic", "write_run"]

#: Columns of ``arrivals.csv``: every report in the order the master received it.
ARRIVAL_FIELDS = ("task_id", "worker", "kind", "version_read", "tau", "r", "N")


def prepare_out_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check it is a writable directory.

    Raises
    ------
    SettingsError
        If it cannot be created or written.
    """
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"--out {str(path)!r}: cannot create directory ({exc.strerror})") from None
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise SettingsError(f"--out {str(path)!r}: not a writable directory")
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return value


def write_run(out: Path, result: Result, *, plot: bool = True) -> list[Path]:
    """Write ``result.json``, ``history.csv``, ``arrivals.csv``, ``problem.json`` and
    (``plot``) ``convergence.png`` into ``out``."""
    written = [out / "result.json", out / "history.csv"]
    write_json_atomic(written[0], result.to_dict())
    # the logs are replaced atomically: during a run with a checkpoint they are its record
    tmp = out / ".history.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HISTORY_FIELDS)
        for row in result.history:
            w.writerow([_fmt(v) for v in astuple(row)])
    os.replace(tmp, written[1])
    written.append(out / "arrivals.csv")
    tmp = out / ".arrivals.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ARRIVAL_FIELDS)
        w.writerows(result.arrivals)
    os.replace(tmp, written[-1])
    if result.problem_data is not None:
        written.append(out / "problem.json")
        write_json_atomic(written[-1], result.problem_data)
    if plot:
        from .plots import plot_convergence, plot_responses

        written.append(plot_convergence(result, out / "convergence.png"))
        if result.problem_data is not None:
            from ..model.problem import LQRProblem

            problem = LQRProblem.from_dict(result.problem_data)
            written.append(plot_responses(problem, result.K, out / "responses.png"))
    return written
