"""Run directories: ``result.json``, ``history.csv`` and the convergence plot."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from ..method.master import HISTORY_FIELDS
from .rundir import out_path
from .train import Result

__all__ = ["ARRIVAL_FIELDS", "csv_bytes", "prepare_out_dir", "write_atomic", "write_json_atomic", "write_run"]

log = logging.getLogger("azopg")

#: Columns of ``arrivals.csv``: every report in the order the master received it.
ARRIVAL_FIELDS = ("task_id", "worker", "kind", "version_read", "tau", "r", "N")


def prepare_out_dir(path: str | os.PathLike[str], *, files: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Create ``path`` if needed and check it is a writable directory.

    Parameters
    ----------
    files : sequence of str
        Names the caller will write: if one exists, the directory is refused unless ``overwrite``.

    Raises
    ------
    SettingsError
        If it cannot be created or written, or already holds one of ``files``.
    """
    out = out_path(path, "--out")
    found = [name for name in files if os.path.lexists(out / name)]
    if found and not overwrite:
        raise SettingsError(f"--out {str(path)!r} holds {', '.join(found)} of an earlier run; pass --overwrite "
                            "to replace it, or choose another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"--out {str(path)!r}: cannot create directory ({exc.strerror})") from None
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise SettingsError(f"--out {str(path)!r}: not a writable directory")
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (temporary file, then rename)."""
    write_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return value


def csv_bytes(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> bytes:
    """The CSV text of ``rows`` (under ``header`` if given), non-finite floats as empty
    cells: the one format of ``history.csv`` and ``arrivals.csv``."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    if header is not None:
        w.writerow(header)
    w.writerows([_fmt(v) for v in row] for row in rows)
    return buf.getvalue().encode()


def write_run(out: str | os.PathLike[str], result: Result, *, plot: bool = True) -> list[Path]:
    """Write ``result.json``, ``history.csv``, ``arrivals.csv``, ``problem.json`` and
    (``plot``) ``convergence.png`` and ``responses.png`` into ``out``.

    Returns
    -------
    list of Path
        The files written. Those that could not be written (``OSError``) are named in one
        warning line of the ``azopg`` logger, and left out.
    """
    out = Path(out)
    written: list[Path] = []
    failed: list[tuple[str, OSError]] = []

    def attempt(name: str, write: Callable[[Path], Any]) -> None:
        try:
            write(out / name)
            written.append(out / name)
        except OSError as exc:
            failed.append((name, exc))

    attempt("result.json", lambda p: write_json_atomic(p, result.to_dict()))
    # the logs are replaced atomically: during a run with a checkpoint they are its record
    attempt("history.csv", lambda p: write_atomic(p, csv_bytes(HISTORY_FIELDS, map(astuple, result.history))))
    attempt("arrivals.csv", lambda p: write_atomic(p, csv_bytes(ARRIVAL_FIELDS, result.arrivals)))
    if result.problem_data is not None:
        attempt("problem.json", lambda p: write_json_atomic(p, result.problem_data))
    if plot:
        from .plots import plot_convergence, plot_responses

        attempt("convergence.png", lambda p: plot_convergence(result, p))
        if result.problem_data is not None:
            from ..model.problem import LQRProblem

            problem = LQRProblem.from_dict(result.problem_data)
            attempt("responses.png", lambda p: plot_responses(problem, result.K, p))
    if failed:
        log.warning("azopg: cannot write %s in %s (%s)", ", ".join(name for name, _ in failed), out,
                    failed[0][1].strerror or failed[0][1])
    return written
