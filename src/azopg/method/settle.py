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

The size is unit-invariant: ``||diag(r)^1/2 dK diag(s)^1/2|| / ||diag(r)^1/2 K diag(s)^1/2||``
(Frobenius; ``r`` the diagonal of ``R``, ``s`` that of a state second moment of the rollouts): a
change of state units ``x -> D x`` and input units ``u -> E u`` (diagonal ``D``, ``E``) maps ``K ->
E K D^-1``, ``s -> D^2 s`` and ``r -> E^-2 r``, and leaves it unchanged. The diagonal of ``R``, not
its square root: a direction of the inputs that ``R`` nearly leaves free (CAREX 2.2, ``R`` of
condition 4e8) still counts in the gain.
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
        Input weight (its diagonal, positive, weighs the inputs); omitted: the inputs are weighted alike.
    s : array_like, shape (n,)
        Positive weights of the states: the diagonal of a state second moment ``int x x' dt``.

    Returns
    -------
    float
        ``||V step W|| / ||V K W||`` with ``V = diag(r)^1/2``, ``W = diag(s)^1/2``; ``inf`` if ``K``
        weighs nothing (``K = 0``) and the step does, ``0`` for no step.
    """
    step, K = np.asarray(step, dtype=float), np.asarray(K, dtype=float)
    w = np.sqrt(np.asarray(s, dtype=float).reshape(-1))
    v = np.ones((K.shape[0], 1)) if R is None else np.sqrt(np.diag(np.asarray(R, dtype=float)))[:, None]
    size = float(np.linalg.norm(v * step * w))
    gain = float(np.linalg.norm(v * K * w))
    if size == 0.0:
        return 0.0
    return size / gain if gain > 0 else math.inf
