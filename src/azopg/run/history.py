"""The run's observer: turns what a rule does into history rows and the arrival log."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..method.kinds import Arrival, Event, EventRecord
from .records import HistoryRow

__all__ = ["Monitor", "RunLog"]

#: ``K -> (cost, relative_gap, gain_error)``, for reporting only (the exact oracle when the problem is
#: known); ``gain_error`` is ``||K - K*||_F / ||K*||_F``.
Monitor = Callable[[np.ndarray], tuple[float, float, float]]


class RunLog:
    """History and arrivals of a run, kept as the rule reports them (an
    :class:`~azopg.method.rule.Observer`).

    The exact oracle (``monitor``) costs ~0.1-0.3 ms, so with W workers it evaluates the
    gain on every W-th update, on an update that follows at least W/4 rollouts without one (a rule
    that updates rarely, e.g. policy iteration: each of its updates) and at every other event --
    at most about 4/W evaluations per rollout, deterministic, so a run's stopping point does not
    depend on timing. It never takes part in a decision of the rule.

    Parameters
    ----------
    monitor : callable, optional
    clock : callable
        Seconds since the run started.
    workers : int
    """

    def __init__(self, monitor: Monitor | None, clock: Callable[[], float], workers: int) -> None:
        self.monitor, self.clock, self.workers = monitor, clock, workers
        self.history: list[HistoryRow] = []
        self.arrivals: list[Arrival] = []
        self.last_cost = self.last_gap = self.last_gain_error = math.inf
        self.updates = 0
        self._updated_at = 0  # rollouts at the last update

    def targets_met(self, target_gap: float | None, target_gain_error: float | None) -> bool:
        """Whether at least one target is given and the last evaluation meets every given one."""
        targets = [(target_gap, self.last_gap), (target_gain_error, self.last_gain_error)]
        given = [(t, value) for t, value in targets if t is not None]
        return bool(given) and all(value <= t for t, value in given)

    def event(self, record: EventRecord) -> None:
        now = self.clock()
        cost = gap = math.nan
        self.updates = record.updates
        rare = False
        if record.event == Event.UPDATE:
            rare = 4 * (record.rollouts - self._updated_at) >= self.workers
            self._updated_at = record.rollouts
        if self.monitor is not None and (record.event != Event.UPDATE or self.updates % self.workers == 0 or rare):
            cost, gap, self.last_gain_error = self.monitor(record.K)
            self.last_cost, self.last_gap = cost, gap
        self.history.append(HistoryRow(self.updates, now, record.rollouts, cost, gap, record.delay, record.worker,
                                       record.version_read, record.step, record.event.value))

    def arrival(self, row: Arrival) -> None:
        self.arrivals.append(row)
