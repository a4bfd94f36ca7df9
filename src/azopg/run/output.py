"""The files a finished run leaves: ``result.json``, the logs, ``problem.json`` and the plots."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path
from typing import Any

from .files import csv_bytes, write_atomic, write_json_atomic
from .records import ARRIVAL_FIELDS, HISTORY_FIELDS, Result

__all__ = ["write_run"]

log = logging.getLogger("azopg")


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
