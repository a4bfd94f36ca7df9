"""The loops that drive a rule with an executor: asynchronous (AZOPG) and synchronous (the baseline).

The asynchronous loop is the whole method in a few lines, as in Ray's parameter-server
example: every worker gets a task; whichever report arrives first is told to the rule, and
that worker gets a new task at the gain as it is now. Workers lost and replaced meanwhile
are refilled by :func:`refill`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from ..method.rule import UpdateRule
from ..method.tasks import Report, Task
from .backends import Executor

__all__ = ["LOOPS", "PROGRESS_PERIOD", "Throttle", "recover", "refill", "run_async", "run_sync"]

#: Why a run stops now (``"converged"``, ``"max_time"``, ...), or ``None`` to go on.
StopReason = Callable[[], "str | None"]


class Tick(Protocol):
    def __call__(self) -> None: ...


#: Seconds between two calls of a run's progress callback (and checkpoint attempts). Read when a
#: :class:`Throttle` is made; 0 calls it after every report (the tests do, so that no verdict
#: hinges on how many reports a machine gets through in 0.1 s).
PROGRESS_PERIOD = 0.1


class Throttle:
    """Calls ``fn`` at most every ``period`` seconds (default :data:`PROGRESS_PERIOD`) of ``clock``;
    the first call always goes through, and with ``period <= 0`` every call does."""

    def __init__(self, fn: Callable[[], None] | None, period: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.fn, self.clock, self._last = fn, clock, -math.inf
        self.period = PROGRESS_PERIOD if period is None else period

    def __call__(self) -> None:
        if self.fn is None:
            return
        now = self.clock()
        if self.period <= 0 or now - self._last >= self.period:
            self._last = now
            self.fn()


def submit(rule: UpdateRule, executor: Executor, worker: int, *, even_if_spent: bool = False) -> Task | None:
    """Give ``worker`` the rule's next task, if the rollout budget holds it and the run's closing checks
    (:meth:`UpdateRule.admit`, :meth:`UpdateRule.closing_rollouts`; else none, and the run stops with status
    ``max_rollouts``). Once the budget is spent (:attr:`UpdateRule.budget_spent`) none is asked, unless
    ``even_if_spent``: a round's lost task is redone (:func:`_gather`), and a refill asks for every idle worker
    once it began (:func:`refill`) -- the budget may still hold a smaller task than the one it refused."""
    if rule.budget_spent and not even_if_spent:
        return None
    task = rule.admit(rule.ask(worker), keep=rule.closing_rollouts())
    if task is not None:
        executor.submit(task)
    return task


def refill(rule: UpdateRule, executor: Executor) -> None:
    """Give a task to every worker that has none (one just replaced after a loss)."""
    if rule.budget_spent:
        return
    for w in executor.idle_workers():
        submit(rule, executor, w, even_if_spent=True)


def recover(rule: UpdateRule, executor: Executor) -> None:
    """A rule whose checks keep failing searches its step afresh (blocking; other reports wait)."""
    if rule.needs_recalibration:
        rule.recalibrate(executor.run)


def run_async(rule: UpdateRule, executor: Executor, should_stop: StopReason, tick: Tick) -> str:
    """Apply each report at once and hand its worker a new task, until ``should_stop`` says why not.
    Reports that arrived while the master was busy are taken together (:meth:`UpdateRule.tell_many`).
    Each worker starts with ``executor.depth`` tasks (all at the initial gain) and so keeps that many."""
    for w in range(executor.workers):
        for _ in range(executor.depth):
            submit(rule, executor, w)
    while (reason := should_stop()) is None:
        rep = executor.next_report(timeout=0.5)
        if rep is not None:
            take = [rep, *executor.ready_reports()]
            rule.tell_many(take)
            recover(rule, executor)
            for done in take:
                submit(rule, executor, done.worker)
        refill(rule, executor)
        if rep is not None:
            tick()
    return reason


def run_sync(rule: UpdateRule, executor: Executor, should_stop: StopReason, tick: Tick) -> str:
    """Every round all workers start from the same gain and the rule waits for all of them
    (a barrier) before one round update."""
    while (reason := should_stop()) is None:
        tasks: dict[int, Task] = {}
        for w in range(executor.workers):
            task = submit(rule, executor, w)
            if task is not None:
                tasks[w] = task
        if not tasks:
            continue  # the budget holds no task: should_stop says so
        got = _gather(rule, executor, tasks, should_stop)
        if got is None:
            return "max_rollouts" if rule.budget_spent else "max_time"
        rule.tell_round([got[w] for w in sorted(got)])
        recover(rule, executor)
        tick()
    return reason


def _gather(rule: UpdateRule, executor: Executor, tasks: dict[int, Task],
            should_stop: StopReason) -> dict[int, Report] | None:
    """The round's reports by worker (``None`` if the time budget ran out while waiting, or the rollout budget
    cannot hold a lost task again)."""
    got: dict[int, Report] = {}
    while len(got) < len(tasks):
        rep = executor.next_report(timeout=0.5)
        if rep is not None and rep.worker in tasks and rep.task_id == tasks[rep.worker].task_id:
            got[rep.worker] = rep
        elif rep is None and should_stop() == "max_time":
            return None
        for w in executor.idle_workers():  # a worker replaced after a loss: its task of this round is redone
            if w in tasks and w not in got:
                task = submit(rule, executor, w, even_if_spent=True)
                if task is None:
                    return None
                tasks[w] = task
    return got


#: Loop policy name -> loop.
LOOPS: dict[str, Callable[[UpdateRule, Executor, StopReason, Tick], str]] = {"async": run_async, "sync": run_sync}
