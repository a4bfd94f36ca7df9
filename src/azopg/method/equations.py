"""Incremental normal equations of rollout *intervals*, valid for any base gain.

Each interval ``[t_j, t_{j+1}]`` of a rollout of gain ``K_i`` is one exact equation in
``(P_K, E_K)`` of any base gain ``K`` (:mod:`azopg.method.regression`, ``D = K_i - K``):

    c_j = <P, x_j x_j' - x_{j+1} x_{j+1}'> + 2 <E, D S_j> + <R, D S_j D'>.

Its regressors depend on ``K`` through ``D``. Written about a *center* ``C`` instead
(``D_c = K_i - C``, ``Delta = K - C``, so ``D = D_c - Delta``) the same equation reads

    c_j = <P, Y_j> + 2 <E_c, D_c S_j> + <W_c, S_j> + <R, D_c S_j D_c'>,
    E_c = E - R Delta,   W_c = Delta'R Delta - Delta'E - E'Delta,

with regressors ``psi = [Y, 2 D_c S, S, (D_c S D_c')]`` and target ``y = c - <R, D_c S D_c'>``
(``y = c`` when ``R`` is estimated) that do not depend on ``K``. :class:`IntervalEquations`
keeps the triangular factor ``T`` of the augmented rows ``X = [psi, y] = Q T``, its columns in the
order ``Y, S, 2 D_c S, (D_c S D_c'), y`` -- ``(p_L + 1)^2`` numbers, ``p_L = n(n+1) + mn
[+ m(m+1)/2]``, whatever the number of rows; new rows are folded in by one QR of ``[T; rows]`` per
solve -- and the fit at ``K = C`` is the least-squares problem of its columns without ``W``
(``W_c = 0`` there): exactly the rows one would build about ``K``. Its triangular factor is read
off ``T``: the ``P`` block is already triangular, the rows below it need one small QR of the ``E``,
``(R)`` and ``y`` columns (the condition number is not squared, as it would be in normal equations).
When the base gain moves, :meth:`IntervalEquations.recenter` maps every row linearly
(``D_c -> D_c - delta``): ``X M' = Q (T M')``, and in this column order each shifted column adds
multiples of columns before it only (``E_c`` of ``W``; ``(R)`` of ``E`` and ``W``; ``y`` of all), so
``T M'`` is still triangular: re-expressing every rollout ever received costs ``O(p_L m n^2)`` -- none
is re-processed, none becomes stale.
Re-centring at each new base gain keeps the rows of new rollouts (``D_c`` of the size of the
perturbations) free of cancellation.

Rows are weighted by ``1 / c_j``: every equation becomes relative (a rollout's late intervals,
whose states have decayed, count as much as its first), and the weights do not change under
a change of state or input units -- neither does the fit, whose columns are scaled as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla

from ..errors import OutOfTime
from .folds import fold_chunks, inspect_blas, numerical_rank_full, triangular_inverse
from .regression import PolicyEvaluation, _scales, _unpack, _vech_coefficients

__all__ = ["IntervalEquations", "StepError"]

WEIGHT_POWER = 1.0


@dataclass(frozen=True)
class StepError:
    """How precisely the equations determine the Kleinman step ``-H^-1 E`` of their fit (``H = R``,
    or estimated with ``P`` and ``E``): what the step needs, not the conditioning of ``P``.

    The three are Frobenius norms of ``H dK`` for gain changes ``dK`` (``H dK = -E`` for the step), in
    the fit's column-scaled ``E`` coordinates (entry ``(i, j)`` times the norm of ``E_ij``'s column):
    they do not change with the units of the states and inputs.

    Attributes
    ----------
    error : float
        Standard error of the step, from the residual's variance per degree of freedom
        (``rows - p``) and the rows of the inverse triangular factor that give ``E`` (and ``H``),
        combined with ``rounding``: ``inf`` when those columns are rank-deficient, or without a
        degree of freedom.
    rounding : float
        The part of ``error`` due to the rounding committed while re-centring the equations
        (:attr:`IntervalEquations.rounding`): large when the gain is far from where the rollouts
        were run, and not reduced by more of them.
    step : float
        The step's own size (``||E||``).
    gain : float
        The new gain's size (``||H (C + step)|| = ||H C - E||``, ``C`` the center).
    """

    error: float
    rounding: float
    step: float
    gain: float


class IntervalEquations:
    """The augmented Gram matrix of interval equations about the center ``C`` (module docstring).

    Parameters
    ----------
    C : array_like, shape (m, n)
        The first center (base gain).
    R : array_like, shape (m, m), optional
        Input weight; omitted: estimated (``m(m+1)/2`` more unknowns).
    """

    def __init__(self, C: Any, R: Any = None) -> None:
        self.C = np.array(C, dtype=float)
        m, n = self.C.shape
        self.m, self.n = m, n
        self.R = None if R is None else np.array(R, dtype=float).reshape(m, m)
        q, h = n * (n + 1) // 2, 0 if self.R is not None else m * (m + 1) // 2
        self.p = q + m * n + h
        # the factor's columns: P, W, E, (R), y -- each column's shift (D_c -> D_c - delta) adds only
        # multiples of columns before it, so a re-centred factor T M' stays triangular (no QR needed)
        self._W = slice(q, 2 * q)
        self._E = slice(2 * q, 2 * q + m * n)
        self._H = slice(2 * q + m * n, 2 * q + m * n + h)
        size = self._H.stop + 1
        #: the rows of :meth:`rows_of` (P, E, (R), W, y) in the factor's column order
        self._order = np.r_[0:q, self.p:self.p + q, q:self.p, self.p + q]
        self._fit = np.r_[0:q, 2 * q:2 * q + m * n + h]  # the fit's columns (P, E, (R)) in the factor
        self._size = size
        inspect_blas(size)
        self._T: np.ndarray | None = None  # the triangular factor of every row folded in so far (T)
        self._pending: list[tuple[np.ndarray, ...]] = []  # rollouts added since the last fold, as given
        self._left = np.zeros((0, size))  # rows built but not folded: a fold stopped by the time budget
        self.rows = 0
        self.rollouts = 0
        #: Squared bounds of the rounding committed in each ``E``, ``(H)`` and ``y`` column of the
        #: factor's rows that give ``E`` (and ``H``), by re-centring: each shift adds terms that may
        #: cancel (a gain far from where the rollouts were run), and an orthogonal fold keeps the error
        #: (its column sums; it mixes the rows: the error is then taken as spread over them).
        self.rounding = np.zeros(size - self._E.start)
        #: The same per entry of those rows (after the ``P`` block), for the rounding committed since the
        #: last fold: a shift maps each row to itself, so the error stays in the rows it was committed in
        #: -- mostly those of the ``W`` pivots, whose ``S`` the shift multiplies -- and is propagated
        #: through them (:meth:`evaluate`); a fold adds it to :attr:`rounding`.
        self.located = np.zeros((size - self._W.start, size - self._E.start))

    @property
    def T(self) -> np.ndarray:
        """The triangular factor ``(p_L + 1, p_L + 1)`` of every row folded in so far: allocated at its first
        use (a rule that never folds a row -- policy iteration on pairs, n = 1000 -- never holds it)."""
        if self._T is None:
            self._T = np.zeros((self._size, self._size))
        return self._T

    @T.setter
    def T(self, value: np.ndarray) -> None:
        self._T = value

    @property
    def unknowns(self) -> int:
        """Unknowns ``p`` of the fit at the center."""
        return self.p

    def rows_of(self, Ki: Any, x: Any, S: Any, cost: Any) -> np.ndarray:
        """The weighted augmented rows ``[psi, y] / c_j`` of ``b`` rollouts of ``k`` intervals.

        Parameters
        ----------
        Ki : array_like, shape (b, m, n)
        x : array_like, shape (b, k + 1, n)
            States at the interval ends.
        S : array_like, shape (b, k, n, n)
        cost : array_like, shape (b, k)

        Returns
        -------
        ndarray, shape (rows, p_L + 1)
            Columns ``P, E, (R), W, y``; intervals of zero cost (a zero state) are left out.
        """
        m, n = self.m, self.n
        Ki = np.asarray(Ki, dtype=float).reshape(-1, m, n)
        b = Ki.shape[0]
        x = np.asarray(x, dtype=float).reshape(b, -1, n)
        k = x.shape[1] - 1
        S = np.asarray(S, dtype=float).reshape(b * k, n, n)
        cost = np.asarray(cost, dtype=float).reshape(b * k)
        if not all(np.isfinite(a).all() for a in (Ki, x, S, cost)):
            raise ValueError("rollout data must be finite (drop blown-up rollouts first)")
        D = np.repeat(Ki - self.C, k, axis=0)
        xa, xb = x[:, :-1].reshape(b * k, n), x[:, 1:].reshape(b * k, n)
        Y = xa[:, :, None] * xa[:, None, :] - xb[:, :, None] * xb[:, None, :]
        DS = D @ S
        DSD = DS @ np.swapaxes(D, 1, 2)
        cols = [_vech_coefficients(Y), 2.0 * DS.reshape(-1, m * n)]
        if self.R is None:
            cols.append(_vech_coefficients(DSD))
            y = cost
        else:
            y = cost - np.einsum("bij,ij->b", DSD, self.R)
        rows = np.concatenate([*cols, _vech_coefficients(S), y[:, None]], axis=1)
        ok = cost > 0
        return rows[ok] / cost[ok, None]

    def add(self, Ki: Any, x: Any, S: Any, cost: Any) -> IntervalEquations:
        """Add rollouts' intervals (arguments as for :meth:`rows_of`); returns ``self``. Their rows are
        built and folded into the triangular factor at the next :meth:`solve` or :meth:`recenter`, all
        rollouts added since at once (one rollout at a time, building its rows costs more than folding)."""
        m, n = self.m, self.n
        Ki = np.asarray(Ki, dtype=float).reshape(-1, m, n)
        b = Ki.shape[0]
        x = np.asarray(x, dtype=float).reshape(b, -1, n)
        k = x.shape[1] - 1
        S = np.asarray(S, dtype=float).reshape(b, k, n, n)
        cost = np.asarray(cost, dtype=float).reshape(b, k)
        if not all(np.isfinite(a).all() for a in (Ki, x, S, cost)):
            raise ValueError("rollout data must be finite (drop blown-up rollouts first)")
        self._pending.append((Ki, x, S, cost))
        self.rows += int(np.count_nonzero(cost > 0))
        self.rollouts += b
        return self

    def shift_rows(self, X: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """Rows ``X`` (in the factor's column order, as rows about ``C``) expressed about ``C + delta``:
        the linear map ``X M'`` alone (:meth:`_shift` without the rounding sizes; any number of rows)."""
        out = X.copy()
        out[:, self._E.start:] = self._shift(X, delta, sizes=False)[0]
        return out

    def _shift(self, X: np.ndarray, delta: np.ndarray, sizes: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The columns ``E, (H), y`` of the rows ``X`` (as rows about ``C``) expressed about ``C + delta``
        -- the linear map ``X M'`` changes no other column; and the squared sizes of the terms summed into
        each shifted ``E``, ``(H)`` and ``y`` entry of the rows after the ``P`` block (their rounding is
        ``eps`` times that: :attr:`located`), products of sums bounded by the products of the sums of
        absolute values (``sizes=False``: an empty array). The products ``delta S_j`` are formed for the
        rows with an ``S`` alone (in the factor, those before its ``E`` block), all as one matrix product
        (not one small product per row): ``O(rows m n^2)`` in all, and no copy of the other columns."""
        m, n, r, mn = self.m, self.n, X.shape[0], self.m * self.n
        q = self._W.start if sizes else r  # no rows to size
        XE, XW = X[:, self._E], X[:, self._W]
        w = np.flatnonzero(np.any(XW != 0.0, axis=1))  # the rows with an S
        S = _symmetric(XW[w], n)
        dS = _left(delta, S)  # delta S_j
        out = X[:, self._E.start:].copy()  # E, (H), y
        out[w, :mn] -= 2.0 * dS.reshape(-1, mn)
        ad, sized = np.abs(delta), w >= q
        adS = np.zeros((r - q, m, n))  # |delta| |S|: bounds the terms of delta S
        adS[w[sized] - q] = _left(ad, np.abs(S[sized]))
        size = np.zeros((r - q, out.shape[1]))  # the y column: none when R is estimated
        size[:, :mn] = np.abs(XE[q:]) + 2.0 * adS.reshape(-1, mn)
        if self.R is None:
            DS = 0.5 * XE.reshape(r, m, n)
            G = np.swapaxes(_left(delta, np.swapaxes(DS, 1, 2)), 1, 2)  # D_c S delta' (its transpose: delta S D_c')
            H = _symmetric(X[:, self._H], m) - G - np.swapaxes(G, 1, 2)
            H[w] += _left(delta, np.swapaxes(dS, 1, 2))  # delta S delta'
            out[:, mn:-1] = _vech_coefficients(H)
            across = _left(ad, np.swapaxes(np.abs(DS[q:]), 1, 2))  # |delta| |D_c S|'
            size[:, mn:-1] = _vech_coefficients(_symmetric(np.abs(X[q:, self._H]), m) + 2.0 * across
                                                + _left(ad, np.swapaxes(adS, 1, 2)))
        else:
            iu = np.triu_indices(n)
            Rd, aR = self.R @ delta, np.abs(self.R)
            adRd = ad.T @ aR @ ad
            out[:, -1] += XE @ Rd.ravel()
            out[w, -1] -= np.einsum("rij,ij->r", _left(delta, np.swapaxes(dS, 1, 2)), self.R)  # <delta S delta', R>
            size[:, -1] = (np.abs(X[q:, -1]) + np.abs(XE[q:]) @ np.abs(Rd).ravel()
                           + np.abs(XW[q:]) @ (0.5 * (adRd + adRd.T))[iu])
        return out, size**2

    def _fold(self, stop: Callable[[], bool] | None = None) -> None:
        """Fold the rows added since the last fold into the triangular factor: a QR of ``[T; rows]``
        that keeps ``T`` triangular (LAPACK ``dtpqrt``; the first, of rows alone: ``dgeqrf``), ``O(rows p_L^2)``,
        in chunks of :data:`~.folds.FOLD_FLOPS` (``stop`` as for :meth:`solve`)."""
        if not self._pending and not self._left.shape[0]:
            return
        by_k: dict[int, list[tuple[np.ndarray, ...]]] = {}  # rollouts of as many intervals, in order
        for data in self._pending:
            by_k.setdefault(data[1].shape[1], []).append(data)
        self._pending.clear()
        built = [self.rows_of(*(np.concatenate(a) for a in zip(*group, strict=True)))[:, self._order]
                 for group in by_k.values()]
        rows = np.concatenate([self._left, *built])
        self.rounding += self.located.sum(axis=0)  # the fold mixes the rows: from here on spread over them
        self.located[:] = 0.0
        empty = self._T is None  # nothing folded yet
        self.T, self._left = fold_chunks(self.T, rows, stop, empty)
        if self._left.shape[0]:
            raise OutOfTime("the time budget ran out during a fit")

    def recenter(self, C: Any, stop: Callable[[], bool] | None = None) -> None:
        """Express every equation about the new center ``C``: ``T -> T M'``, still triangular in the
        factor's column order (each shifted column adds multiples of earlier ones), ``O(p_L m n^2)``.

        Raises
        ------
        FloatingPointError
            If the equations about ``C`` overflow (a gain ~1e150 from the center); they stay about the
            old center.
        OutOfTime
            If ``stop()`` turns true while pending rows are folded in (as for :meth:`solve`); the
            equations stay about the old center.
        """
        C = np.asarray(C, dtype=float)
        delta = C - self.C
        if np.any(delta):
            self._fold(stop)
            with np.errstate(all="ignore"):
                shifted, size = self._shift(self.T, delta)
            if not (np.isfinite(shifted).all() and np.isfinite(size).all()):
                raise FloatingPointError("the interval equations overflow about the new center")
            self.T[:, self._E.start:] = shifted
            self.located += np.finfo(float).eps ** 2 * size
        self.C = C.copy()

    def _factor(self, stop: Callable[[], bool] | None = None) -> np.ndarray:
        """The triangular factor ``(p + 1, p + 1)`` of the fit's columns ``P, E, (R)`` and ``y``: the
        ``P`` block of ``T`` is already triangular and precedes ``W``; the rows below it, restricted to
        ``E, (R), y``, are reduced by one small QR (``O(p_L (m n)^2)``, in chunks: ``stop`` as for
        :meth:`solve`) -- the zeros of the rows after the ``W`` block, triangular in these columns, skipped."""
        q, p = self._W.start, self.p
        cols = np.r_[self._E.start:self.T.shape[1]]  # E, (R), y
        F = np.zeros((p + 1, p + 1))
        F[:q, :q] = self.T[:q, :q]
        F[:q, q:] = self.T[:q, cols]
        F[q:, q:], left = fold_chunks(np.zeros((cols.size, cols.size)), self.T[q:, cols], stop,
                                      trapezoid=cols.size)
        if left.shape[0]:
            raise OutOfTime("the time budget ran out during a fit")
        return F

    def solve(self, stop: Callable[[], bool] | None = None) -> PolicyEvaluation:
        """``(P, E, [R])`` of the base gain ``C``: the least-squares problem of the rows about ``C``
        (the columns before ``W``), read off the triangular factor -- ``T[:p, :p] theta = T[:p, -1]``,
        ``O(p^2)``. ``condition`` is that of the column-scaled normal matrix (the square of the
        scaled rows'), ``inf`` when they are rank-deficient; ``E`` (and ``H``) come from the last
        block of the factor alone, so a rank-deficient ``P`` block (``P`` returned as zero) leaves
        them determined.

        Raises
        ------
        OutOfTime
            If ``stop()`` turns true between two chunks of the work (the time budget): rows not yet
            folded in stay pending, nothing is lost.
        """
        return self._solve(stop)[0]

    def _solve(self, stop: Callable[[], bool] | None) -> tuple[PolicyEvaluation, np.ndarray, np.ndarray]:
        """:meth:`solve`'s fit, with the column-scaled triangular factor ``U`` of ``E`` (and ``H``) --
        empty if it is rank-deficient -- and the column scales."""
        self._fold(stop)
        T = self._factor(stop)
        p, q = self.p, self._W.start
        d = _scales(np.sum(T[:, :p] ** 2, axis=0))
        Up = T[:p, :p] / d
        theta = np.zeros(p)
        condition = float("inf")
        if self.rows >= p and np.abs(np.diag(Up)).min() > 0:
            rcond, info = sla.lapack.dtrcon(Up, norm="1", uplo="U")
            if info == 0 and rcond > 0:
                condition = float(1.0 / rcond) ** 2
                theta = sla.solve_triangular(Up, T[:p, -1]) / d
        U = Up[q:, q:]  # the rows that give E (and H): they do not involve P
        if not (self.rows >= p and numerical_rank_full(U)):
            U = np.zeros((0, 0))
        elif not np.isfinite(condition):
            theta[q:] = sla.solve_triangular(U, T[q:p, -1]) / d[q:]
        P, E, Rh = _unpack(theta, self.n, self.m, self.R)
        fit = PolicyEvaluation(P, E, Rh, float(abs(T[p, -1])), float(np.linalg.norm(T[:, -1])), condition, self.rows)
        return fit, U, d

    def evaluate(self, stop: Callable[[], bool] | None = None) -> tuple[PolicyEvaluation, StepError]:
        """:meth:`solve`'s fit and the :class:`StepError` of its Kleinman step (``O((m n)^3)`` more)."""
        fit, U, d = self._solve(stop)
        p, q, mn = self.p, self._W.start, self.m * self.n
        error = rounding = float("inf")
        if self.rows > p and U.size:
            theta = np.r_[np.zeros(q), fit.E.ravel(), fit.R[np.triu_indices(self.m)] if self.R is None else []]
            with np.errstate(all="ignore"):
                inverse = triangular_inverse(U, stop)
                G = inverse if self.R is not None else self._step_map(theta, d) @ inverse  # J = I: R known
                sigma = max(fit.residual, np.finfo(float).eps * fit.target_norm) / np.sqrt(self.rows - p)
                # the rounding as a residual: its size in the rows' units (each column's times its unknown);
                # once folded, spread over the factor's rows after the P block like the residual over its
                # degrees of freedom; since the last fold, in the rows it was committed in, each row i
                # moving the step by G q_i (q_i = U^-T a_i, a_i its scaled E (H) entries: Q = A U^-1)
                weights = np.r_[theta[q:], 1.0] ** 2
                spread = np.sqrt(self.rounding @ weights / (self.T.shape[0] - q)) * np.linalg.norm(G)
                A = self.T[q:, self._E.start:self._H.stop] / d[q:p]
                GU = G @ inverse.T  # J U^-1 U^-T = J (A'A)^-1
                located = np.sqrt(np.sum(self.located @ weights * np.sum((GU @ A.T) ** 2, axis=0)))
                # and through the residual r: (A'A)^-1 dA' r, each column's error against |r| (rows unknown)
                columns = (self.rounding + self.located.sum(axis=0))[:p - q] / d[q:p] ** 2
                through = fit.residual * np.sqrt(columns @ np.sum(GU**2, axis=0))
                rounding = float(np.sqrt(spread**2 + located**2 + through**2))
                error = float(np.hypot(sigma * np.linalg.norm(G), rounding))
            error, rounding = (error, rounding) if np.isfinite(error) else (float("inf"), float("inf"))
        dE = d[q:q + mn].reshape(self.m, self.n)
        with np.errstate(all="ignore"):
            step = StepError(error, rounding, float(np.linalg.norm(fit.E * dE)),
                             float(np.linalg.norm((fit.R @ self.C - fit.E) * dE)))
        return fit, step

    def _step_map(self, theta: np.ndarray, d: np.ndarray) -> np.ndarray:
        """The linear map from changes of the scaled ``E`` (and ``H``) unknowns to the change of
        ``H step`` in the scaled ``E`` coordinates: ``H ds = -(dE + dH step)``."""
        q, p, m, n = self._W.start, self.p, self.m, self.n
        J = np.eye(p - q)[:m * n]
        if self.R is None:
            dE = d[q:q + m * n].reshape(m, n)
            H, E = _unpack(theta, n, m, None)[2], theta[q:q + m * n].reshape(m, n)
            step = -np.linalg.lstsq(H, E, rcond=None)[0]
            a, b = np.triu_indices(m)
            for c, (i, j) in enumerate(zip(a, b, strict=True)):
                dH = np.zeros((m, m))
                dH[i, j] = dH[j, i] = 1.0 / d[q + m * n + c]
                J[:, m * n + c] = ((dH @ step) * dE).ravel()
        return J


def _symmetric(V: np.ndarray, k: int) -> np.ndarray:
    """The symmetric ``(rows, k, k)`` matrices whose :func:`~.regression._vech_coefficients` are the rows of ``V``."""
    i, j = np.triu_indices(k)
    M = np.zeros((V.shape[0], k, k))
    M[:, i, j] = V / np.where(i == j, 1.0, 2.0)
    M[:, j, i] = M[:, i, j]
    return M


def _left(A: np.ndarray, S: np.ndarray) -> np.ndarray:
    """``A @ S_j`` for every ``S_j`` of the stack ``S`` ``(rows, a, b)`` as one matrix product (``A`` is
    ``(c, a)``): ``(S_j' A')'``, the stack's rows flattened."""
    r, a, b = S.shape
    return np.swapaxes((np.swapaxes(S, 1, 2).reshape(r * b, a) @ A.T).reshape(r, b, A.shape[0]), 1, 2)
