"""What changes for a rule on a discrete-time plant.

The horizon ``tau`` is a number of steps (a discrete plant rounds it); calibration doubles it
from :data:`START_STEPS` until the tail is negligible, as it doubles ``tau`` in continuous time.

The identity behind :mod:`azopg.method.regression` carries over with ``R`` replaced by the
Q-function's input block ``H_uu = R + B'P_K B``: for a rollout of ``K + D`` over ``T`` steps,

    f = x0'P_K x0 - x_T'P_K x_T + tr(S (D'H_uu D + 2 D'E_K)),   S = sum_{t<T} x_t x_t',

with ``E_K = H_uu K - B'P_K A`` (derivation in the tests, ``tests/test_discrete.py``). ``H_uu``
involves the unknown ``B``, so the fit always estimates it -- the ``m(m+1)/2`` unknowns that
are the estimated ``R`` in continuous time -- and the Gauss--Newton (Hewer) step
``K - H_uu^-1 E_K`` is :meth:`~azopg.method.regression.PolicyEvaluation.kleinman_step`.
``(P_K, E_K, H_uu)`` are a linear reparametrization of the Q-function's matrix of
``(x, u)`` (Bradtke, Ydstie & Barto 1994): ``(n + m)(n + m + 1)/2`` unknowns.
"""

from __future__ import annotations

import numpy as np

__all__ = ["START_STEPS", "start_tau", "fit_weight"]

#: Horizon (steps) the calibration of a discrete-time run starts doubling from.
START_STEPS = 8


def start_tau(discrete_time: bool) -> float:
    """The calibration's starting horizon: 1 (time unit) in continuous time, :data:`START_STEPS` steps in
    discrete time."""
    return float(START_STEPS) if discrete_time else 1.0


def fit_weight(R: np.ndarray | None, discrete_time: bool) -> np.ndarray | None:
    """The input weight a least-squares policy evaluation is given: ``R`` in continuous time;
    ``None`` in discrete time, where the weight of the identity is ``H_uu = R + B'P B`` and is
    estimated (module docstring)."""
    return None if discrete_time else R
