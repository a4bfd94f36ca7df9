"""Model-free policy evaluation by least squares, from rollouts with state moments.

Let ``K`` be a stabilizing gain with value matrix ``P = P(K)`` and ``E = R K - B'P``.
Integrating ``d/dt x'Px`` along a rollout of *any* gain ``K_i = K + D_i`` from ``x0``
over ``[0, tau]`` gives, exactly,

    f_i = x0'P x0 - x_end'P x_end + tr(S_i (D_i'R D_i + 2 D_i'E)),

with ``f_i`` the rollout's cost, ``x_end = x(tau)`` and ``S_i = int_0^tau x x' dt``
(:attr:`azopg.plants.base.RolloutResult.S`). Each rollout is thus one linear equation
in the ``n(n+1)/2 + mn`` unknowns ``(P, E)`` of the *base* gain ``K``:

    <P, x0 x0' - x_end x_end'> + <E, 2 D_i S_i> = f_i - tr(S_i D_i'R D_i),

whatever ``D_i``, horizon or age of the rollout -- fresh, stale or from any worker. With
``R`` unknown (a black-box plant), ``tr(S D'RD) = <R, D S D'>`` adds ``m(m+1)/2``
unknowns and the right side is ``f_i`` alone. Given ``(P, E)`` the Gauss--Newton
(Kleinman) step is ``K - R^-1 E`` (:func:`azopg.model.problem.kleinman_gain`).

Solving. The columns of the design matrix are scaled to unit 2-norm (their sizes differ
by the scales of ``x0``, ``S`` and ``D``); :func:`evaluate_policy` then solves the scaled
least-squares problem by ``numpy.linalg.lstsq`` (SVD: the condition number is not
squared), :meth:`NormalEquations.solve` the scaled normal equations by Cholesky. Only
when those are numerically singular (condition above ``1 / (p eps)``, ``p`` unknowns)
is a relative ridge ``p eps lambda_max`` added, which sets the unidentifiable directions
to zero. Both report the condition number of the scaled normal matrix (``cond(scaled
design)**2``), so a rule can judge whether the data determine ``(P, E)``; directions
that the data do not excite (e.g. all ``D_i`` along one direction when ``m >= 2``, which
leaves ``m(m-1)/2`` directions of ``E`` unseen) show up there.

Rollouts that blew up carry no moments (NaN): drop them first
(``~RolloutResult.blown_up``); non-finite data raise ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla

from ..model.problem import kleinman_gain

__all__ = ["NORMAL_CONDITION", "NormalEquations", "PolicyEvaluation", "evaluate_policy", "features", "unknowns"]


def unknowns(n: int, m: int, estimate_R: bool = False) -> int:
    """Number of unknowns: ``n(n+1)/2`` (P) + ``mn`` (E) [+ ``m(m+1)/2`` (R)]."""
    return n * (n + 1) // 2 + m * n + (m * (m + 1) // 2 if estimate_R else 0)


def _vech_coefficients(Y: np.ndarray) -> np.ndarray:
    """Rows ``c`` with ``<P, Y_i> = c_i . vech(P)`` for symmetric ``P`` (upper triangle, row-major)."""
    k = Y.shape[-1]
    i, j = np.triu_indices(k)
    return np.where(i == j, 1.0, 2.0) * Y[:, i, j]


def _unvech(v: np.ndarray, k: int) -> np.ndarray:
    i, j = np.triu_indices(k)
    P = np.zeros((k, k))
    P[i, j] = v
    P[j, i] = v
    return P


def features(K: Any, Ki: Any, x0: Any, x_end: Any, S: Any, cost: Any,
             R: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares rows of a batch of rollouts around the base gain ``K``.

    Parameters
    ----------
    K : array_like, shape (m, n)
        Base gain, whose ``(P, E)`` are the unknowns.
    Ki : array_like, shape (b, m, n)
        Gains the rollouts were run with (``D_i = Ki - K``, any size).
    x0, x_end : array_like, shape (b, n)
        Initial and final states.
    S : array_like, shape (b, n, n)
        ``int_0^tau x x' dt`` of each rollout.
    cost : array_like, shape (b,)
        Measured costs.
    R : array_like, shape (m, m), optional
        Input weight; if omitted it is estimated (``m(m+1)/2`` more columns).

    Returns
    -------
    Phi : ndarray, shape (b, p)
        Columns: ``vech`` coefficients of ``x0 x0' - x_end x_end'`` (P), ``2 D S``
        row-major (E), [``vech`` coefficients of ``D S D'`` (R)].
    y : ndarray, shape (b,)
        ``cost - tr(S D'R D)`` (``cost`` when ``R`` is estimated).

    Raises
    ------
    ValueError
        On shapes that do not match or non-finite data (e.g. a blown-up rollout).
    """
    K = np.asarray(K, dtype=float)
    if K.ndim != 2:
        raise ValueError(f"K must be an (m, n) matrix, got shape {K.shape}")
    m, n = K.shape
    Ki = np.asarray(Ki, dtype=float).reshape(-1, m, n)
    b = Ki.shape[0]
    x0 = np.asarray(x0, dtype=float).reshape(b, n)
    x_end = np.asarray(x_end, dtype=float).reshape(b, n)
    S = np.asarray(S, dtype=float).reshape(b, n, n)
    cost = np.asarray(cost, dtype=float).reshape(b)
    if not all(np.isfinite(a).all() for a in (K, Ki, x0, x_end, S, cost)):
        raise ValueError("rollout data must be finite (drop blown-up rollouts first)")
    D = Ki - K
    DS = D @ S
    DSD = DS @ np.swapaxes(D, 1, 2)
    Y = x0[:, :, None] * x0[:, None, :] - x_end[:, :, None] * x_end[:, None, :]
    cols = [_vech_coefficients(Y), 2.0 * DS.reshape(b, m * n)]
    if R is None:
        cols.append(_vech_coefficients(DSD))
        y = cost.copy()
    else:
        R = np.asarray(R, dtype=float).reshape(m, m)
        y = cost - np.einsum("bij,ij->b", DSD, R)
    return np.concatenate(cols, axis=1), y


