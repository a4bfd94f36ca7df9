"""The vocabulary of the rule-loop protocol: task kinds, event names and the records an observer gets.

Both enumerations are :class:`enum.StrEnum`: a member *is* its string (``TaskKind.ESTIMATE ==
"estimate"``), so ``history.csv``, ``arrivals.csv`` and every JSON file read and write the same
bytes as plain strings did.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple, Protocol

import numpy as np

__all__ = ["Arrival", "Event", "EventRecord", "Observer", "Silent", "TaskKind"]


class TaskKind(StrEnum):
    """What a worker does with a :class:`~azopg.method.tasks.Task`."""

    ESTIMATE = "estimate"  #: a zero-order gradient estimate
    EVALUATE = "evaluate"  #: a check: the cost from fixed evaluation states (paired under noise)
    MOMENTS = "moments"  #: raw rollouts with their state moments (policy iteration)


class Event(StrEnum):
    """What a rule reports to its observer (the ``event`` column of ``history.csv``)."""

    CALIBRATE = "calibrate"
    MEASURE_NOISE = "measure-noise"  #: calibration found the plant noisy (:func:`.lifecycle.measure_noise`)
    RECALIBRATE = "recalibrate"
    RESUME = "resume"
    UPDATE = "update"
    DROP = "drop"
    CHECK_ACCEPT = "check-accept"
    CHECK_REJECT = "check-reject"
    CHECK_INCONCLUSIVE = "check-inconclusive"
    CHECK_STALE = "check-stale"
    #: under noise a check could not tell the gain from its anchor: batch and check pairs double (:mod:`.safeguards`)
    BATCH_GROW = "batch-grow"
    SHRINK_R = "shrink-r"
    ROLLBACK_BLOWUP = "rollback-blowup"
    ROLLBACK_ILL_CONDITIONED = "rollback-ill-conditioned"
    ILL_CONDITIONED = "ill-conditioned"  #: the data do not determine the step (rank-deficient)
    STEP_IMPRECISE = "step-imprecise"  #: the step's standard error is too large (policy iteration)
    STEP_OVERFLOW = "step-overflow"  #: the step leads to a gain the equations cannot represent
    WORKER_LOST = "worker-lost"
    OUT_OF_TIME = "out-of-time"
    CALIBRATION_CUT_SHORT = "calibration-cut-short"
    SKIP_BLOWUP = "skip-blowup"  #: plain mode: a blown-up estimate skipped (:mod:`azopg.method.plain`)


class Arrival(NamedTuple):
    """One row of the arrival log (``arrivals.csv``): a report as received, with its task's settings."""

    task_id: int
    worker: int
    kind: TaskKind
    version_read: int
    tau: float
    r: float
    N: int
    #: Reports the master took before this one in the same take (0: the first of a take; a take is
    #: every report that had arrived while the master was busy, :meth:`UpdateRule.tell_many`).
    taken_with: int = 0


class EventRecord(NamedTuple):
    """What an observer is told of one event: the event and the learner right after it."""

    event: Event
    K: np.ndarray  #: the current gain (not a copy: read it at once)
    version: int
    updates: int
    rollouts: int
    step: float  #: the step size ``alpha``
    delay: int
    worker: int
    version_read: int


class Observer(Protocol):
    """Receives what a rule does, in order (see :class:`azopg.run.history.RunLog`)."""

    def event(self, record: EventRecord) -> None:
        """An update, check, drop, rollback, ... happened."""

    def arrival(self, row: Arrival) -> None:
        """A report was received."""


class Silent:
    """The observer that ignores everything (a rule without one)."""

    def event(self, record: EventRecord) -> None:
        pass

    def arrival(self, row: Arrival) -> None:
        pass
