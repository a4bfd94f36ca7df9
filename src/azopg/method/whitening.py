"""Whitening factors of the natural (Gauss--Newton) zero-order estimate.

With directions ``U = L Z M`` (``Z`` uniform on the ``sqrt(mn)`` sphere, so
``E[vec Z vec Z'] = I``), the two-point estimate has mean
``E[<grad f, U> U] = L L' grad f M' M``. With ``L = R^-1/2`` and ``M = c Xh^-1/2``
(``Xh`` an estimate of the state covariance ``X_K``) that is
``c^2 R^-1 grad f Xh^-1 = 2 c^2 R^-1 E_K X_K Xh^-1 ~ 2 c^2 R^-1 E_K``: dividing by the
known ``c^2`` gives an estimate of the Gauss--Newton direction ``2 R^-1 E_K``, and a step of
0.5 along it is a Kleinman step ``K - R^-1 E_K``. The scalar
``c^2 = mn / (tr R^-1 tr Xh^-1)`` makes ``E ||U||^2 = mn``, as for plain directions, so
the calibrated radius keeps its meaning. A stale ``Xh`` only changes the preconditioner
(the mean stays a descent direction), never the unbiasedness for the scaled
``R^-1 grad f Xh^-1``.

:class:`Whitening` keeps ``Xh`` as the mean moment of the rollouts of the last ``window``
reports: ``Xh = sum S / (number of rollouts)`` with ``S = int_0^tau x x' dt`` of rollouts
from ``x0 ~ Omega`` -- the finite-horizon ``X_K(tau)`` of gains near ``K``.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple, cast

import numpy as np

__all__ = ["Factors", "Whitening", "inverse_sqrt"]

#: Eigenvalues of ``Xh`` below ``FLOOR * lambda_max`` are raised to it (a direction no
#: rollout has excited yet is not amplified without bound).
FLOOR = 1e-8


class Factors(NamedTuple):
    """Directions ``L Z M``; ``scale = c^2`` divides the estimate (module docstring)."""

    L: np.ndarray
    M: np.ndarray
    scale: float


def inverse_sqrt(X: np.ndarray, floor: float = FLOOR) -> np.ndarray:
    """Symmetric ``X^-1/2`` of a symmetric positive semi-definite ``X`` (eigenvalues floored
    at ``floor * lambda_max``)."""
    lam, V = np.linalg.eigh(0.5 * (X + X.T))
    lam = np.maximum(lam, floor * max(float(lam[-1]), np.finfo(float).tiny))
    return (V / np.sqrt(lam)) @ V.T


class Whitening:
    """Running estimate ``Xh`` of ``X_K`` from rollout moments, and the factors it gives.

    Parameters
    ----------
    R : ndarray, shape (m, m)
        Input weight (the identity if unknown: still a valid preconditioner).
    n : int
        State dimension.
    window : int
        Reports whose moments make up ``Xh``.
    """

    def __init__(self, R: np.ndarray, n: int, window: int = 8) -> None:
        self.R = np.asarray(R, dtype=float)
        self.L = inverse_sqrt(self.R, floor=0.0)
        self.n = n
        self._trRinv = float(np.sum(self.L * self.L))
        self._recent: deque[tuple[np.ndarray, int]] = deque(maxlen=window)

    def add(self, S_sum: np.ndarray | None, count: int) -> None:
        """Moments of ``count`` rollouts (their summed ``S``); ignored if there are none."""
        if S_sum is not None and count > 0 and np.isfinite(S_sum).all():
            self._recent.append((np.array(S_sum, dtype=float), int(count)))

    def X(self) -> np.ndarray | None:
        """The estimate ``Xh`` (``None`` before any moments arrived)."""
        if not self._recent:
            return None
        total = cast(np.ndarray, sum(S for S, _ in self._recent))
        return total / sum(c for _, c in self._recent)

    def curvature(self, D: np.ndarray) -> float:
        """``tr(Xh D'R D)``: the second-order cost change of a step ``D`` (0 before any moments)."""
        X = self.X()
        return 0.0 if X is None else float(np.sum((D.T @ self.R @ D) * X))

    def factors(self) -> Factors:
        """``L = R^-1/2``, ``M = c Xh^-1/2`` (``M = c I`` before any moments) and ``c^2``."""
        X = self.X()
        Mu = np.eye(self.n) if X is None or not np.trace(X) > 0 else inverse_sqrt(X)
        scale = self.L.shape[0] * self.n / (self._trRinv * float(np.sum(Mu * Mu)))
        return Factors(self.L, np.sqrt(scale) * Mu, scale)

    def load(self, X: np.ndarray | None) -> None:
        """Restart from a saved ``Xh`` (:meth:`X`), as one report's worth."""
        self._recent.clear()
        if X is not None:
            self._recent.append((np.asarray(X, dtype=float), 1))
