"""The files a finished run leaves: ``result.json``, the logs, ``problem.json`` and the plots."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

from .files import csv_text, write_json_atomic, write_text_atomic
from .records import ARRIVAL_FIELDS, HISTORY_FIELDS, Result

__all__ = ["write_run"]


def write_run(out: Path, result: Result, *, plot: bool = True) -> list[Path]:
    """Write ``result.json``, ``history.csv``, ``arrivals.csv``, ``problem.json`` and
    (``plot``) ``convergence.png`` and ``responses.png`` into ``out``; return the paths."""
    written = [out / "result.json", out / "history.csv", out / "arrivals.csv"]
    write_json_atomic(written[0], result.to_dict())
    # the logs are replaced atomically: during a run with a checkpoint they are its record
    write_text_atomic(written[1], csv_text(HISTORY_FIELDS, [astuple(row) for row in result.history]))
    write_text_atomic(written[2], csv_text(ARRIVAL_FIELDS, result.arrivals))
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
