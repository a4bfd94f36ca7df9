"""The instrumented fit of :mod:`azopg.method.instrumented`, incremental: sums over intervals, about any gain.

Policy iteration under process noise (:mod:`azopg.method.pi_instrumented`) fits ``(P, E, tr(PW))`` of its
current gain ``K`` from every interval it ever received. Instrumental variables need only sums over the
rows ``j`` of the instruments ``z_j`` times the augmented regressors ``x_j = [psi_j, dt_j, y_j]`` of
:class:`~.equations.IntervalEquations` (columns ``P, W, E, dt, y`` about a center ``C``):

    A = sum z_j x_j',   Z = sum z_j z_j',

``O(p^2)`` per interval, whatever the number of rollouts (kept as the triangular factor of the rows
``[z_j', x_j']``, :attr:`InstrumentedEquations.T`, so that nothing squares their conditioning). The instruments
are known at the interval's start ``t_j``: ``z_j = (vech coefficients of x_j x_j', D_c x_j x_j', 1, D_c)``,
``D_c = K_i - C`` (as
:func:`~.instrumented.instrumented_fit`'s, with ``D_c`` itself: under noise most of ``S_j``'s dependence on the
gain is the stationary covariance's, linear in ``D`` alone). When the center moves both sides map linearly,
the same for every row -- the regressors by :meth:`~.equations.IntervalEquations.recenter`'s ``x -> M x``, the
instruments by ``D_c -> D_c - delta`` (``delta x x'`` is a combination of the ``x x'`` columns, ``delta``
of the constant): ``A -> N A M'``, ``Z -> N Z N'``. So rows of any age are exactly the rows one would build
about the current gain, instruments included; none is refitted. (Instruments left about the center of
their time are valid but weak for a gain far from it: he3's error in ``E`` at a second gain, from rows at
two gains, was 0.15 where the second gain's rows alone gave 0.14.) The fit at ``K = C`` (``W_c = 0``) is
two-stage least squares on the columns ``P, E, dt``:

    theta = (B' Z^-1 B)^-1 B' Z^-1 a,   B = A[:, (P, E, dt)],   a = A[:, y],

with the heteroskedasticity-robust (sandwich) covariance ``H^-1 B'Z^-1 V Z^-1 B H^-1``, ``H = B'Z^-1 B``,
``V = sum e_j^2 z_j z_j'``. ``V`` needs every row's residual about the *current* fit (residuals about an
early, imprecise fit would inflate it for good), so it is estimated from a sample of the rows: every
``stride``-th row is kept (re-centred with the sums; the stride doubles whenever :data:`SAMPLE_ROWS` are
kept, so the sample spans all ages evenly, deterministically) and ``V`` is their sum times
``rows / kept``; the columns' scales come from the sample too.

Rows are not weighted by their cost (the noise-free equations' ``1 / c_j``, :mod:`~.equations`): ``c_j``
depends on the interval's own disturbance, and a weight must be known at ``t_j`` as the instruments are.
They are weighted by ``w_j = (dt_j (x_j' Sigma^-1 x_j + n))^-1/2``, about one over the standard deviation of
``e_j`` (``4 dt x_j'PWPx_j`` for a short interval, more where the state is large): ``Sigma`` is the states'
covariance seen in the first rollouts added (fixed from then on; a change of state units leaves every weight
as it is). Unweighted, a few rows of large states (a perturbed gain close to unstable) made the fit.
With ``R`` known only (an estimated ``R`` adds unknowns these instruments do not identify).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg as sla

from .equations import IntervalEquations, StepError
from .folds import fold_rows
from .instrumented import NoisyEvaluation, _result
from .regression import _vech_coefficients

__all__ = ["SAMPLE_ROWS", "InstrumentedEquations"]

#: Rows kept (at most) for the sandwich covariance's ``V`` and the column scales (module docstring).
SAMPLE_ROWS = 2048


class InstrumentedEquations:
    """The sums ``A``, ``Z`` of interval equations about the center ``C`` (module docstring).

    Parameters
    ----------
    C : array_like, shape (m, n)
        The first center (base gain).
    R : array_like, shape (m, m)
        Input weight (known).
    """

    def __init__(self, C: Any, R: Any) -> None:
        self._eq = IntervalEquations(C, R)  # the rows and their re-centring
        eq = self._eq
        m, n, q = eq.m, eq.n, eq._W.start
        self.m, self.n, self.q = m, n, q
        self.p = q + m * n + 1  # P, E, tr(PW)
        cols = 2 * q + m * n + 2  # P, W, E, dt, y
        self._fit = np.r_[0:q, 2 * q:2 * q + m * n + 1]  # P, E, dt
        nz = q + 2 * m * n + 1  # x x', D x x', 1, D
        self.nz = nz
        #: The triangular factor of the weighted rows ``[z_j', x_j']`` (instruments first): ``T = [[R_z, Q_z'X],
        #: [0, .]]``, ``Z = R_z'R_z`` and ``Q_z'X`` the first stage -- kept as a factor, not as the sums
        #: ``A``, ``Z``: the instruments' fourth powers of the states cancel when ``Z`` is re-centred (tg1:
        #: a negative diagonal); the factor re-centres by one QR of ``T diag(N', M')``.
        self.T = np.zeros((nz + cols, nz + cols))
        self._rows: list[np.ndarray] = []  # rows not yet folded into T
        self._sample: list[tuple[np.ndarray, np.ndarray]] = []  # (Z, X) of every stride-th row, about C
        self._stride = 1
        self.rows = 0
        self._metric: np.ndarray | None = None  # Sigma^-1 of the weights (module docstring)

    @property
    def C(self) -> np.ndarray:
        """The center."""
        return self._eq.C

    @property
    def unknowns(self) -> int:
        """Unknowns ``p`` (``P``, ``E``, ``tr(PW)``); a fit needs more rows than instruments."""
        return self.p

    def add(self, Ki: Any, x: Any, S: Any, cost: Any, dt: Any) -> InstrumentedEquations:
        """Add ``b`` rollouts of ``k`` intervals (``Ki``, ``x``, ``S``, ``cost`` as for
        :meth:`~.equations.IntervalEquations.rows_of`; ``dt`` the interval lengths, shape ``(k,)``
        or ``(b, k)``); intervals of zero cost are left out. Returns ``self``."""
        eq, m, n = self._eq, self.m, self.n
        Ki = np.asarray(Ki, dtype=float).reshape(-1, m, n)
        b = Ki.shape[0]
        x = np.asarray(x, dtype=float).reshape(b, -1, n)
        k = x.shape[1] - 1
        cost = np.asarray(cost, dtype=float).reshape(b * k)
        dt = np.broadcast_to(np.asarray(dt, dtype=float), (b, k)).reshape(b * k)
        ok = cost > 0
        xa = x[:, :-1].reshape(b * k, n)[ok]
        if self._metric is None:
            Sig = np.sum(np.asarray(S, dtype=float).reshape(b * k, n, n), axis=0) / float(np.sum(dt))
            self._metric = np.linalg.pinv(0.5 * (Sig + Sig.T), hermitian=True)
        w = 1.0 / np.sqrt(dt[ok] * (np.einsum("bi,ij,bj->b", xa, self._metric, xa) + n))
        X = eq.rows_of(Ki, x, S, cost)[:, eq._order] * (cost[ok] * w)[:, None]  # P, W, E, y, weighted by w
        X = np.concatenate([X[:, :-1], (dt[ok] * w)[:, None], X[:, -1:]], axis=1)
        D = np.repeat(Ki - self.C, k, axis=0)[ok]
        XX = xa[:, :, None] * xa[:, None, :]
        Z = np.concatenate([_vech_coefficients(XX), (D @ XX).reshape(-1, m * n), np.ones((xa.shape[0], 1)),
                            D.reshape(-1, m * n)], axis=1) * w[:, None]
        self._rows.append(np.concatenate([Z, X], axis=1))
        keep = (self.rows + np.arange(X.shape[0])) % self._stride == 0
        self._sample.append((Z[keep], X[keep]))
        self.rows += X.shape[0]
        if sum(z.shape[0] for z, _ in self._sample) > SAMPLE_ROWS:  # thinned: every other row of the sample
            Zs, Xs = (np.concatenate(a) for a in zip(*self._sample, strict=True))
            self._stride *= 2
            self._sample = [(Zs[::2], Xs[::2])]
        return self

    def _shift_instruments(self, Z: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """Instrument rows ``Z`` (r, nz) about ``C`` expressed about ``C + delta`` (``D_c -> D_c - delta``)."""
        m, n, q = self.m, self.n, self.q
        i, j = np.triu_indices(n)
        half = Z[:, :q] / np.where(i == j, 1.0, 2.0)  # the entries of x x' (upper triangle)
        full = np.zeros((Z.shape[0], n, n))
        full[:, i, j] = half
        full[:, j, i] = half
        out = Z.copy()
        out[:, q:q + m * n] -= (delta @ full).reshape(-1, m * n)
        out[:, q + m * n + 1:] -= Z[:, q + m * n:q + m * n + 1] * delta.reshape(1, -1)
        return out

    def _fold(self) -> None:
        """Fold the rows added since into the factor (LAPACK ``dtpqrt``, unblocked: the same on any machine)."""
        if self._rows:
            self.T = fold_rows(self.T, np.concatenate(self._rows))
            self._rows.clear()

    def recenter(self, C: Any) -> None:
        """Express the sums about the new center ``C`` (``A -> N A M'``, ``Z -> N Z N'``, the sample alike).

        Raises
        ------
        FloatingPointError
            If they overflow about ``C``; they stay about the old center.
        """
        C = np.asarray(C, dtype=float)
        delta = C - self.C
        if np.any(delta):
            self._fold()
            shift, inst, nz = self._eq.shift_rows, self._shift_instruments, self.nz
            with np.errstate(all="ignore"):
                T = np.concatenate([inst(self.T[:, :nz], delta), shift(self.T[:, nz:], delta)], axis=1)
                sample = [(inst(Zs, delta), shift(Xs, delta)) for Zs, Xs in self._sample]
            if not all(np.isfinite(a).all() for a in (T, *(X for _, X in sample))):
                raise FloatingPointError("the instrumented sums overflow about the new center")
            self.T, self._sample = fold_rows(np.zeros_like(T), T), sample  # re-triangularised
        self._eq.C = C.copy()

    def solve(self) -> tuple[NoisyEvaluation, StepError]:
        """``(P, E, tr(PW))`` of the base gain ``C`` (module docstring), and how precisely it determines the
        Kleinman step ``-R^-1 E``: a :class:`~.equations.StepError` in the column-scaled ``E`` coordinates
        (unit-invariant), ``error`` the Frobenius norm of the step's standard error there.

        Raises
        ------
        numpy.linalg.LinAlgError
            Too few rows, or instruments that do not identify the unknowns (yet).
        """
        p, q, mn = self.p, self.q, self.m * self.n
        if self.rows <= self.nz:
            raise np.linalg.LinAlgError("fewer rows than instruments")
        Zs, Xs = (np.concatenate(a) for a in zip(*self._sample, strict=True))
        d = np.sqrt(np.sum(Xs[:, self._fit] ** 2, axis=0))  # column scales (of the sample: their ratios matter)
        self._fold()
        nz = self.nz
        Rz = self.T[:nz, :nz]
        dz = np.sqrt(np.sum(Rz * Rz, axis=0))  # the instruments' norms: the test below does not depend on their units
        if not (np.all(d > 0) and np.all(dz > 0) and np.abs(np.diag(Rz) / dz).min() > np.finfo(float).eps * nz):
            raise np.linalg.LinAlgError("a column or instrument without data")
        F = self.T[:nz, nz + self._fit] / d  # the first stage: Q_z'Phi (scaled columns)
        f = self.T[:nz, -1]
        U, sv, Vt = np.linalg.svd(F, full_matrices=False)
        if not sv[-1] > sv[0] * np.finfo(float).eps * p * 1e2:
            raise np.linalg.LinAlgError("the instruments do not identify (P, E, tr(PW))")
        theta_s = Vt.T @ ((U.T @ f) / sv)
        v = np.zeros(Xs.shape[1])
        v[self._fit], v[-1] = -theta_s / d, 1.0
        r = Xs @ v  # the sample's residuals about this fit
        Hi = (Vt.T / sv**2) @ Vt
        J = sla.solve_triangular(Rz, F)  # Z^-1 B
        T = (Zs @ (J @ Hi)) * np.abs(r)[:, None]  # cov = T'T (rows / kept): positive semidefinite as computed
        cov = (T.T @ T) * (self.rows / Zs.shape[0]) / np.outer(d, d)
        fit = _result(theta_s / d, cov, self.m, self.n, self._eq.R, self.rows)
        dE = d[q:q + mn]
        error = float(np.sqrt(np.sum(np.diag(cov)[q:q + mn] * dE**2)))
        assert self._eq.R is not None
        step = StepError(error, 0.0, float(np.linalg.norm(fit.E.ravel() * dE)),
                         float(np.linalg.norm((self._eq.R @ self.C - fit.E).ravel() * dE)))
        return fit, step
