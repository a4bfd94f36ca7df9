"""A rule's life outside the loop: calibration, the step search after a stall, the final gain.

These are the orchestration around :meth:`~azopg.method.rule.UpdateRule.ask` and ``tell``:
each runs a few tasks at once (``run``, blocking) through the rule's :meth:`~Learner.probe`,
then sets the rule's tuning, anchor and versions. The rule calls them from its methods of the
same names, which a rule may extend (policy iteration's refill its buffer and recalibrate
without a line search).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..errors import OutOfTime
from ..settings import Settings
from .calibration import Probe, calibrate, search_step
from .kinds import Event, TaskKind
from .paired import CHECK_PAIRS, FINAL_PAIRS, significantly_cheaper
from .safeguards import Safeguards
from .stats import Stats, Tuning
from .tasks import Report, Task

__all__ = ["FINAL_TASK", "Learner", "Runner", "calibrate_rule", "choose_final_gain", "recalibrate_rule",
           "timed_probe"]

#: Runs one task to completion and returns its report.
Runner = Callable[[Task], Report]
#: Task ids of the final paired checks under noise start here (far above any id a run issues).
FINAL_TASK = 2**48


class Learner(Protocol):
    """What the orchestration reads and writes of a rule (:class:`~azopg.method.rule.UpdateRule`)."""

    K: np.ndarray
    K0: np.ndarray
    version: int
    settings: Settings
    tuning: Tuning
    stats: Stats
    safeguards: Safeguards
    out_of_time: Callable[[], bool]

    @property
    def line_search(self) -> bool: ...

    def probe(self, run: Runner, kind: TaskKind, K: np.ndarray, tau: float | None = None, r: float | None = None,
              N: int | None = None, *, ref: np.ndarray | None = None, pairs: int = CHECK_PAIRS,
              task_id: int | None = None) -> Report: ...

    def new_version(self, K: np.ndarray) -> None: ...

    def log(self, event: Event, delay: int = 0, worker: int = -1, version_read: int = -1) -> None: ...


def timed_probe(rule: Learner, run: Runner) -> Probe:
    """The rule's probe with ``run`` for a calibration or step search: raises
    :class:`~azopg.errors.OutOfTime` before a probe once the time budget is spent."""
    def probe(kind: TaskKind, K: np.ndarray, tau: float, r: float, N: int, *,
              ref: np.ndarray | None = None) -> Report:
        if rule.out_of_time():
            raise OutOfTime(f"the time budget ran out during the {'re' if rule.version else ''}calibration")
        return rule.probe(run, kind, K, tau, r, N, ref=ref)

    return probe


def calibrate_rule(rule: Learner, run: Runner) -> None:
    """Choose ``tau``, ``r`` and ``alpha`` from rollouts at ``K0`` (see :func:`~.calibration.calibrate`);
    the line search's step, if it found one, is the first update."""
    probe = timed_probe(rule, run)
    settings, t = rule.settings, rule.tuning
    if not rule.line_search and settings.step is None:  # the rule's own initial step is kept
        settings = dataclasses.replace(settings, step=t.alpha)
    cal = calibrate(probe, rule.K.copy(), settings, t.N, tau=t.tau, r=t.r, alpha=t.alpha)
    t.tau, t.r, t.alpha = cal.tau, cal.r, cal.alpha
    rule.safeguards.anchor_cost = cal.f0
    if cal.K1 is not None and not rule.safeguards.plain:  # plain: every update is the rule's own
        rule.new_version(cal.K1)
        rule.safeguards.move_anchor(rule.K.copy(), cal.cost1, rule.version)
        rule.stats.updates += 1
    rule.log(Event.CALIBRATE)


def recalibrate_rule(rule: Learner, run: Runner) -> None:
    """Search the step afresh at the anchor (re-measured at the current horizon), with new
    estimates: a run never gives up silently. Logged as ``recalibrate``."""
    g, t = rule.safeguards, rule.tuning
    found = False
    probe = timed_probe(rule, run)
    anchor = probe(TaskKind.EVALUATE, g.anchor_K.copy(), t.tau, t.r, t.N)
    if not anchor.blown_up:
        g.anchor_cost = anchor.cost
        t.alpha, K1, cost1 = search_step(probe, g.anchor_K.copy(), rule.settings, t.N, tau=t.tau, r=t.r,
                                         f0=anchor.cost)
        if K1 is not None:
            rule.new_version(K1)
            g.move_anchor(rule.K.copy(), cost1, rule.version)
            g.branch_start = rule.version  # estimates in flight were taken on the stalled branch
            rule.stats.updates += 1
            found = True
    g.searched(found)
    rule.log(Event.RECALIBRATE)


def choose_final_gain(rule: Learner, status: str, run: Runner) -> np.ndarray:
    """The gain a run returns: the current one if it reached the target (by the oracle),
    the anchor if interrupted, else whichever of the two a last rollout check finds
    cheaper -- never a gain costlier than ``K0``. Under measurement noise that gain is
    returned only if a larger paired check (:data:`~.paired.FINAL_PAIRS`) finds it
    significantly cheaper than ``K0`` itself; else ``K0`` is. In plain mode (the paper's
    rule, :mod:`~.plain`): always the current gain."""
    g = rule.safeguards
    if status == "converged" or g.plain:  # plain: the last iterate, as published
        return rule.K.copy()
    if status == "interrupted":
        return g.anchor_K.copy()
    if rule.settings.cost_noise == 0:
        rep = rule.probe(run, TaskKind.EVALUATE, rule.K.copy())
        return rule.K.copy() if g.beats_anchor(rep) else g.anchor_K.copy()
    K = g.anchor_K.copy()
    if not np.array_equal(rule.K, K) and _cheaper(rule, run, rule.K, K, CHECK_PAIRS, 0):
        K = rule.K.copy()
    if np.array_equal(K, rule.K0) or not _cheaper(rule, run, K, rule.K0, FINAL_PAIRS, 1):
        return rule.K0.copy()
    return K


def _cheaper(rule: Learner, run: Runner, K: np.ndarray, ref: np.ndarray, pairs: int, i: int) -> bool:
    """Whether a paired check finds ``K`` significantly cheaper than ``ref`` (and trusted).
    The check's identity (so its noise) depends on the version only, not on how many tasks
    were in flight when the run stopped: a replay draws the same noise."""
    task_id = FINAL_TASK + 2 * rule.version + i
    rep = rule.probe(run, TaskKind.EVALUATE, K.copy(), ref=ref, pairs=pairs, task_id=task_id)
    return (not rep.blown_up and significantly_cheaper(rep.diff, rep.diff_se)
            and not rep.long_tail(rule.settings.tail_tol))
