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
from typing import Any, Protocol

import numpy as np

from ..errors import OutOfTime, ProblemError
from ..settings import Settings
from .calibration import calibrate, search_step
from .discrete import start_tau
from .paired import CHECK_PAIRS, FINAL_PAIRS, significantly_cheaper
from .safeguards import CHECK_SAMPLES, Safeguards
from .stats import Stats, Tuning
from .tasks import Report, Task, report_gradient

__all__ = ["Arrival", "FINAL_TASK", "Observer", "STATE_FIELDS", "UpdateRule"]

#: One row of the arrival log: (task_id, worker, kind, version_read, tau, r, N).
Arrival = tuple[int, int, str, int, float, float, int]
#: Runs one task to completion and returns its report.
Runner = Callable[[Task], Report]
#: Relative spread of one rollout's cost between repeats of a state above which a plant counts as noisy
#: (a deterministic plant repeats to rounding).
NOISE_FLOOR = 1e-9
#: Task ids of the final paired checks under noise start here (far above any id a run issues).
FINAL_TASK = 2**48
#: Seconds past the time budget a calibration probe may be predicted to end and still be started.
OVERRUN = 0.5
#: Task id of the calibration's noise measurement (:meth:`UpdateRule.measure_noise`).
NOISE_TASK = FINAL_TASK - 1
#: The scalar fields of :meth:`UpdateRule.state_dict` (besides the gains ``K`` and ``anchor_K``).
STATE_FIELDS = ("version", "alpha", "r", "tau", "N", "check_every", "max_delay", "anchor_cost", "anchor_version",
                "_since_check", "_branch_start", *(f.name for f in dataclasses.fields(Stats)))


class Observer(Protocol):
    """Receives what a rule does, in order (see :class:`azopg.run.history.RunLog`)."""

    def event(self, rule: UpdateRule, name: str, delay: int, worker: int, version_read: int) -> None:
        """An update, check, drop, rollback, ... happened."""

    def arrival(self, row: Arrival) -> None:
        """A report was received."""


