"""The algebraic Riccati equations of the exact oracle: solved scale-free, checked, explained.

:func:`solve` returns the stabilizing solution ``P*`` of the continuous (CARE) or discrete
(DARE) equation, or raises :class:`~azopg.errors.ProblemError` saying why there is none
(a mode on the imaginary axis that ``Q`` does not see, a Hamiltonian eigenvalue on the
axis for an indefinite ``Q``) or why it cannot be computed accurately (a badly scaled
problem: the residual is checked against the size of the equation's terms).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg as sla

from ..errors import ProblemError
from . import discrete as dlqr

__all__ = ["CARE_RTOL", "hamiltonian_axis_gap", "kleinman_gain", "lyapunov", "solve"]

#: Largest relative residual of an accepted Riccati solution.
CARE_RTOL = 1e-6


def solve(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, *, discrete_time: bool = False) -> np.ndarray:
    """The stabilizing solution of the CARE ``A'P + PA - PBR^-1B'P + Q = 0`` (or the DARE).

    Raises
    ------
    ProblemError
        If there is no stabilizing solution, or it cannot be computed accurately.
    """
    if discrete_time:
        return _dare(A, B, Q, R)
    try:
        # scale-free: time scaled by alpha = max|A| and the weights by beta leave the same equation
        alpha = max(float(np.max(np.abs(A))), float(np.max(np.abs(B))))
        beta = max(float(np.max(np.abs(Q))), float(np.max(np.abs(R)))) / alpha
        with np.errstate(all="ignore"):
            P = beta * sla.solve_continuous_are(A / alpha, B / alpha, Q / (alpha * beta), R / (alpha * beta))
    except (np.linalg.LinAlgError, ValueError) as exc:
        if not _unobservable_axis_mode(A, B, Q, R):  # a stabilizing solution exists: the solver failed on scale
            raise ProblemError(_badly_scaled(A, B, Q, R, f"the solver failed: {exc}")) from None
        raise ProblemError(f"the Riccati equation has no stabilizing solution: {exc}") from None
    P = 0.5 * P + 0.5 * P.T
    _check_care(A, B, Q, R, P)
    return P


def _dare(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> np.ndarray:
    try:
        P = dlqr.solve_dare(A, B, Q, R)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise ProblemError(f"the discrete Riccati equation has no stabilizing solution: {exc}") from None
    rel = dlqr.dare_residual(A, B, Q, R, P)
    if not rel <= CARE_RTOL:
        raise ProblemError(_badly_scaled(A, B, Q, R, f"relative residual {rel:.2g}"))
    return P


def _unobservable_axis_mode(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> bool:
    """Whether the Riccati equation has no stabilizing solution although ``(A, B)`` is
    stabilizable: for ``Q >= 0``, a mode of ``A`` on the imaginary axis that ``Q`` does not
    see; for an indefinite ``Q``, a Hamiltonian eigenvalue on the axis."""
    if float(np.min(np.linalg.eigvalsh(Q))) < 0:
        return hamiltonian_axis_gap(A, B, Q, R) <= 1e-9
    w, V = np.linalg.eig(A)
    qscale = float(np.max(np.abs(Q)))
    for lam, v in zip(w, V.T, strict=True):
        if abs(lam.real) <= 1e-9 * abs(lam) and np.linalg.norm(Q @ v) <= 1e-9 * qscale:
            return True
    return False


def hamiltonian_axis_gap(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> float:
    """Smallest ``|Re(lambda)|`` over the eigenvalues of the Hamiltonian matrix
    ``[[A, -B R^-1 B'], [-Q, -A']]``, relative to its norm: zero when the Riccati
    equation has no stabilizing solution."""
    G = B @ np.linalg.solve(R, B.T)
    H = np.block([[A, -G], [-Q, -A.T]])
    return float(np.min(np.abs(np.linalg.eigvals(H).real))) / float(np.linalg.norm(H, 1))


def _check_care(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, P: np.ndarray) -> None:
    """Refuse a Riccati solution whose residual is not small next to the equation's terms."""
    with np.errstate(all="ignore"):
        BP = B.T @ P
        terms = (A.T @ P, BP.T @ np.linalg.solve(R, BP), Q)
        res = terms[0] + terms[0].T - terms[1] + terms[2]
        scale = sum(float(np.max(np.abs(t))) for t in terms)
        rel = float(np.max(np.abs(res))) / scale if scale > 0 else 0.0
    if not rel <= CARE_RTOL:
        raise ProblemError(_badly_scaled(A, B, Q, R, f"relative residual {rel:.2g}"))


def _badly_scaled(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, why: str) -> str:
    size = ", ".join(f"|{k}| {float(np.max(np.abs(M))):.3g}" for k, M in (("A", A), ("B", B), ("Q", Q), ("R", R)))
    return (f"the Riccati equation cannot be solved accurately in floating point ({why}): the problem is "
            f"badly scaled (largest {size}); rescale the states, inputs or time")


def kleinman_gain(K: Any, E: Any, R: Any) -> np.ndarray:
    """The policy-iteration (Kleinman, Gauss--Newton) step ``K - R^-1 E`` from the gain
    ``K`` (m, n), its factor ``E = R K - B'P(K)`` (m, n) and the input weight ``R`` (m, m)."""
    K = np.asarray(K, dtype=float)
    return K - np.linalg.solve(np.asarray(R, dtype=float), np.asarray(E, dtype=float))


def lyapunov(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``X`` with ``A X + X A' + C = 0``, solved on ``A`` and ``C`` scaled to unit size (so
    matrices of any magnitude, e.g. ``1e-300``, keep their precision) and on ``A`` balanced by a
    diagonal similarity ``T`` of powers of 2 (exact): ``X = T Xb T`` with ``Xb`` the solution for
    ``T^-1 A T`` and ``T^-1 C T^-1``, so states in any units (``A -> D A D^-1``) keep their precision."""
    alpha = float(np.max(np.abs(A)))
    beta = float(np.max(np.abs(C)))
    if beta == 0:
        return np.zeros_like(C)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(C))):
        return (beta / alpha) * sla.solve_continuous_lyapunov(A / alpha, -(C / beta))
    t = sla.matrix_balance(A, permute=False, separate=True)[1][0]
    Ab, Cb = A * (t[None, :] / t[:, None]), C / t[:, None] / t[None, :]  # never t t' (it can overflow)
    alpha, beta = float(np.max(np.abs(Ab))), float(np.max(np.abs(Cb)))
    return (beta / alpha) * sla.solve_continuous_lyapunov(Ab / alpha, -(Cb / beta)) * t[:, None] * t[None, :]
