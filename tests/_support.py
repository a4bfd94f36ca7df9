"""Independent reference computations shared by the tests.

Nothing here calls the code under test to produce a reference value: costs come from
a Kronecker-product solve of the Lyapunov equation, rollouts from RK4, statistics from
scipy.stats.
"""

from __future__ import annotations

import numpy as np
import scipy.stats as st

import azopg


def random_spd(rng: np.random.Generator, n: int, lo: float = 0.5) -> np.ndarray:
    """A random symmetric positive definite matrix with eigenvalues >= lo."""
    G = rng.standard_normal((n, n))
    return G @ G.T / n + lo * np.eye(n)


def random_problem(rng: np.random.Generator, n: int, m: int, *, abscissa: float = -0.5,
                   general_weights: bool = True) -> azopg.LQRProblem:
    """A random Hurwitz system (spectral abscissa ``abscissa``), random weights."""
    A = rng.standard_normal((n, n)) / np.sqrt(n)
    A -= (np.max(np.linalg.eigvals(A).real) - abscissa) * np.eye(n)
    B = rng.standard_normal((n, m))
    if general_weights:
        return azopg.LQRProblem(A, B, random_spd(rng, n, 0.1), random_spd(rng, m, 0.5),
                                x0_cov=random_spd(rng, n, 0.5))
    return azopg.LQRProblem(A, B)


def stiff_problem(seed: int, n: int = 5, m: int = 2, slow: float = 0.01, fast: float = 50.0,
                  gain: float = 1e-3) -> azopg.LQRProblem:
    """Symmetric A with eigenvalues geometrically spaced in [-fast, -slow], a small gain K0."""
    rng = np.random.default_rng(seed)
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = V @ np.diag(-np.geomspace(slow, fast, n)) @ V.T
    B = rng.standard_normal((n, m))
    return azopg.LQRProblem(A, B, K0=gain * rng.standard_normal((m, n)))


def kron_value_matrix(p: azopg.LQRProblem, K: np.ndarray) -> np.ndarray:
    """P(K) from ``(I kron Acl' + Acl' kron I) vec P = -vec(Q + K'RK)`` (dense solve)."""
    K = np.asarray(K, dtype=float)
    n = p.n
    Acl = np.asarray(p.A) - np.asarray(p.B) @ K
    Qk = np.asarray(p.Q) + K.T @ np.asarray(p.R) @ K
    L = np.kron(np.eye(n), Acl.T) + np.kron(Acl.T, np.eye(n))
    P = np.linalg.solve(L, -Qk.reshape(-1, order="F")).reshape((n, n), order="F")
    return 0.5 * (P + P.T)


def kron_cost(p: azopg.LQRProblem, K: np.ndarray) -> float:
    """Exact cost ``tr(P(K) Omega)`` without scipy's Lyapunov solver."""
    return float(np.trace(kron_value_matrix(p, K) @ np.asarray(p.x0_cov)))


def rk4_rollout_costs(p: azopg.LQRProblem, K: np.ndarray, x0: np.ndarray, tau: float,
                      steps: int) -> np.ndarray:
    """RK4 on the augmented state ``[x; c]``, ``dx/dt = (A - B K) x``, ``dc/dt = x'(Q + K'RK)x``.

    ``K`` is (b, m, n), ``x0`` is (b, n); the loop runs over time steps, vectorized over b.
    """
    A, B, Q, R = (np.asarray(M) for M in (p.A, p.B, p.Q, p.R))
    Acl = A - B @ K
    Qk = Q + np.swapaxes(K, 1, 2) @ R @ K

    def f(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.einsum("bij,bj->bi", Acl, x), np.einsum("bi,bij,bj->b", x, Qk, x)

    h = tau / steps
    x = np.array(x0, dtype=float)
    c = np.zeros(x.shape[0])
    for _ in range(steps):
        k1x, k1c = f(x)
        k2x, k2c = f(x + 0.5 * h * k1x)
        k3x, k3c = f(x + 0.5 * h * k2x)
        k4x, k4c = f(x + h * k3x)
        x = x + h / 6 * (k1x + 2 * k2x + 2 * k3x + k4x)
        c = c + h / 6 * (k1c + 2 * k2c + 2 * k3c + k4c)
    return c


def hotelling(samples: np.ndarray, target: np.ndarray) -> float:
    """Hotelling's ``T^2 = M (xbar - mu)' S^-1 (xbar - mu)`` of M samples (flattened) against ``mu``."""
    X = samples.reshape(samples.shape[0], -1)
    diff = X.mean(axis=0) - np.ravel(target)
    S = np.atleast_2d(np.cov(X, rowvar=False))
    return float(X.shape[0] * diff @ np.linalg.solve(S, diff))


def hotelling_threshold(M: int, d: int, level: float = 0.999) -> float:
    """Exact ``level`` quantile of Hotelling's T^2 for M iid Gaussian-mean samples in R^d:
    ``d (M-1)/(M-d) F(d, M-d)`` (-> ``chi2(d)`` as M grows; by the CLT it applies to any
    finite-variance samples at the sizes used here)."""
    return d * (M - 1) / (M - d) * float(st.f.ppf(level, d, M - d))


class BlackBoxPlant:
    """A plant seen only through the :class:`azopg.Plant` protocol (wraps a LinearPlant,
    hiding ``evaluation_states`` and the problem)."""

    def __init__(self, problem: azopg.LQRProblem) -> None:
        self._inner = azopg.LinearPlant(problem)
        self.n = problem.n
        self.m = problem.m
        self.calls = 0

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self._inner.initial_states(rng, size)

    def rollout(self, K: np.ndarray, x0: np.ndarray, tau: float) -> azopg.RolloutResult:
        self.calls += 1
        return self._inner.rollout(K, x0, tau)


class Interrupter:
    """A progress callback that interrupts the run at its ``at``-th call: after its ``at``-th report,
    as the tests call progress after every report (``conftest.progress_after_every_report``)."""

    def __init__(self, at: int) -> None:
        self.calls, self.at = 0, at

    def __call__(self, runlog) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
