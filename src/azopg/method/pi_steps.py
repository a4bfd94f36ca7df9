"""Policy iteration's Kleinman steps (:mod:`azopg.method.policy_iteration`): a fit of ``(P_K, E_K)`` once due,
the steps ``K <- K - eta R^-1 E`` iterated on it while it determines them (:meth:`KleinmanSteps._refusal`), and
the rollback when none can be taken for long (:meth:`KleinmanSteps._stuck`). The rule's ask/tell bookkeeping,
which fills the fits, is :class:`~.policy_iteration.PolicyIteration`'s.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import OutOfTime
from .equations import IntervalEquations, StepError
from .iv_equations import InstrumentedEquations
from .kinds import Event
from .pi_buffered import NOISY_CONDITION, BufferedFits
from .pi_defaults import PAIR_CONTRACTION
from .pi_instrumented import instrumented_steps
from .regression import PolicyEvaluation
from .rule import UpdateRule
from .settle import relative_step

__all__ = ["GAIN_PRECISION", "INNER_STEPS", "SOLVE_GROWTH", "STEP_PRECISION", "STEP_TOL", "TRUST", "KleinmanSteps"]

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
#: Largest step relative to ``||K||`` (unbounded from ``K = 0``).
TRUST = 1.0
#: Kleinman steps iterated on the accumulated equations after one report (one applied update).
INNER_STEPS = 8
#: An inner Kleinman step smaller than this (relative to ``||K||``) ends the iteration.
STEP_TOL = 1e-12


class KleinmanSteps(UpdateRule):
    """The fits and Kleinman steps of :class:`~.policy_iteration.PolicyIteration`, which sets these attributes."""

    #: ``R`` (``None`` in discrete time: ``H_uu`` is estimated, :func:`~.discrete.fit_weight`).
    fit_R: np.ndarray | None
    #: Rollouts without an applied step before a rollback (:meth:`_stuck`), and those received since the last.
    patience: int
    _idle: int
    snapshots: int
    radius: float
    buffer: BufferedFits | None
    equations: IntervalEquations
    solved_rows: int
    iv: InstrumentedEquations | None
    iv_due: int
    #: The last full step's size (:func:`~.settle.relative_step`) and the states' weights in it.
    movement: float
    _moments: np.ndarray | None
    #: The anchor's move count (:attr:`~.safeguards.Safeguards.anchor_serial`) at the buffered method's last fit.
    _step_serial: int | None = None

    @property
    def noisy_fit(self) -> bool:
        """Whether fits are judged by their condition number (:data:`NOISY_CONDITION`): under noise
        or with one equation per rollout (the buffered method too)."""
        return bool(self.noisy or self.settings.cost_noise > 0 or self.snapshots == 1)

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
            step = self._kleinman(self.buffer.fit(self.K, self.fit_R, self.out_of_time))
        except np.linalg.LinAlgError:  # ill-conditioned, or an estimated R not positive definite: wait
            self.log(Event.ILL_CONDITIONED, delay, worker, version_read)
            self._stuck(worker, version_read)
            return
        except OutOfTime:  # the budget is spent during the fit: the run ends at the gain it has
            return
        self.tuning.alpha = min(self.tuning.alpha, 1.0)  # after the trust limit: each rollback halves the step
        self._full_step_again()
        K, last = self.K + self.tuning.alpha * step, None
        if self.buffer.pairs and self.tuning.alpha >= 1.0 and not (self.noisy or self.settings.cost_noise):
            K, last = self._pair_steps(K, step)
        self.apply(K, delay, worker, version_read)
        if last is not None:  # the last full Kleinman step taken estimates the error of the gain it left
            self.movement = last

    def _full_step_again(self) -> None:
        """On exact data, Kleinman's full step (``alpha = 1``) again at the first fit after a check moved the
        anchor: the rollbacks' halving searches the step from one gain, and from a stabilizing gain the exact
        step is stabilizing. From ``K0 = 0`` on a lightly damped plant the first step overshoots ``K*`` by
        orders of magnitude (eb5: ``||K1|| = 4.9e6``, ``||K*|| = 38``, stable by 3e-7 only: halved 12 times
        to ``alpha = 2.4e-4``, gap 2.8), while the next full steps converge (6 exact ones to gap 1e-6), and
        the checks' growth of ``alpha`` (:data:`~.safeguards.GROW` per check) took 6,700 rollouts back to 0.5."""
        serial, last = self.safeguards.anchor_serial, self._step_serial
        self._step_serial = serial
        if last is not None and serial != last and not (self.noisy or self.settings.cost_noise):
            self.tuning.alpha = 1.0

    def _pair_steps(self, K: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Kleinman's steps iterated from ``K`` (reached by ``step``) on the same antithetic pairs: exact
        equations in ``E`` of any base gain (:mod:`~.pairs`), so on exact data one set determines the next
        gains too, at most :data:`INNER_STEPS` in all. Each must contract by
        :data:`~.pi_defaults.PAIR_CONTRACTION` (by :func:`~.settle.relative_step`, unit-invariant): Kleinman's
        steps shrink (near ``K*`` quadratically) until the fit's own error (tails, rounding) is reached, where
        they stop shrinking -- that step is not taken. Returns the gain reached and, if a step was iterated,
        the size of the last one (its :attr:`movement`: the error of the gain it left, whose square the gain
        reached has)."""
        assert self.buffer is not None
        if self._moments is None:
            return K, None
        last, taken = relative_step(step, K, self.R, self._moments), False
        for _ in range(INNER_STEPS - 1):
            if not last > STEP_TOL or self.out_of_time():
                break
            try:
                nxt = self._kleinman(self.buffer.fit(K, self.fit_R, self.out_of_time))
            except (np.linalg.LinAlgError, OutOfTime):
                break
            size = relative_step(nxt, K + nxt, self.R, self._moments)
            if not size <= PAIR_CONTRACTION * last:
                break
            K, last, taken = K + nxt, size, True
        return K, (last if taken else None)

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

    def apply(self, K: np.ndarray, delay: int, worker: int, version_read: int) -> None:
        self._idle = 0
        if self.buffer is None:  # a radius shrunk by blow-ups at an old gain grows back
            self.tuning.r = min(2.0 * self.tuning.r, self.radius)
        super().apply(K, delay, worker, version_read)

    def _stuck(self, worker: int, version_read: int) -> None:
        """:data:`~.pi_defaults.PATIENCE` rollouts per unknown without a step that could be taken (each refusal logged
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
