"""The run's deadline as a task sees it: a task stops between rollouts (and a long rollout between its steps or
grid chunks) once the run's time budget is spent, raising :class:`~azopg.errors.OutOfTime`.

The deadline is a :func:`time.monotonic` instant (the machine's clock, shared by worker processes), set for the
duration of one task by :func:`deadline_scope` (:func:`~azopg.method.tasks.run_task` does) and asked by
:func:`check_deadline` wherever a plant can stop cleanly. A task that is not cut draws exactly what it would
without a deadline: the check draws nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from ..errors import OutOfTime

__all__ = ["check_deadline", "deadline_scope"]

_deadline: float | None = None  # this process's task deadline (None: none)


@contextlib.contextmanager
def deadline_scope(at: float | None) -> Iterator[None]:
    """Hold the deadline ``at`` (:func:`time.monotonic` seconds; ``None``: none) while the block runs."""
    global _deadline
    before, _deadline = _deadline, at
    try:
        yield
    finally:
        _deadline = before


def check_deadline() -> None:
    """Raise :class:`~azopg.errors.OutOfTime` if the deadline of the task running now has passed."""
    if _deadline is not None and time.monotonic() >= _deadline:
        raise OutOfTime("the time budget ran out during a task")
