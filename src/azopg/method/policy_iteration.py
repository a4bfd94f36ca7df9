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
equations have grown by :data:`~.pi_steps.SOLVE_GROWTH` since the last one (the master's work per rollout
stays small however many workers report), and then Kleinman steps

    K <- K - eta D,    D = R^-1 E shortened to ||D|| <= TRUST ||K||,

are iterated on the equations while the fit's own conditioning allows (at most
:data:`~.pi_steps.INNER_STEPS`; their end is one applied update), with ``eta = min(alpha, 1)`` (applied after
the trust limit, so that a rollback's halving of ``alpha`` halves the step taken): ``eta = 1`` is
Kleinman's step, which from a stabilizing gain stays stabilizing and converges quadratically on
exact data. The shared safeguards check the gain every ``CHECK_EVERY`` updates (a failed check
rolls back and halves ``alpha``). With ``R`` unknown it is estimated with ``(P, E)``. On a
discrete-time plant the fit estimates ``H_uu = R + B'P B`` in place of ``R`` and the step is
Hewer's ``K - H_uu^-1 E`` (:func:`~azopg.method.discrete.fit_weight`).

Calibration (:mod:`~.pi_calibration`) needs no step search (``alpha = 1``):
the horizon from the interval costs of single long rollouts, the perturbations from their
states; the first rollouts of the fit are the loop's, asked of all workers at once.

How a fit is judged (:meth:`~.pi_steps.KleinmanSteps._refusal`): on exact data with snapshots, by how
precisely it determines the Kleinman step (its standard error,
:class:`~azopg.method.equations.StepError`), not by the condition of all its columns (``P`` may be
poorly determined while ``E`` is not); under noise and with one equation per rollout, by the
fit's condition number (:data:`~.pi_buffered.NOISY_CONDITION`).

Where the default is one equation per rollout only because the factor is large (eb5, cse2), the
buffered method of before runs instead (:mod:`~.pi_buffered`); where ``(P, E)`` has at least
:data:`~.pi_defaults.PAIRS_FROM` unknowns, ``E`` alone is fitted from antithetic pairs (:mod:`~azopg.method.pairs`:
``m n`` unknowns; CAREX 2.9, 4.3 ... and n = 100 ... 1000).

On a plant with noise of its own (measured at calibration) and ``R`` known the fit is the instrumented one
(:attr:`PolicyIteration.instrumented`, :mod:`~.pi_instrumented`): least squares is biased there.

The constants and the snapshots per rollout are :mod:`~.pi_defaults`'s, the fits' Kleinman steps (the
iteration, its judgement and the rollback) :mod:`~.pi_steps`' (:class:`~.pi_steps.KleinmanSteps`, the base of
:class:`PolicyIteration`), the calibration :mod:`~.pi_calibration`'s.

The equations are not part of :meth:`state_dict`: after a resume they are refilled from scratch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import NotStabilizingError, ProblemError
from ..settings import Settings
from .discrete import fit_weight
from .equations import IntervalEquations
from .iv_equations import InstrumentedEquations
from .kinds import Event, TaskKind
from .pi_calibration import JUMP, calibrate_snapshots, measure_radius, recalibrate
from .pi_defaults import (
    BLOWUP_RATE,
    BLOWUP_SHRINKS,
    CHECK_EVERY,
    CHECK_SHARE,
    MAX_FACTOR_COLUMNS,
    MAX_SNAPSHOTS,
    MIN_SNAPSHOTS,
    PAIR_CONTRACTION,
    PAIR_HORIZON,
    PAIR_PERTURBATION,
    PAIRS_FROM,
    PAIRS_PER_UNKNOWN,
    PATIENCE,
    SNAPSHOTS_PER_UNKNOWN,
    buffered_fits,
    default_snapshots,
    factor_columns,
)
from .pi_steps import GAIN_PRECISION, INNER_STEPS, SOLVE_GROWTH, STEP_PRECISION, STEP_TOL, TRUST, KleinmanSteps
from .regression import unknowns
from .rule import Runner
from .safeguards import SHRINK
from .settle import relative_step, settle_tolerance
from .tasks import Report, RolloutData, Task, TrajectoryData

#: The constants and helpers of :mod:`~.pi_defaults` and :mod:`~.pi_steps` are importable from here too (their
#: values are read there).
__all__ = ["BLOWUP_RATE", "BLOWUP_SHRINKS", "CHECK_EVERY", "CHECK_SHARE", "GAIN_PRECISION", "INNER_STEPS",
           "MAX_FACTOR_COLUMNS", "MAX_SNAPSHOTS", "MIN_SNAPSHOTS", "PAIRS_FROM", "PAIRS_PER_UNKNOWN",
           "PAIR_CONTRACTION", "PAIR_HORIZON", "PAIR_PERTURBATION", "PATIENCE", "SNAPSHOTS_PER_UNKNOWN", "SOLVE_GROWTH",
           "STEP_PRECISION", "STEP_TOL", "TRUST", "PolicyIteration", "default_snapshots", "factor_columns"]

