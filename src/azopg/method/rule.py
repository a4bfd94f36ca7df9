"""The update-rule seam: the loop asks a rule for tasks and tells it each report.

:class:`UpdateRule` keeps the bookkeeping every rule shares -- task identities, the gain's
versions, staleness, accounting, the safeguards -- in :meth:`~UpdateRule.tell`, so that a
rule's own :meth:`~UpdateRule._tell` is only its paper's update (as evosax's strategies keep
bookkeeping in ``tell`` and the algorithm in ``_tell``). What happens is reported to an
:class:`Observer` (the run's history and arrival log); a rule writes no record itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import OutOfTime, ProblemError
from ..settings import Settings
from .budget import RolloutBudget
from .discrete import start_tau
from .kinds import Arrival, Event, EventRecord, Observer, Silent, TaskKind
from .lifecycle import FINAL_TASK, Runner, calibrate_rule, choose_final_gain, recalibrate_rule
from .paired import CHECK_PAIRS, FINAL_PAIRS
from .plain import PlainGuards
from .safeguards import CHECK_SAMPLES, Safeguards, Verdict
from .state import STALL_FIELDS, STATE_FIELDS, LearnerState
from .stats import Stats, Tuning
from .tasks import Report, Task, report_gradient

__all__ = ["Arrival", "Event", "EventRecord", "FINAL_TASK", "Observer", "STALL_FIELDS", "STATE_FIELDS", "TaskKind",
           "UpdateRule"]


class UpdateRule:
    """Base class of update rules: the gain ``K``, its ``version`` and the shared bookkeeping.

    Parameters
    ----------
    K0 : ndarray, shape (m, n)
        Initial (stabilizing) gain.
    settings : Settings
    observer : Observer, optional
        Told every event and arrival.
    keep_all_gains : bool
        Keep the gain of every version (replay needs them), not only the last ``max_delay``.
    R : ndarray, shape (m, m), optional
        The input weight, if known (rules that precondition by it or step by ``R^-1 E``).
    discrete_time : bool
        The plant is discrete-time: ``tau`` counts steps (see :mod:`azopg.method.discrete`).
    """

    #: Whether calibration chooses the initial step by a line search (else ``tuning.alpha`` is kept).
    line_search = True
    #: Whether a paired check that cannot tell the gain from its anchor doubles the batch (and the check's
    #: pairs) rather than halving the step (:mod:`.safeguards`): rules whose estimates average ``N`` directions.
    grows_batch = False
    #: Whether the rule's tasks need a plant that returns state moments (``rollout(..., moments=True)``).
    needs_moments = False

    def __init__(self, K0: np.ndarray, settings: Settings, *, observer: Observer | None = None,
                 keep_all_gains: bool = False, R: np.ndarray | None = None, discrete_time: bool = False,
                 deterministic_plant: bool = False) -> None:
        s = self.settings = settings
        self.discrete_time = bool(discrete_time)
        self.R = None if R is None else np.array(R, dtype=float)
        self.m, self.n = K0.shape
        d = self.m * self.n
        self.K = np.array(K0, dtype=float)
        self.K0 = self.K.copy()
        self.version = 0
        N = s.batch or max(1, math.ceil(d / (2 * s.workers)))
        self.tuning = Tuning(tau=s.tau or start_tau(self.discrete_time), r=s.r or 0.0, alpha=s.step or 0.0, N=N)
        self.max_delay = s.max_delay or 4 * s.workers * (s.depth or 1) + 4
        self.stats = Stats()
        guards = PlainGuards if s.plain else Safeguards  # plain: the paper's rule, no safeguards
        self.safeguards = guards(self.K, s, s.check_every or math.ceil(CHECK_SAMPLES * d / N))
        self._N0 = N  # the batch a check's CHECK_PAIRS go with (:meth:`check_pairs`)
        if self.grows_batch:
            self.safeguards.batch_room = self.batch_room
        self.safeguards.current_tau = lambda: self.tuning.tau
        self.observer: Observer = observer or Silent()
        self._taken: int | None = None  # inside tell_many: the reports logged so far in this take
        self._keep_all_gains = keep_all_gains
        self._gains: OrderedDict[int, np.ndarray] = OrderedDict({0: self.K.copy()})
        # the anchor when each version was made (serial, gain): what a paired check at that version is paired with
        self._refs: dict[int, tuple[int, np.ndarray]] = {0: (0, self.safeguards.anchor_K)}
        self._issued: dict[int, tuple[float, float, int]] = {}  # task id -> (tau, r, N) as issued
        #: Whether the run's time budget is spent: then a calibration or step search raises
        #: :class:`~azopg.errors.OutOfTime` before its next probe (set by the run).
        self.out_of_time: Callable[[], bool] = lambda: False
        #: Seconds left of the run's time budget (set by the run): a calibration probe that the last
        #: probes' pace predicts would end more than :data:`~.lifecycle.OVERRUN` s past it is not started.
        self.time_left: Callable[[], float] = lambda: math.inf
        self.pace: dict[str, float] = {}  # seconds per unit of horizon of the last calibration probe, by kind
        #: Whether the plant declares itself noise-free (:func:`~azopg.plants.base.is_deterministic`, told by
        #: the run): calibration does not measure its noise.
        self.deterministic_plant = bool(deterministic_plant)
        #: Whether the plant has noise of its own (calibration measures it, :func:`~.lifecycle.measure_noise`):
        #: then checks are paired and judge the transient (:mod:`azopg.method.noisy_eval`).
        self.noisy = False
        #: The relative standard deviation of one rollout's cost at ``K0`` that calibration measured.
        self.noise = 0.0
        #: Whether :func:`~.lifecycle.measure_noise` ran already (``auto`` measures before it picks the rule)
        self.noise_measured = False
        #: ``max_rollouts`` held exactly (:meth:`admit`); its ``planned`` counts are set by the run for its plant.
        self.budget = RolloutBudget(s.max_rollouts)

    # ------------------------------------------------------------ the seam
    def _ask(self, worker: int) -> Task:
        """The rule's next task for ``worker`` (default: an estimate at the current gain)."""
        return self.issue(worker, TaskKind.ESTIMATE)

    def _tell(self, rep: Report, delay: int) -> None:
        """Apply one fresh-enough, finite estimate of staleness ``delay``."""
        raise NotImplementedError

    def _tell_round(self, reports: list[Report]) -> None:
        """Apply one synchronous round of finite estimates, all computed at the current gain."""
        raise NotImplementedError

    # -------------------------------------------------------------- tasks
    def ask(self, worker: int) -> Task:
        """Next task for ``worker``: a check when one is due, else the rule's own."""
        if self.safeguards.check_due():
            return self.issue(worker, TaskKind.EVALUATE)
        return self._ask(worker)

    def admit(self, task: Task, keep: int = 0) -> Task | None:
        """``task`` within the rollout budget, keeping ``keep`` rollouts back (the loop keeps
        :meth:`closing_rollouts`): see :mod:`~.budget`. ``None``: withdrawn, the run stops (``max_rollouts``)."""
        fitted = self.budget.fit(task, self.stats.rollouts, keep)
        if fitted is None:
            self._issued.pop(task.task_id, None)
            self.safeguards.forget(task.task_id)
        elif fitted.N != task.N and task.task_id in self._issued:
            self._issued[task.task_id] = (task.tau, task.r, fitted.N)
        return fitted

    @property
    def budget_spent(self) -> bool:
        """Whether a task was refused because the rollout budget cannot hold it: the run stops."""
        return self.budget.spent

    def closing_rollouts(self) -> int:
        """The rollouts of the checks :func:`~.lifecycle.choose_final_gain` runs at ``max_rollouts`` (the loop
        keeps them from its budget, so the run's end fits in it too): one check of the gain, or under cost
        noise the paired checks against the anchor and ``K0``; none in plain mode or on a plant with noise of
        its own (the anchor is returned)."""
        g, t = self.safeguards, self.tuning
        if g.plain or (g.paired and self.settings.cost_noise == 0):
            return 0
        refs = [(self.K, CHECK_PAIRS), (self.K, FINAL_PAIRS)] if g.paired else [(None, CHECK_PAIRS)]
        return sum(self.budget.planned(self.make_task(0, 0, TaskKind.EVALUATE, self.K, -1, t.tau, t.r, t.N,
                                                        ref=ref, pairs=pairs)) for ref, pairs in refs)

    def issue(self, worker: int, kind: TaskKind, K: np.ndarray | None = None, *, N: int | None = None,
              tau: float | None = None, r: float | None = None, ref: np.ndarray | None = None,
              pairs: int = CHECK_PAIRS, task_id: int | None = None, version: int = -1) -> Task:
        """A new task at the current gain (or at an explicit gain ``K``, of ``version``: -1 unless it is a gain the
        rule had, such as the anchor's; a check of it paired with ``ref`` if given; with an explicit identity
        ``task_id`` if given)."""
        t = self.tuning
        tau, r, N = t.tau if tau is None else tau, t.r if r is None else r, N or t.N
        self.stats.tasks += 1
        task_id = self.stats.tasks if task_id is None else task_id
        self._issued[task_id] = (tau, r, N)
        if kind == TaskKind.EVALUATE and K is None:
            self.safeguards.watch(task_id, self.K.copy(), self._paired_with(self.version), tau)
        return self.make_task(task_id, worker, kind, self.K.copy() if K is None else K,
                              self.version if K is None else version, tau, r, N, ref=ref, pairs=pairs)

    def make_task(self, task_id: int, worker: int, kind: TaskKind, K: np.ndarray, version: int, tau: float, r: float,
                  N: int, *, ref: np.ndarray | None = None, pairs: int = CHECK_PAIRS) -> Task:
        """The :class:`Task` of these identity and settings (also used by replay to rebuild a task).
        Under measurement noise a check at ``version`` is paired with the anchor of that version."""
        s = self.settings
        if ref is None and kind == TaskKind.EVALUATE and version >= 0 and self.safeguards.paired:
            ref = self._refs[version][1]
            pairs = self.check_pairs(N)
        paired: dict[str, Any] = {} if ref is None else {"K_ref": np.array(ref, dtype=float), "pairs": pairs}
        return Task(task_id=task_id, worker=worker, kind=kind, K=K, version=version, tau=tau, r=r, N=N,
                    method=self.estimator, seed=s.seed, light=s.light, cost_noise=s.cost_noise,
                    noisy=self.noisy, **self.task_fields(version), **paired)

    def check_pairs(self, N: int) -> int:
        """Pairs of a paired check issued with batch ``N``: :data:`~.paired.CHECK_PAIRS` times the batch's growth
        (a check resolves a step's effect as finely as the step's own estimates average)."""
        return CHECK_PAIRS * max(1, N // self._N0)

    def batch_room(self) -> bool:
        """Whether the batch may double: the next ``check_every`` estimates at twice the batch cost at most the
        rollouts spent so far (the batch grows with the budget spent, never ahead of it)."""
        return 2 * 2 * self.tuning.N * self.safeguards.check_every <= self.stats.rollouts

    def _paired_with(self, version: int) -> int | None:
        """The anchor serial a check at ``version`` is paired with (``None``: no noise, not paired)."""
        return self._refs[version][0] if self.safeguards.paired else None

    @property
    def estimator(self) -> str:
        """The zero-order estimator of the rule's estimate tasks (``"two-point"`` or ``"one-point"``)."""
        return self.settings.method

    def task_fields(self, version: int) -> dict[str, Any]:
        """Extra :class:`Task` fields (whitening factors, moments) of a task at gain ``version``
        (-1: a probe at an explicit gain); a pure function of the rule's state at that version."""
        return {}

    def register(self, task: Task) -> None:
        """Record a task built elsewhere (replay)."""
        self._issued[task.task_id] = (task.tau, task.r, task.N)
        if task.kind == TaskKind.EVALUATE:
            self.safeguards.watch(task.task_id, np.array(task.K), self._paired_with(task.version), task.tau)
        self.stats.tasks = max(self.stats.tasks, task.task_id)

    def gain_at(self, version: int) -> np.ndarray:
        """The gain of a recent version (kept for ``max_delay`` versions)."""
        return self._gains[version]

    def gradient(self, rep: Report) -> np.ndarray:
        """The gradient estimate of a report."""
        return report_gradient(rep, self.settings.seed, self.m, self.n)

    # ------------------------------------------------------------ reports
    def tell(self, rep: Report) -> None:
        """Take a worker's report as soon as it arrives (asynchronous AZOPG)."""
        if self._unknown(rep):
            return
        self._account(rep)
        delay = self.version - rep.version
        if rep.kind == TaskKind.EVALUATE:
            self.apply_verdict(self.safeguards.judge(rep, delay))
            return
        self.stats.saw_delay(delay)
        if delay > self.max_delay or self.safeguards.discarded(rep.version):
            # too stale, or computed on a branch that a rollback discarded
            self.stats.dropped += 1
            self.log(Event.DROP, delay, rep.worker, rep.version)
        elif self.safeguards.blown_estimate(rep):
            self.stats.blown_estimates += 1
            self.apply_verdict(self.safeguards.blown(rep, delay))
        else:
            self._tell(rep, delay)

    def tell_many(self, reports: list[Report]) -> None:
        """Take every report that arrived while the master was busy, in arrival order (one *take*).

        Each is applied as by :meth:`tell`, at once and in order, so the paper's rule is unchanged; a
        rule whose update is a fit of all the data so far (policy iteration) adds them all and fits
        once. The master's work then follows the rate at which it can work, not the rate at which
        reports arrive: a backlog is one fit. The arrival log marks the takes (``taken_with``), so a
        replay takes the same reports together.
        """
        self._taken = 0
        try:
            for rep in reports:
                self.tell(rep)
        finally:
            self._taken = None

    def tell_round(self, reports: list[Report]) -> None:
        """Take one synchronous round: every report was computed at the current gain."""
        reports = [rep for rep in reports if not self._unknown(rep)]
        for rep in reports:
            self._account(rep)
        for rep in reports:
            if rep.kind == TaskKind.EVALUATE:
                self.apply_verdict(self.safeguards.judge(rep, 0))
                if self.version != rep.version:  # rolled back: the round's estimates are moot
                    return
        est = [rep for rep in reports if rep.kind != TaskKind.EVALUATE]
        self.stats.delay_count += len(est)
        good = [rep for rep in est if not self.safeguards.blown_estimate(rep)]
        self.stats.blown_estimates += len(est) - len(good)
        for verdict in self.safeguards.blown_round(est, good):
            self.apply_verdict(verdict)
        if good:
            self._tell_round(good)

    def worker_lost(self, worker: int, tasks: list[Task]) -> None:
        """Worker ``worker`` died or hung: its ``tasks`` in flight are abandoned (a report that
        still arrives for one of them is ignored)."""
        self.stats.workers_replaced += 1
        version_read = self.version
        for task in tasks:
            if self._issued.pop(task.task_id, None) is not None:
                self.stats.lost_tasks += 1
            self.safeguards.forget(task.task_id)
            if task.version >= 0:
                version_read = min(version_read, task.version)
        self.log(Event.WORKER_LOST, self.version - version_read, worker, version_read)

    def _unknown(self, rep: Report) -> bool:
        """A report of a task this rule did not issue or has abandoned: ignored."""
        if rep.task_id in self._issued:
            return False
        self.stats.ignored_reports += 1
        return True

    def _account(self, rep: Report) -> None:
        self.budget.release(rep.task_id)
        self.stats.rollouts += rep.rollouts
        self.stats.bytes_received += rep.payload_bytes()
        self.observer.arrival(Arrival(rep.task_id, rep.worker, rep.kind, rep.version, *self._issued.pop(rep.task_id),
                                      taken_with=self._taken or 0))
        if self._taken is not None:
            self._taken += 1

    # ------------------------------------------------------------ updates
    def stale_step(self, delay: int) -> float:
        """The step of an estimate of staleness ``delay``: ``alpha``, or with ``staleness="inverse"``
        ``alpha / (1 + delay / W)``."""
        step = self.tuning.alpha
        if self.settings.staleness == "inverse":
            step /= 1.0 + delay / self.settings.workers
        return step

    def apply(self, K: np.ndarray, delay: int, worker: int, version_read: int) -> None:
        """Make ``K`` the current gain: one applied update."""
        self.new_version(K)
        self.stats.updates += 1
        self.safeguards.counted()
        self.log(Event.UPDATE, delay, worker, version_read)

    def settled(self, target_gap: float | None) -> bool:
        """Whether the gain has stopped moving enough for the run to stop at ``target_gap``
        (:mod:`~.settle`); a rule that cannot tell says yes (the gap alone decides)."""
        return True

    def apply_verdict(self, v: Verdict) -> None:
        """Apply what the safeguards decided (see :class:`~.safeguards.Verdict`), then log it."""
        t, delay = self.tuning, v.delay
        self.stats.rejected += v.rejected
        self.stats.accepted += v.accepted
        t.tau *= v.tau
        t.r *= v.r
        t.alpha *= v.alpha
        t.N *= v.batch
        if v.rollback:
            self.stats.rollbacks += 1
            self.new_version(self.safeguards.anchor_K.copy())
            self.safeguards.rolled_back(self.version)
            delay = self.version - v.version_read
        self.log(v.event, delay, v.worker, v.version_read)

    def new_version(self, K: np.ndarray) -> None:
        """``K`` becomes the gain of the next version (an update or a rollback)."""
        self.K = K
        self.version += 1
        self._gains[self.version] = K.copy()
        self._refs[self.version] = (self.safeguards.anchor_serial, self.safeguards.anchor_K)
        while len(self._gains) > self.max_delay + 2 and not self._keep_all_gains:
            self._refs.pop(self._gains.popitem(last=False)[0], None)

    def log(self, event: Event, delay: int = 0, worker: int = -1, version_read: int = -1) -> None:
        """Tell the observer what happened."""
        self.observer.event(EventRecord(event, self.K, self.version, self.stats.updates, self.stats.rollouts,
                                        self.tuning.alpha, delay, worker, version_read))

    # ------------------------------------------------- calibration and end
    def probe(self, run: Runner, kind: TaskKind, K: np.ndarray, tau: float | None = None, r: float | None = None,
              N: int | None = None, *, ref: np.ndarray | None = None, pairs: int = CHECK_PAIRS,
              task_id: int | None = None) -> Report:
        """Run one task at gain ``K`` outside the loop (calibration, the final check); an
        estimate's report comes back with its gradient filled in; a check with ``ref`` is
        paired with it (under measurement noise)."""
        task = self.admit(self.issue(0, kind, K=K, N=N, tau=tau, r=r, ref=ref, pairs=pairs, task_id=task_id))
        if task is None:
            raise OutOfTime(f"the rollout budget (max_rollouts = {self.settings.max_rollouts}) cannot hold the "
                            f"next {kind}")
        rep = run(task)
        self._issued.pop(rep.task_id, None)
        self.budget.release(rep.task_id)
        self.stats.rollouts += rep.rollouts
        if kind == TaskKind.ESTIMATE:
            rep = dataclasses.replace(rep, grad=self.gradient(rep))
        return rep

    def calibrate(self, run: Runner) -> None:
        """Choose ``tau``, ``r`` and ``alpha`` from rollouts at ``K0`` (:func:`~.lifecycle.calibrate_rule`)."""
        calibrate_rule(self, run)

    @property
    def needs_recalibration(self) -> bool:
        """Whether the loop should call :meth:`recalibrate` (the checks keep failing)."""
        return self.safeguards.stalled

    def recalibrate(self, run: Runner) -> None:
        """Search the step afresh at the anchor (:func:`~.lifecycle.recalibrate_rule`)."""
        recalibrate_rule(self, run)

    def final_gain(self, status: str, run: Runner) -> np.ndarray:
        """The gain a run returns, never one costlier than ``K0`` (:func:`~.lifecycle.choose_final_gain`)."""
        return choose_final_gain(self, status, run)

    def summary(self) -> dict[str, Any]:
        """Extra ``stats`` of ``result.json`` that a rule measures (none by default)."""
        return {}

    # --------------------------------------------------------- checkpoint
    def state(self) -> LearnerState:
        """The rule's state as one value (copies: later updates do not change it)."""
        g = self.safeguards
        return LearnerState(
            K=self.K.copy(), version=self.version, tuning=dataclasses.replace(self.tuning), max_delay=self.max_delay,
            anchor_K=g.anchor_K.copy(), anchor_cost=g.anchor_cost, anchor_version=g.anchor_version,
            check_every=g.check_every, since_check=g.since_check, branch_start=g.branch_start,
            rejects_in_row=g.rejects_in_row, stall_limit=g.stall_limit, anchor_serial=g.anchor_serial,
            stats=dataclasses.replace(self.stats), noisy=self.noisy, noise=self.noise,
        )

    def restore(self, state: LearnerState) -> None:
        """Continue from ``state`` (task ids, versions and update numbers keep rising)."""
        if state.K.shape != (self.m, self.n):
            raise ProblemError(f"checkpoint gain has shape {state.K.shape}, expected {(self.m, self.n)}")
        g, t = self.safeguards, self.tuning
        self.K, self.version, self.max_delay = state.K.copy(), state.version, state.max_delay
        t.alpha, t.r, t.tau, t.N = state.tuning.alpha, state.tuning.r, state.tuning.tau, state.tuning.N
        g.check_every, g.anchor_cost, g.anchor_version = state.check_every, state.anchor_cost, state.anchor_version
        g.since_check, g.branch_start = state.since_check, state.branch_start
        g.rejects_in_row, g.stall_limit, g.anchor_serial = state.rejects_in_row, state.stall_limit, state.anchor_serial
        g.anchor_K = state.anchor_K.copy()
        self.noisy, self.noise = state.noisy, state.noise
        g.paired = g.paired or self.noisy
        self.stats.load(dataclasses.asdict(state.stats))
        self._gains = OrderedDict({self.version: self.K.copy()})
        self._refs = {self.version: (g.anchor_serial, g.anchor_K)}
        self._issued.clear()
        self.budget.clear()
        g.clear()

    def state_dict(self) -> dict[str, Any]:
        """:meth:`state` JSON-ready: the ``master`` block of a checkpoint."""
        return self.state().to_dict()

    def load_state(self, state: dict[str, Any]) -> None:
        """:meth:`restore` from :meth:`state_dict` (see :meth:`.LearnerState.from_dict`)."""
        self.restore(LearnerState.from_dict(state))
