"""AZOPG -- the master's side of asynchronous zeroth-order policy gradient.

Sha, Zhao & You (IEEE TAC 2025): a master holds the gain ``K_t``; each worker reads the
current gain and its version, computes a zero-order estimate on its own clock and
sends it back; the master applies it at once,

    K_{t+1} = K_t - alpha * g(K_{t - d_t}),

dropping estimates whose staleness ``d_t`` exceeds ``max_delay``. This class is that
loop's state, independent of how workers run (see :mod:`azopg.engine.backends`).

Safeguards that make the defaults scale-free use rollout costs only: every
``check_every`` updates a worker evaluates the current gain from fixed initial states
(common random numbers, so costs compare exactly). A check that does not beat the
last accepted gain (the *anchor*) rolls the gain back to it and halves ``alpha``; a
check that does moves the anchor and grows ``alpha`` by 20 %. The anchor's cost never
rises, so a run never ends worse than ``K0``. The horizon ``tau`` doubles whenever a
check shows the tail beyond ``tau`` is not negligible.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NotStabilizingError, ProblemError
from ..settings import Settings
from .estimators import rebuild_estimate
from .tasks import Report, Task, task_rng

__all__ = ["Master", "HistoryRow", "HISTORY_FIELDS"]

GROW, SHRINK, MAX_GROW = 1.2, 0.5, 3.0
#: A check judges about CHECK_SAMPLES * mn directions of updates: enough that their sum is a
#: reliable descent direction, so a rejection means the step is too long, not bad luck.
CHECK_SAMPLES = 4
#: With measurement noise ``cost_noise``, the radius is calibrated for a relative cost change
#: of ``min(NOISE_SMOOTHING * cost_noise, MAX_NOISE_SMOOTHING)`` (if above ``smoothing``).
NOISE_SMOOTHING, MAX_NOISE_SMOOTHING = 30.0, 0.5
#: With measurement noise, a check passes if its cost is below the anchor's times
#: ``1 + NOISE_MARGIN * cost_noise``: the anchor's cost never rises by more than the noise.
NOISE_MARGIN = 1.0

HISTORY_FIELDS = (
    "update", "time_s", "rollouts", "cost", "relative_gap", "delay", "worker",
    "version_read", "step", "event",
)


@dataclass
class HistoryRow:
    """One event of a run (an applied update, a check, a drop, a rollback)."""

    update: int
    time_s: float
    rollouts: int
    cost: float
    relative_gap: float
    delay: int
    worker: int
    version_read: int
    step: float
    event: str


class Master:
    """State of an AZOPG run: the gain, its version, the step and the safeguards.

    Parameters
    ----------
    K0 : ndarray, shape (m, n)
        Initial (stabilizing) gain.
    settings : Settings
    monitor : callable, optional
        ``K -> (cost, relative_gap)`` for *reporting only* (the exact oracle when the
        problem is known). Never used for a decision.
    clock : callable, optional
        Seconds since the run started, for the history.
    """

    def __init__(
        self,
        K0: np.ndarray,
        settings: Settings,
        monitor: Callable[[np.ndarray], tuple[float, float]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        s = settings
        self.settings = s
        self.m, self.n = K0.shape
        d = self.m * self.n
        self.K = np.array(K0, dtype=float)
        self.version = 0
        self.N = s.batch or max(1, math.ceil(d / (2 * s.workers)))
        self._base_interval = s.check_every or math.ceil(CHECK_SAMPLES * d / self.N)
        self.check_every = self._base_interval
        self.max_delay = s.max_delay or 4 * s.workers + 4
        self.alpha = s.step or 0.0
        self.r = s.r or 0.0
        self.tau = s.tau or 1.0
        self.anchor_K = self.K.copy()
        self.anchor_cost = math.inf
        self.anchor_version = 0
        self.updates = self.rollouts = self.tasks = 0
        self.dropped = self.rejected = self.accepted = self.rollbacks = 0
        self.max_seen_delay = 0
        self.delay_sum = self.delay_count = 0
        self.bytes_received = 0
        self.workers_replaced = self.lost_tasks = self.ignored_reports = 0
        self._since_check = 0
        self._branch_start = 0
        self.keep_all_gains = False  # replay needs the gain of any version
        self._checked: dict[int, np.ndarray] = {}  # gains under check, by task id
        self._gains: OrderedDict[int, np.ndarray] = OrderedDict({0: self.K.copy()})
        self.monitor = monitor
        self.clock = clock or (lambda: 0.0)
        self.history: list[HistoryRow] = []
        self._issued: dict[int, tuple[float, float, int]] = {}
        #: arrival log: (task_id, worker, kind, version_read, tau, r, N), in order
        self.arrivals: list[tuple[int, int, str, int, float, float, int]] = []
        self.light = False
        self.last_gap = math.inf
        self.last_cost = math.inf

    # ----------------------------------------------------------------- tasks
    def gain_at(self, version: int) -> np.ndarray:
        """The gain of a recent version (kept for ``max_delay`` versions)."""
        return self._gains[version]

    def register(self, task: Task) -> None:
        """Record a task built outside :meth:`make_task` (replay)."""
        self._issued[task.task_id] = (task.tau, task.r, task.N)
        if task.kind == "evaluate":
            self._checked[task.task_id] = np.array(task.K)
        self.tasks = max(self.tasks, task.task_id)

    def make_task(self, worker: int, kind: str | None = None, K: np.ndarray | None = None,
                  N: int | None = None) -> Task:
        """Next task for ``worker``: a check when one is due, else an estimate."""
        if kind is None:
            kind = "estimate"
            if self._since_check >= self.check_every:
                kind = "evaluate"
                self._since_check = 0
        self.tasks += 1
        self._issued[self.tasks] = (self.tau, self.r, N or self.N)
        if kind == "evaluate" and K is None:
            self._checked[self.tasks] = self.K.copy()
        return Task(
            task_id=self.tasks, worker=worker, kind=kind,
            K=self.K.copy() if K is None else K, version=self.version if K is None else -1,
            tau=self.tau, r=self.r, N=N or self.N, method=self.settings.method,
            seed=self.settings.seed, light=self.light, cost_noise=self.settings.cost_noise,
        )

    # ------------------------------------------------------------- updates
    def _new_version(self, K: np.ndarray) -> None:
        self.K = K
        self.version += 1
        self._gains[self.version] = K.copy()
        while len(self._gains) > self.max_delay + 2 and not self.keep_all_gains:
            self._gains.popitem(last=False)

    def _log(self, event: str, delay: int = 0, worker: int = -1, version_read: int = -1) -> None:
        now = self.clock()
        cost = gap = math.nan
        if self.monitor is not None and (event != "update" or self.updates % self.settings.workers == 0):
            # the exact oracle costs ~0.1-0.3 ms: with W workers, on every W-th update (deterministic,
            # so a run's stopping point does not depend on timing)
            self.last_cost, self.last_gap = cost, gap = self.monitor(self.K)
        self.history.append(HistoryRow(
            self.updates, now, self.rollouts, cost, gap, delay, worker, version_read, self.alpha, event,
        ))

    def _rollback(self, worker: int, version_read: int, event: str) -> None:
        self.alpha *= SHRINK
        self.rollbacks += 1
        self._new_version(self.anchor_K.copy())
        self.anchor_version = self._branch_start = self.version
        self._since_check = 0  # the next check judges new updates, not the anchor again
        self._log(event, self.version - version_read, worker, version_read)

    def _account(self, rep: Report) -> None:
        self.rollouts += rep.rollouts
        self.bytes_received += rep.payload_bytes()
        self.arrivals.append((rep.task_id, rep.worker, rep.kind, rep.version, *self._issued.pop(rep.task_id)))

    def _gradient(self, rep: Report) -> np.ndarray:
        if rep.grad is not None:
            return rep.grad
        rng = task_rng(self.settings.seed, rep.worker, rep.task_id)
        return rebuild_estimate(rep.weights, rng, self.m, self.n)

    def _blown(self, rep: Report, delay: int) -> None:
        """Every perturbed rollout of an estimate blew up."""
        if rep.version == self.anchor_version:
            self.r *= SHRINK  # the anchor is stable: the perturbations were too big
            self._log("shrink-r", delay, rep.worker, rep.version)
        else:
            self._rollback(rep.worker, rep.version, "rollback-blowup")

    def _apply(self, g: np.ndarray, delay: int, worker: int, version_read: int) -> None:
        step = self.alpha
        if self.settings.staleness == "inverse":
            step /= 1.0 + delay / self.settings.workers
        self._new_version(self.K - step * g)
        self.updates += 1
        self._since_check += 1
        self._log("update", delay, worker, version_read)

    def worker_lost(self, worker: int, tasks: list[Task]) -> None:
        """Worker ``worker`` died or hung and was replaced: its ``tasks`` in flight are
        abandoned (a report that still arrives for one of them is ignored)."""
        self.workers_replaced += 1
        version_read = self.version
        for task in tasks:
            if self._issued.pop(task.task_id, None) is not None:
                self.lost_tasks += 1
            self._checked.pop(task.task_id, None)
            if task.version >= 0:
                version_read = min(version_read, task.version)
        self._log("worker-lost", self.version - version_read, worker, version_read)

    def _unknown(self, rep: Report) -> bool:
        """A report of a task this master did not issue or has abandoned: ignored."""
        if rep.task_id in self._issued:
            return False
        self.ignored_reports += 1
        return True

    def receive(self, rep: Report) -> None:
        """Apply a worker's report as soon as it arrives (asynchronous AZOPG)."""
        if self._unknown(rep):
            return
        self._account(rep)
        delay = self.version - rep.version
        if rep.kind == "evaluate":
            self._check(rep, delay)
            return
        self.max_seen_delay = max(self.max_seen_delay, delay)
        self.delay_sum += delay
        self.delay_count += 1
        if delay > self.max_delay or rep.version < self._branch_start:
            # too stale, or computed on a branch that a rollback discarded
            self.dropped += 1
            self._log("drop", delay, rep.worker, rep.version)
        elif not math.isfinite(rep.center_cost):
            self._blown(rep, delay)
        else:
            self._apply(self._gradient(rep), delay, rep.worker, rep.version)

    def receive_round(self, reports: list[Report]) -> None:
        """Apply one synchronous round: all reports were computed at the current gain;
        the round's estimates are averaged into a single update (the baseline)."""
        reports = [rep for rep in reports if not self._unknown(rep)]
        for rep in reports:
            self._account(rep)
        for rep in reports:
            if rep.kind == "evaluate":
                self._check(rep, 0)
                if self.version != rep.version:  # rolled back: the round's estimates are moot
                    return
        est = [rep for rep in reports if rep.kind == "estimate"]
        self.delay_count += len(est)
        good = [rep for rep in est if math.isfinite(rep.center_cost)]
        if est and not good:
            self._blown(est[0], 0)
        elif good:
            g = sum(self._gradient(rep) for rep in good) / len(good)
            self._apply(g, 0, -1, self.version)

    def _check(self, rep: Report, delay: int) -> None:
        K_checked = self._checked.pop(rep.task_id)
        if rep.version <= self.anchor_version and not rep.blown_up:
            # the gain checked is the anchor itself or predates it (a rollback happened
            # while the check was in flight): nothing to judge
            self._log("check-stale", delay, rep.worker, rep.version)
            return
        # with measurement noise, a check passes unless it is worse than the anchor by more than
        # the noise: the anchor's own measurement may have been a lucky one (winner's curse)
        margin = NOISE_MARGIN * self.settings.cost_noise * self.anchor_cost if self.settings.cost_noise else 0.0
        long_tail = self._long_tail(rep)
        if not self._beats_anchor(rep, margin):
            self.rejected += 1
            if long_tail and self.settings.tau is None:
                self.tau *= 2.0  # a slow or unstable mode: look further
            self._rollback(rep.worker, rep.version, "check-reject")
            return
        self.accepted += 1
        # grow at the same rate per update whatever the check interval (W workers: ~W)
        covered = rep.version - self.anchor_version
        self.alpha *= min(GROW ** (covered / self._base_interval), MAX_GROW)
        self.anchor_K = K_checked
        self.anchor_version = rep.version
        self.anchor_cost = rep.cost

        self._log("check-accept", delay, rep.worker, rep.version)

    def _long_tail(self, rep: Report) -> bool:
        """Whether the cost between ``tau`` and ``2 tau`` is not negligible."""
        return rep.cost2 - rep.cost > self.settings.tail_tol * rep.cost2

    def _beats_anchor(self, rep: Report, margin: float = 0.0) -> bool:
        """A checked gain beats the anchor if it is cheaper at the horizon ``tau`` and its
        tail beyond ``tau`` is negligible: a long tail is a slow or unstable mode that has not
        yet shown, so the gain is not trusted (the caller doubles ``tau`` to look further)."""
        return not rep.blown_up and rep.cost < self.anchor_cost + margin and not self._long_tail(rep)

    def final_gain(self, status: str, run: Callable[[Task], Report]) -> np.ndarray:
        """The gain a run returns: the current one if it reached the target (by the
        oracle), the anchor if interrupted, else whichever of the two a last rollout
        check finds cheaper -- never a gain costlier than ``K0``."""
        if status == "converged":
            return self.K.copy()
        if status == "interrupted":
            return self.anchor_K.copy()
        rep = run(self.make_task(0, "evaluate", K=self.K.copy()))
        self._issued.pop(rep.task_id, None)
        self.rollouts += rep.rollouts
        if self._beats_anchor(rep):
            return self.K.copy()
        return self.anchor_K.copy()

    # ----------------------------------------------------------- checkpoint
    _STATE_FIELDS = (
        "version", "alpha", "r", "tau", "N", "check_every", "_base_interval", "max_delay", "anchor_cost",
        "anchor_version", "updates", "rollouts", "tasks", "dropped", "rejected", "accepted", "rollbacks",
        "max_seen_delay", "delay_sum", "delay_count", "bytes_received", "workers_replaced", "lost_tasks",
        "ignored_reports", "_since_check", "_branch_start", "last_cost", "last_gap",
    )

    def state_dict(self) -> dict[str, Any]:
        """The master's state, JSON-ready (non-finite numbers as strings): the gain, its
        version, the step, radius and horizon, the anchor and every counter. Tasks in
        flight are not part of it: after :meth:`load_state` they are simply never received."""
        state: dict[str, Any] = {"K": self.K.tolist(), "anchor_K": self.anchor_K.tolist()}
        for name in self._STATE_FIELDS:
            value = getattr(self, name)
            state[name] = value if not isinstance(value, float) or math.isfinite(value) else repr(value)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (task ids, versions and update numbers keep rising)."""
        K = np.array(state["K"], dtype=float)
        if K.shape != (self.m, self.n):
            raise ProblemError(f"checkpoint gain has shape {K.shape}, expected {(self.m, self.n)}")
        for name in self._STATE_FIELDS:
            value = state[name]
            setattr(self, name, float(value) if isinstance(value, str) else value)
        self.K = K
        self.anchor_K = np.array(state["anchor_K"], dtype=float)
        self._gains = OrderedDict({self.version: self.K.copy()})
        self._issued.clear()
        self._checked.clear()

    # ---------------------------------------------------------- calibration
    def calibrate(self, run: Callable[[Task], Report]) -> None:
        """Choose ``tau``, ``r`` and ``alpha`` from rollouts at ``K0`` (blocking).

        ``run`` executes one task and returns its report. Settings given explicitly
        are kept.

        Raises
        ------
        NotStabilizingError
            If rollouts from ``K0`` blow up.
        """
        s = self.settings
        K0 = self.K.copy()

        def evaluate(K: np.ndarray) -> Report:
            rep = run(self.make_task(0, "evaluate", K=K))
            self._issued.pop(rep.task_id, None)
            self.rollouts += rep.rollouts
            return rep

        # horizon: double until the tail beyond tau is negligible
        for _ in range(80):
            rep = evaluate(K0)
            if rep.blown_up:  # once more: a glitch of the plant is not an unstable K0
                rep = evaluate(K0)
            if rep.blown_up:
                raise NotStabilizingError("rollouts from the initial gain K0 blow up")
            if s.tau is not None or rep.cost2 - rep.cost <= s.tail_tol * rep.cost2:
                break
            self.tau *= 2.0
        self.anchor_cost = f0 = rep.cost
        if f0 < 0:
            raise ProblemError(f"rollouts from K0 have a negative mean cost ({f0:.3g}): the learner's calibration "
                               "needs positive rollout costs")
        if not f0 > 0:
            raise ProblemError("rollouts from K0 cost nothing: there is nothing to learn")
        # smoothing radius: a perturbation changes the cost by about `smoothing` (and well
        # above the measurement noise of a noisy plant)
        smoothing = max(s.smoothing, min(NOISE_SMOOTHING * s.cost_noise, MAX_NOISE_SMOOTHING))
        rng = np.random.default_rng([s.seed, 2**31 - 2])
        if s.r is None:
            U = rng.standard_normal(K0.shape)
            U *= math.sqrt(K0.size) / np.linalg.norm(U)
            r = 1e-3 * max(float(np.linalg.norm(K0)), 1.0) / math.sqrt(K0.size)
            for _ in range(40):
                fp, fm = evaluate(K0 + r * U), evaluate(K0 - r * U)
                if fp.blown_up or fm.blown_up:
                    r *= 0.1
                    continue
                change = max(abs(fp.cost - f0), abs(fm.cost - f0)) / f0
                if smoothing / 3 <= change <= 3 * smoothing:
                    break
                r *= min(max(smoothing / change, 1e-2), 1e2) ** 0.7 if change > 0 else 100.0
            self.r = r
        # step: backtracking line search along a first, well-sampled estimate
        if s.step is None:
            d = K0.size
            Ncal = max(self.N, d)
            rep = run(self.make_task(0, "estimate", K=K0, N=Ncal))
            self._issued.pop(rep.task_id, None)
            self.rollouts += rep.rollouts
            g = rep.grad if rep.grad is not None else rebuild_estimate(
                rep.weights, task_rng(s.seed, 0, rep.task_id), self.m, self.n)
            gg = float(np.sum(g * g))

            def armijo(alpha: float) -> Report:
                rep = evaluate(K0 - alpha * g)
                bound = f0 - 0.1 * alpha * gg
                ok = not rep.blown_up and rep.cost < bound and not self._long_tail(rep)
                return rep if ok else None

            alpha = f0 / gg if gg > 0 else 1.0
            best = armijo(alpha)
            if best is not None:  # expand while the cost keeps falling
                for _ in range(60):
                    trial = armijo(2.0 * alpha)
                    if trial is None or trial.cost >= best.cost:
                        break
                    alpha, best = 2.0 * alpha, trial
            else:  # backtrack
                for _ in range(80):
                    alpha *= 0.5
                    best = armijo(alpha)
                    if best is not None:
                        break
            # an estimate from N directions is noisier than one from Ncal
            self.alpha = alpha * (1 + (d + 1) / Ncal) / (1 + (d + 1) / self.N)
            if best is not None:
                self._new_version(K0 - alpha * g)
                self.anchor_K, self.anchor_cost, self.anchor_version = self.K.copy(), best.cost, self.version
                self.updates += 1
        self._log("calibrate")