@dataclass(frozen=True)
class PolicyEvaluation:
    """``(P, E)`` of a base gain estimated from rollouts.

    Attributes
    ----------
    P : ndarray, shape (n, n)
        Value matrix ``P(K)``.
    E : ndarray, shape (m, n)
        ``R K - B'P(K)`` (the gradient is ``2 E X``).
    R : ndarray, shape (m, m)
        The input weight: as given, or estimated.
    residual : float
        2-norm of the least-squares residual (0 on exact data, up to rounding).
    target_norm : float
        2-norm of the right-hand side, the scale of ``residual``.
    condition : float
        Condition number of the column-scaled normal matrix (``inf`` if singular).
    equations : int
        Number of rollouts (equations) used.
    """

    P: np.ndarray
    E: np.ndarray
    R: np.ndarray
    residual: float
    target_norm: float
    condition: float
    equations: int

    def kleinman_step(self, K: Any) -> np.ndarray:
        """The Gauss--Newton step ``K - R^-1 E`` from the base gain ``K``."""
        return kleinman_gain(K, self.E, self.R)


def _scales(col_sq: np.ndarray) -> np.ndarray:
    d = np.sqrt(col_sq)
    return np.where(d > 0, d, 1.0)


def _unpack(theta: np.ndarray, n: int, m: int, R: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = n * (n + 1) // 2
    P = _unvech(theta[:q], n)
    E = theta[q:q + m * n].reshape(m, n)
    Rh = _unvech(theta[q + m * n:], m) if R is None else np.array(R, dtype=float).reshape(m, m)
    return P, E, Rh


def evaluate_policy(K: Any, Ki: Any, x0: Any, x_end: Any, S: Any, cost: Any,
                    R: Any = None, *, solver: str = "svd") -> PolicyEvaluation:
    """Least-squares ``(P, E)`` (and ``R`` if not given) of the base gain ``K`` from one
    batch of rollouts; arguments as for :func:`features`. Solved by SVD on the
    column-scaled design matrix (module docstring); ``solver="auto"`` first tries the
    column-scaled normal equations by Cholesky with iterative refinement (several times faster
    for many unknowns) and keeps that solution only if their estimated condition number is below
    :data:`NORMAL_CONDITION`, else solves by SVD."""
    Phi, y = features(K, Ki, x0, x_end, S, cost, R)
    m, n = np.shape(K)
    d = _scales(np.sum(Phi * Phi, axis=0))
    Phis = Phi / d
    if solver == "auto":
        normal = _normal_solve(Phis, y)
        if normal is not None:
            theta_s, condition = normal
            P, E, Rh = _unpack(theta_s / d, n, m, R)
            return PolicyEvaluation(P, E, Rh, float(np.linalg.norm(Phis @ theta_s - y)), float(np.linalg.norm(y)),
                                    condition, int(y.size))
    theta_s, _, _, sv = np.linalg.lstsq(Phis, y, rcond=None)
    theta = theta_s / d
    full_rank = sv.size == Phi.shape[1] and sv[-1] > 0
    condition = float((sv[0] / sv[-1]) ** 2) if full_rank else float("inf")
    P, E, Rh = _unpack(theta, n, m, R)
    return PolicyEvaluation(P, E, Rh, float(np.linalg.norm(Phis @ theta_s - y)), float(np.linalg.norm(y)),
                            condition, int(y.size))


#: Largest (estimated, 1-norm) condition number of the scaled normal matrix for which
#: ``evaluate_policy(solver="auto")`` keeps the Cholesky solution, after ``REFINE`` steps of
#: iterative refinement on the residual of the design matrix itself (each multiplies the error
#: by about ``eps * cond``: from ``1e-4`` of the first solve to rounding).
NORMAL_CONDITION, REFINE = 1e12, 2


def _normal_solve(Phis: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float] | None:
    """``(theta, condition)`` from the normal equations of the column-scaled ``Phis``, or
    ``None`` if they are not positive definite or worse conditioned than :data:`NORMAL_CONDITION`."""
    if Phis.shape[0] < Phis.shape[1]:
        return None
    G = sla.blas.dsyrk(1.0, Phis, trans=1, lower=1)  # lower triangle of Phis' Phis, half the flops
    try:
        c = sla.cho_factor(G, lower=True, overwrite_a=False)
    except np.linalg.LinAlgError:
        return None
    A = np.abs(G)
    anorm = float(np.max(np.sum(A, axis=0) + np.sum(A, axis=1) - np.diag(A)))  # 1-norm of the full matrix
    rcond, info = sla.lapack.dpocon(c[0], anorm, uplo="L")
    if info != 0 or not rcond * NORMAL_CONDITION > 1.0:
        return None
    theta = sla.cho_solve(c, Phis.T @ y)
    for _ in range(REFINE):  # corrected semi-normal equations: each step gains about 1 / (eps cond)
        theta = theta + sla.cho_solve(c, Phis.T @ (y - Phis @ theta))
    return theta, float(1.0 / rcond)


@dataclass
class NormalEquations:
    """Accumulated normal equations ``G = Phi'Phi``, ``g = Phi'y`` of rollouts around one
    base gain ``K`` -- the sufficient statistics (``p(p+1)/2 + p + 2`` numbers, ``p``
    unknowns) a worker can send instead of its raw rollouts.

    Parameters
    ----------
    K : array_like, shape (m, n)
        The base gain.
    R : array_like, shape (m, m), optional
        Input weight; omitted: estimated.
    """

    K: np.ndarray
    R: np.ndarray | None = None
    G: np.ndarray = field(init=False)
    g: np.ndarray = field(init=False)
    yy: float = field(init=False, default=0.0)
    count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.K = np.array(self.K, dtype=float)
        if self.K.ndim != 2:
            raise ValueError(f"K must be an (m, n) matrix, got shape {self.K.shape}")
        m, n = self.K.shape
        if self.R is not None:
            self.R = np.array(self.R, dtype=float).reshape(m, m)
        p = unknowns(n, m, self.R is None)
        self.G = np.zeros((p, p))
        self.g = np.zeros(p)

    def add(self, Ki: Any, x0: Any, x_end: Any, S: Any, cost: Any) -> NormalEquations:
        """Add a batch of rollouts (arguments as for :func:`features`); returns ``self``."""
        Phi, y = features(self.K, Ki, x0, x_end, S, cost, self.R)
        self.G += Phi.T @ Phi
        self.g += Phi.T @ y
        self.yy += float(y @ y)
        self.count += int(y.size)
        return self

    def merge(self, other: NormalEquations) -> NormalEquations:
        """A new accumulator holding the equations of both (same ``K`` and ``R``).

        Raises
        ------
        ValueError
            If the base gains or input weights differ.
        """
        same_R = (self.R is None and other.R is None) or (
            self.R is not None and other.R is not None and np.array_equal(self.R, other.R))
        if not (np.array_equal(self.K, other.K) and same_R):
            raise ValueError("can only merge normal equations of the same base gain K and input weight R")
        out = NormalEquations(self.K, self.R)
        out.G = self.G + other.G
        out.g = self.g + other.g
        out.yy = self.yy + other.yy
        out.count = self.count + other.count
        return out

    def solve(self) -> PolicyEvaluation:
        """Solve the column-scaled normal equations (Cholesky; a relative ridge only if
        numerically singular, see the module docstring). ``residual`` is from
        ``y'y - 2 theta'g + theta'G theta``: accurate to about ``sqrt(eps) * target_norm``."""
        m, n = self.K.shape
        p = self.g.size
        d = _scales(np.diag(self.G).copy())
        Gs = self.G / np.outer(d, d)
        gs = self.g / d
        lam = np.linalg.eigvalsh(Gs)
        condition = float(lam[-1] / lam[0]) if lam[0] > 0 else float("inf")
        eps = np.finfo(float).eps
        if not condition < 1.0 / (p * eps):
            Gs = Gs + (p * eps * max(lam[-1], 1.0)) * np.eye(p)
        theta_s = sla.cho_solve(sla.cho_factor(Gs), gs)
        theta = theta_s / d
        r2 = self.yy - 2.0 * float(theta @ self.g) + float(theta @ self.G @ theta)
        P, E, Rh = _unpack(theta, n, m, self.R)
        return PolicyEvaluation(P, E, Rh, float(np.sqrt(max(r2, 0.0))), float(np.sqrt(self.yy)), condition,
                                self.count)
