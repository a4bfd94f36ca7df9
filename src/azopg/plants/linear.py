"""The exact linear plant.

:class:`LinearPlant` evaluates the costs of a linear plant *exactly* (to rounding) and
in batches: with ``Acl = A - B K`` and ``Qk = Q + K'RK`` the cost is ``x0' M(tau) x0``
where ``M(t) = int_0^t exp(Acl's) Qk exp(Acl s) ds``. ``M`` and ``E = exp(Acl h)`` are
formed by a Taylor series of a Van Loan block exponential on a short step
``h = tau / 2**s`` (``||Acl h|| <= 1/2``), then doubled ``s`` times with

    M(2h) = M(h) + E(h)' M(h) E(h),   E(2h) = E(h)^2 .

Each doubling adds positive semi-definite terms, so the relative accuracy is kept at
any horizon -- unlike a single Van Loan exponential of the horizon, whose entries of
size ``exp(||A|| tau)`` swamp the answer once ``tau`` is a few tens of time constants.
Everything is vectorized over the batch: no Python loop per rollout or per time step.

State moments (``rollout(..., moments=True)``): ``S(t) = int_0^t x x' ds`` with
``x(s) = exp(Acl s) x0``. On the short step ``x(h t) = sum_k w_k t^k``,
``w_k = (Acl h)^k x0 / k!`` (matrix-vector products only), so
``S(h) = h W H W'`` with ``W = [w_0 ... w_ORDER]`` and the Hilbert matrix
``H_jk = 1 / (j + k + 1)``. Since ``exp(Acl h)`` commutes with ``exp(Acl s)``,

    S(2h) = S(h) + E(h) S(h) E(h)'

for the *same* ``x0``: the doubling of ``M`` carries over, again adding only positive
semi-definite terms. ``x(tau) = E(tau) x0``.

Snapshots (:meth:`LinearPlant.rollout_snapshots`): with ``M``, ``E`` and ``S_0`` of one interval
``h = tau / k``, the same commuting argument gives each interval's data from the previous one,

    x_{j+1} = E(h) x_j,   S_{j+1} = E(h) S_j E(h)',   c_j = x_j' M(h) x_j,

exact to rounding: ``k`` matrix products per rollout on top of one interval's matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ProblemError
from ..model.problem import LQRProblem
from .base import COST_LIMIT, GROWTH, RolloutResult, Trajectory, finalize, with_moments

__all__ = ["LinearPlant"]

_THETA = 0.5  # bound on ||Acl h|| (1- and inf-norm) for the short step
_ORDER = 12  # Taylor order; truncation < THETA**13/13! ~ 2e-14
_HILBERT = 1.0 / (np.arange(_ORDER + 1)[:, None] + np.arange(_ORDER + 1) + 1.0)
#: Snapshot intervals come in this many groups of doubling lengths (see ``LinearPlant._intervals``).
GROUPS = 8
_CHUNK_BYTES = 2**26  # a batch is done in chunks whose work arrays (about 16 n^2 floats each) fit in this


class LinearPlant:
    """Exact batched rollouts of ``dx/dt = A x + B u``, ``u = -K x``.

    Parameters
    ----------
    problem : LQRProblem
        Supplies ``A, B, Q, R`` and the initial-state covariance.

    Raises
    ------
    ProblemError
        If the expected cost of ``K0`` is so large that its rollouts would count as
        blown up (above ``COST_LIMIT / 1e6``).
    """

    #: ``rollout(..., moments=True)`` returns the state moments ``S`` and ``x_end``.
    returns_moments = True
    #: Rollouts are exact: a gain's cost from a state is the same every time (no noise to measure,
    #: :func:`~azopg.plants.base.is_deterministic`).
    deterministic = True

    def __init__(self, problem: LQRProblem) -> None:
        self.problem = problem
        self.n = problem.n
        self.m = problem.m
        self._A = np.array(problem.A)
        self._B = np.array(problem.B)
        self._Q = np.array(problem.Q)
        self._R = np.array(problem.R)
        self._L = np.linalg.cholesky(np.array(problem.x0_cov))
        f0 = problem.cost(problem.K0)
        if not abs(f0) <= COST_LIMIT * 1e-6:
            raise ProblemError(f"the expected cost of K0 is {f0:.3g}, beyond the range of rollout costs "
                               f"(a cost above {COST_LIMIT:.0e} counts as blown up): rescale Q, R or x0_cov")

    def __repr__(self) -> str:
        return f"LinearPlant({self.problem.name!r}, n={self.n}, m={self.m})"

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Gaussian initial states with covariance ``problem.x0_cov``."""
        return rng.standard_normal((size, self.n)) @ self._L.T

    def evaluation_states(self) -> np.ndarray:
        """``n`` states ``c_i`` with ``mean_i c_i c_i' = x0_cov``: the mean of their
        costs is the expected cost, without sampling noise."""
        return np.sqrt(self.n) * self._L.T

    def rollout(self, K: Any, x0: Any, tau: float, *, moments: bool = False) -> RolloutResult:
        """Costs of ``b`` rollouts of horizon ``tau``.

        Parameters
        ----------
        K : array_like, shape (b, m, n) or (m, n)
            Gains (one per rollout, or one for all).
        x0 : array_like, shape (b, n)
            Initial states.
        tau : float
            Horizon, > 0.
        moments : bool, optional
            Also return ``S = int_0^tau x x' dt`` and ``x_end = x(tau)`` (exact, batched;
            the costs are the same bits as without).

        Returns
        -------
        RolloutResult
        """
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        b = x0.shape[0]
        K = np.asarray(K, dtype=float)
        if K.ndim == 2:
            K = np.broadcast_to(K, (b, self.m, self.n))
        chunk = max(1, _CHUNK_BYTES // (8 * 16 * self.n * self.n))
        cost = np.empty(b)
        bad = np.empty(b, dtype=bool)
        xT = np.empty((b, self.n))
        S_all = np.empty((b, self.n, self.n)) if moments else None
        for i in range(0, b, chunk):  # bounded memory for any batch
            j = min(i + chunk, b)
            M, E, S = self._matrices(K[i:j], tau, x0[i:j] if moments else None)
            x = x0[i:j, :, None]
            with np.errstate(all="ignore"):
                cost[i:j] = (x.swapaxes(1, 2) @ M @ x)[:, 0, 0]
                xT[i:j] = (E @ x)[:, :, 0]
                grow = np.sum(xT[i:j] * xT[i:j], axis=1) > GROWTH**2 * np.sum(x0[i:j] * x0[i:j], axis=1)
                bad[i:j] = grow | ~np.isfinite(xT[i:j]).all(axis=1)
            if S_all is not None:
                S_all[i:j] = S
        with np.errstate(all="ignore"):
            res = finalize(cost, bad)
        return res if S_all is None else with_moments(res, S_all, xT)

    @property
    def returns_snapshots(self) -> bool:
        """Whether :meth:`rollout_snapshots` describes this plant's rollouts: not if a subclass changes
        the rollouts themselves (e.g. adds noise) -- then its whole rollouts are used."""
        return type(self).rollout is LinearPlant.rollout

    def rollout_snapshots(self, K: Any, x0: Any, tau: float, k: int) -> Trajectory:
        """Rollouts of horizon ``tau`` cut into ``k`` intervals (module docstring), exactly.

        Parameters
        ----------
        K : array_like, shape (b, m, n) or (m, n)
        x0 : array_like, shape (b, n)
        tau : float
            Horizon, > 0.
        k : int
            Intervals (equal ones; a discrete-time plant may return fewer, see ``_intervals``).

        Returns
        -------
        Trajectory
            ``cost.sum(axis=1)`` is the rollout's cost; blown-up rollouts are all NaN.
        """
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        b, n = x0.shape[0], self.n
        K = np.asarray(K, dtype=float)
        if K.ndim == 2:
            K = np.broadcast_to(K, (b, self.m, n))
        parts = self._intervals(tau, int(k))
        kk = sum(count for _, count in parts)
        X, S, C = np.empty((b, kk + 1, n)), np.empty((b, kk, n, n)), np.empty((b, kk))
        chunk = max(1, _CHUNK_BYTES // (8 * (16 + kk) * n * n))
        with np.errstate(all="ignore"):
            for i in range(0, b, chunk):  # bounded memory for any batch
                j = min(i + chunk, b)
                x, col = x0[i:j], 0
                X[i:j, 0] = x
                for length, count in parts:
                    M, E, Sj = self._matrices(K[i:j], length, x)
                    assert Sj is not None
                    for _ in range(count):
                        S[i:j, col] = Sj
                        C[i:j, col] = np.einsum("bi,bij,bj->b", x, M, x)
                        x = (E @ x[:, :, None])[:, :, 0]
                        X[i:j, col + 1] = x
                        Sj = (E @ Sj) @ E.swapaxes(1, 2)
                        col += 1
            size = np.sum(X * X, axis=2)
            bad = (np.max(size, axis=1) > GROWTH**2 * size[:, 0]) | ~np.isfinite(X).all(axis=(1, 2)) \
                | ~np.isfinite(S).all(axis=(1, 2, 3))
            bad = finalize(np.sum(C, axis=1), bad).blown_up
        X[bad], S[bad], C[bad] = np.nan, np.nan, np.nan
        t = np.concatenate([[0.0], np.cumsum(np.repeat([length for length, _ in parts], [c for _, c in parts]))])
        return Trajectory(X, 0.5 * (S + S.swapaxes(2, 3)), C, bad, t)

    def _intervals(self, tau: float, k: int) -> list[tuple[float, int]]:
        """The snapshot intervals of a horizon ``tau``: ``(length, count)`` pairs, in order --
        :data:`GROUPS` groups of equal intervals, each group's twice as long as the one before, so
        that fast modes are resolved at the start and slow ones over the whole horizon."""
        if not (tau > 0 and np.isfinite(tau)) or k < 1:
            raise ValueError(f"tau must be a finite number > 0 and k >= 1, got tau={tau}, k={k}")
        groups = min(GROUPS, k)
        counts = [k // groups + (g < k % groups) for g in range(groups)]
        h = tau / sum(c * 2.0**g for g, c in enumerate(counts))
        return [(h * 2.0**g, c) for g, c in enumerate(counts)]

    def cost_matrices(self, K: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """``M(tau)`` and ``exp((A - B K) tau)`` for a stack of gains ``K`` (b, m, n).

        The short step is a Taylor series of the Van Loan block
        ``exp([[-Acl' h, Qk h], [0, Acl h]]) = [[E(h)^-T, E(h)^-T M(h)], [0, E(h)]]``, of its
        right block column only: safe for a step this short, and one matrix product per order.
        """
        M, E, _ = self._matrices(K, tau, None)
        return M, E

    def _matrices(self, K: np.ndarray, tau: float,
                  x0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`cost_matrices`, and the moments ``S(tau)`` of states ``x0`` (b, n) if given."""
        if not (tau > 0 and np.isfinite(tau)):
            raise ValueError(f"tau must be a finite number > 0, got {tau}")
        K = np.asarray(K, dtype=float)
        n = self.n
        with np.errstate(all="ignore"):
            Acl = self._A - self._B @ K  # (b, n, n)
            Qk = self._Q + K.swapaxes(1, 2) @ self._R @ K
            # per rollout: s doublings of a step h = tau / 2**s with ||Acl h|| <= THETA (1- and inf-norm)
            absA = np.abs(Acl)
            norm = np.maximum(absA.sum(axis=1).max(axis=1), absA.sum(axis=2).max(axis=1))
            s = np.ceil(np.log2(norm * (tau / _THETA)))
            s = np.clip(np.where(np.isnan(s), 0.0, s), 0, 1000).astype(int)  # +-inf clipped too
            h = (tau / np.exp2(s))[:, None, None]
            Z = np.zeros((Acl.shape[0], 2 * n, 2 * n))
            Z[:, :n, :n] = Acl.swapaxes(1, 2) * -h
            Z[:, :n, n:] = Qk * h
            Z[:, n:, n:] = Acl * h
            # only the right block column [E^-T M; E] = exp(Z) J, J = [0; I], is needed. Horner:
            # exp(Z) J = J + Z (J + Z/2 (J + ... (J + Z J/ORDER)))
            J = np.zeros((2 * n, n))
            J[n:] = np.eye(n)
            F = Z[:, :, n:] * (1.0 / _ORDER) + J
            for k in range(_ORDER - 1, 0, -1):
                F = (Z @ F) * (1.0 / k) + J
            E = np.ascontiguousarray(F[:, n:])
            M = E.swapaxes(1, 2) @ F[:, :n]
            M = 0.5 * (M + M.swapaxes(1, 2))
            S = None if x0 is None else _short_moments(Acl, h, x0)
            smin, smax = (int(s.min()), int(s.max())) if s.size else (0, 0)
            for i in range(smax):
                ME = M @ E
                if i < smin:  # every rollout doubles
                    if S is not None:
                        S = S + (E @ S) @ E.swapaxes(1, 2)
                    M = M + E.swapaxes(1, 2) @ ME
                    E = E @ E
                else:
                    act = (s > i)[:, None, None]
                    if S is not None:
                        S = np.where(act, S + (E @ S) @ E.swapaxes(1, 2), S)
                    M = np.where(act, M + E.swapaxes(1, 2) @ ME, M)
                    E = np.where(act, E @ E, E)
            if S is not None:
                S = 0.5 * (S + S.swapaxes(1, 2))
        return M, E, S


def _short_moments(Acl: np.ndarray, h: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """``S(h) = int_0^h x x' ds`` from ``x0`` (b, n), steps ``h`` (b, 1, 1): ``h W H W'``
    (module docstring), by matrix-vector products."""
    Ah = Acl * h
    W = np.empty((*x0.shape, _ORDER + 1))
    W[:, :, 0] = x0
    for k in range(1, _ORDER + 1):
        W[:, :, k] = (Ah @ W[:, :, k - 1:k])[:, :, 0] * (1.0 / k)
    return (W @ _HILBERT @ W.swapaxes(1, 2)) * h
