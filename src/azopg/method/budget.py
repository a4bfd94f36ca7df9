"""The rollout budget (``max_rollouts``) held exactly.

Every task is admitted against the budget before it goes out (:meth:`RolloutBudget.fit`): the rollouts
told so far, those of the tasks still out (each holds its own count while in flight, :attr:`RolloutBudget.planned`:
:func:`~azopg.method.tasks.task_rollouts`, which the run sets from the plant's evaluation states and common
noise) and what the caller keeps back (the loop keeps the closing checks') may not exceed it. An estimate or
moments task that does not fit asks for as many directions as the rollouts left allow; one that cannot fit
(a check; fewer rollouts left than one direction needs) is refused and the budget marked :attr:`spent`: the
run stops with status ``max_rollouts``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .kinds import TaskKind
from .tasks import Task, task_rollouts

__all__ = ["RolloutBudget"]


class RolloutBudget:
    """The rollouts of ``max_rollouts`` (``cap``; ``None``: no budget) held by the tasks out.

    Attributes
    ----------
    planned : callable
        ``planned(task)``: the rollouts ``task`` will run (default :func:`~azopg.method.tasks.task_rollouts`
        without the plant: exact for estimates and moments, 0 for a check).
    spent : bool
        A task was refused: the budget holds no more.
    """

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.planned: Callable[[Task], int] = task_rollouts
        self.spent = False
        self._held: dict[int, int] = {}  # task id -> rollouts held while the task is out

    def fit(self, task: Task, used: int, keep: int = 0) -> Task | None:
        """``task`` (an estimate's or moments task's ``N`` cut to fit) if the budget holds it after ``used``
        rollouts told, those held and ``keep``; else ``None`` (and :attr:`spent`)."""
        if self.cap is None:
            return task
        left = self.cap - used - sum(self._held.values()) - keep
        need = self.planned(task)
        if need > left and task.kind != TaskKind.EVALUATE and task.N > 0:
            N = left // max(1, need // task.N)
            if N >= 1:
                task = dataclasses.replace(task, N=N)
                need = self.planned(task)
        if need > left:
            self.spent = True
            return None
        self._held[task.task_id] = need
        return task

    def release(self, task_id: int) -> None:
        """Task ``task_id`` reported: its rollouts are told, no longer held."""
        self._held.pop(task_id, None)

    def clear(self) -> None:
        """No task is out any more (a restored state)."""
        self._held.clear()
