"""Hard random LQR problems with prescribed conditioning, by inverse design.

:func:`hard_system` builds the optimum first and the system around it.  In balanced
coordinates ``z`` (an orthogonal basis ``U``), the optimal closed loop, the value
matrix and the state covariance share eigenvectors:

    A - B K* = U (diag(a) + S) U',   P* = U diag(p) U',   X* = U diag(x) U',

with ``a_i = -1 / (2 x_i)`` (so ``(A-BK*) X* + X* (A-BK*)' + I = 0``) and ``S``
skew-symmetric 2x2 blocks that turn pairs of equal ``(a, p, x)`` into lightly damped
oscillations.  The input matrix ``B = U diag(p x)^-1/2 G sqrt(3)/2`` (``G`` with
orthonormal columns) keeps ``Q = U diag(p / x) U' - P* B B' P*`` positive definite
(``diag(p/x)^1/2 (I - 3/4 G G') diag(p/x)^1/2`` in the basis ``U``), ``R = I`` and
``K* = B' P*``; then ``(A, B, Q, R)`` has the stabilizing Riccati solution ``P*`` exactly.
Without the slow pairs, ``A = A_cl + B K*`` is similar to
``diag(x)^-1/2 (G G' 3/4 - I/2) diag(x)^-1/2``: ``m`` unstable and ``n - m`` stable
open-loop modes (the factor ``1/2`` instead of ``3/4`` would leave ``m`` modes at exactly 0).
Finally the states are rescaled, ``x = D z``: ``A -> D A D^-1``,
``B -> D B``, ``Q -> D^-1 Q D^-1``, ``Omega = D^2`` (the cost of every gain is kept), so
``cond(D P* D) = cond_P`` and ``cond(D^-1 X* D^-1) = cond_X`` while the entries of ``P*``
and ``X*`` spread over the decades of ``D``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ProblemError
from .problem import LQRProblem
from .validation import oracle_bytes, require_memory

__all__ = ["hard_system", "rescaled"]


def hard_system(n: int, m: int, seed: int = 0, *, cond_P: float = 1e3, cond_X: float = 1e3,
                state_scales: float = 1.0, slow_modes: int = 0, damping: float = 0.01) -> LQRProblem:
    """A random stabilizable system whose optimum has prescribed conditioning.

    Parameters
    ----------
    n, m : int
        State and input dimensions, ``1 <= m <= n``.
    seed : int
        Every draw comes from ``numpy.random.default_rng([seed, n, m])``: the same
        arguments give the same system, bit for bit.
    cond_P : float
        Condition number of the optimal value matrix in balanced coordinates,
        ``cond(D P* D)``; its eigenvalues are log-spaced over ``[1, cond_P]``.
    cond_X : float
        Condition number of the optimal state covariance in balanced coordinates,
        ``cond(D^-1 X* D^-1)`` (``Omega = D^2``): its eigenvalues are log-spaced over
        ``[1/2, cond_X/2]``, so the optimal closed-loop decay rates span ``[1/cond_X, 1]``.
    state_scales : float
        Ratio of the largest to the smallest state scale: ``D`` has log-spaced diagonal
        entries ``state_scales^(-1/2) ... state_scales^(1/2)`` in random order.
    slow_modes : int
        Number of lightly damped oscillatory pairs of the optimal closed loop, all at the
        slowest decay rate ``1/cond_X`` with damping ratio ``damping``; ``2 slow_modes <= n - 2``.
    damping : float
        Damping ratio of the slow modes, ``0 < damping <= 1``.

    Returns
    -------
    LQRProblem
        With ``R = I``, ``x0_cov = D^2`` and ``K0`` a Bass gain (``beta`` = spectral abscissa
        of ``A`` + 1) when ``A`` is not Hurwitz, mapped covariantly (``K0 = K0_z D^-1``).
    """
    if not (n >= 1 and 1 <= m <= n):
        raise ProblemError(f"need 1 <= m <= n, got n={n}, m={m}")
    if not (cond_P >= 1 and cond_X >= 1 and state_scales >= 1):
        raise ProblemError("cond_P, cond_X and state_scales must be >= 1")
    if slow_modes < 0 or (slow_modes and 2 * slow_modes > n - 2) or not 0 < damping <= 1:
        raise ProblemError(f"need 0 <= 2 slow_modes <= n - 2 and 0 < damping <= 1, got {slow_modes}, {damping}")
    require_memory(oracle_bytes(n, m), f"a hard system with n = {n} states")
    rng = np.random.default_rng([seed, n, m])
    U = np.linalg.qr(rng.standard_normal((n, n)))[0]
    G = np.linalg.qr(rng.standard_normal((n, m)))[0]
    k = 2 * slow_modes  # the oscillatory pairs take the last k slots: the slowest rate, a shared p
    nk = n - k
    p, x = np.empty(n), np.empty(n)
    p[:nk] = np.geomspace(1.0, cond_P, nk)[rng.permutation(nk)]
    x[:nk] = 0.5 * np.geomspace(1.0, cond_X, nk)[rng.permutation(nk)]
    x[nk:] = 0.5 * cond_X
    p[nk:] = np.repeat(cond_P ** rng.uniform(0.0, 1.0, slow_modes), 2)
    a = -0.5 / x
    T = np.diag(a)
    for j in range(nk, n, 2):
        omega = abs(a[j]) * np.sqrt(1.0 - damping**2) / damping
        T[j, j + 1], T[j + 1, j] = omega, -omega
    Bz = U @ (G * (np.sqrt(0.75 / (p * x)))[:, None])
    Pz = (U * p) @ U.T
    Kz = Bz.T @ Pz
    Az = U @ T @ U.T + Bz @ Kz
    Qz = (U * (p / x)) @ U.T - Kz.T @ Kz
    d = np.geomspace(state_scales**-0.5, state_scales**0.5, n)[rng.permutation(n)]
    A = d[:, None] * Az / d[None, :]
    B = d[:, None] * Bz
    Q = Qz / np.outer(d, d)
    Q = 0.5 * (Q + Q.T)
    K0 = None
    if np.max(np.linalg.eigvals(Az).real) >= 0:  # Bass in balanced coordinates, then K0 = K0_z D^-1
        import scipy.linalg as sla

        beta = max(0.0, float(np.max(np.linalg.eigvals(Az).real))) + 1.0
        W = sla.solve_continuous_lyapunov(Az + beta * np.eye(n), 2.0 * Bz @ Bz.T)
        K0 = np.linalg.solve(0.5 * (W + W.T), Bz).T / d[None, :]
    tag = f"hard-n{n}-m{m}-s{seed}"
    return LQRProblem(A, B, Q, np.eye(m), x0_cov=np.diag(d**2), K0=K0, name=tag,
                      title=f"Hard random system n={n}, m={m}, cond P* {cond_P:g}, cond X* {cond_X:g}, "
                      f"state scales {state_scales:g}, {slow_modes} slow pairs (damping {damping:g})",
                      source="generated (azopg.model.hard.hard_system, inverse design)")


def rescaled(problem: LQRProblem, d: np.ndarray, e: np.ndarray | None = None) -> LQRProblem:
    """``problem`` in other units: states ``D x`` and inputs ``E u`` (``D = diag(d)``, ``E = diag(e)``,
    default ``E = I``): ``A -> D A D^-1``, ``B -> D B E^-1``, ``Q -> D^-1 Q D^-1``, ``R -> E^-1 R E^-1``,
    ``x0_cov -> D x0_cov D``, ``K0 -> E K0 D^-1``. The same LQR problem: a gain ``K`` of ``problem``
    is ``E K D^-1`` here, with the same cost. A unit-invariant learner takes the same steps on both.

    Examples
    --------
    >>> import numpy as np, azopg
    >>> from azopg.model.hard import rescaled
    >>> p = azopg.get_problem("he1")
    >>> q = rescaled(p, np.array([1e-3, 1.0, 1e3, 1.0]))
    >>> bool(np.isclose(q.optimal_cost, p.optimal_cost, rtol=1e-9))
    True
    """
    d = np.asarray(d, dtype=float)
    e = np.ones(problem.m) if e is None else np.asarray(e, dtype=float)
    return LQRProblem(d[:, None] * problem.A / d[None, :], d[:, None] * np.asarray(problem.B) / e[None, :],
                      problem.Q / np.outer(d, d), problem.R / np.outer(e, e), x0_cov=np.outer(d, d) * problem.x0_cov,
                      K0=e[:, None] * np.asarray(problem.K0) / d[None, :], name=f"{problem.name}-rescaled",
                      discrete_time=problem.discrete_time)
