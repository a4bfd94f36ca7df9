"""The exact oracle of a discrete-time LQR problem (used by :class:`~azopg.model.problem.LQRProblem`).

The plant is ``x_{t+1} = A x_t + B u_t``, ``u_t = -K x_t``, with the cost
``f(K) = E sum_{t>=0} (x_t'Q x_t + u_t'R u_t) = tr(P_K Omega)``, where, with
``Acl = A - B K``,

    P_K = Acl' P_K Acl + Q + K'R K,        X_K = Acl X_K Acl' + Omega,

(Stein equations; ``X_K = E sum_t x_t x_t'``). ``K`` stabilizes when the spectral radius of
``Acl`` is below 1. The gradient is ``2 E_K X_K`` with

    E_K = (R + B'P_K B) K - B'P_K A,

the Gauss--Newton (Hewer) step is ``K - (R + B'P_K B)^-1 E_K = (R + B'P_K B)^-1 B'P_K A``, and
the optimum comes from the discrete algebraic Riccati equation
``P = A'PA - A'PB (R + B'PB)^-1 B'PA + Q``, ``K* = (R + B'P*B)^-1 B'P*A``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

__all__ = ["stein", "spectral_radius", "value_matrix", "state_covariance", "input_hessian", "gradient_factor",
           "solve_dare", "dare_residual", "dare_gain"]


def spectral_radius(Acl: np.ndarray) -> float:
    """Largest modulus of the eigenvalues of ``Acl``."""
    return float(np.max(np.abs(np.linalg.eigvals(Acl))))


def stein(F: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Symmetric ``X`` with ``X = F X F' + C`` for a Schur ``F``, solved on ``C`` scaled to unit
    size (so weights of any magnitude keep their precision)."""
    beta = float(np.max(np.abs(C)))
    if beta == 0:
        return np.zeros_like(C)
    X = beta * sla.solve_discrete_lyapunov(F, C / beta)
    return 0.5 * (X + X.T)


def value_matrix(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``P_K = Acl' P_K Acl + Q + K'RK`` (``Acl = A - B K`` Schur, not checked here)."""
    return stein((A - B @ K).T, Q + K.T @ R @ K)


def state_covariance(A: np.ndarray, B: np.ndarray, K: np.ndarray, x0_cov: np.ndarray) -> np.ndarray:
    """``X_K = sum_t Acl^t Omega Acl'^t`` (``Acl = A - B K`` Schur, not checked here)."""
    return stein(A - B @ K, x0_cov)


def input_hessian(B: np.ndarray, R: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``H_uu = R + B'P B``: the input block of the Q-function's matrix, and the curvature of the
    cost along a change of gain (``tr(X D'H_uu D)``)."""
    H = R + B.T @ P @ B
    return 0.5 * (H + H.T)


def gradient_factor(A: np.ndarray, B: np.ndarray, R: np.ndarray, K: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``E_K = (R + B'P B) K - B'P A``: the gradient is ``2 E_K X_K`` and ``E(K*) = 0``."""
    return input_hessian(B, R, P) @ K - B.T @ P @ A


def dare_gain(A: np.ndarray, B: np.ndarray, R: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``(R + B'P B)^-1 B'P A``."""
    return np.linalg.solve(input_hessian(B, R, P), B.T @ P @ A)


def solve_dare(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> np.ndarray:
    """The stabilizing solution of the discrete algebraic Riccati equation, on the weights scaled
    to unit size (the equation is homogeneous in ``(P, Q, R)``).

    Raises
    ------
    numpy.linalg.LinAlgError, ValueError
        When the solver fails (no stabilizing solution, or bad scaling).
    """
    beta = max(float(np.max(np.abs(Q))), float(np.max(np.abs(R))))
    with np.errstate(all="ignore"):
        P = beta * sla.solve_discrete_are(A, B, Q / beta, R / beta)
    return 0.5 * (P + P.T)


def dare_residual(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, P: np.ndarray) -> float:
    """Relative residual of ``P`` in the discrete Riccati equation (next to the size of its terms)."""
    with np.errstate(all="ignore"):
        BPA = B.T @ P @ A
        terms = (A.T @ P @ A, BPA.T @ np.linalg.solve(input_hessian(B, R, P), BPA), Q, P)
        res = terms[0] - terms[1] + terms[2] - terms[3]
        scale = sum(float(np.max(np.abs(t))) for t in terms)
        return float(np.max(np.abs(res))) / scale if scale > 0 else 0.0
