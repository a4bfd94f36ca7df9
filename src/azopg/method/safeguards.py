"""Safeguards any update rule reuses: rollout checks against an anchor, rollback, step and horizon control.

Every ``check_every`` applied updates a worker evaluates the current gain from fixed initial
states (common random numbers, so costs compare exactly). A check that does not beat the
last accepted gain (the *anchor*) rolls the gain back to it and halves the step; a check
that does moves the anchor and grows the step by 20 % (per ``check_every`` updates). The
anchor's cost never rises, so a run never ends worse than ``K0``. The horizon ``tau``
doubles whenever a rejected check shows the tail beyond ``tau`` is not negligible. An
estimate whose every perturbed rollout blew up shrinks the radius (at the anchor) or rolls
back (past it).

With measurement noise (``cost_noise > 0``), or on a plant with its own noise (measured at
calibration), a check is *paired*: it measures the gain and the
anchor afresh on the same states and passes only if the gain is significantly cheaper (see
:mod:`azopg.method.paired`); a remembered measurement of the anchor is never the yardstick, so
a lucky one cannot let the anchor drift up. A check that finds the gain cheaper but not
significantly so is *inconclusive*: the gain goes on descending, the anchor and the step stay. A paired
check that finds the gain not cheaper, yet not significantly costlier either, says the step's effect is
below what the noise lets an estimate or a check resolve: halving the step on such coin flips froze the
gain (he1, process noise 0.1: the step fell from 1e-3 to 1e-11 and the gap stayed at 9.6e-4 from 30,000 to
100,000 rollouts). Instead the gain rolls back to the anchor with its step, and the rule's batch (directions
per estimate) and the check's pairs double (``batch-grow``), as long as the rule has room for it
(:attr:`Safeguards.batch_room`: a larger batch costs at most the rollouts spent so far): each doubling halves
the variance of a step and of a check, so more rollouts keep buying precision.
A rule whose step is a consistent fit of all the data so far (policy iteration,
:attr:`Safeguards.keeps_unresolved`) is not rolled back by such a check: its gain is the fit's best, and the
anchor (the last gain a check found significantly cheaper) is the worse of the two in expectation. Any
inconclusive check (either sign) keeps its gain, anchor and step and doubles the checks' pairs (as long as
the rule has room), so only a gain *significantly costlier* than the anchor is rolled back, and the anchor
keeps moving as the checks resolve ever smaller improvements (he1, process noise 0.1: a gain at gap 1e-4
rolled back to an anchor at 3e-2).
A check (without noise) whose gain is cheaper than the anchor even at ``2 tau`` but whose tail is
not negligible is inconclusive too, and doubles ``tau``: the gain is kept (a slower mode at a
cheaper gain -- often the optimum's -- is no reason to roll back).
On a noisy plant the horizon also comes down as the closed loop gets faster: an accepted check at the
current ``tau`` whose transient's tail beyond ``tau`` is at most ``tol**2`` of the transient
(:meth:`~.tasks.Report.short_tail`) halves ``tau``. A noisy rollout costs time in proportion to ``tau``, and
the horizon ``K0``'s slowest mode needed (chain3: ``K0``'s slowest rate 0.029, ``K*``'s 0.59) is otherwise
kept to the end. Not under policy iteration (:attr:`Safeguards.keeps_unresolved`): with it, its instrumented fit
under process noise ended worse (he1, process noise 0.1, 4000 rollouts, seed 1: gap 1.5e-3 against 4.5e-5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..settings import Settings
from .kinds import Event
from .paired import significantly_cheaper
from .tasks import Report

__all__ = ["Safeguards", "STALL_REJECTS", "GROW", "SHRINK", "MAX_GROW", "CHECK_SAMPLES", "BATCH_GROWTH", "Verdict"]

GROW, SHRINK, MAX_GROW = 1.2, 0.5, 3.0
#: A check judges about CHECK_SAMPLES * mn directions of updates: enough that their sum is a
#: reliable descent direction, so a rejection means the step is too long, not bad luck.
CHECK_SAMPLES = 4
#: Checks rejected in a row after which the step is searched afresh (:attr:`Safeguards.stalled`):
#: each rejection halves the step, so by then it is ~1e12 times smaller than when it last worked.
#: A check of a gain that the step no longer changes counts as STALL_REJECTS rejections. After a
#: search that finds no step the limit doubles (the searches back off exponentially).
STALL_REJECTS = 40
#: Factor of the batch (and of a check's pairs) when a paired check cannot tell the gain from its anchor.
BATCH_GROWTH = 2


@dataclass(frozen=True)
class Verdict:
    """What the safeguards decided about a report; the rule applies it in one place
    (:meth:`~azopg.method.rule.UpdateRule.apply_verdict`): scale the step, horizon and radius,
    count the check, roll back to the anchor if told to, and log ``event``."""

    event: Event
    delay: int
    worker: int
    version_read: int
    alpha: float = 1.0  #: factor of the step
    tau: float = 1.0  #: factor of the horizon
    r: float = 1.0  #: factor of the radius
    accepted: int = 0  #: checks accepted
    rejected: int = 0  #: checks rejected
    rollback: bool = False  #: back to the anchor (then ``delay`` is counted from the new version)
    batch: int = 1  #: factor of the batch ``N`` (directions per estimate; a check's pairs follow it)


class Safeguards:
    """The anchor (last accepted gain), the checks in flight and the branch of valid versions
    (:class:`~azopg.method.plain.PlainGuards`, with ``Settings.plain``: none of it).

    Parameters
    ----------
    K0 : ndarray
        The first anchor.
    settings : Settings
    check_every : int
        Applied updates between two checks.
    """

    #: Plain mode (the paper's rule without safeguards, :mod:`azopg.method.plain`).
    plain = False

    def __init__(self, K0: np.ndarray, settings: Settings, check_every: int) -> None:
        self.settings = settings
        self.check_every = check_every
        self.anchor_K = np.array(K0, dtype=float)
        self.anchor_cost = math.inf
        self.anchor_version = 0
        self.anchor_serial = 0  # counts the anchor's moves (a paired check names the anchor it was paired with)
        self.since_check = 0  # updates applied since the last check was issued
        self.branch_start = 0  # versions before this one were discarded by a rollback
        self._checked: dict[int, np.ndarray] = {}  # gains under check, by task id
        self._paired_with: dict[int, int] = {}  # paired checks: task id -> anchor_serial of their reference
        self._tau_of: dict[int, float] = {}  # checks: task id -> the horizon they were issued at
        #: The rule's current horizon (set by the rule): a check halves it only if measured at it.
        self.current_tau: Callable[[], float] = lambda: math.nan
        self.rejects_in_row = 0
        self.stall_limit = STALL_REJECTS  # doubles after each search that finds no step
        #: Whether checks are paired (measurement noise ``cost_noise``, or a plant whose own noise
        #: calibration measured: see :func:`azopg.method.lifecycle.measure_noise`).
        self.paired = settings.cost_noise > 0
        #: Whether the batch may grow now (set by a rule whose estimates average directions; default: never).
        self.batch_room: Callable[[], bool] = lambda: False
        #: Whether an inconclusive paired check keeps the gain and grows the batch (module docstring; a rule
        #: whose step is a consistent fit sets it) instead of rolling back when the gain is not cheaper.
        self.keeps_unresolved = False
        #: With :attr:`keeps_unresolved`: the last gain an unresolved check kept since the anchor last moved (what a
        #: run out of budget returns, :func:`~.lifecycle.choose_final_gain`), else ``None``.
        self.kept_K: np.ndarray | None = None

    # --------------------------------------------------------------- checks
    def check_due(self) -> bool:
        """Whether the next task is a check (the count of updates restarts if so)."""
        if self.since_check >= self.check_every:
            self.since_check = 0
            return True
        return False

    def watch(self, task_id: int, K: np.ndarray, paired_with: int | None = None, tau: float = math.nan) -> None:
        """A check of gain ``K`` was issued as task ``task_id`` (paired with the anchor of serial
        ``paired_with``, under noise; at horizon ``tau``)."""
        self._checked[task_id] = K
        self._tau_of[task_id] = tau
        if paired_with is not None:
            self._paired_with[task_id] = paired_with

    def forget(self, task_id: int) -> None:
        """Task ``task_id`` was abandoned."""
        self._checked.pop(task_id, None)
        self._paired_with.pop(task_id, None)
        self._tau_of.pop(task_id, None)

    def clear(self) -> None:
        """No check is in flight any more (a restored state)."""
        self._checked.clear()
        self._paired_with.clear()
        self._tau_of.clear()

    def counted(self) -> None:
        """An update was applied."""
        self.since_check += 1

    def discarded(self, version: int) -> bool:
        """Whether gain ``version`` is on a branch a rollback discarded."""
        return version < self.branch_start

    def judge(self, rep: Report, delay: int) -> Verdict:
        """Accept or reject a check's report: move the anchor and grow the step, or roll back."""
        K_checked = self._checked.pop(rep.task_id)
        paired_with = self._paired_with.pop(rep.task_id, self.anchor_serial)
        tau_checked = self._tau_of.pop(rep.task_id, math.nan)
        if (rep.version <= self.anchor_version and not rep.blown_up) or paired_with != self.anchor_serial:
            # the gain checked is the anchor itself or predates it (a rollback happened while
            # the check was in flight), or it was paired with an anchor since replaced: nothing to judge
            return Verdict(Event.CHECK_STALE, delay, rep.worker, rep.version)
        s = self.settings
        if (self.keeps_unresolved and self.paired and not rep.blown_up and math.isfinite(rep.diff)
                and not self.beats_anchor(rep) and not significantly_cheaper(-rep.diff, rep.diff_se)
                and not rep.long_tail(s.tail_tol)):
            # neither significantly cheaper nor significantly costlier: the fit's gain goes on, the anchor and
            # the step stay, the checks' pairs double (module docstring)
            self.kept_K = K_checked
            return Verdict(Event.CHECK_INCONCLUSIVE, delay, rep.worker, rep.version,
                           batch=BATCH_GROWTH if self.batch_room() else 1)
        if self.paired and rep.diff < 0 and not self.beats_anchor(rep) and not rep.blown_up \
                and not rep.long_tail(s.tail_tol):
            # cheaper, but not significantly: the gain goes on (the difference grows with further
            # descent) while the anchor stays; neither step nor anchor changes
            return Verdict(Event.CHECK_INCONCLUSIVE, delay, rep.worker, rep.version)
        if (not self.paired and not rep.blown_up and s.tau is None and rep.long_tail(s.tail_tol)
                and rep.cost2 < self.anchor_cost):
            # cheaper than the anchor even with its tail to 2 tau, but the tail is not negligible (a mode
            # slower than the anchor's, e.g. at the optimum): look further -- double tau, keep the gain, the
            # anchor and the step. The anchor's cost at tau is a lower bound of its cost at 2 tau, so later
            # checks against it stay conservative; an unstable mode's cost soon exceeds it and is rejected.
            return Verdict(Event.CHECK_INCONCLUSIVE, delay, rep.worker, rep.version, tau=2.0)
        if (self.paired and not rep.blown_up and math.isfinite(rep.diff) and rep.diff >= 0
                and not significantly_cheaper(-rep.diff, rep.diff_se) and not rep.long_tail(s.tail_tol)
                and self.batch_room()):
            # not cheaper, not significantly costlier: the step is lost in the noise. Back to the anchor,
            # step kept; estimates and checks average twice as much (module docstring)
            return Verdict(Event.BATCH_GROW, 0, rep.worker, rep.version, rejected=1, rollback=True,
                           batch=BATCH_GROWTH)
        if not self.beats_anchor(rep):
            # a step too small to change the gain cannot win: the search for a step starts afresh
            unchanged = np.array_equal(K_checked, self.anchor_K)
            self.rejects_in_row += STALL_REJECTS if unchanged else 1
            # a slow or unstable mode: look further
            tau = 2.0 if rep.long_tail(s.tail_tol) and s.tau is None else 1.0
            return self.rollback(rep.worker, rep.version, Event.CHECK_REJECT, tau=tau, rejected=1)
        self.rejects_in_row = 0
        self.stall_limit = STALL_REJECTS
        # grow at the same rate per update whatever the check interval (W workers: ~W)
        covered = rep.version - self.anchor_version
        grow = min(GROW ** (covered / self.check_every), MAX_GROW)
        self.move_anchor(K_checked, rep.cost, rep.version)
        # the anchor's transient has decayed long before tau (a noisy plant, checked at the current horizon):
        # halve tau, a noisy rollout's time is in proportion to it (module docstring)
        # (not under policy iteration, whose consistent fit keeps its horizon: module docstring)
        shorter = (self.paired and not self.keeps_unresolved and s.tau is None and tau_checked == self.current_tau()
                   and rep.short_tail(s.tail_tol))
        return Verdict(Event.CHECK_ACCEPT, delay, rep.worker, rep.version, alpha=grow, accepted=1,
                       tau=0.5 if shorter else 1.0)

    def searched(self, found: bool) -> None:
        """The step was searched afresh (a recalibration): the count of rejections restarts; the
        limit doubles if no step was ``found`` (the searches back off exponentially)."""
        self.rejects_in_row = 0
        self.stall_limit = self.stall_limit if found else 2 * self.stall_limit

    def stuck(self) -> bool:
        """Whether the run cannot go on (plain mode only, :mod:`azopg.method.plain`)."""
        return False

    @property
    def stalled(self) -> bool:
        """Whether checks keep failing: the step has shrunk so far that it no longer helps."""
        return self.rejects_in_row >= self.stall_limit

    def beats_anchor(self, rep: Report) -> bool:
        """A checked gain beats the anchor if it is cheaper at the horizon ``tau`` (under noise:
        significantly, by the paired difference the check measured) and its tail beyond ``tau``
        is negligible: a long tail is a slow or unstable mode that has not yet shown, so the
        gain is not trusted (the caller doubles ``tau`` to look further)."""
        cheaper = (significantly_cheaper(rep.diff, rep.diff_se) if self.paired
                   else rep.cost < self.anchor_cost)
        return not rep.blown_up and cheaper and not rep.long_tail(self.settings.tail_tol)

    def move_anchor(self, K: np.ndarray, cost: float, version: int) -> None:
        """Gain ``K`` of ``version``, measured at ``cost``, is the new anchor."""
        self.anchor_K, self.anchor_cost, self.anchor_version = K, cost, version
        self.kept_K = None
        self.anchor_serial += 1

    # ------------------------------------------------------------- failures
    def blown_estimate(self, rep: Report) -> bool:
        """Whether an estimate counts as blown up: every perturbed rollout blew up (one whose
        samples partly survived averages the survivors)."""
        return not math.isfinite(rep.center_cost)

    def blown_round(self, estimates: list[Report], good: list[Report]) -> list[Verdict]:
        """A synchronous round's ``estimates`` of which only ``good`` did not blow up: if none
        did, as :meth:`blown` for the first."""
        return [self.blown(estimates[0], 0)] if estimates and not good else []

    def blown(self, rep: Report, delay: int) -> Verdict:
        """Every perturbed rollout of an estimate blew up."""
        if rep.version == self.anchor_version:  # the anchor is stable: the perturbations were too big
            return Verdict(Event.SHRINK_R, delay, rep.worker, rep.version, r=SHRINK)
        # the step destabilized the gain: a failed step, as a rejected check is
        self.rejects_in_row += 1
        return self.rollback(rep.worker, rep.version, Event.ROLLBACK_BLOWUP)

    def rollback(self, worker: int, version_read: int, event: Event, *, tau: float = 1.0,
                 rejected: int = 0) -> Verdict:
        """Back to the anchor with half the step; estimates of the discarded branch are dropped
        (:meth:`rolled_back` once the rule has made the anchor its new version)."""
        return Verdict(event, 0, worker, version_read, alpha=SHRINK, tau=tau, rejected=rejected, rollback=True)

    def rolled_back(self, version: int) -> None:
        """The anchor is now gain ``version``: versions before it are a discarded branch."""
        self.anchor_version = self.branch_start = version
        self.kept_K = None
        self.since_check = 0  # the next check judges new updates, not the anchor again
