"""What a run produces, as records and file schemas (a leaf module: it imports no other part of the run).

``history.csv`` has one row per :class:`HistoryRow` (columns :data:`HISTORY_FIELDS`),
``arrivals.csv`` one row per report in the order the master received it
(:data:`ARRIVAL_FIELDS`), ``result.json`` is :meth:`Result.to_dict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..method.kinds import Arrival

__all__ = ["ARRIVAL_FIELDS", "ARRIVAL_TYPES", "HISTORY_FIELDS", "HISTORY_TYPES", "HistoryRow", "Result",
           "csv_value", "parse_row"]

HISTORY_FIELDS = (
    "update", "time_s", "rollouts", "cost", "relative_gap", "delay", "worker",
    "version_read", "step", "event",
)
HISTORY_TYPES: tuple[type, ...] = (int, float, int, float, float, int, int, int, float, str)
#: Columns of ``arrivals.csv``: every report in the order the master received it.
#: ``taken_with``: the reports the master took before it in the same take (0 starts a take).
ARRIVAL_FIELDS = ("task_id", "worker", "kind", "version_read", "tau", "r", "N", "taken_with")
ARRIVAL_TYPES: tuple[type, ...] = (int, int, str, int, float, float, int, int)


@dataclass
class HistoryRow:
    """One event of a run (an applied update, a check, a drop, a rollback).

    ``step`` is the rule's step size when the event happened; ``cost`` and
    ``relative_gap`` are the exact oracle's (``nan`` when not evaluated).
    """

    update: int
    time_s: float
    rollouts: int
    cost: float
    relative_gap: float
    delay: int
    worker: int
    version_read: int
    step: float
    event: str


def csv_value(value: Any) -> Any:
    """A value as written to a CSV cell: floats round-trip exactly, non-finite ones are empty."""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return value


def parse_row(row: list[str], types: tuple[type, ...]) -> tuple[Any, ...]:
    """Inverse of :func:`csv_value` over one CSV row.

    Raises
    ------
    ValueError
        If the row has the wrong number of columns or a cell of the wrong type.
    """
    if len(row) != len(types):
        raise ValueError(f"expected {len(types)} columns, got {len(row)}")
    return tuple(math.nan if (t is float and v == "") else t(v) for t, v in zip(types, row, strict=True))


@dataclass
class Result:
    """What a run learned and how.

    Attributes
    ----------
    K : ndarray, shape (m, n)
        Learned gain (``u = -K x``); never costlier than ``K0``.
    cost, optimal_cost, relative_gap : float
        Exact cost of ``K``, the optimum and their relative gap (``nan`` for a
        black-box plant with no oracle).
    gain_error : float
        ``||K - K*||_F / ||K*||_F`` against the Riccati gain (``nan`` for a black-box plant).
    stabilizing : bool
        Whether ``A - B K`` is Hurwitz (``True`` if unknown but rollouts stayed bounded).
    updates, rollouts : int
        Applied updates and rollouts spent (estimates, checks and calibration).
    wall_time_s : float
    status : str
        ``"converged"`` (every given target -- gap, gain error -- reached), ``"max_updates"``, ``"max_rollouts"``,
        ``"max_time"``, ``"interrupted"`` or, in plain mode, ``"blown_up"`` (every estimate blew up for long:
        the gain destabilized, see :mod:`azopg.method.plain`).
    settings : dict
        Settings as given, plus the values chosen automatically (``step``: the step size
        at the end of the run).
    cost_interval : dict or None
        On a plant with noise of its own: a 95 % confidence interval for the expected cost of ``K`` at the
        run's horizon, from rollouts of its own (:class:`~azopg.method.lifecycle.CostInterval`: ``tau``,
        ``mean``, ``se``, ``df``, ``low``, ``high``, ``rollouts``, ``level``); with a noisy problem's oracle
        also ``optimal_expected_cost`` (of ``K*`` at ``tau``) and ``gap_low``, ``gap_high`` (the interval
        relative to it). ``None`` without noise, and when the measurement would exceed the budget that
        stopped the run (``max_rollouts``, or the time budget during the calibration).
    judge : dict or None
        Under measurement noise on a known problem (:mod:`azopg.run.judge`): ``cost``, ``optimal_cost``,
        ``relative_gap`` and ``gain_error`` are then the expected cost at the final horizon ``tau``, ``K_tau``'s,
        their relative gap ``gap_tau`` (>= 0) and ``||K - K_tau|| / ||K_tau||``; this holds ``optimum``
        (``"K_tau"``), ``tau``, ``K_tau``, ``noise_free_gap`` (of ``K`` to ``K*``) and ``K_tau_noise_free_gap``.
        ``None`` otherwise (the optimum is ``K*``).
    history : list of HistoryRow
    """

    problem: str
    K: np.ndarray
    cost: float
    optimal_cost: float
    relative_gap: float
    stabilizing: bool
    updates: int
    rollouts: int
    wall_time_s: float
    seed: int
    status: str
    settings: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    history: list[HistoryRow] = field(default_factory=list, repr=False)
    given_settings: dict[str, Any] = field(default_factory=dict, repr=False)
    arrivals: list[Arrival] = field(default_factory=list, repr=False)
    problem_data: dict[str, Any] | None = field(default=None, repr=False)
    gain_error: float = math.nan
    cost_interval: dict[str, Any] | None = None
    judge: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` document."""

        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "problem": self.problem,
            "K": self.K.tolist(),
            "cost": num(self.cost),
            "optimal_cost": num(self.optimal_cost),
            "relative_gap": num(self.relative_gap),
            "gain_error": num(self.gain_error),
            "stabilizing": bool(self.stabilizing),
            "updates": self.updates,
            "rollouts": self.rollouts,
            "wall_time_s": self.wall_time_s,
            "seed": self.seed,
            "status": self.status,
            "settings": self.settings,
            "given_settings": self.given_settings,
            "stats": self.stats,
            "cost_interval": self.cost_interval,
            "judge": self.judge,
        }
