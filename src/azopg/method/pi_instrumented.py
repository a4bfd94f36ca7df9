"""Policy iteration under process noise: Kleinman steps on the instrumented fit (:mod:`~.iv_equations`).

On a plant with noise of its own (measured at calibration, :func:`~.lifecycle.measure_noise`) the
least-squares fit of :mod:`~.equations` is biased -- the disturbance of an interval moves both its end
regressors and its cost -- and stays biased however many rollouts it gets. The instrumented fit is
consistent: its error falls like ``1 / sqrt(rows)``. A Kleinman step is taken when its standard error
(sandwich covariance, in the unit-invariant scaled ``E`` coordinates of :class:`~.equations.StepError`) is at
most :data:`NOISY_STEP_PRECISION` times the step (the step makes progress) or :data:`NOISY_GAIN_PRECISION`
times the new gain (the error is harmless); otherwise the rule waits for the rows that bring the error
there (the error taken to fall like ``1 / sqrt(rows)``; at most doubling the rows, at least
``SOLVE_GROWTH`` more).

Scope: process noise. Under measurement noise (``u = -K(x + v)``) the interval identity itself changes
(the cost and the input carry ``v``); neither fit is consistent there and ``method="auto"`` picks
``natural`` (:mod:`azopg.run.rule_choice`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .equations import StepError
from .iv_equations import InstrumentedEquations
from .kinds import Event

__all__ = ["NOISY_GAIN_PRECISION", "NOISY_STEP_PRECISION", "Steps", "instrumented_steps"]

#: A step is taken when its standard error is at most this times the step ...
NOISY_STEP_PRECISION = 0.5
#: ... or at most this times the new gain (``NOISY_GAIN_PRECISION^2`` in relative cost, times the
#: curvature).
NOISY_GAIN_PRECISION = 0.02
#: Most growth of the rows before the next fit when a step is refused as imprecise.
MAX_WAIT_GROWTH = 2.0


@dataclass(frozen=True)
class Steps:
    """The outcome of :func:`instrumented_steps`.

    Attributes
    ----------
    K : ndarray
        The gain after the steps taken.
    taken : int
        Kleinman steps taken.
    why : Event
        Why the first step was refused (if none was taken).
    wait : int
        Rows the sums should hold before the next fit (the step's error sized against its allowance).
    """

    K: np.ndarray
    taken: int
    why: Event
    wait: int


def instrumented_steps(iv: InstrumentedEquations, K: np.ndarray, R: np.ndarray, steps: int,
                       kleinman: Callable[[np.ndarray, np.ndarray], np.ndarray], growth: float,
                       stop: Callable[[], bool]) -> Steps:
    """Up to ``steps`` Kleinman steps from ``K`` on the instrumented fit, each re-centring the sums at the
    gain reached, while each is precise enough (module docstring); ``kleinman(R, E)`` is the (scaled,
    trust-limited) step, ``growth`` the rows' growth that makes the next fit due after a step taken, ``stop``
    ends the iteration before a step (the time budget)."""
    taken, why, wait = 0, Event.ILL_CONDITIONED, math.ceil(iv.rows * (1.0 + growth))
    for _ in range(steps):
        if stop():  # each step re-centres the factor, O(p_L^3) (cse1: ~1 s): the time budget is held
            break
        try:
            iv.recenter(K)
        except FloatingPointError:  # a step to an absurd gain
            why = Event.STEP_OVERFLOW
            break
        try:
            fit, precision = iv.solve()
        except np.linalg.LinAlgError:  # too few rows, or not identified yet: wait
            break
        allowed = _allowed(precision)
        if not precision.error <= allowed:
            why = Event.STEP_IMPRECISE if precision.error < math.inf else Event.ILL_CONDITIONED
            if not taken and allowed > 0 and math.isfinite(precision.error):
                ratio = min(max((precision.error / allowed) ** 2, 1.0 + growth), MAX_WAIT_GROWTH)
                wait = math.ceil(iv.rows * ratio)
            break
        try:
            step = kleinman(R, fit.E)
        except np.linalg.LinAlgError:
            break
        K, taken = K + step, taken + 1
    return Steps(K, taken, why, wait)


def _allowed(precision: StepError) -> float:
    """The largest standard error a step may have (module docstring)."""
    return max(NOISY_STEP_PRECISION * precision.step, NOISY_GAIN_PRECISION * precision.gain)
