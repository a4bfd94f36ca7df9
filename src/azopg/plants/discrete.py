"""The exact discrete-time linear plant, and :func:`plant_for`, the exact plant of any problem.

:class:`DiscreteLinearPlant` evaluates rollouts of ``x_{t+1} = A x_t + B u_t``, ``u_t = -K x_t``
*exactly* (to rounding) and in batches. The horizon ``tau`` is a number of steps,
``T = max(1, round(tau))``; with ``Acl = A - B K`` and ``Qk = Q + K'RK`` the cost is

    f_T(x0; K) = sum_{t<T} x_t'Qk x_t = x0' M(T) x0,   M(T) = sum_{t<T} Acl'^t Qk Acl^t,

and the moments are ``S(T) = sum_{t<T} x_t x_t'`` and ``x_T = Acl^T x0``. Runs of ``T1`` and
then ``T2`` steps compose as

    M(T1 + T2) = M(T1) + (Acl^T1)' M(T2) Acl^T1,   S(T1 + T2) = S(T1) + Acl^T1 S(T2) (Acl^T1)'

(the powers of ``Acl`` commute, so ``S(T2)`` is that of the same ``x0``); with ``T1 = T2``
this is the doubling ``M(2T) = M(T) + (Acl^T)' M(T) Acl^T``. ``T`` is built from its binary
digits -- ``log2 T`` doublings, each adding only positive semi-definite terms, so the
relative accuracy is kept at any horizon, as for the continuous plant -- vectorized over
the batch. Initial states, evaluation states, chunking and the blow-up rule are those of
:class:`~azopg.plants.linear.LinearPlant`.
"""

from __future__ import annotations

import math

import numpy as np

from ..model.problem import LQRProblem
from .linear import LinearPlant
from .noisy import NoisyLinearPlant

__all__ = ["DiscreteLinearPlant", "plant_for", "steps"]


def steps(tau: float) -> int:
    """The number of steps ``max(1, round(tau))`` of a discrete-time horizon ``tau``.

    Raises
    ------
    ValueError
        If ``tau`` is not a finite number > 0.
    """
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a finite number > 0, got {tau}")
    return max(1, round(tau))


class DiscreteLinearPlant(LinearPlant):
    """Exact batched rollouts of ``x_{t+1} = A x_t + B u_t``, ``u_t = -K x_t``, over
    ``round(tau)`` steps (module docstring); ``S = sum_{t<T} x_t x_t'``, ``x_end = x_T``.

    Parameters
    ----------
    problem : LQRProblem
        A discrete-time problem.

    Raises
    ------
    ProblemError
        As for :class:`~azopg.plants.linear.LinearPlant`.
    ValueError
        If ``problem`` is a continuous-time problem.
    """

    def __init__(self, problem: LQRProblem) -> None:
        if not problem.discrete_time:
            raise ValueError("DiscreteLinearPlant needs a discrete-time problem (use LinearPlant)")
        super().__init__(problem)

    def __repr__(self) -> str:
        return f"DiscreteLinearPlant({self.problem.name!r}, n={self.n}, m={self.m})"

    def _intervals(self, tau: float, k: int) -> list[tuple[float, int]]:
        """Snapshot intervals of whole steps: ``T // L`` of ``L = ceil(T / k)`` steps, then the rest."""
        T = steps(tau)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        L = -(-T // k)
        rest = T - (T // L) * L
        return [(float(L), T // L)] + ([(float(rest), 1)] if rest else [])

    def _matrices(self, K: np.ndarray, tau: float,
                  x0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``M(T)``, ``Acl^T`` and, for states ``x0`` (b, n), ``S(T)``, for gains ``K`` (b, m, n)."""
        T = steps(tau)
        K = np.asarray(K, dtype=float)
        b, n = K.shape[0], self.n
        with np.errstate(all="ignore"):
            Ep = self._A - self._B @ K  # Acl^(2^k)
            Mp = self._Q + np.swapaxes(K, 1, 2) @ self._R @ K  # M(2^k)
            Sp = None if x0 is None else x0[:, :, None] * x0[:, None, :]  # S(2^k)
            M = np.zeros((b, n, n))  # the digits of T taken so far
            E = np.broadcast_to(np.eye(n), (b, n, n)).copy()
            S = None if x0 is None else np.zeros((b, n, n))
            while True:
                if T & 1:  # append 2^k steps to the run so far
                    M = M + np.swapaxes(E, 1, 2) @ Mp @ E
                    if S is not None and Sp is not None:
                        S = S + E @ Sp @ np.swapaxes(E, 1, 2)
                    E = Ep @ E
                T >>= 1
                if not T:
                    break
                Mp = Mp + np.swapaxes(Ep, 1, 2) @ Mp @ Ep
                if Sp is not None:
                    Sp = Sp + Ep @ Sp @ np.swapaxes(Ep, 1, 2)
                Ep = Ep @ Ep
            M = 0.5 * (M + np.swapaxes(M, 1, 2))
            if S is not None:
                S = 0.5 * (S + np.swapaxes(S, 1, 2))
        return M, E, S


def plant_for(problem: LQRProblem) -> LinearPlant:
    """The exact plant of ``problem``: :class:`DiscreteLinearPlant` for a discrete-time problem,
    :class:`~azopg.plants.noisy.NoisyLinearPlant` for a problem with noise, else
    :class:`~azopg.plants.linear.LinearPlant`."""
    if problem.discrete_time:
        return DiscreteLinearPlant(problem)
    return NoisyLinearPlant(problem) if problem.noisy else LinearPlant(problem)
