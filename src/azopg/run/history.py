"""The run's observer: turns what a rule does into history rows and the arrival log."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..method.kinds import Arrival, Event, EventRecord
from .records import HistoryRow

__all__ = ["MONITOR_SPAN", "Monitor", "RunLog", "monitor_stride"]

#: ``K -> (cost, relative_gap, gain_error)``, for reporting only (the exact oracle when the problem is
#: known); ``gain_error`` is ``||K - K*||_F / ||K*||_F``.
Monitor = Callable[[np.ndarray], tuple[float, float, float]]

#: The oracle samples at least this many updates per doubling of a run's length (see :func:`monitor_stride`).
MONITOR_SPAN = 4096


def monitor_stride(updates: int, workers: int) -> int:
    """Every how many updates the oracle evaluates the gain once a run has made ``updates``: ``W``
    for the first ``MONITOR_SPAN W`` updates, then ``W`` times the power of 2 that keeps it at most
    ``updates / MONITOR_SPAN``. A target gap is so seen at most ``1 / MONITOR_SPAN`` (0.024 %) of the
    updates late, and a run of ``u`` updates spends ``O(MONITOR_SPAN log u)`` oracle calls, not ``u / W``."""
    q = updates // (MONITOR_SPAN * workers)
    return workers << max(q.bit_length() - 1, 0)


class RunLog:
    """History and arrivals of a run, kept as the rule reports them (an
    :class:`~azopg.method.rule.Observer`).

    The exact oracle (``monitor``) costs ~0.1-0.5 ms, more than an update, so with W workers it
    evaluates the gain on every W-th update (sparser in long runs: every ``monitor_stride``-th), on
    an update that follows at least a quarter stride of rollouts without one (a rule that updates
    rarely, e.g. policy iteration: each of its updates) and at every other event -- at most about
    4/W evaluations per rollout, deterministic, so a run's stopping point does not depend on
    timing. It never takes part in a decision of the rule.

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
        stride = monitor_stride(self.updates, self.workers)
        rare = False
        if record.event == Event.UPDATE:
            rare = 4 * (record.rollouts - self._updated_at) >= stride
            self._updated_at = record.rollouts
        if self.monitor is not None and (record.event != Event.UPDATE or self.updates % stride == 0 or rare):
            cost, gap, self.last_gain_error = self.monitor(record.K)
            self.last_cost, self.last_gap = cost, gap
        self.history.append(HistoryRow(self.updates, now, record.rollouts, cost, gap, record.delay, record.worker,
                                       record.version_read, record.step, record.event.value))

    def arrival(self, row: Arrival) -> None:
        self.arrivals.append(row)
