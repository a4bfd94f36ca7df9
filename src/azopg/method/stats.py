"""What a rule counts: one record, written by the rule's bookkeeping, read by the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["MEASURED_STATS", "Stats", "Tuning"]

#: Stats read off the master's clock (``stats`` of ``result.json``): not reproducible, so left out
#: wherever two runs are compared.
MEASURED_STATS = ("master_cpu_s", "master_cpu_s_per_rollout")


@dataclass
class Tuning:
    """The knobs of a zero-order rule, chosen by calibration and adapted by the safeguards.

    Attributes
    ----------
    tau : float
        Rollout horizon.
    r : float
        Smoothing radius of the perturbations.
    alpha : float
        Current step size (``Settings.step`` is only its initial value).
    N : int
        Directions per gradient estimate.
    """

    tau: float
    r: float
    alpha: float
    N: int


@dataclass
class Stats:
    """Counters of a run. Every field is a non-negative number, JSON-ready."""

    updates: int = 0
    rollouts: int = 0
    tasks: int = 0
    dropped: int = 0
    rejected: int = 0
    accepted: int = 0
    rollbacks: int = 0
    max_seen_delay: int = 0
    delay_sum: int = 0
    delay_count: int = 0
    bytes_received: int = 0
    workers_replaced: int = 0
    lost_tasks: int = 0
    ignored_reports: int = 0
    blown_estimates: int = 0

    def saw_delay(self, delay: int) -> None:
        """Count the staleness of one estimate."""
        self.max_seen_delay = max(self.max_seen_delay, delay)
        self.delay_sum += delay
        self.delay_count += 1

    def summary(self) -> dict[str, Any]:
        """The ``stats`` block of ``result.json`` (names as users know them)."""
        return {
            "tasks": self.tasks, "dropped": self.dropped, "checks_accepted": self.accepted,
            "checks_rejected": self.rejected, "rollbacks": self.rollbacks,
            "max_delay_seen": self.max_seen_delay,
            "mean_delay": self.delay_sum / self.delay_count if self.delay_count else 0.0,
            "bytes_received": self.bytes_received,
            "bytes_per_update": self.bytes_received / max(self.updates, 1),
            "bytes_per_rollout": self.bytes_received / max(self.rollouts, 1),
            "workers_replaced": self.workers_replaced, "tasks_lost": self.lost_tasks,
            "reports_ignored": self.ignored_reports, "blown_estimates": self.blown_estimates,
        }

    def state(self) -> dict[str, int]:
        """Every counter, for a checkpoint."""
        return asdict(self)

    def load(self, state: dict[str, Any]) -> None:
        """Restore the counters of :meth:`state` (keys of other kinds are ignored; the caller checks
        that a checkpoint has every counter of its format)."""
        for f in fields(self):  # a counter an older checkpoint lacks keeps its default
            setattr(self, f.name, state.get(f.name, getattr(self, f.name)))
