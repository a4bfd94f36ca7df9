"""What a user would run instead of azopg on a noisy linear plant: certainty equivalence and LSPI.

Both learn from the same kind of data: episodes of the sampled-data plant in the form of
:class:`azopg.plants.envs.LinearEnv` (exact zero-order hold at ``dt``, the reward minus the exact
integral of ``x'Qx + u'Ru`` over a step, process noise added after each step as
``N(0, dt W)``, the observation ``y = x + v`` with ``v ~ N(0, V)`` drawn afresh at every step),
each started from ``x0 ~ N(0, Omega)`` and driven by the exploring policy
``u_k = -K0 y_k + sigma_u e_k``, ``e_k ~ N(0, I)``. The learners never see ``x``, ``A``, ``B``
or the noise, only ``(y_k, u_k, c_k, y_{k+1})``; both are given ``Q`` and ``R`` (certainty
equivalence needs them; LSTD-Q reads the cost off the rewards).

* :func:`certainty_equivalent` (Dean, Mania, Matni, Recht & Tu): least squares of ``y_{k+1}`` on
  ``(y_k, u_k)`` gives ``(Ad, Bd)``; then either the continuous-time model by the matrix
  logarithm of ``[[Ad, Bd], [0, I]]`` and the CARE (``"care"``), or the DARE of the identified
  sampled-data problem, with its exact zero-order-hold cost weights (``"dare"``: the best
  sampled-data gain of the model, whose continuous-time gap has a floor of order ``dt^2``).
  Least squares is what Dean et al. do (they observe the state); under measurement noise it is
  biased (errors in variables), so ``iv=True`` replaces it by instrumental variables.
* :func:`lspi` (Krauth, Tu & Recht 2019): LSTD-Q for the average cost with quadratic features of
  ``z = (y, u)`` and a constant (``c_k = (phi(z_k) - phi(z'_{k+1}))' q + lambda``,
  ``z'_{k+1} = (y_{k+1}, -K y_{k+1})``, instruments ``(phi(z_k), 1)``), then the greedy gain
  ``K = H_uu^{-1} H_ux``, repeated on the same data (their analysis draws fresh data for each
  evaluation; at a fixed budget every evaluation here gets all of it). The constant feature stands
  in for their term of the known noise covariance.

Everything is accumulated as sufficient statistics (:class:`Statistics`), so budgets of rollouts
are nested: the first ``N`` episodes of one stream of data.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from azopg.method.regression import _unvech, _vech_coefficients
from azopg.model.problem import LQRProblem
from azopg.plants.envs import zoh_matrices


class Statistics:
    """Sufficient statistics of the transitions ``(y, u, c, y')`` seen so far.

    Parameters
    ----------
    n, m : int
        State and input dimensions.
    """

    def __init__(self, n: int, m: int) -> None:
        d = n + m
        p = d * (d + 1) // 2 + 1  # quadratic features of z = (y, u) and a constant
        self.n, self.m, self.transitions = n, m, 0
        self.ZZ = np.zeros((d, d))  # sum z z'
        self.ZY = np.zeros((d, n))  # sum z y'^T
        self.FF = np.zeros((p, p))  # sum f f', f = (phi(z), 1)
        self.Fc = np.zeros(p)  # sum f c
        self.FYY = np.zeros((p, n, n))  # sum f (x) y' y'^T
        self.IZ = np.zeros((d, d))  # sum zi z', instruments zi = (y_{k-1}, u_k + K0 y_k)
        self.IY = np.zeros((d, n))  # sum zi y'^T

    def add(self, Y: np.ndarray, U: np.ndarray, C: np.ndarray, Y1: np.ndarray, Zi: np.ndarray | None = None) -> None:
        """Add transitions: rows of ``Y`` (b, n), ``U`` (b, m), costs ``C`` (b,), next observations ``Y1``, and
        optionally instruments ``Zi`` (b, n + m) for :func:`identify` with ``iv=True``."""
        Z = np.hstack([Y, U])
        F = np.hstack([_vech_coefficients(Z[:, :, None] * Z[:, None, :]), np.ones((len(Z), 1))])  # f'(H, l) = z'Hz + l
        self.ZZ += Z.T @ Z
        self.ZY += Z.T @ Y1
        self.FF += F.T @ F
        self.Fc += F.T @ C
        self.FYY += np.einsum("ka,ki,kj->aij", F, Y1, Y1)
        self.transitions += len(Z)
        if Zi is not None:
            self.IZ += Zi.T @ Z
            self.IY += Zi.T @ Y1


def simulate(stats: Statistics, problem: LQRProblem, K0: np.ndarray, rollouts: range, steps: int, dt: float,
             W: np.ndarray, V: np.ndarray, sigma_u: float, seed: int) -> None:
    """Run the episodes numbered ``rollouts`` (all at once; ``steps`` steps each) and add their transitions.

    The plant is :class:`~azopg.plants.envs.LinearEnv`'s: ``x' = Ad x + Bd u + w``, ``w ~ N(0, dt W)``,
    reward ``-[x; u]' Wc [x; u]`` (exact over the step), observation ``y = x + v``, ``v ~ N(0, V)``.
    Episode ``i`` draws from ``default_rng([seed, i])``: the first ``N`` episodes are the same however
    they are split into calls.
    """
    n, m = problem.n, problem.m
    Ad, Bd, Wc = zoh_matrices(problem.A, problem.B, problem.Q, problem.R, dt)
    draws = [np.random.default_rng([seed, i]).standard_normal((steps + 1, 2 * n + m)) for i in rollouts]
    G = np.stack(draws, axis=1)  # (steps + 1, b, [x0 or w | v | e])
    Lw, Lv = _factor(dt * W), _factor(V)
    x = G[0, :, :n] @ np.linalg.cholesky(problem.x0_cov).T
    y = x + G[0, :, n : 2 * n] @ Lv.T
    y_lag = None
    for k in range(1, steps + 1):
        e = sigma_u * G[k, :, 2 * n :]
        u = -y @ K0.T + e
        z = np.hstack([x, u])
        c = np.einsum("ki,ij,kj->k", z, Wc, z)
        x = x @ Ad.T + u @ Bd.T + G[k, :, :n] @ Lw.T
        y1 = x + G[k, :, n : 2 * n] @ Lv.T
        stats.add(y, u, c, y1, None if y_lag is None else np.hstack([y_lag, e]))
        y_lag, y = y, y1


def _factor(M: np.ndarray) -> np.ndarray:
    """A square root ``L`` with ``L L' = M`` for a symmetric positive semidefinite ``M`` (zero allowed)."""
    w, U = np.linalg.eigh(0.5 * (M + M.T))
    return U * np.sqrt(np.clip(w, 0.0, None))


def identify(stats: Statistics, iv: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``(Ad, Bd)`` from the transitions; ``iv``: instrumental variables ``(y_{k-1}, u_k + K0 y_k)``
    (the previous observation and the exploration: independent of ``v_k``, ``v_{k+1}`` and ``w_k``, so
    consistent under measurement noise, where least squares is not: errors in variables)."""
    if iv:
        Theta = np.linalg.solve(stats.IZ, stats.IY)
    else:
        Theta = np.linalg.lstsq(stats.ZZ, stats.ZY, rcond=None)[0]  # (d, n): y' = Theta' z
    return Theta[: stats.n].T, Theta[stats.n :].T


def certainty_equivalent(stats: Statistics, Q: np.ndarray, R: np.ndarray, dt: float, form: str,
                         iv: bool = False) -> np.ndarray:
    """The certainty-equivalent gain of the model :func:`identify` gives: ``form`` ``"care"`` or ``"dare"``."""
    Ad, Bd = identify(stats, iv)
    n, m = Bd.shape
    M = np.zeros((n + m, n + m))
    M[:n, :n], M[:n, n:], M[n:, n:] = Ad, Bd, np.eye(m)
    F = np.real(sla.logm(M)) / dt  # [[A, B], [0, 0]] of the continuous-time model
    A, B = F[:n, :n], F[:n, n:]
    if form == "care":
        P = sla.solve_continuous_are(A, B, Q, R)
        return np.linalg.solve(R, B.T @ P)
    Ad2, Bd2, Wc = zoh_matrices(A, B, Q, R, dt)
    Qd, Sd, Rd = Wc[:n, :n], Wc[:n, n:], Wc[n:, n:]
    P = sla.solve_discrete_are(Ad2, Bd2, Qd, Rd, s=Sd)
    return np.linalg.solve(Rd + Bd2.T @ P @ Bd2, Bd2.T @ P @ Ad2 + Sd.T)


def lstdq(stats: Statistics, K: np.ndarray) -> np.ndarray:
    """LSTD-Q estimate of the Q-function matrix ``H`` of ``u = -K y`` (average cost), shape (n + m, n + m)."""
    n, m = stats.n, stats.m
    M = np.vstack([np.eye(n), -K])  # z' = M y'
    G = np.einsum("ai,kij,bj->kab", M, stats.FYY, M)  # sum f (x) z' z'^T
    Fpsi = np.zeros_like(stats.FF)
    Fpsi[:, :-1] = _vech_coefficients(G)  # sum f psi', psi = (phi(z'), 0)
    theta = np.linalg.lstsq(stats.FF - Fpsi, stats.Fc, rcond=None)[0]
    return _unvech(theta[:-1], n + m)


def lspi(stats: Statistics, K0: np.ndarray, iterations: int = 20, tol: float = 1e-8) -> tuple[np.ndarray, int]:
    """Offline policy iteration by :func:`lstdq` from ``K0``: the last gain and the iterations made.

    Stops early when the gain changes by less than ``tol`` (relative) or ``H_uu`` is not positive
    definite (the last gain is returned).
    """
    n = stats.n
    K = K0
    for it in range(1, iterations + 1):
        H = lstdq(stats, K)
        Huu, Hux = H[n:, n:], H[n:, :n]
        if np.any(np.linalg.eigvalsh(0.5 * (Huu + Huu.T)) <= 0):
            return K, it
        K_new = np.linalg.solve(Huu, Hux)
        done = np.linalg.norm(K_new - K) <= tol * np.linalg.norm(K_new)
        K = K_new
        if done:
            return K, it
    return K, iterations