class _Silent:
    def event(self, rule: UpdateRule, name: str, delay: int, worker: int, version_read: int) -> None:
        pass

    def arrival(self, row: Arrival) -> None:
        pass


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

    def __init__(self, K0: np.ndarray, settings: Settings, *, observer: Observer | None = None,
                 keep_all_gains: bool = False, R: np.ndarray | None = None, discrete_time: bool = False) -> None:
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
        self.safeguards = Safeguards(self.K, s, s.check_every or math.ceil(CHECK_SAMPLES * d / N))
        self.observer: Observer = observer or _Silent()
        self._keep_all_gains = keep_all_gains
        self._gains: OrderedDict[int, np.ndarray] = OrderedDict({0: self.K.copy()})
        # the anchor when each version was made (serial, gain): what a paired check at that version is paired with
        self._refs: dict[int, tuple[int, np.ndarray]] = {0: (0, self.safeguards.anchor_K)}
        self._issued: dict[int, tuple[float, float, int]] = {}  # task id -> (tau, r, N) as issued
        #: Whether the run's time budget is spent: then a calibration or step search raises
        #: :class:`~azopg.errors.OutOfTime` before its next probe (set by the run).
        self.out_of_time: Callable[[], bool] = lambda: False
        #: Seconds left of the run's time budget (set by the run): a calibration probe that the last
        #: probes' pace predicts would end more than :data:`OVERRUN` s past it is not started.
        self.time_left: Callable[[], float] = lambda: math.inf
        self._pace: dict[str, float] = {}  # seconds per unit of horizon of the last probe, by kind
        #: Whether the plant has noise of its own (calibration measures it, :meth:`measure_noise`): then
        #: checks are paired and judge the transient (:mod:`azopg.method.noisy_eval`).
        self.noisy = False
        #: The relative standard deviation of one rollout's cost at ``K0`` that calibration measured.
        self.noise = 0.0

    # ------------------------------------------------------------ the seam
    def _ask(self, worker: int) -> Task:
        """The rule's next task for ``worker`` (default: an estimate at the current gain)."""
        return self.issue(worker, "estimate")

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
            return self.issue(worker, "evaluate")
        return self._ask(worker)

    def issue(self, worker: int, kind: str, K: np.ndarray | None = None, *, N: int | None = None,
              tau: float | None = None, r: float | None = None, ref: np.ndarray | None = None,
              pairs: int = CHECK_PAIRS, task_id: int | None = None) -> Task:
        """A new task at the current gain (or at an explicit gain ``K``, version -1; a check of
        it paired with ``ref`` if given; with an explicit identity ``task_id`` if given)."""
        t = self.tuning
        tau, r, N = t.tau if tau is None else tau, t.r if r is None else r, N or t.N
        self.stats.tasks += 1
        task_id = self.stats.tasks if task_id is None else task_id
        self._issued[task_id] = (tau, r, N)
        if kind == "evaluate" and K is None:
            self.safeguards.watch(task_id, self.K.copy(), self._paired_with(self.version))
        return self.make_task(task_id, worker, kind, self.K.copy() if K is None else K,
                              self.version if K is None else -1, tau, r, N, ref=ref, pairs=pairs)

    def make_task(self, task_id: int, worker: int, kind: str, K: np.ndarray, version: int, tau: float, r: float,
                  N: int, *, ref: np.ndarray | None = None, pairs: int = CHECK_PAIRS) -> Task:
        """The :class:`Task` of these identity and settings (also used by replay to rebuild a task).
        Under measurement noise a check at ``version`` is paired with the anchor of that version."""
        s = self.settings
        if ref is None and kind == "evaluate" and version >= 0 and self.safeguards.paired:
            ref = self._refs[version][1]
        paired: dict[str, Any] = {} if ref is None else {"K_ref": np.array(ref, dtype=float), "pairs": pairs}
        return Task(task_id=task_id, worker=worker, kind=kind, K=K, version=version, tau=tau, r=r, N=N,
                    method=self.estimator, seed=s.seed, light=s.light, cost_noise=s.cost_noise,
                    noisy=self.noisy, **self.task_fields(version), **paired)

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
        if task.kind == "evaluate":
            self.safeguards.watch(task.task_id, np.array(task.K), self._paired_with(task.version))
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
        if rep.kind == "evaluate":
            self.safeguards.judge(self, rep, delay)
            return
        self.stats.saw_delay(delay)
        if delay > self.max_delay or self.safeguards.discarded(rep.version):
            # too stale, or computed on a branch that a rollback discarded
            self.stats.dropped += 1
            self.log("drop", delay, rep.worker, rep.version)
        elif not math.isfinite(rep.center_cost):
            self.safeguards.blown(self, rep, delay)
        else:
            self._tell(rep, delay)

    def tell_round(self, reports: list[Report]) -> None:
        """Take one synchronous round: every report was computed at the current gain."""
        reports = [rep for rep in reports if not self._unknown(rep)]
        for rep in reports:
            self._account(rep)
        for rep in reports:
            if rep.kind == "evaluate":
                self.safeguards.judge(self, rep, 0)
                if self.version != rep.version:  # rolled back: the round's estimates are moot
                    return
        est = [rep for rep in reports if rep.kind != "evaluate"]
        self.stats.delay_count += len(est)
        good = [rep for rep in est if math.isfinite(rep.center_cost)]
        if est and not good:
            self.safeguards.blown(self, est[0], 0)
        elif good:
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
        self.log("worker-lost", self.version - version_read, worker, version_read)

    def _unknown(self, rep: Report) -> bool:
        """A report of a task this rule did not issue or has abandoned: ignored."""
        if rep.task_id in self._issued:
            return False
        self.stats.ignored_reports += 1
        return True

    def _account(self, rep: Report) -> None:
        self.stats.rollouts += rep.rollouts
        self.stats.bytes_received += rep.payload_bytes()
        self.observer.arrival((rep.task_id, rep.worker, rep.kind, rep.version, *self._issued.pop(rep.task_id)))

    # ------------------------------------------------------------ updates
    def apply(self, K: np.ndarray, delay: int, worker: int, version_read: int) -> None:
        """Make ``K`` the current gain: one applied update."""
        self.new_version(K)
        self.stats.updates += 1
        self.safeguards.counted()
        self.log("update", delay, worker, version_read)

    def new_version(self, K: np.ndarray) -> None:
        """``K`` becomes the gain of the next version (an update or a rollback)."""
        self.K = K
        self.version += 1
        self._gains[self.version] = K.copy()
        self._refs[self.version] = (self.safeguards.anchor_serial, self.safeguards.anchor_K)
        while len(self._gains) > self.max_delay + 2 and not self._keep_all_gains:
            self._refs.pop(self._gains.popitem(last=False)[0], None)

    def log(self, event: str, delay: int = 0, worker: int = -1, version_read: int = -1) -> None:
        """Tell the observer what happened."""
        self.observer.event(self, event, delay, worker, version_read)

    # ------------------------------------------------- calibration and end
    def probe(self, run: Runner, kind: str, K: np.ndarray, tau: float | None = None, r: float | None = None,
              N: int | None = None, *, ref: np.ndarray | None = None, pairs: int = CHECK_PAIRS,
              task_id: int | None = None) -> Report:
        """Run one task at gain ``K`` outside the loop (calibration, the final check); an
        estimate's report comes back with its gradient filled in; a check with ``ref`` is
        paired with it (under measurement noise)."""
        rep = run(self.issue(0, kind, K=K, N=N, tau=tau, r=r, ref=ref, pairs=pairs, task_id=task_id))
        self._issued.pop(rep.task_id, None)
        self.stats.rollouts += rep.rollouts
        if kind == "estimate":
            rep = dataclasses.replace(rep, grad=self.gradient(rep))
        return rep

    def calibrate(self, run: Runner) -> None:
        """Choose ``tau``, ``r`` and ``alpha`` from rollouts at ``K0`` (see :func:`~.calibration.calibrate`);
        the line search's step, if it found one, is the first update. The plant's own noise is
        measured first (:meth:`measure_noise`)."""
        probe = self._budgeted(run)
        self.measure_noise(probe)
        settings = self.settings
        if not self.line_search and settings.step is None:  # the rule's own initial step is kept
            settings = dataclasses.replace(settings, step=self.tuning.alpha)
        cal = calibrate(probe, self.K.copy(), settings, self.tuning.N, tau=self.tuning.tau,
                        r=self.tuning.r, alpha=self.tuning.alpha, noisy=self.noisy)
        self.tuning.tau, self.tuning.r, self.tuning.alpha = cal.tau, cal.r, cal.alpha
        self.safeguards.anchor_cost = cal.f0
        if cal.K1 is not None:
            self.new_version(cal.K1)
            self.safeguards.move_anchor(self.K.copy(), cal.cost1, self.version)
            self.stats.updates += 1
        self.log("calibrate")

    def _budgeted(self, run: Runner) -> Callable[..., Report]:
        """A probe for calibration and step searches that refuses to start once the time budget
        or the rollout budget (``max_rollouts``) is spent (raises :class:`~azopg.errors.OutOfTime`)."""
        def probe(kind: str, K: np.ndarray, tau: float, r: float, N: int, *, ref: np.ndarray | None = None,
                  pairs: int = CHECK_PAIRS, task_id: int | None = None) -> Report:
            cap = self.settings.max_rollouts
            left = self.time_left()
            late = self.out_of_time() or self._pace.get(kind, 0.0) * tau > left + OVERRUN
            if late or (cap is not None and self.stats.rollouts >= cap):
                what = "time" if late else "rollout"
                raise OutOfTime(f"the {what} budget ran out during the {'re' if self.version else ''}calibration")
            rep = self.probe(run, kind, K, tau, r, N, ref=ref, pairs=pairs, task_id=task_id)
            if math.isfinite(left):
                self._pace[kind] = max(left - self.time_left(), 0.0) / tau
            return rep
        return probe

    def measure_noise(self, probe: Callable[..., Report]) -> None:
        """Whether the plant has noise of its own: ``K0`` (nudged, :meth:`_nudge`) is checked against ``K0``
        on repeated evaluation states (:func:`~azopg.method.noisy_eval.noisy_measure`); a deterministic plant
        repeats every state's cost exactly, a noisy one does not (relative spread above
        :data:`NOISE_FLOOR`); two repeats of each evaluation state (``10 k`` rollouts). If noisy, the
        rule's checks from now on are paired with their anchor and judge the transient's tail (not the
        noise's ever-growing cost); :attr:`noise` keeps the measured relative noise of one rollout.
        Deterministic in the run's seed (task identities), so a replay measures the same."""
        self.noisy = True
        try:
            tasks = self.stats.tasks  # its own identity: the run's task ids (and their noise) stay as without it
            rep = probe("evaluate", self.K + self._nudge(), self.tuning.tau, 0.0, self.tuning.N, ref=self.K.copy(),
                        pairs=1, task_id=NOISE_TASK)
        finally:
            self.noisy = False
            self.stats.tasks = tasks
        self.noise = rep.noise if math.isfinite(rep.noise) else 0.0
        if self.noise > NOISE_FLOOR:
            self.noisy = self.safeguards.paired = True
            self.log("measure-noise")

    def _nudge(self) -> np.ndarray:
        """A tiny fixed perturbation of ``K0`` (relative 1e-3, as the radius search starts) at which the noise
        is measured: at ``K0 = 0`` measurement noise does not reach the input, so ``K0`` alone can look
        deterministic on a plant that is not."""
        U = np.random.default_rng([self.settings.seed, 2**31 - 5]).standard_normal(self.K.shape)
        return 1e-3 * max(float(np.linalg.norm(self.K)), 1.0) * U / np.linalg.norm(U)

    @property
    def needs_recalibration(self) -> bool:
        """Whether the loop should call :meth:`recalibrate` (the checks keep failing)."""
        return self.safeguards.stalled

    def recalibrate(self, run: Runner) -> None:
        """Search the step afresh at the anchor (re-measured at the current horizon), with new
        estimates: a run never gives up silently. Logged as ``recalibrate``."""
        g, t = self.safeguards, self.tuning
        found = False

        probe = self._budgeted(run)
        anchor = probe("evaluate", g.anchor_K.copy(), t.tau, t.r, t.N)
        if not anchor.blown_up:
            g.anchor_cost = anchor.cost
            t.alpha, K1, cost1 = search_step(probe, g.anchor_K.copy(), self.settings, t.N, tau=t.tau, r=t.r,
                                             f0=anchor.cost, paired=self.noisy)
            if K1 is not None:
                self.new_version(K1)
                g.move_anchor(self.K.copy(), cost1, self.version)
                g.branch_start = self.version  # estimates in flight were taken on the stalled branch
                self.stats.updates += 1
                found = True
        g.rejects_in_row = 0
        g.stall_limit = g.stall_limit if found else 2 * g.stall_limit
        self.log("recalibrate")

    def final_gain(self, status: str, run: Runner) -> np.ndarray:
        """The gain a run returns: the current one if it reached the target (by the oracle),
        the anchor if interrupted, else whichever of the two a last rollout check finds
        cheaper -- never a gain costlier than ``K0``. Under measurement noise that gain is
        returned only if a larger paired check (:data:`~.paired.FINAL_PAIRS`) finds it
        significantly cheaper than ``K0`` itself; else ``K0`` is. Out of time or rollouts under noise: the anchor."""
        g = self.safeguards
        if status == "converged":
            return self.K.copy()
        if status == "interrupted" or (status in ("max_time", "max_rollouts") and g.paired):
            # out of time or rollouts under noise: no budget for the larger paired checks; the anchor is the last
            # gain a paired check found significantly cheaper than the anchor before it (chained: than K0)
            return g.anchor_K.copy()
        if not g.paired:
            return self.K.copy() if g.beats_anchor(self.probe(run, "evaluate", self.K.copy())) else g.anchor_K.copy()
        K = g.anchor_K.copy()
        if not np.array_equal(self.K, K) and self._cheaper(run, self.K, K, CHECK_PAIRS, 0):
            K = self.K.copy()
        if np.array_equal(K, self.K0) or not self._cheaper(run, K, self.K0, FINAL_PAIRS, 1):
            return self.K0.copy()
        return K

    def _cheaper(self, run: Runner, K: np.ndarray, ref: np.ndarray, pairs: int, i: int) -> bool:
        """Whether a paired check finds ``K`` significantly cheaper than ``ref`` (and trusted).
        The check's identity (so its noise) depends on the version only, not on how many tasks
        were in flight when the run stopped: a replay draws the same noise."""
        rep = self.probe(run, "evaluate", K.copy(), ref=ref, pairs=pairs, task_id=FINAL_TASK + 2 * self.version + i)
        return (not rep.blown_up and significantly_cheaper(rep.diff, rep.diff_se)
                and not rep.long_tail(self.settings.tail_tol))

    # --------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The rule's state, JSON-ready (non-finite numbers as strings): the gain, its version,
        the tuning, the anchor and every counter. Tasks in flight are not part of it: after
        :meth:`load_state` they are simply never received."""
        g, t = self.safeguards, self.tuning
        state: dict[str, Any] = {
            "K": self.K.tolist(), "anchor_K": g.anchor_K.tolist(), "version": self.version,
            "alpha": t.alpha, "r": t.r, "tau": t.tau, "N": t.N, "check_every": g.check_every,
            "max_delay": self.max_delay, "anchor_cost": g.anchor_cost, "anchor_version": g.anchor_version,
            "_since_check": g.since_check, "_branch_start": g.branch_start, **self.stats.state(),
            "noisy": self.noisy, "noise": self.noise,
        }
        return {k: v if not isinstance(v, float) or math.isfinite(v) else repr(v) for k, v in state.items()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (task ids, versions and update numbers keep rising)."""
        K = np.array(state["K"], dtype=float)
        if K.shape != (self.m, self.n):
            raise ProblemError(f"checkpoint gain has shape {K.shape}, expected {(self.m, self.n)}")

        def num(name: str) -> Any:
            value = state[name]
            return float(value) if isinstance(value, str) else value

        g, t = self.safeguards, self.tuning
        self.K, self.version, self.max_delay = K, num("version"), num("max_delay")
        t.alpha, t.r, t.tau, t.N = num("alpha"), num("r"), num("tau"), num("N")
        g.check_every, g.anchor_cost, g.anchor_version = num("check_every"), num("anchor_cost"), num("anchor_version")
        g.since_check, g.branch_start = num("_since_check"), num("_branch_start")
        g.anchor_K = np.array(state["anchor_K"], dtype=float)
        self.noisy, self.noise = bool(state.get("noisy", False)), float(state.get("noise", 0.0))
        g.paired = g.paired or self.noisy
        self.stats.load(state)
        self._gains = OrderedDict({self.version: self.K.copy()})
        self._refs = {self.version: (g.anchor_serial, g.anchor_K)}
        self._issued.clear()
        g.clear()
