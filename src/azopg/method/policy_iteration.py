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

The buffer is not part of :meth:`state_dict`: after a resume it is refilled from scratch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..settings import Settings
from .buffer import RolloutBuffer
from .discrete import fit_weight
from .kinds import Event, TaskKind
from .regression import unknowns
from .rule import Runner, UpdateRule
from .tasks import Report, Task

__all__ = ["PolicyIteration", "buffer_factor"]

#: Rollouts needed per unknown of ``(P, E)`` before a fit; the buffer keeps ``KEEP`` per unknown.
OVERDETERMINED, KEEP = 2.0, 6.0
#: Under relative cost noise ``sigma`` the buffer keeps ``KEEP * min(1 + (sigma / NOISE_SCALE)^2, NOISY_KEEP)``
#: per unknown (and the first fit waits as many times longer): the fit's error falls as
#: ``sigma / sqrt(rollouts)``. Off (NOISY_KEEP = 1): with 16 times the buffer a replay of a run
#: under 1 % noise no longer reproduced its gain bit for bit (not understood yet).
NOISE_SCALE, NOISY_KEEP = 1e-3, 1.0
#: A fit whose column-scaled normal matrix has a larger condition number waits for more data.
MAX_CONDITION = 1e14
#: Largest step relative to ``||K||`` (unbounded from ``K = 0``).
TRUST = 1.0
#: Applied updates between two rollout checks (unless ``check_every`` is set).
CHECK_EVERY = 2
#: After a step ``D`` much larger than the perturbations, the buffered rollouts (all around the
#: old gain) determine only a combination of ``P`` and ``E``: ``m n`` directions are seen through
#: the perturbations alone. The next fit waits for ``FRESH * m * n`` rollouts since the step.
FRESH = 1.0


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

    def _ask(self, worker: int) -> Task:
        return self.issue(worker, TaskKind.MOMENTS)

    def _tell(self, rep: Report, delay: int) -> None:
        self._add(rep)
        self._step(delay, rep.worker, rep.version)

    def _tell_round(self, reports: list[Report]) -> None:
        for rep in reports:
            self._add(rep)
        self._step(0, -1, self.version)

    def _add(self, rep: Report) -> None:
        self.buffer.add(rep.data)
        self._idle += 0 if rep.data is None else rep.data.cost.size

    def _step(self, delay: int, worker: int, version_read: int) -> None:
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

    def apply(self, K: np.ndarray, delay: int, worker: int, version_read: int) -> None:
        self._idle = 0
        super().apply(K, delay, worker, version_read)

    def _stuck(self, worker: int, version_read: int) -> None:
        """A whole buffer's worth of rollouts without a well-conditioned fit: no step, so no check
        would ever judge the gain -- roll back to the anchor (logged ``rollback-ill-conditioned``);
        at the anchor already, start the buffer afresh around it."""
        if self._idle < self.buffer.capacity:
            return
        self._idle = 0
        if np.array_equal(self.K, self.safeguards.anchor_K):
            self.buffer.clear()
        else:
            self.apply_verdict(self.safeguards.rollback(worker, version_read, Event.ROLLBACK_ILL_CONDITIONED))

    def calibrate(self, run: Runner) -> None:
        """The shared calibration, then one ``moments`` task at the calibrated gain into the buffer:
        a batch too large for memory is refused here, before the run is saved as resumable."""
        super().calibrate(run)
        self._add(self.probe(run, TaskKind.MOMENTS, self.K.copy()))

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
