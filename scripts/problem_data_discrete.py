"""Discrete-time published systems ``x_{t+1} = A x_t + B u_t``, for ``make_problem_data.py``.

Each record carries ``"discrete_time": true``; the cost is ``E sum_t (x_t'Q x_t + u_t'R u_t)``
with ``x0`` covariance ``I``.

* ``dean3`` -- the graph-Laplacian-like system of Dean, Mania, Matni, Recht & Tu (2017),
  used by the random-search (ARS) paper of Mania, Guy & Recht (2018): ``A`` as below,
  ``B = I``, ``Q = 1e-3 I``, ``R = I``. ``A`` is not Schur (spectral radius 1.024), so
  ``K0`` is the discrete LQR gain for the heavier input weight ``rho R``, ``rho = 10^j``
  with the smallest ``j >= 1`` whose gain, rounded to 6 digits, stabilizes and costs
  between 1.5x and 1e4x the optimum.
* ``toso4`` -- the nominal system ``(A_0, B_0)`` of Toso, Wang & Anderson (2024), with their
  ``Q_0 = I``, ``R_0 = I`` and their initial gain ``K_0``, typed from the public notebook
  ``Asynchronous Heterogenous LQR - Comparison Async LQR and Sync LQR.ipynb`` of the GitHub
  repository jd-anderson/AsyncLQR (commit 6862934295ddc18127113c6a3902a775345a0388).
  Their rollouts start from the fixed state ``x_0 = (0.25, 0.55, 0.35, 0.45)``; here the
  initial state has covariance ``I``, as for every built-in problem.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la

DEAN = ("S. Dean, H. Mania, N. Matni, B. Recht and S. Tu, 'On the sample complexity of the linear "
        "quadratic regulator', Foundations of Computational Mathematics 20:633-679, 2020 (arXiv:1710.01688, "
        "2017); used by H. Mania, A. Guy and B. Recht, 'Simple random search of static linear policies is "
        "competitive for reinforcement learning', NeurIPS 2018")
TOSO = ("L. F. Toso, H. Wang and J. Anderson, 'Asynchronous heterogeneous linear quadratic regulator design', "
        "arXiv:2404.09061, 2024 (nominal system of the public notebooks in the GitHub repository "
        "jd-anderson/AsyncLQR)")


def spectral_radius(M: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(M))))


def dlqr_cost(A: np.ndarray, B: np.ndarray, K: np.ndarray, Q: np.ndarray, R: np.ndarray) -> float:
    """tr(P), P = (A-BK)'P(A-BK) + Q + K'RK (x0 covariance I); inf if A - B K is not Schur."""
    Acl = A - B @ K
    if spectral_radius(Acl) >= 1:
        return np.inf
    return float(np.trace(la.solve_discrete_lyapunov(Acl.T, Q + K.T @ R @ K)))


def dlqr(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P = la.solve_discrete_are(A, B, Q, R)
    return np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A), P


def round_sig(M: np.ndarray, digits: int = 6) -> np.ndarray:
    return np.vectorize(lambda x: float(f"{x:.{digits}g}"))(M)


def heavy_input_gain(A, B, Q, R, J_opt):
    for j in range(1, 13):
        rho = 10.0**j
        K = round_sig(dlqr(A, B, Q, rho * R)[0])
        J0 = dlqr_cost(A, B, K, Q, R)
        if 1.5 * J_opt <= J0 <= 1e4 * J_opt:
            return K, rho, J0
    raise RuntimeError("no acceptable heavy-input LQR gain found")


def discrete_systems() -> list[dict]:
    """Complete records (``name, title, source, A, B, Q, R, K0, K0_method, notes, discrete_time``)."""
    out = []
    A = np.array([[1.01, 0.01, 0.0], [0.01, 1.01, 0.01], [0.0, 0.01, 1.01]])
    B, Q, R = np.eye(3), 1e-3 * np.eye(3), np.eye(3)
    P = dlqr(A, B, Q, R)[1]
    J_opt = float(np.trace(P))
    K0, rho, J0 = heavy_input_gain(A, B, Q, R, J_opt)
    out.append(dict(
        name="dean3", title="Discrete-time graph-Laplacian system of Dean et al. (3 states, 3 inputs)", source=DEAN,
        A=A, B=B, Q=Q, R=R, K0=K0, K0_method=f"discrete LQR gain for input weight {rho:g} R",
        notes=(f"discrete time; n=3, m=3; open loop not Schur (spectral radius {spectral_radius(A):.4g}); "
               f"K0 = discrete LQR gain for (Q, rho R), rho = {rho:g} = the smallest power of 10"
               f" giving J(K0) >= 1.5 J*, rounded "
               f"to 6 digits; A - B K0 spectral radius {spectral_radius(A - B @ K0):.4g}, J(K0)/J* = "
               f"{J0 / J_opt:.3g}; optimal cost tr(P*) = {J_opt:.6g} (Q=1e-3 I, R=I, x0 covariance I)"),
    ))
    A = np.array([[1.22, 0.03, -0.02, -0.32], [0.01, 4.7, 0.0, 0.0], [0.02, -0.06, 0.4, 0.0],
                  [0.01, -0.04, 0.72, 1.55]])
    B = np.array([[0.01, 0.99], [-3.44, 1.66], [-0.83, 0.44], [-0.47, 0.25]])
    Q, R = np.eye(4), np.eye(2)
    K0 = np.array([[0.33683197, -1.7417071, 0.15033713, 0.28966262],
                   [0.68460759, 0.42031008, -0.28415275, -0.6531542]])
    P = dlqr(A, B, Q, R)[1]
    J_opt = float(np.trace(P))
    J0 = dlqr_cost(A, B, K0, Q, R)
    assert np.isfinite(J0)
    out.append(dict(
        name="toso4", title="Nominal system of the asynchronous heterogeneous LQR study (4 states, 2 inputs)",
        source=TOSO, A=A, B=B, Q=Q, R=R, K0=K0, K0_method="the initial gain K_0 of Toso, Wang & Anderson",
        notes=(f"discrete time; n=4, m=2; open loop not Schur (spectral radius {spectral_radius(A):.4g}); K0 = the "
               f"published K_0 (a perturbed optimal gain); A - B K0 spectral radius "
               f"{spectral_radius(A - B @ K0):.4g}, J(K0)/J* = {J0 / J_opt:.3g}; optimal cost tr(P*) = "
               f"{J_opt:.6g} (Q=I, R=I, x0 covariance I; the paper's rollouts start from x_0 = "
               "(0.25, 0.55, 0.35, 0.45))"),
    ))
    for rec in out:
        rec["discrete_time"] = True
    return out
