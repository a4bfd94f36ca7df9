"""Paired comparisons of two gains under measurement noise (``cost_noise > 0``).

A noisy measured cost that happens to come out low is a *winner's curse*: a gain accepted
because its measurement was lucky looks better than it is, and the next gain is compared
against that lucky number. So under noise no gain is compared against a remembered
measurement: a check measures the candidate ``K`` and the reference ``K_ref`` (the anchor, or
``K0``) afresh on the same evaluation states, each state repeated, with independent noise per
measurement. The mean difference of the pairs is unbiased and its standard error is estimated
per state (stratified: the states are fixed, only the noise is random); ``K`` is accepted only
if it is cheaper by more than :data:`Z` standard errors (:func:`significantly_cheaper`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..plants.base import Plant, RolloutResult, failed

__all__ = ["CHECK_PAIRS", "FINAL_PAIRS", "Z", "PairedMeasurement", "noise_factors", "paired_measure",
           "significantly_cheaper"]

#: One-sided significance (standard errors) a paired difference must reach to accept a gain.
Z = 3.0
#: Pairs (evaluation states x repeats) of a check or a line-search step under noise.
CHECK_PAIRS = 24
#: Pairs of the run's last comparison, of the gain to return against ``K0``.
FINAL_PAIRS = 8 * CHECK_PAIRS


def noise_factors(rng: np.random.Generator, sigma: float, size: int) -> np.ndarray:
    """Relative measurement-noise factors ``max(1 + sigma e, 0)``, ``e ~ N(0, 1)``."""
    return np.maximum(1.0 + sigma * rng.standard_normal(size), 0.0)


def significantly_cheaper(diff: float, diff_se: float, z: float = Z) -> bool:
    """Whether a paired difference (cost of the candidate minus the reference's) is below zero
    by more than ``z`` standard errors (``False`` for a non-finite one)."""
    return math.isfinite(diff) and math.isfinite(diff_se) and diff + z * diff_se < 0


@dataclass
class PairedMeasurement:
    """What :func:`paired_measure` measured: the candidate's mean costs at ``tau`` and ``2 tau``,
    the paired difference and its standard error, the rollouts run and how many blew up, and
    the candidate's state moments (if asked)."""

    cost: float
    cost2: float
    diff: float
    diff_se: float
    rollouts: int
    blown_up: int
    S: np.ndarray | None
    S_count: int


def paired_measure(plant: Plant, K: np.ndarray, K_ref: np.ndarray, X: np.ndarray, tau: float, sigma: float,
                   pairs: int, rng: np.random.Generator, moments: bool = False) -> PairedMeasurement:
    """Measure ``K`` (at ``tau`` and ``2 tau``, one noise factor per rollout pair as an
    unpaired check does) and ``K_ref`` (at ``tau``) from the states ``X``, each repeated
    ``max(2, ceil(pairs / k))`` times; the noise of every measurement is drawn from ``rng``.
    """
    k = X.shape[0]
    reps = max(2, math.ceil(pairs / k))
    Xr = np.tile(X, (reps, 1))
    b = Xr.shape[0]
    r1 = plant.rollout(np.broadcast_to(K, (b, *K.shape)), Xr, tau, **({"moments": True} if moments else {}))
    r2 = plant.rollout(np.broadcast_to(K, (b, *K.shape)), Xr, 2.0 * tau)
    rr = plant.rollout(np.broadcast_to(K_ref, (b, *K_ref.shape)), Xr, tau)
    f, g = noise_factors(rng, sigma, b), noise_factors(rng, sigma, b)
    c1, c2, cr = (np.asarray(r.cost, dtype=float) for r in (r1, r2, rr))
    bad = failed(r1) | failed(r2) | failed(rr)
    blown = int(np.sum(failed(r1)) + np.sum(failed(r2)) + np.sum(failed(rr)))
    fine = ~failed(r1)
    S = r1.S[fine].sum(axis=0) if isinstance(r1, RolloutResult) and r1.S is not None else None
    if np.any(bad):
        diff = se = math.nan
    else:
        d = (c1 * f - cr * g).reshape(reps, k)  # row j: the j-th repeat of every state
        diff = float(d.mean())
        se = float(math.sqrt(np.sum(d.var(axis=0, ddof=1)) / reps) / k)
    return PairedMeasurement(float(np.mean(np.where(failed(r1), c1, c1 * f))),
                             float(np.mean(np.where(failed(r2), c2, c2 * f))), diff, se, 3 * b, blown, S,
                             int(np.count_nonzero(fine)) if S is not None else 0)
