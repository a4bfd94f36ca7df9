"""Zero-order gradient estimators of the LQR cost from rollout costs only.

Directions ``U_i`` are uniform on the sphere of radius ``sqrt(m n)`` in ``R^{m x n}``,
so ``E[<G, U> U] = G`` for any matrix ``G``. With ``x_i`` drawn from the initial-state
distribution:

* two-point (Mohammadi et al. 2022):
  ``g = 1/(2 r N) sum_i [f_tau(x_i; K + r U_i) - f_tau(x_i; K - r U_i)] U_i``
* one-point: ``g = 1/(r N) sum_i f_tau(x_i; K + r U_i) U_i``

Both are unbiased for the gradient of the smoothed finite-horizon cost. With whitening
factors ``L`` (m x m) and ``M`` (n x n) the directions are ``U_i = L Z_i M``, ``Z_i`` as
above; since ``E[vec Z vec Z'] = I``, ``E[<G, U> U] = L L' G M' M`` (with ``L = R^-1/2`` and
``M = c X^-1/2`` a scaled Gauss--Newton direction, see :mod:`azopg.method.whitening`). The
directions are drawn *first* from the task's generator, so a master that knows the
generator's seed can rebuild them from the scalar cost differences alone
(:func:`rebuild_estimate`).

References
----------
H. Mohammadi, A. Zare, M. Soltanolkotabi, M. R. Jovanovic, "Convergence and sample
complexity of gradient methods for the model-free linear-quadratic regulator
problem", IEEE Trans. Automatic Control 67(5), 2022.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..plants.base import Plant, failed, rollout_of

__all__ = ["Estimate", "sphere_directions", "estimate_gradient", "rebuild_estimate"]

Method = Literal["two-point", "one-point"]


@dataclass
class Estimate:
    """A zero-order gradient estimate and what it cost.

    Attributes
    ----------
    grad : ndarray, shape (m, n)
        The estimate (zeros if every sample blew up).
    weights : ndarray, shape (N,)
        Per-direction scalars ``w_i`` with ``grad = sum_i w_i U_i`` -- all a master
        needs, with the seed, to rebuild ``grad`` (communication-light mode).
    center_cost : float
        Mean rollout cost at ``K`` estimated from the samples (two-point: the mean of
        the +/- costs), a by-product for monitoring.
    rollouts : int
        Rollouts spent.
    blown_up : int
        Samples discarded because a rollout blew up.
    S : ndarray, shape (n, n), or None
        With ``moments=True``: the sum of ``int_0^tau x x' dt`` over the rollouts that did not
        blow up (``S_count`` of them).
    """

    grad: np.ndarray
    weights: np.ndarray
    center_cost: float
    rollouts: int
    blown_up: int
    S: np.ndarray | None = None
    S_count: int = 0


def sphere_directions(rng: np.random.Generator, N: int, m: int, n: int) -> np.ndarray:
    """``N`` matrices uniform on the sphere of radius ``sqrt(m n)`` in ``R^{m x n}``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws (``N m n`` standard normals, normalized).
    N, m, n : int
        ``N`` directions, each an ``m x n`` matrix.

    Returns
    -------
    ndarray, shape (N, m, n)
        The directions ``U_i`` of the zero-order estimate, ``||U_i||_F = sqrt(m n)``, so
        that ``E[U_i U_i']`` is the identity on ``R^{m x n}``.

    Examples
    --------
    >>> import numpy as np, azopg
    >>> U = azopg.sphere_directions(np.random.default_rng(0), 1000, 2, 3)
    >>> U.shape
    (1000, 2, 3)
    >>> bool(np.allclose(np.linalg.norm(U, axis=(1, 2)), np.sqrt(6)))
    True
    """
    G = rng.standard_normal((N, m, n))
    norms = np.sqrt(np.sum(G * G, axis=(1, 2), keepdims=True))
    return G * (np.sqrt(m * n) / norms)


def _directions(rng: np.random.Generator, N: int, m: int, n: int, L: np.ndarray | None,
                M: np.ndarray | None) -> np.ndarray:
    Z = sphere_directions(rng, N, m, n)
    if L is not None:
        Z = np.asarray(L, dtype=float) @ Z
    if M is not None:
        Z = Z @ np.asarray(M, dtype=float)
    return Z


def estimate_gradient(
    plant: Plant,
    K: np.ndarray,
    *,
    r: float,
    N: int,
    tau: float,
    rng: np.random.Generator,
    method: Method = "two-point",
    L: np.ndarray | None = None,
    M: np.ndarray | None = None,
    moments: bool = False,
) -> Estimate:
    """Zero-order estimate of the gradient of the cost at ``K``.

    Parameters
    ----------
    plant : Plant
        Supplies initial states and rollout costs; nothing else is used.
    K : ndarray, shape (m, n)
        Gain at which to estimate.
    r : float
        Smoothing radius (> 0); perturbations are ``r U_i`` with ``||U_i|| = sqrt(mn)``.
    N : int
        Number of directions (two-point: ``2 N`` rollouts; one-point: ``N``).
    tau : float
        Rollout horizon.
    rng : numpy.random.Generator
        Source of the directions (drawn first) and then of the initial states.
    method : {"two-point", "one-point"}
    L, M : ndarray, shape (m, m) and (n, n), optional
        Whitening factors: directions ``L Z_i M`` (module docstring).
    moments : bool
        Also sum the state moments ``S`` of the rollouts (the plant must return them).

    Returns
    -------
    Estimate
        Samples whose rollouts blew up are dropped (weight 0) and counted.

    Examples
    --------
    The estimate from 500 directions at he1's ``K0``, against the exact gradient:

    >>> import numpy as np, azopg
    >>> problem = azopg.get_problem("he1")
    >>> plant = azopg.LinearPlant(problem)
    >>> rng = np.random.default_rng(0)
    >>> est = azopg.estimate_gradient(plant, problem.K0, r=1e-3, N=500, tau=50.0, rng=rng)
    >>> est.grad.shape, est.rollouts, est.blown_up
    ((2, 4), 1000, 0)
    >>> g = problem.gradient(problem.K0)
    >>> cosine = np.sum(est.grad * g) / (np.linalg.norm(est.grad) * np.linalg.norm(g))
    >>> bool(cosine > 0.9)
    True
    """
    K = np.asarray(K, dtype=float)
    m, n = K.shape
    U = _directions(rng, N, m, n, L, M)
    x0 = plant.initial_states(rng, N)
    extra = {"moments": True} if moments else {}
    if method == "two-point":
        rU = r * U
        # common random numbers: K + rU_i and K - rU_i see the same noise path (a noisy plant that can)
        rows = np.concatenate([np.arange(N), np.arange(N)])
        res = rollout_of(plant, np.concatenate([K + rU, K - rU]), np.concatenate([x0, x0]), tau, moments, rows)
        cost = np.asarray(res.cost, dtype=float)
        cp, cm = cost[:N], cost[N:]
        bad = failed(res)
        ok = ~(bad[:N] | bad[N:])
        with np.errstate(invalid="ignore", over="ignore"):  # failed samples (inf - inf) get weight 0
            weights = np.where(ok, (cp - cm) / (2.0 * r * N), 0.0)
            center = 0.5 * (cp + cm)
        rollouts = 2 * N
    elif method == "one-point":
        res = plant.rollout(K + r * U, x0, tau, **extra)
        ok = ~failed(res)
        cost = np.asarray(res.cost, dtype=float)
        with np.errstate(invalid="ignore", over="ignore"):
            weights = np.where(ok, cost / (r * N), 0.0)
        center = cost
        rollouts = N
    else:
        raise ValueError(f"unknown estimator method {method!r}")
    nok = int(np.count_nonzero(ok))
    if nok < N and nok > 0:
        weights = weights * (N / nok)  # average over the samples that survived
    grad = (weights @ U.reshape(N, m * n)).reshape(m, n)
    center_cost = float(center[ok].sum()) / nok if nok else float("inf")
    S_sum, S_count = None, 0
    if moments and res.S is not None:
        fine = ~failed(res)
        S_sum, S_count = res.S[fine].sum(axis=0), int(np.count_nonzero(fine))
    return Estimate(grad, weights, center_cost, rollouts, N - nok, S_sum, S_count)


def rebuild_estimate(weights: np.ndarray, rng: np.random.Generator, m: int, n: int,
                     L: np.ndarray | None = None, M: np.ndarray | None = None) -> np.ndarray:
    """Rebuild ``sum_i w_i U_i`` from the task's generator (fresh, same seed) and factors."""
    N = len(weights)
    U = _directions(rng, N, m, n, L, M)
    return (np.asarray(weights, dtype=float) @ U.reshape(N, m * n)).reshape(m, n)