class PolicyIteration(KleinmanSteps):
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
        #: The buffered method (:mod:`~.pi_buffered`), only where the default is one equation per rollout
        #: because the factor is large (:func:`~.pi_defaults.buffered_fits`: eb5, cse2).
        self.buffer = buffered_fits(settings, self.n, self.m, self.fit_R)
        self.equations = IntervalEquations(self.K, self.fit_R)
        self.solved_rows = 0  # rows of the equations at the last solve (:data:`~.pi_steps.SOLVE_GROWTH`)
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
        self._first_pairs = False  # the calibration's first batch is being issued in pairs (:meth:`calibrate`)
        self._snapshot_probes = False  # the buffered method's horizon probes are cut into snapshots (:meth:`calibrate`)

    @property
    def on_pairs(self) -> bool:
        """Whether ``E`` is fitted from antithetic pairs (:data:`~.pi_defaults.PAIRS_FROM`)."""
        return self.buffer is not None and self.buffer.pairs

    def batch_room(self) -> bool:
        """Whether the batch (and with it a check's pairs, :meth:`check_pairs`) may double: a check at twice
        the pairs costs at most :data:`~.pi_defaults.CHECK_SHARE` of the rollouts spent so far."""
        return 2 * 5 * self.check_pairs(self.tuning.N) <= CHECK_SHARE * self.stats.rollouts

    def task_fields(self, version: int) -> dict[str, Any]:
        """The snapshots and the perturbations' factors; a probe at an explicit gain (``version``
        -1: calibration) asks for at least :data:`~.pi_calibration.JUMP` snapshots (their costs give the tail)."""
        pairs = self.on_pairs  # probes as with snapshots, the loop's tasks (and the first batch) in pairs
        if self.buffer is not None and not pairs and not self._snapshot_probes:
            return {}
        if pairs and (version >= 0 or self._first_pairs):
            return {"antithetic": True, "L": self.scales[0], "M": self.scales[1]}
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
        return self.issue(worker, TaskKind.EVALUATE, g.anchor_K.copy(), version=g.anchor_version)

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
        first shrinks the radius (:data:`~.pi_defaults.BLOWUP_SHRINKS` times in a row at most), wherever the gain
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
            self.buffer.add(data)
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
        """As :meth:`~.pi_steps.KleinmanSteps.apply`; under process noise the perturbations' shape relaxes
        (:meth:`_relax_shape`) when no perturbed rollout blew up since the last change."""
        if self.shape is not None and self._blown == 0:
            self._relax_shape()
        self._perturbed = self._blown = 0
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

    def calibrate(self, run: Runner) -> None:
        """:meth:`_calibrate_snapshots` (no step search: Kleinman's step needs none). Buffered: the shared
        calibration (on exact data the horizon as with snapshots, from tens of rollouts instead of thousands, and
        :func:`~.pi_calibration.measure_radius`), then one ``moments`` task at the calibrated gain into the buffer
        (a batch too large for memory is refused here, before the run is saved as resumable); antithetic pairs: as with
        snapshots (their probes are not pairs: the pair buffer ignores them), and the first batch, at the pairs'
        horizon and radius, in pairs (as snapshots it was ignored: 885 rollouts, 33 s of CAREX 3.1-l30's 60)."""
        if self.buffer is None or self.buffer.pairs:
            self._calibrate_snapshots(run)
            if self.buffer is None:
                return
            if self.settings.tau is None:
                self.tuning.tau *= PAIR_HORIZON
            if self.settings.r is None and not self.noisy and not self.settings.cost_noise:
                self.tuning.r = self.radius = math.sqrt(PAIR_PERTURBATION / (self.m * self.n))
            if self.tuning.N > 1:  # a batch too large for memory is refused here, before the run is saved
                self._first_pairs = True
                try:
                    self._add(self.probe(run, TaskKind.MOMENTS, self.K.copy(), self.tuning.tau, self.tuning.r,
                                         self.tuning.N))
                finally:
                    self._first_pairs = False
            return
        if not self.settings.cost_noise:  # exact data: the horizon from snapshot probes, the radius as before
            self._snapshot_probes = True
            try:
                self._calibrate_snapshots(run)
            finally:
                self._snapshot_probes = False
            if not self.noisy:
                measure_radius(self, run)
                self.buffer.exact()
                self._add(self.probe(run, TaskKind.MOMENTS, self.K.copy()))
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
