"""Policy evaluation from antithetic pairs: ``E_K`` without ``P_K``, ``m n`` unknowns instead of ``n^2/2``.

Every rollout of a gain ``K_i`` from ``x0`` is one exact equation in ``(P, E)`` of any base gain
``K`` (:mod:`azopg.method.regression`, ``D_i = K_i - K``):

    f_i = x0'P x0 - x_end'P x_end + tr(S_i (D_i'R D_i + 2 D_i'E)).

Two rollouts from the *same* state -- the pair ``K_v + r Z`` and ``K_v - r Z`` of an antithetic
task (:class:`~azopg.method.tasks.Task`), of any version ``v`` -- share ``x0'P x0``, so their
difference is an equation in ``E`` alone,

    f_a - f_b - tr(S_a D_a'R D_a) + tr(S_b D_b'R D_b) = <E, 2 (D_a S_a - D_b S_b)>,

up to the tails ``x_end'P x_end`` of the two rollouts, which the horizon makes negligible
(calibrated until they are). ``m n`` unknowns: a Kleinman step from about ``2 m n`` pairs, whatever
``n`` -- where the ``n(n+1)/2`` unknowns of ``P`` put the interval equations' factor out of reach
(``n = 200``: 40,400 columns, 13 GB) and the buffered fit needs ``n^2`` rollouts per fit. The
regressors are the exact moments ``S`` (no zero-order noise), so the fit is exact to rounding
and the tails. Rows are weighted by ``1 / (f_a + f_b)`` and columns scaled to unit norm (invariant
to the units of states and inputs), and solved by Householder QR (the condition is not squared).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import scipy.linalg as sla

from ..errors import OutOfTime
from .buffer import RolloutBuffer
from .folds import fold_chunks
from .regression import PolicyEvaluation
from .tasks import RolloutData, TrajectoryData

__all__ = ["AT_ONCE_FLOPS", "PairBuffer", "evaluate_pairs"]

#: A pair fit of at most this many floating-point operations (``2 rows p^2``, about a second on one core) is
#: one Householder QR; a larger one is folded in chunks between which the time budget is asked.
AT_ONCE_FLOPS = 4e9


def evaluate_pairs(K: np.ndarray, R: np.ndarray, first: RolloutData, second: RolloutData,
                   stop: Callable[[], bool] | None = None) -> PolicyEvaluation:
    """Least-squares ``E`` of base gain ``K`` from pairs of rollouts from the same states (module docstring).

    Parameters
    ----------
    K : ndarray, shape (m, n)
    R : ndarray, shape (m, m)
    first, second : RolloutData
        The two rollouts of each pair, in the same order (``first.x0 == second.x0``).
    stop : callable, optional
        Asked between the chunks of a fit of more than :data:`AT_ONCE_FLOPS` (the time budget).

    Returns
    -------
    PolicyEvaluation
        ``E`` and ``R``; ``P`` is not estimated (zero). ``condition`` is that of the column-scaled normal
        matrix, estimated in the 1-norm (``inf`` with fewer pairs than ``m n`` or singular), ``equations`` the
        pairs.

    Raises
    ------
    OutOfTime
        If ``stop()`` said so during a long fit.
    """
    m, n = K.shape
    Da, Db = first.Ki - K, second.Ki - K
    DSa, DSb = Da @ first.S, Db @ second.S
    y = (first.cost - second.cost - np.einsum("bij,bkj,ik->b", DSa, Da, R) + np.einsum("bij,bkj,ik->b", DSb, Db, R))
    X = 2.0 * (DSa - DSb).reshape(-1, m * n)
    w = 1.0 / (first.cost + second.cost)
    X, y = X * w[:, None], y * w
    scale = np.linalg.norm(X, axis=0)
    scale[scale == 0] = 1.0
    theta, condition = _solve(X / scale, y, stop)
    E = (theta / scale).reshape(m, n)
    residual = float(np.linalg.norm(X @ (theta / scale) - y))
    return PolicyEvaluation(np.zeros((n, n)), E, np.array(R, dtype=float), residual, float(np.linalg.norm(y)),
                            condition, int(y.size))


def _solve(A: np.ndarray, y: np.ndarray, stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, float]:
    """Least squares ``A theta = y`` by the triangular factor of ``[A y]`` (Householder QR: the condition is not
    squared, at a fifth of an SVD's time: 0.3 s instead of 1.4 s at CAREX 3.1-l30's 2,212 x 1,770), and the
    squared condition of ``A`` estimated in the 1-norm from its factor (LAPACK's ``trcon``: within a factor
    ``p`` of the 2-norm's); ``inf`` with fewer rows than columns or a singular factor (then ``theta = 0``).
    A factor of more than :data:`AT_ONCE_FLOPS` is folded in chunks (:func:`~.folds.fold_chunks`), ``stop``
    asked between them (``OutOfTime``): CAREX 3.2's first fit (10,240 x 4,096) took 26 s at once."""
    rows, p = A.shape
    if rows < p:
        return np.zeros(p), float("inf")
    Ay = np.column_stack([A, y])
    if stop is None or 2.0 * rows * (p + 1) ** 2 <= AT_ONCE_FLOPS:
        F = sla.qr(Ay, mode="r", overwrite_a=True, check_finite=False)[0]
    else:
        F, left = fold_chunks(np.zeros((p + 1, p + 1)), Ay, stop)
        if left.shape[0]:
            raise OutOfTime("the time budget ran out during a fit of antithetic pairs")
    T = F[:p, :p]
    rcond = float(sla.lapack.dtrcon(T, norm="1")[0]) if np.all(np.diag(T) != 0) else 0.0
    if not rcond > 0:
        return np.zeros(p), float("inf")
    return sla.solve_triangular(T, F[:p, p], check_finite=False), rcond**-2


def _joined(parts: Iterable[list[np.ndarray]]) -> RolloutData:
    """The rollouts of several chunks as one: each of ``Ki, x0, x_end, S, cost`` concatenated."""
    Ki, x0, x_end, S, cost = (np.concatenate(p) for p in parts)
    return RolloutData(Ki, x0, x_end, S, cost)


class PairBuffer(RolloutBuffer):
    """The most recent antithetic pairs (reports of antithetic tasks: their first half, then their
    second), at least ``capacity`` rollouts (two per pair) once that many arrived; other rollouts
    (calibration's probes, cut into intervals or not in pairs) are ignored."""

    def add(self, data: RolloutData | TrajectoryData | None) -> None:
        """Append a report's pairs: whole rollouts whose halves start from the same states."""
        if not isinstance(data, RolloutData) or data.cost.size % 2:
            return
        h = data.cost.size // 2
        if np.array_equal(data.x0[:h], data.x0[h:]):
            super().add(data)

    def evaluate(self, K: np.ndarray, R: np.ndarray | None,
                 stop: Callable[[], bool] | None = None) -> PolicyEvaluation:
        """:func:`evaluate_pairs` of every buffered pair about ``K`` (``R`` must be known), ``stop`` asked during a
        long fit."""
        if R is None:
            raise ValueError("antithetic pairs need the input weight R")
        halves = [(c.arrays(), c.cost.size // 2) for c in self._chunks]
        first, second = (_joined([a[i][:h] for a, h in halves] for i in range(5)),
                         _joined([a[i][h:] for a, h in halves] for i in range(5)))
        return evaluate_pairs(K, R, first, second, stop)
