"""What worker processes did and what travelled between them and the master (``result.json`` stats)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["WorkerTraffic"]


@dataclass
class WorkerTraffic:
    """What the worker processes did and what travelled (``result.json`` stats, :meth:`summary`).

    Attributes
    ----------
    reports, tasks, rollouts : int
        Reports received, tasks sent and the rollouts the reports carry.
    bytes_in, bytes_out : int
        Pickled bytes of the reports received and of the tasks sent.
    worker_cpu : float
        The workers' CPU seconds on the received reports' tasks (running and pickling).
    idle : float
        Seconds, summed over workers, from a worker sending a report to the master sending it its next task
        (transit, and the master's work in between).
    start : float
        Seconds to start the worker processes.
    all_busy : float
        Seconds from the end of the start to the first moment every worker had been sent a task (a rule's
        serial calibration runs on one worker first).
    stop : float
        Seconds :meth:`~azopg.engine.processes.ProcessExecutor.close` took (the tasks in flight end, the
        processes exit).
    """

    reports: int = 0
    tasks: int = 0
    rollouts: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    worker_cpu: float = 0.0
    idle: float = 0.0
    start: float = 0.0
    all_busy: float = math.nan
    stop: float = 0.0
    started: float = math.nan  # time.monotonic at the end of the start
    sent_to: set[int] = field(default_factory=set)  # workers sent a task so far
    first: float = math.inf  # time.monotonic of the first task sent after start-up
    last: float = -math.inf  # ... and of the last report received

    def summary(self, workers: int) -> dict[str, float | int | None]:
        """Per-rollout and per-report figures; ``idle_fraction``: :attr:`idle` over the workers' time from the
        first task to the last report; ``worker_all_busy_s`` ``None`` if some worker never had a task."""
        span = workers * max(self.last - self.first, 1e-9)
        reports, rollouts = max(self.reports, 1), max(self.rollouts, 1)
        return {"worker_reports": self.reports, "worker_rollouts": self.rollouts,
                "worker_cpu_s_per_rollout": self.worker_cpu / rollouts, "bytes_per_report": self.bytes_in / reports,
                "bytes_per_task": self.bytes_out / max(self.tasks, 1), "worker_idle_s": self.idle,
                "worker_idle_fraction": min(self.idle / span, 1.0), "worker_start_s": self.start,
                "worker_all_busy_s": self.all_busy if math.isfinite(self.all_busy) else None,
                "worker_stop_s": self.stop}
