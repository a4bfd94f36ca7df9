"""Model-free policy iteration: Kleinman's method with ``(P_K, E_K)`` fitted to rollouts.

Workers run ``"moments"`` tasks: rollouts of ``K_i = K + r Z_i`` (``Z_i`` on the ``sqrt(mn)``
sphere) returned raw with their state moments. The master keeps them in a bounded
:class:`~azopg.method.buffer.RolloutBuffer`; once it holds ``OVERDETERMINED`` times as many
rollouts as unknowns, every report is followed by one least-squares fit of the *current*
gain's ``(P, E)`` on the whole buffer (old rollouts are re-based: the identity holds for
any perturbation, so stale data is exact) and, if the fit is well conditioned, the step

    K <- K - eta D,    D = R^-1 E shortened to ||D|| <= TRUST ||K||,

with ``eta = min(alpha, 1)`` (applied after the trust limit, so that a rollback's halving of
``alpha`` halves the step taken): ``eta = 1`` is Kleinman's step, which from a stabilizing
gain stays stabilizing and converges quadratically on exact data. The shared safeguards
check the gain every ``CHECK_EVERY`` updates (a failed check rolls back and halves
``alpha``). With ``R`` unknown it is estimated with ``(P, E)``. On a discrete-time plant the
fit estimates ``H_uu = R + B'P B`` in place of ``R`` and the step is Hewer's ``K - H_uu^-1 E``
(:func:`~azopg.method.discrete.fit_weight`).

Snapshots (``settings.snapshots`` > 1, the default on noise-free runs: :func:`default_snapshots`):
each ``moments`` task is one rollout cut into ``k`` intervals, each interval one equation
(:mod:`azopg.method.equations`); every equation ever received is kept as sufficient statistics
about the current gain (re-centred exactly when the gain moves, so no rollout is ever stale or
re-processed), and after each report Kleinman steps are iterated on them while each step is
determined precisely (its standard error, :class:`~azopg.method.equations.StepError`; at most
:data:`INNER_STEPS`; their end is one applied update). Plants
without snapshots contribute their whole rollouts as one interval each. ``snapshots=1`` is the
buffered method above, unchanged.

The buffer is not part of :meth:`state_dict`: after a resume it is refilled from scratch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import NotStabilizingError, OutOfTime
from ..settings import Settings
from .buffer import RolloutBuffer
from .calibration import _horizon
from .discrete import fit_weight, start_tau
from .equations import IntervalEquations, StepError
from .kinds import Event, TaskKind
from .lifecycle import timed_probe
from .regression import PolicyEvaluation, unknowns
from .rule import Runner, UpdateRule
from .safeguards import SHRINK
from .tasks import Report, RolloutData, Task, TrajectoryData

__all__ = ["PolicyIteration", "buffer_factor", "default_snapshots", "factor_columns"]

#: Rollouts needed per unknown of ``(P, E)`` before a fit; the buffer keeps ``KEEP`` per unknown.
OVERDETERMINED, KEEP = 2.0, 6.0
#: Under relative cost noise ``sigma`` the buffer keeps ``KEEP * min(1 + (sigma / NOISE_SCALE)^2, NOISY_KEEP)``
#: per unknown (and the first fit waits as many times longer): the fit's error falls as
#: ``sigma / sqrt(rollouts)``. Off (NOISY_KEEP = 1): with 16 times the buffer a replay of a run
#: under 1 % noise no longer reproduced its gain bit for bit (not understood yet).
NOISE_SCALE, NOISY_KEEP = 1e-3, 1.0
#: A fit whose column-scaled normal matrix has a larger condition number waits for more data.
MAX_CONDITION = 1e14
#: With snapshots a Kleinman step is taken when its standard error (:class:`~.equations.StepError`)
#: is at most ``STEP_PRECISION`` times the step (the step makes progress) or ``GAIN_PRECISION`` times
#: the new gain (the error is harmless: ``GAIN_PRECISION^2`` in relative cost).
STEP_PRECISION, GAIN_PRECISION = 1e-3, 1e-4
#: Largest step relative to ``||K||`` (unbounded from ``K = 0``).
TRUST = 1.0
#: Applied updates between two rollout checks (unless ``check_every`` is set).
CHECK_EVERY = 2
#: After a step ``D`` much larger than the perturbations, the buffered rollouts (all around the
#: old gain) determine only a combination of ``P`` and ``E``: ``m n`` directions are seen through
#: the perturbations alone. The next fit waits for ``FRESH * m * n`` rollouts since the step.
FRESH = 1.0


#: Snapshots per rollout chosen by default: the power of two at least ``SNAPSHOTS_PER_UNKNOWN`` per
#: unknown, within the bounds.
SNAPSHOTS_PER_UNKNOWN, MIN_SNAPSHOTS, MAX_SNAPSHOTS = 2, 16, 256
#: Snapshots by default only while the interval equations' triangular factor has at most this many
#: columns ``p_L`` (:class:`~azopg.method.equations.IntervalEquations`): the master folds every interval
#: into it at ``O(p_L^2)`` (unblocked Householder, memory-bound once the factor leaves the cache). One
#: rollout of 256 intervals: 0.08 s at ``p_L = 1020``, 0.29 s at 1680 (eb5), 4.2 s at 3780 (cse2), where
#: the buffered method (``snapshots = 1``: ``O(p^2)`` per rollout, a fit every ``m n`` rollouts) converges
#: in about a minute.
MAX_FACTOR_COLUMNS = 1024
#: With snapshots, the horizon is calibrated by single rollouts ``JUMP`` times longer than the
#: horizon tried: their interval costs give the tail at every doubling up to it.
JUMP = 16
#: With snapshots the perturbations are ``K + r L Z M``, ``L = R^-1/2``, ``M = diag(f / s)^1/2``
#: (``s = diag S`` and ``f`` the cost of a rollout at ``K0``: scaled to the states and inputs) and
#: ``r^2 m n = PERTURBATION``: their second-order cost is about ``PERTURBATION`` times the cost.
PERTURBATION = 1e-2
#: With snapshots, blown-up perturbed rollouts in a row that only shrink the radius (then the shared rule).
BLOWUP_SHRINKS = 3
#: Kleinman steps iterated on the accumulated equations after one report (one applied update).
INNER_STEPS = 8
#: An inner Kleinman step smaller than this (relative to ``||K||``) ends the iteration.
STEP_TOL = 1e-12


def default_snapshots(settings: Any, n: int, m: int) -> int:
    """``settings.snapshots`` if given; else 1 under cost noise (each interval's cost would need its
    own noise model) or when the equations' factor would have more than :data:`MAX_FACTOR_COLUMNS` columns
    (the master's cost per rollout), else ``SNAPSHOTS_PER_UNKNOWN`` per unknown within
    ``[MIN_SNAPSHOTS, MAX_SNAPSHOTS]``."""
    if settings.snapshots is not None:
        return int(settings.snapshots)
    if settings.cost_noise > 0 or factor_columns(n, m) > MAX_FACTOR_COLUMNS:
        return 1
    want = max(SNAPSHOTS_PER_UNKNOWN * unknowns(n, m), MIN_SNAPSHOTS)
    return int(min(2 ** math.ceil(math.log2(want)), MAX_SNAPSHOTS))


def factor_columns(n: int, m: int) -> int:
    """Columns ``p_L = n(n+1) + m n`` of the interval equations' factor with ``R`` known (``P``, ``E``, ``W``)."""
    return n * (n + 1) + m * n


def buffer_factor(cost_noise: float) -> float:
    """How many times the noise-free buffer is kept under relative cost noise ``cost_noise``."""
    return min(1.0 + (cost_noise / NOISE_SCALE) ** 2, NOISY_KEEP)


class PolicyIteration(UpdateRule):
    """Kleinman's policy iteration on least-squares ``(P_K, E_K)`` from buffered rollouts."""

    name = "policy-iteration"
    line_search = False
    needs_moments = True
    estimator = "two-point"  # of the estimates a recalibration's step search takes

    def __init__(self, K0: np.ndarray, settings: Settings, **kw: Any) -> None:
        super().__init__(K0, settings, **kw)
        self.fit_R = fit_weight(self.R, self.discrete_time)  # discrete time: None, H_uu is estimated
        p = unknowns(self.n, self.m, self.fit_R is None)
        noisy = buffer_factor(settings.cost_noise)  # the first fit waits for as many times more data
        self.needed = math.ceil(noisy * OVERDETERMINED * p)
        self.buffer = RolloutBuffer(math.ceil(noisy * KEEP * p))
        self._idle = 0  # rollouts received since the last applied step
        self.fresh = math.ceil(FRESH * self.m * self.n)
        if settings.step is None:
            self.tuning.alpha = 1.0
        if settings.check_every is None:
            self.safeguards.check_every = CHECK_EVERY
        self.snapshots = default_snapshots(settings, self.n, self.m)
        self.equations = IntervalEquations(self.K, self.fit_R) if self.snapshots > 1 else None
        if self.equations is not None and settings.batch is None:
            self.tuning.N = 1  # each rollout brings k equations: one per task
        self.received = 0  # moments rollouts received
        self._shrinks = 0  # radius halvings in a row after blown-up perturbed rollouts
        self.radius = self.tuning.r  # the calibrated radius (snapshots: the radius grows back to it)
        #: The factors ``L``, ``M`` of the perturbations with snapshots (set by the calibration).
        self.scales: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        self.master_seconds = 0.0  # CPU time spent on the reports (adding, re-centring, solving, stepping)

    def task_fields(self, version: int) -> dict[str, Any]:
        if self.snapshots == 1:
            return {}
        return {"snapshots": self.snapshots, "L": self.scales[0], "M": self.scales[1]}

    def _ask(self, worker: int) -> Task:
        return self.issue(worker, TaskKind.MOMENTS)

    def tell(self, rep: Report) -> None:
        """As the base rule's, except that with snapshots a rollout of a perturbed gain that blew up
        first shrinks the radius (:data:`BLOWUP_SHRINKS` times in a row at most), wherever the gain
        is: one perturbed rollout is no evidence against the gain itself."""
        data = rep.data
        if (self.equations is not None and rep.kind == TaskKind.MOMENTS and data is not None and data.Ki.shape[0] == 0
                and self._shrinks < BLOWUP_SHRINKS and not self._unknown(rep)):
            self._account(rep)
            self._shrinks += 1
            self.tuning.r *= SHRINK
            self.log(Event.SHRINK_R, self.version - rep.version, rep.worker, rep.version)
            return
        if data is not None and data.Ki.shape[0] > 0:
            self._shrinks = 0
        super().tell(rep)

    def _tell(self, rep: Report, delay: int) -> None:
        t0 = time.process_time()
        self._add(rep)
        self._step(delay, rep.worker, rep.version)
        self.master_seconds += time.process_time() - t0

    def _tell_round(self, reports: list[Report]) -> None:
        t0 = time.process_time()
        for rep in reports:
            self._add(rep)
        self._step(0, -1, self.version)
        self.master_seconds += time.process_time() - t0

    def summary(self) -> dict[str, Any]:
        """Extra ``stats`` of ``result.json``: the master's CPU seconds on the fits (adding rollouts,
        re-centring, solving) per moments rollout received, and the snapshots per rollout."""
        return {"snapshots": self.snapshots, "master_cpu_s": self.master_seconds,
                "master_cpu_s_per_rollout": self.master_seconds / max(self.received, 1)}

    def _add(self, rep: Report) -> None:
        data = rep.data
        self.received += 0 if data is None else data.Ki.shape[0]
        if self.equations is None:
            self.buffer.add(data)  # type: ignore[arg-type]
            self._idle += 0 if data is None else data.cost.size
            return
        if data is None or data.Ki.shape[0] == 0:
            return
        if isinstance(data, RolloutData):  # a plant without snapshots: the whole rollout is one interval
            data = TrajectoryData(data.Ki, np.stack([data.x0, data.x_end], axis=1), data.S[:, None], data.cost[:, None])
        self.equations.add(*data.arrays())
        self._idle += data.Ki.shape[0]

    def _step(self, delay: int, worker: int, version_read: int) -> None:
        if self.equations is not None:
            self._iterate(delay, worker, version_read)
            return
        if len(self.buffer) < self.needed or self._idle < self.fresh:
            return
        fit = self.buffer.evaluate(self.K, self.fit_R)
        try:
            if not fit.condition < MAX_CONDITION:
                raise np.linalg.LinAlgError
            step = -np.linalg.solve(np.linalg.cholesky(fit.R).T, np.linalg.solve(np.linalg.cholesky(fit.R), fit.E))
        except np.linalg.LinAlgError:  # ill-conditioned, or an estimated R not positive definite: wait
            self.log(Event.ILL_CONDITIONED, delay, worker, version_read)
            self._stuck(worker, version_read)
            return
        limit, size = TRUST * float(np.linalg.norm(self.K)), float(np.linalg.norm(step))
        if 0 < limit < size:
            step *= limit / size
        self.tuning.alpha = min(self.tuning.alpha, 1.0)  # after the trust limit: each rollback halves the step
        self.apply(self.K + self.tuning.alpha * step, delay, worker, version_read)

    def _kleinman(self, fit: PolicyEvaluation) -> np.ndarray:
        """The step ``-R^-1 E`` of a fit, shortened to ``TRUST ||K||`` (raises ``LinAlgError`` if
        an estimated ``R`` is not positive definite)."""
        c = np.linalg.cholesky(fit.R)
        step = -np.linalg.solve(c.T, np.linalg.solve(c, fit.E))
        limit, size = TRUST * float(np.linalg.norm(self.K)), float(np.linalg.norm(step))
        return step * (limit / size) if 0 < limit < size else step

    def _iterate(self, delay: int, worker: int, version_read: int) -> None:
        """Kleinman steps on the accumulated interval equations while each is determined precisely
        enough (:meth:`_refusal`); when none is, the reason is logged and the rule waits for more
        equations (:meth:`_stuck`)."""
        eq = self.equations
        assert eq is not None
        if eq.rows < eq.unknowns:
            return
        try:
            eq.recenter(self.K, self.out_of_time)  # the gain may have moved by a rollback
        except FloatingPointError:  # not representable about this gain: start the equations afresh
            self.equations = eq = IntervalEquations(self.K, self.fit_R)
            return
        except OutOfTime:  # the budget is spent: the run ends, the rows wait unfolded
            return
        self.tuning.alpha = min(self.tuning.alpha, 1.0)
        K, taken, why = self.K, 0, Event.ILL_CONDITIONED
        for _ in range(INNER_STEPS if self.tuning.alpha >= 1.0 else 1):
            if taken and self.out_of_time():  # each inner step re-centres the factor: hold the budget
                break
            try:
                fit, precision = eq.evaluate(self.out_of_time)
            except OutOfTime:
                if not taken:
                    return
                break
            refused = self._refusal(precision)
            if refused is not None:
                why = refused
                break
            try:
                step = self.tuning.alpha * self._kleinman(fit)
            except np.linalg.LinAlgError:  # an estimated R (H_uu) not positive definite
                break
            try:
                eq.recenter(K + step)
            except FloatingPointError:  # a step to an absurd gain
                why = Event.STEP_OVERFLOW
                break
            K, taken = K + step, taken + 1
            if not float(np.linalg.norm(step)) > STEP_TOL * float(np.linalg.norm(K)):
                break
        if not taken:
            self.log(why, delay, worker, version_read)
            self._stuck(worker, version_read)
            return
        self.apply(K, delay, worker, version_read)

    @staticmethod
    def _refusal(precision: StepError) -> Event | None:
        """Why a fit's Kleinman step is not taken, or ``None``: its columns ``E`` (and ``H``) are
        rank-deficient (``ill-conditioned``), or its standard error exceeds both
        :data:`STEP_PRECISION` times the step and :data:`GAIN_PRECISION` times the new gain
        (``step-imprecise``). The condition number of the whole fit is not the judge: ``P`` may be
        poorly determined (states over many decades) while ``E`` is not."""
        if not precision.error < math.inf:
            return Event.ILL_CONDITIONED
        if precision.error > max(STEP_PRECISION * precision.step, GAIN_PRECISION * precision.gain):
            return Event.STEP_IMPRECISE
        return None

    def apply(self, K: np.ndarray, delay: int, worker: int, version_read: int) -> None:
        self._idle = 0
        if self.equations is not None:  # a radius shrunk by blow-ups at an old gain grows back
            self.tuning.r = min(2.0 * self.tuning.r, self.radius)
        super().apply(K, delay, worker, version_read)

    def _stuck(self, worker: int, version_read: int) -> None:
        """A whole buffer's worth of rollouts without a step that could be taken (each refusal logged
        with its reason: ``ill-conditioned``, ``step-imprecise``, ``step-overflow``): no check would
        ever judge the gain -- roll back to the anchor (logged ``rollback-ill-conditioned``); at the
        anchor already, start the buffer (the equations) afresh around it."""
        if self._idle < self.buffer.capacity:
            return
        self._idle = 0
        if np.array_equal(self.K, self.safeguards.anchor_K):
            self.buffer.clear()
            if self.equations is not None:
                self.equations = IntervalEquations(self.K, self.fit_R)
        else:
            self.apply_verdict(self.safeguards.rollback(worker, version_read, Event.ROLLBACK_ILL_CONDITIONED))

    def calibrate(self, run: Runner) -> None:
        """The shared calibration, then one ``moments`` task at the calibrated gain into the buffer:
        a batch too large for memory is refused here, before the run is saved as resumable.
        With snapshots: :meth:`_calibrate_snapshots`."""
        if self.equations is not None:
            self._calibrate_snapshots(run)
            return
        super().calibrate(run)
        self._add(self.probe(run, TaskKind.MOMENTS, self.K.copy()))

    def _calibrate_snapshots(self, run: Runner) -> None:
        """Horizon from single rollouts at ``K0`` ``JUMP`` times longer than the horizon tried (the
        tail beyond each doubling read off their interval costs), confirmed by one check of ``K0``
        (whose cost is the first anchor's); perturbations scaled to the states and inputs seen
        (:data:`PERTURBATION`). Every rollout is kept as equations."""
        s, K0 = self.settings, self.K.copy()
        probe = timed_probe(self, run)  # the time budget is held: OutOfTime before a probe once it is spent
        tau = s.tau or start_tau(self.discrete_time)
        for _ in range(40):
            rep = probe(TaskKind.MOMENTS, K0, JUMP * tau, 0.0, 1)
            if rep.data is None or rep.data.Ki.shape[0] == 0:
                raise NotStabilizingError("rollouts from the initial gain K0 blow up")
            self._add(rep)
            costs = np.asarray(rep.data.cost[0], dtype=float).reshape(-1)
            spent = np.concatenate([[0.0], np.cumsum(costs)])
            t = getattr(rep.data, "t", None)
            t = np.linspace(0.0, JUMP * tau, costs.size + 1) if t is None else t

            def cost_to(T: float, spent: np.ndarray = spent, t: np.ndarray = t) -> float:
                return float(spent[np.searchsorted(t, T * (1 + 1e-9), side="right") - 1])

            if self.scales[1] is None:
                S = np.sum(rep.data.S[0], axis=0) if isinstance(rep.data, TrajectoryData) else rep.data.S[0]
                d = np.sqrt(float(spent[-1]) / np.maximum(np.diag(S), np.finfo(float).tiny))
                L = None if self.R is None else np.linalg.inv(np.linalg.cholesky(self.R)).T
                self.scales = (L, np.diag(d))
            found = next((i for i in range(int(math.log2(JUMP)))
                          if cost_to(2.0 ** (i + 1) * tau) - cost_to(2.0**i * tau)
                          <= s.tail_tol * cost_to(2.0 ** (i + 1) * tau)), None)
            if s.tau is not None or found is not None:
                tau *= 2.0 ** (found or 0)
                break
            tau *= JUMP
        tau, rep = _horizon(probe, K0, s, tau, self.tuning.N)
        self.tuning.tau = tau
        self.safeguards.anchor_cost = rep.cost
        if s.r is None:
            self.tuning.r = math.sqrt(PERTURBATION / (self.m * self.n))
        self.radius = self.tuning.r
        # the first task of the run, here: a batch too large for memory is refused before the run is saved
        self._add(probe(TaskKind.MOMENTS, self.K.copy(), self.tuning.tau, self.tuning.r, self.tuning.N))
        self.log(Event.CALIBRATE)

    def state_dict(self) -> dict[str, Any]:
        """The base state and the perturbations' factors (with snapshots)."""
        L, M = self.scales
        return {**super().state_dict(), "perturbation_L": None if L is None else L.tolist(),
                "perturbation_M": None if M is None else M.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        L, M = state.get("perturbation_L"), state.get("perturbation_M")
        self.scales = (None if L is None else np.array(L, dtype=float), None if M is None else np.array(M, dtype=float))
        if self.equations is not None:
            self.equations = IntervalEquations(self.K, self.fit_R)

    def recalibrate(self, run: Runner) -> None:
        """Checks keep failing (the step has halved to nothing, e.g. under cost noise): re-measure the
        anchor -- a lucky low measurement of it rejects every check -- and restart from a full
        Kleinman step. Logged as ``recalibrate``; no line search (it would need a gradient estimator)."""
        g = self.safeguards
        anchor = self.probe(run, TaskKind.EVALUATE, g.anchor_K.copy())
        if not anchor.blown_up:
            g.anchor_cost = anchor.cost
        self.tuning.alpha = 1.0
        g.searched(False)  # back off until a check accepts again (which resets the limit)
        self.log(Event.RECALIBRATE)
