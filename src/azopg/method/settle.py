"""Whether a gain has stopped moving: the stopping rule's second condition beside the target gap.

Near ``K*`` Kleinman's method converges quadratically, so the size of a full step ``K_+ - K``
estimates the error of the gain it was taken from (``K* - K = (K_+ - K) + O(|K - K*|^2)``), and
the gain reached has an error of about its square. The gap alone does not say this: on a flat
cost (slow or barely excited states) it is quadratic in the gain error with a small factor, and a
gap of 1e-6 can leave a gain error of 1e-3 or more (CAREX 4.2 at n = 20 and 50: gain error 6.6e-3
at gap 5e-7). A run that asks for ``target_gap`` is therefore declared converged only when the
last gain change, measured by :func:`relative_step`, is at most :func:`settle_tolerance`
``= sqrt(target_gap)`` of the gain: the scale of gain error whose square is the target gap (the
gap of a well-conditioned cost is about the square of the relative gain error), so that the gain
reached is, by the quadratic convergence, well within it.

The size is unit-invariant: ``||R^1/2 dK diag(s)^1/2|| / ||R^1/2 K diag(s)^1/2||`` (Frobenius,
``R^1/2`` the Cholesky factor, ``s`` the diagonal of a state second moment of the rollouts): a
change of state units ``x -> D x`` and input units ``u -> E u`` (diagonal ``D``, ``E``) maps ``K ->
E K D^-1``, ``s -> D^2 s`` and ``R -> E^-1 R E^-1``, and leaves it unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["relative_step", "settle_tolerance"]


def settle_tolerance(target_gap: float | None) -> float:
    """The largest relative last step (:func:`relative_step`) with which a run may stop at its
    ``target_gap``: ``sqrt(target_gap)``; ``inf`` without a target gap (a gain-error target is
    judged directly)."""
    if target_gap is None or not target_gap > 0:
        return math.inf
    return math.sqrt(target_gap)


def relative_step(step: Any, K: Any, R: Any, s: Any) -> float:
    """The unit-invariant size of the gain change ``step`` that led to ``K`` (module docstring).

    Parameters
    ----------
    step : array_like, shape (m, n)
        The change of the gain (``K - K_before``, or the full step it is a fraction of).
    K : array_like, shape (m, n)
        The gain reached.
    R : array_like, shape (m, m), optional
        Input weight (positive definite); omitted: the inputs are weighted alike.
    s : array_like, shape (n,)
        Positive weights of the states: the diagonal of a state second moment ``int x x' dt``.

    Returns
    -------
    float
        ``||C' step W|| / ||C' K W||`` with ``R = C C'``, ``W = diag(s)^1/2``; ``inf`` if ``K`` weighs
        nothing (``K = 0``) and the step does, ``0`` for no step.
    """
    step, K = np.asarray(step, dtype=float), np.asarray(K, dtype=float)
    w = np.sqrt(np.asarray(s, dtype=float).reshape(-1))
    C = np.eye(K.shape[0]) if R is None else np.linalg.cholesky(np.asarray(R, dtype=float))
    size = float(np.linalg.norm(C.T @ step * w))
    gain = float(np.linalg.norm(C.T @ K * w))
    if size == 0.0:
        return 0.0
    return size / gain if gain > 0 else math.inf
