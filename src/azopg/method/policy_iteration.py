"""Model-free policy iteration: Kleinman's method with ``(P_K, E_K)`` fitted to rollouts.

Workers run ``"moments"`` tasks: rollouts of ``K_i = K + r L Z_i M`` (``Z_i`` on the ``sqrt(mn)``
sphere; ``L = R^-1/2`` and ``M`` scale the perturbations to the inputs and states, see
:data:`~.pi_calibration.PERTURBATION`), each cut into ``k`` intervals (``settings.snapshots``, chosen by
:func:`default_snapshots`; ``k = 1``: one equation per rollout, the regime of noisy and
black-box plants; plants without snapshots contribute whole rollouts as one interval each).
Every interval is one exact equation in ``(P, E)`` of *any* base gain
(:mod:`azopg.method.equations`): every equation ever received is kept as sufficient statistics
about the current gain (re-centred exactly when the gain moves), so no rollout is ever stale,
dropped or re-processed, and rollouts in flight are never wasted. A fit is solved once the
equations have grown by :data:`SOLVE_GROWTH` since the last one (the master's work per rollout
stays small however many workers report), and then Kleinman steps

    K <- K - eta D,    D = R^-1 E shortened to ||D|| <= TRUST ||K||,

are iterated on the equations while the fit's own conditioning allows (at most
:data:`INNER_STEPS`; their end is one applied update), with ``eta = min(alpha, 1)`` (applied after
the trust limit, so that a rollback's halving of ``alpha`` halves the step taken): ``eta = 1`` is
Kleinman's step, which from a stabilizing gain stays stabilizing and converges quadratically on
exact data. The shared safeguards check the gain every ``CHECK_EVERY`` updates (a failed check
rolls back and halves ``alpha``). With ``R`` unknown it is estimated with ``(P, E)``. On a
discrete-time plant the fit estimates ``H_uu = R + B'P B`` in place of ``R`` and the step is
Hewer's ``K - H_uu^-1 E`` (:func:`~azopg.method.discrete.fit_weight`).

Calibration (:mod:`~.pi_calibration`) needs no step search (``alpha = 1``):
the horizon from the interval costs of single long rollouts, the perturbations from their
states; the first rollouts of the fit are the loop's, asked of all workers at once.

How a fit is judged (:meth:`PolicyIteration._refusal`): on exact data with snapshots, by how
precisely it determines the Kleinman step (its standard error,
:class:`~azopg.method.equations.StepError`), not by the condition of all its columns (``P`` may be
poorly determined while ``E`` is not); under noise and with one equation per rollout, by the
fit's condition number (:data:`NOISY_CONDITION`).

Where the default is one equation per rollout only because the factor is large (eb5, cse2), the
buffered method of before runs instead (:mod:`~.pi_buffered`); where ``(P, E)`` has at least
:data:`PAIRS_FROM` unknowns, ``E`` alone is fitted from antithetic pairs (:mod:`~azopg.method.pairs`:
``m n`` unknowns, for n = 100 ... 200).

On a plant with noise of its own (measured at calibration) and ``R`` known the fit is the instrumented one
(:attr:`PolicyIteration.instrumented`, :mod:`~.pi_instrumented`): least squares is biased there.

The equations are not part of :meth:`state_dict`: after a resume they are refilled from scratch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import NotStabilizingError, OutOfTime, ProblemError
from ..settings import Settings
from .discrete import fit_weight
from .equations import IntervalEquations, StepError
from .iv_equations import InstrumentedEquations
from .kinds import Event, TaskKind
from .pi_buffered import NOISY_CONDITION, BufferedFits
from .pi_calibration import JUMP, calibrate_snapshots, recalibrate
from .pi_instrumented import instrumented_steps
from .regression import PolicyEvaluation, unknowns
from .rule import Runner, UpdateRule
from .safeguards import SHRINK
from .settle import relative_step, settle_tolerance
from .tasks import Report, RolloutData, Task, TrajectoryData

__all__ = ["PolicyIteration", "default_snapshots", "factor_columns"]

#: Rollouts without an applied step, per unknown of ``(P, E)``, after which a fit that stays
#: ill-conditioned rolls back to the anchor (:meth:`PolicyIteration._stuck`); the buffered method
#: keeps as many rollouts.
PATIENCE = 6.0
#: With snapshots on exact data a Kleinman step is taken when its standard error
#: (:class:`~.equations.StepError`) is at most ``STEP_PRECISION`` times the step (the step makes
#: progress) or ``GAIN_PRECISION`` times the new gain (the error is harmless: ``GAIN_PRECISION^2`` in
#: relative cost).
STEP_PRECISION, GAIN_PRECISION = 1e-3, 1e-4
#: A new fit is solved once the equations (rows) have grown by this fraction since the last solve, or
#: by ``m n`` rows (the directions of ``E`` seen through the perturbations alone), whichever is fewer:
#: few solves in a run whatever the number of workers, each ``O(p_L (m n)^2)``
#: (:meth:`~azopg.method.equations.IntervalEquations.solve`), and the rows a fit waits for are a
#: fraction of those it has (or ``m n``) -- the same at W = 1 and W = 32.
SOLVE_GROWTH = 1.0 / 16.0
#: Where the buffered method would run and ``(P, E)`` has at least ``PAIRS_FROM`` unknowns (n >= 90), ``E``
#: alone is fitted from antithetic pairs (:mod:`~azopg.method.pairs`, ``R`` known), ``PAIRS_PER_UNKNOWN`` pairs
#: per unknown of ``E``, the most recent kept.
PAIRS_FROM, PAIRS_PER_UNKNOWN = 4096, 1.25
#: With pairs the calibrated horizon (tail at most ``tail_tol`` of the cost) is made ``PAIR_HORIZON`` times
#: longer: a pair's difference is about ``r ||E||`` of the cost, and shrinks with ``E`` near the optimum,
#: while the tails it neglects do not (an exponential tail: ``tail_tol^PAIR_HORIZON``).
PAIR_HORIZON = 3.0
#: Largest step relative to ``||K||`` (unbounded from ``K = 0``).
TRUST = 1.0
#: Applied updates between two rollout checks (unless ``check_every`` is set).
CHECK_EVERY = 2
#: Under noise an inconclusive check doubles the checks' pairs (:attr:`~.safeguards.Safeguards.keeps_unresolved`)
#: while a check at twice them (about 5 rollouts a pair: the gain from the states and from 0 to ``2 tau``, the
#: anchor to ``tau``) costs at most this share of the rollouts spent so far.
CHECK_SHARE = 1 / 8


#: Snapshots per rollout chosen by default: the power of two at least ``SNAPSHOTS_PER_UNKNOWN`` per
#: unknown, within the bounds.
SNAPSHOTS_PER_UNKNOWN, MIN_SNAPSHOTS, MAX_SNAPSHOTS = 2, 16, 256
#: Snapshots by default only while the interval equations' triangular factor has at most this many
#: columns ``p_L`` (:class:`~azopg.method.equations.IntervalEquations`): the master folds every interval
#: into it at ``O(p_L^2)`` (measured with the unblocked Householder fold, memory-bound once the factor leaves
#: the cache; the blocked fold is several times faster). One
#: rollout of 256 intervals: 0.08 s at ``p_L = 1020``, 0.29 s at 1680 (eb5), 4.2 s at 3780 (cse2), where
#: the buffered method (``snapshots = 1``: ``O(p^2)`` per rollout, a fit every ``m n`` rollouts) converges
#: in about a minute.
MAX_FACTOR_COLUMNS = 1024
#: With snapshots, blown-up perturbed rollouts in a row that only shrink the radius (then the shared rule).
BLOWUP_SHRINKS = 3
#: Under process noise the radius halves when more than this share of the perturbed rollouts blew up
#: (:meth:`PolicyIteration._blowup_rate`).
BLOWUP_RATE = 0.1
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


class PolicyIteration(UpdateRule):
    """Kleinman's policy iteration on least-squares ``(P_K, E_K)`` from every rollout's intervals."""

    name = "policy-iteration"
    grows_batch = True  # under noise: the checks' pairs (:meth:`batch_room`), the gain kept meanwhile
    line_search = False
    needs_moments = True
    estimator = "two-point"  # of the estimates a recalibration's step search takes

    def __init__(self, K0: np.ndarray, settings: Settings, **kw: Any) -> None:
        super().__init__(K0, settings, **kw)
        self.fit_R = fit_weight(self.R, self.discrete_time)  # discrete time: None, H_uu is estimated
        self.patience = math.ceil(PATIENCE * unknowns(self.n, self.m, self.fit_R is None))
        self._idle = 0  # rollouts received since the last applied step
        if settings.step is None:
            self.tuning.alpha = 1.0
        if settings.check_every is None:
            self.safeguards.check_every = CHECK_EVERY
        self.snapshots = default_snapshots(settings, self.n, self.m)
        p = unknowns(self.n, self.m, self.fit_R is None)
        #: The buffered method (:mod:`~.pi_buffered`), only where the default is one equation per rollout
        #: because the factor is large (:data:`MAX_FACTOR_COLUMNS`: eb5, cse2).
        self.buffer = (BufferedFits(math.ceil(PATIENCE * p), p, self.m, self.n) if settings.snapshots is None
                       and factor_columns(self.n, self.m) > MAX_FACTOR_COLUMNS else None)
        if self.buffer is not None and self.fit_R is not None and p >= PAIRS_FROM:  # E alone, from pairs
            self.buffer = BufferedFits.of_pairs(math.ceil(2 * PAIRS_PER_UNKNOWN * self.m * self.n), self.m, self.n)
        self.equations = IntervalEquations(self.K, self.fit_R)
        self.solved_rows = 0  # rows of the equations at the last solve (:data:`SOLVE_GROWTH`)
        #: Under process noise (:attr:`instrumented`): the instrumented fit's sums, and the rows they should
        #: hold before the next fit.
        self.iv: InstrumentedEquations | None = None
        self.iv_due = 0
        self._anchor_asked = False  # the first anchor's deferred measurement is in flight
        if settings.batch is None and self.buffer is None:
            self.tuning.N = 1  # one rollout per task: the first rollouts are spread over all workers
        self._N0 = self.tuning.N  # a check's pairs double with the batch (:meth:`batch_room`)
        self.safeguards.keeps_unresolved = True  # a step is a consistent fit's: an unresolved check keeps it
        self.received = 0  # moments rollouts received
        #: Inside a take (:meth:`tell_many`) the step waits for its last report: (delay, worker, version read).
        self._deferred: tuple[int, int, int] | None = None
        self._shrinks = 0  # radius halvings in a row after blown-up perturbed rollouts
        self._perturbed = self._blown = 0  # under process noise: perturbed rollouts (blown) since the radius changed
        self.radius = self.tuning.r  # the calibrated radius (snapshots: the radius grows back to it)
        #: The factors ``L``, ``M`` of the perturbations with snapshots (set by the calibration).
        self.scales: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        #: Under process noise, perturbations shaped at ``K0`` (:func:`~.pi_calibration.shape_perturbations`): the
        #: unshaped ``L``, ``M`` and the factors ``l`` (per input), ``g`` (per state), relaxed by :meth:`apply`.
        self.shape: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.master_seconds = 0.0  # CPU time spent on the reports (adding, re-centring, solving, stepping)
        #: The last gain change over the step factor ``alpha`` (the full step), by :func:`~.settle.relative_step`
        #: weighted by the first rollouts' state moments: :meth:`settled`.
        self.movement = math.inf
        self._moments: np.ndarray | None = None

    def batch_room(self) -> bool:
        """Whether the batch (and with it a check's pairs, :meth:`check_pairs`) may double: a check at twice
        the pairs costs at most :data:`CHECK_SHARE` of the rollouts spent so far."""
        return 2 * 5 * self.check_pairs(self.tuning.N) <= CHECK_SHARE * self.stats.rollouts

    def task_fields(self, version: int) -> dict[str, Any]:
        """The snapshots and the perturbations' factors; a probe at an explicit gain (``version``
        -1: calibration) asks for at least :data:`JUMP` snapshots (their costs give the tail)."""
        pairs = self.buffer is not None and self.buffer.pairs  # probes as with snapshots, the loop's tasks in pairs
        if self.buffer is not None and not pairs:
            return {}
        if pairs and version >= 0:
            return {"antithetic": True, "L": self.scales[0]}
        k = self.snapshots if version >= 0 else max(self.snapshots, JUMP)
        return {"snapshots": k, "L": self.scales[0], "M": self.scales[1]}

    def ask(self, worker: int) -> Task:
        """As the base rule's, except that while the first anchor's cost is unmeasured (deferred by
        calibration, :meth:`_calibrate_snapshots`) no check is issued (none could be judged) and one
        task measures it: a check of the anchor gain, at the anchor's version."""
        g = self.safeguards
        if math.isfinite(g.anchor_cost):
            return super().ask(worker)
        if self._anchor_asked:
            return self._ask(worker)
        self._anchor_asked = True
        t = self.tuning
        self.stats.tasks += 1
        self._issued[self.stats.tasks] = (t.tau, t.r, t.N)
        return self.make_task(self.stats.tasks, worker, TaskKind.EVALUATE, g.anchor_K.copy(), g.anchor_version,
                              t.tau, t.r, t.N)

    def _ask(self, worker: int) -> Task:
        return self.issue(worker, TaskKind.MOMENTS)

    def tell_round(self, reports: list[Report]) -> None:
        """As the base rule's, the first anchor's deferred measurement taken out first (:meth:`ask`)."""
        for rep in reports:
            if self._anchor_report(rep):
                self._measure_anchor(rep)
        super().tell_round([rep for rep in reports if rep.kind != TaskKind.EVALUATE or rep.task_id in self._issued])

    def _anchor_report(self, rep: Report) -> bool:
        """Whether ``rep`` measures the first anchor: no check is issued before its cost is known."""
        return (rep.kind == TaskKind.EVALUATE and not math.isfinite(self.safeguards.anchor_cost)
                and rep.task_id in self._issued)

    def _measure_anchor(self, rep: Report) -> None:
        """The deferred measurement of the first anchor's cost (:meth:`ask`): its cost is the anchor's;
        a tail beyond ``tau`` that is not negligible doubles ``tau`` and measures again (rollouts at a
        shorter horizon are exact equations all the same)."""
        self._account(rep)
        self._anchor_asked = False
        if rep.blown_up:
            raise NotStabilizingError("rollouts from the initial gain K0 blow up")
        if self.settings.tau is None and rep.long_tail(self.settings.tail_tol):
            self.tuning.tau *= 2.0
            return
        if not rep.cost > 0:
            raise ProblemError("rollouts from K0 cost nothing: there is nothing to learn")
        self.safeguards.anchor_cost = rep.cost

    def tell(self, rep: Report) -> None:
        """As the base rule's, except that a rollout of a perturbed gain that blew up
        first shrinks the radius (:data:`BLOWUP_SHRINKS` times in a row at most), wherever the gain
        is: one perturbed rollout is no evidence against the gain itself."""
        data = rep.data
        if self._anchor_report(rep):
            self._measure_anchor(rep)
            return
        if self.instrumented and rep.kind == TaskKind.MOMENTS and rep.task_id in self._issued:
            if self._blowup_rate(rep):
                return
        elif (self.buffer is None and rep.kind == TaskKind.MOMENTS and data is not None and data.Ki.shape[0] == 0
                and self._shrinks < BLOWUP_SHRINKS and not self._unknown(rep)):
            self._account(rep)
            self._shrinks += 1
            self.tuning.r *= SHRINK
            self.log(Event.SHRINK_R, self.version - rep.version, rep.worker, rep.version)
            return
        if data is not None and data.Ki.shape[0] > 0:
            self._shrinks = 0
        super().tell(rep)

    def _blowup_rate(self, rep: Report) -> bool:
        """Under process noise (the instrumented fit): the radius halves only when more than
        :data:`BLOWUP_RATE` of the perturbed rollouts since its last change blew up (at least
        ``BLOWUP_SHRINKS``), not at each one: a step waits for hundreds of rollouts, and halving at every
        blow-up (growing back only at a step) ratcheted the radius down to where no step was precise (eb4 at
        0.01: 0.12 to 0.004). Returns whether ``rep`` was taken (all its rollouts blew up: nothing to fit)."""
        self._perturbed += rep.rollouts
        self._blown += rep.blown_up
        if self._blown >= max(BLOWUP_SHRINKS, BLOWUP_RATE * self._perturbed):
            self._perturbed = self._blown = 0
            self._account(rep)
            self.tuning.r *= SHRINK
            self.log(Event.SHRINK_R, self.version - rep.version, rep.worker, rep.version)
            return True
        if rep.data is not None and rep.data.Ki.shape[0] == 0:
            self._account(rep)
            return True
        return False

    def tell_many(self, reports: list[Report]) -> None:
        """As the base rule's, but one fit for the whole take: its rollouts are all added first."""
        self._deferred = None
        super().tell_many(reports)
        if self._deferred is not None:
            t0 = time.process_time()
            self._step(*self._deferred)
            self.master_seconds += time.process_time() - t0

    def _tell(self, rep: Report, delay: int) -> None:
        t0 = time.process_time()
        self._add(rep)
        if self._taken is not None:  # inside a take: the step after its last report (tell_many)
            self._deferred = (delay, rep.worker, rep.version)
        else:
            self._step(delay, rep.worker, rep.version)
        self.master_seconds += time.process_time() - t0

    def _tell_round(self, reports: list[Report]) -> None:
        t0 = time.process_time()
        for rep in reports:
            self._add(rep)
        self._step(0, -1, self.version)
        self.master_seconds += time.process_time() - t0

    @property
    def noisy_fit(self) -> bool:
        """Whether fits are judged by their condition number (:data:`NOISY_CONDITION`): under noise
        or with one equation per rollout (the buffered method too)."""
        return bool(self.noisy or self.settings.cost_noise > 0 or self.snapshots == 1)

    def summary(self) -> dict[str, Any]:
        """Extra ``stats`` of ``result.json``: the master's CPU seconds on the fits (adding rollouts,
        re-centring, solving) per moments rollout received, and the snapshots per rollout."""
        return {"snapshots": self.snapshots, "master_cpu_s": self.master_seconds,
                "master_cpu_s_per_rollout": self.master_seconds / max(self.received, 1)}

    def _add(self, rep: Report) -> None:
        data = rep.data
        self.received += 0 if data is None else data.Ki.shape[0]
        if data is None or data.Ki.shape[0] == 0:
            return
        self._idle += data.Ki.shape[0]
        if self._moments is None:  # the weights of the states in :attr:`movement`
            S = np.asarray(data.S, dtype=float).reshape(-1, self.n, self.n)
            self._moments = np.maximum(np.diagonal(S.sum(axis=0)).copy(), np.finfo(float).tiny)
        if self.buffer is not None:
            self.buffer.add(data)  # type: ignore[arg-type]
            return
        if isinstance(data, RolloutData):  # a plant without snapshots: the whole rollout is one interval
            data = TrajectoryData(data.Ki, np.stack([data.x0, data.x_end], axis=1), data.S[:, None], data.cost[:, None],
                                  np.array([0.0, data.tau]))
        if self.instrumented:
            self._add_instrumented(data)
            return
        k = data.cost.shape[1]
        if k > self.snapshots and k % self.snapshots == 0:  # a calibration probe's finer intervals, merged:
            b, j = data.Ki.shape[0], k // self.snapshots   # the run's k equations per rollout
            data = TrajectoryData(data.Ki, data.x[:, ::j], data.S.reshape(b, self.snapshots, j, self.n, self.n).sum(2),
                                  data.cost.reshape(b, self.snapshots, j).sum(2))
        self.equations.add(*data.arrays())

    @property
    def instrumented(self) -> bool:
        """Whether the fit is the instrumented one (:mod:`~.pi_instrumented`): on a plant with noise of its own
        (measured at calibration), ``R`` known, not the buffered method."""
        return bool(self.noisy and self.fit_R is not None and self.buffer is None)

    def _add_instrumented(self, data: TrajectoryData) -> None:
        if self.iv is None:
            self.iv = InstrumentedEquations(self.K, self.fit_R)
        k = data.cost.shape[1]
        dt = np.diff(data.t) if data.t is not None else np.full(k, self.tuning.tau / k)
        self.iv.add(data.Ki, data.x, data.S, data.cost, dt)

    def _step(self, delay: int, worker: int, version_read: int) -> None:
        """A fit once the equations have grown by :data:`SOLVE_GROWTH` (at most ``m n`` rows) since the
        last one (the gain moved by a rollback since: at once). Buffered: :meth:`_step_buffered`."""
        if self.buffer is not None:
            self._step_buffered(delay, worker, version_read)
            return
        if self.iv is not None:
            self._step_instrumented(delay, worker, version_read)
            return
        eq = self.equations
        moved = not np.array_equal(eq.C, self.K)
        due = min(SOLVE_GROWTH * self.solved_rows, self.m * self.n)
        if eq.rows < eq.unknowns or not (moved or eq.rows - self.solved_rows >= due):
            return
        self.solved_rows = eq.rows
        self._iterate(delay, worker, version_read)

    def _step_buffered(self, delay: int, worker: int, version_read: int) -> None:
        """One Kleinman step on the buffer's fit once it is due (:meth:`~.pi_buffered.BufferedFits.due`)."""
        assert self.buffer is not None
        if not self.buffer.due(self._idle):
            return
        try:
            step = self._kleinman(self.buffer.fit(self.K, self.fit_R))
        except np.linalg.LinAlgError:  # ill-conditioned, or an estimated R not positive definite: wait
            self.log(Event.ILL_CONDITIONED, delay, worker, version_read)
            self._stuck(worker, version_read)
            return
        self.tuning.alpha = min(self.tuning.alpha, 1.0)  # after the trust limit: each rollback halves the step
        self.apply(self.K + self.tuning.alpha * step, delay, worker, version_read)

    def _step_instrumented(self, delay: int, worker: int, version_read: int) -> None:
        """Kleinman steps on the instrumented fit (:func:`~.pi_instrumented.instrumented_steps`) once the sums
        hold the rows the last fit asked for (the gain moved by a rollback since: at once)."""
        iv = self.iv
        assert iv is not None and self.fit_R is not None
        if iv.rows <= iv.unknowns or (np.array_equal(iv.C, self.K) and iv.rows < self.iv_due):
            return
        alpha = min(self.tuning.alpha, 1.0)
        self.tuning.alpha = alpha
        out = instrumented_steps(iv, self.K, self.fit_R, INNER_STEPS if alpha >= 1.0 else 1,
                                 lambda R, E: alpha * self._kleinman_step(R, E), SOLVE_GROWTH, self.out_of_time)
        self.iv_due = out.wait
        if not out.taken:
            self.log(out.why, delay, worker, version_read)
            return
        self.apply(out.K, delay, worker, version_read)

    def _kleinman(self, fit: PolicyEvaluation) -> np.ndarray:
        """The step ``-R^-1 E`` of a fit (:meth:`_kleinman_step`)."""
        return self._kleinman_step(fit.R, fit.E)

    def _kleinman_step(self, R: np.ndarray, E: np.ndarray) -> np.ndarray:
        """The step ``-R^-1 E``, shortened to ``TRUST ||K||`` (raises ``LinAlgError`` if an estimated ``R``
        is not positive definite)."""
        c = np.linalg.cholesky(R)
        step = -np.linalg.solve(c.T, np.linalg.solve(c, E))
        limit, size = TRUST * float(np.linalg.norm(self.K)), float(np.linalg.norm(step))
        return step * (limit / size) if 0 < limit < size else step

    def _iterate(self, delay: int, worker: int, version_read: int) -> None:
        """Kleinman steps on the accumulated interval equations while each is determined precisely
        enough (:meth:`_refusal`); when none is, the reason is logged and the rule waits for more
        equations (:meth:`_stuck`)."""
        eq = self.equations
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
            try:  # judged by its condition, a fit needs no step error (O((m n)^3) per fit on the master)
                if self.noisy_fit:
                    fit = eq.solve(self.out_of_time)
                    refused = None if fit.condition < NOISY_CONDITION else Event.ILL_CONDITIONED
                else:
                    fit, precision = eq.evaluate(self.out_of_time)
                    refused = self._refusal(precision)
            except OutOfTime:
                if not taken:
                    return
                break
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
        """Why a fit's Kleinman step is not taken on exact data with snapshots, or ``None``: its
        columns ``E`` (and ``H``) are rank-deficient (``ill-conditioned``), or its standard error
        exceeds both :data:`STEP_PRECISION` times the step and :data:`GAIN_PRECISION` times the new
        gain (``step-imprecise``). The condition number of the whole fit is not the judge: ``P`` may
        be poorly determined (states over many decades) while ``E`` is not. (Under noise and with one
        equation per rollout the judge is the condition number: :attr:`noisy_fit`.)"""
        if not precision.error < math.inf:
            return Event.ILL_CONDITIONED
        if precision.error > max(STEP_PRECISION * precision.step, GAIN_PRECISION * precision.gain):
            return Event.STEP_IMPRECISE
        return None

    def new_version(self, K: np.ndarray) -> None:
        """As the base rule's, and :attr:`movement` measured (a rollback's too)."""
        alpha = self.tuning.alpha if self.tuning.alpha > 0 else 1.0
        self.movement = (math.inf if self._moments is None
                         else relative_step((K - self.K) / alpha, K, self.R, self._moments))
        super().new_version(K)

    def settled(self, target_gap: float | None) -> bool:
        """On exact data, whether the last gain change (the full step, :attr:`movement`) is within
        :func:`~.settle.settle_tolerance` of the gain: Kleinman's step estimates the error of the gain
        it left, and the gap of a flat cost does not (:mod:`~.settle`). Under noise the steps never
        vanish: the gap alone decides."""
        if self.noisy or self.settings.cost_noise > 0:
            return True
        return self.movement <= settle_tolerance(target_gap)

    def apply(self, K: np.ndarray, delay: int, worker: int, version_read: int) -> None:
        self._idle = 0
        if self.shape is not None and self._blown == 0:  # no blow-up since the last change: the shape relaxes
            self._relax_shape()
        self._perturbed = self._blown = 0
        if self.buffer is None:  # a radius shrunk by blow-ups at an old gain grows back
            self.tuning.r = min(2.0 * self.tuning.r, self.radius)
        super().apply(K, delay, worker, version_read)

    def _relax_shape(self) -> None:
        """The shape measured at ``K0`` doubles its factors towards the unshaped perturbations (at most 1):
        the loop it guarded against is left behind as the gain moves (cola5: rows shaped by 1/64 at ``K0``
        kept every step imprecise beyond gap 5e-3)."""
        assert self.shape is not None
        L0, M0, l, g = self.shape
        l, g = np.minimum(2.0 * l, 1.0), np.minimum(2.0 * g, 1.0)
        self.scales = (L0 * l, g[:, None] * M0)
        self.shape = None if l.min() >= 1.0 and g.min() >= 1.0 else (L0, M0, l, g)

    def _stuck(self, worker: int, version_read: int) -> None:
        """:data:`PATIENCE` rollouts per unknown without a step that could be taken (each refusal logged
        with its reason: ``ill-conditioned``, ``step-imprecise``, ``step-overflow``): no check would ever
        judge the gain -- roll back to the anchor (logged ``rollback-ill-conditioned``); at the anchor
        already, start the equations afresh around it."""
        if self._idle < self.patience:
            return
        self._idle = 0
        if np.array_equal(self.K, self.safeguards.anchor_K):
            self.equations = IntervalEquations(self.K, self.fit_R)
            self.solved_rows = 0
            self.iv = None
            if self.buffer is not None:
                self.buffer.clear()
        else:
            self.apply_verdict(self.safeguards.rollback(worker, version_read, Event.ROLLBACK_ILL_CONDITIONED))

    def calibrate(self, run: Runner) -> None:
        """:meth:`_calibrate_snapshots` (no step search: Kleinman's step needs none). Buffered: the shared
        calibration, then one ``moments`` task at the calibrated gain into the buffer (a batch too large
        for memory is refused here, before the run is saved as resumable); antithetic pairs: as with
        snapshots (their probes are not pairs: the pair buffer ignores them)."""
        if self.buffer is None or self.buffer.pairs:
            self._calibrate_snapshots(run)
            if self.buffer is not None and self.settings.tau is None:
                self.tuning.tau *= PAIR_HORIZON
            return
        super().calibrate(run)
        self._add(self.probe(run, TaskKind.MOMENTS, self.K.copy()))

    def _calibrate_snapshots(self, run: Runner) -> None:
        """:func:`~.pi_calibration.calibrate_snapshots`."""
        calibrate_snapshots(self, run)

    def state_dict(self) -> dict[str, Any]:
        """The base state and the perturbations' factors."""
        L, M = self.scales
        return {**super().state_dict(), "perturbation_L": None if L is None else L.tolist(),
                "perturbation_M": None if M is None else M.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        L, M = state.get("perturbation_L"), state.get("perturbation_M")
        self.scales = (None if L is None else np.array(L, dtype=float), None if M is None else np.array(M, dtype=float))
        self.equations = IntervalEquations(self.K, self.fit_R)
        self.solved_rows = 0
        self.iv, self.iv_due = None, 0

    def recalibrate(self, run: Runner) -> None:
        """:func:`~.pi_calibration.recalibrate`: the anchor re-measured, a full Kleinman step again."""
        recalibrate(self, run)
