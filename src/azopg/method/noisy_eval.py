"""Checks on a plant with its own noise (process or measurement noise): the transient against its stationary rate.

Under process noise a rollout's cost grows like ``tau * rate`` forever (``rate = tr(P W)`` for a linear
plant), so the noise-free tail check ``cost(2 tau) - cost(tau) > tail_tol * cost(2 tau)`` always fires.
What must be negligible beyond ``tau`` is the *transient*: the part of the cost the initial state causes,
over the stationary cost the noise alone causes. :func:`noisy_measure` measures it directly, with common
random numbers: every evaluation state ``x0`` is rolled out next to the state ``0`` *on the same noise path*
(``noise_rows``, see :mod:`azopg.plants.noisy`). For a linear plant ``x(t; x0) - x(t; 0) = e^{(A-BK)t} x0``
exactly, so the cost difference ``D(t) = c(t; x0) - c(t; 0)`` is the noise-free transient cost plus a
cross term of mean zero: its tail ``D(2 tau) - D(tau)`` is judged as the noise-free tail was,

    long tail  <=>  tail > tail_tol * D(2 tau) + TAIL_Z * se(tail),

the tail measured from a *continuation* (the rollouts to ``tau`` go on from their ``x(tau)`` for another
``tau``, again pairwise on common noise), so the cross term lives only where ``e^{(A-BK)t} x0`` has
decayed. Invariant to units (a ratio of costs) and to the noise level (the noise's own cost cancels);
with zero noise ``c(t; 0) = 0`` and the rule is the noise-free one. A plant without state moments
(no ``x(tau)`` to continue from) is rolled out afresh to ``2 tau``; without common noise the difference
is still unbiased, only noisier, and its standard error says so.

Only a plant with :func:`~azopg.plants.base.common_noise` (it also starts from any state, 0 included) is
measured so (:func:`~azopg.method.tasks.run_task`); other plants keep the noise-free checks.

A paired check (``K_ref`` given) also rolls ``K_ref`` from the same states on the same noise paths: the
difference of the two gains' costs carries the noise only through the gains' difference. Its standard
error is stratified by state as in :mod:`azopg.method.paired`. ``noise`` is the measured relative
standard deviation of one rollout's cost between repeats of a state (0 for a deterministic plant): what
calibration uses to notice a noisy plant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..plants.base import Plant, failed, returns_moments, rollout_of
from .paired import noise_factors

__all__ = ["NOISY_TAIL_TOL", "TAIL_Z", "NoisyMeasurement", "noisy_measure"]

#: Standard errors by which a transient's tail must exceed ``tail_tol`` of it to count as long.
TAIL_Z = 2.0
#: The least relative tail tolerance on a noisy plant. The gain learned under noise is resolved to a
#: relative gap of about 1e-3 at best (docs/noise.md), and a transient tail of ``eps`` of the transient
#: moves the horizon's minimizer by a relative gap of order ``eps``: the noise-free ``tail_tol = 1e-7``
#: only made horizons longer (chain3 under measurement noise: 512 s, a check 3-8 s) and noisy rollouts,
#: whose time grows with the horizon, slower.
NOISY_TAIL_TOL = 1e-4


@dataclass
class NoisyMeasurement:
    """What :func:`noisy_measure` measured (module docstring): the gain's mean costs at ``tau`` and
    ``2 tau``; the paired difference to ``K_ref`` and its standard error (``nan`` without ``K_ref``);
    the transient ``D(2 tau)``, its tail beyond ``tau`` and the tail's standard error; the relative noise
    of one rollout's cost; rollouts run, how many blew up; the gain's state moments (if asked); the standard
    error of ``cost`` given the states (from the spread between repeats of each state, as ``diff_se``), its
    degrees of freedom ``k (reps - 1)`` and the rollouts of ``K`` behind it."""

    cost: float
    cost2: float
    diff: float
    diff_se: float
    transient: float
    tail: float
    tail_se: float
    noise: float
    rollouts: int
    blown_up: int
    S: np.ndarray | None
    S_count: int
    cost_se: float = math.nan
    cost_df: int = 0
    cost_rows: int = 0


def noisy_measure(plant: Plant, K: np.ndarray, K_ref: np.ndarray | None, X: np.ndarray, tau: float, sigma: float,
                  pairs: int, rng: np.random.Generator, moments: bool = False) -> NoisyMeasurement:
    """Measure ``K`` (and ``K_ref``) from the states ``X``, each repeated ``max(2, ceil(pairs / k))`` times,
    next to the state 0 on common noise (module docstring); relative cost noise ``sigma`` (one factor per
    state's rollout pair, as :func:`~azopg.method.paired.paired_measure`) drawn from ``rng``."""
    k, n = X.shape
    reps = max(2, math.ceil(pairs / k))
    Xr = np.tile(X, (reps, 1))
    b = Xr.shape[0]
    rows = np.arange(b)
    cont = returns_moments(plant)
    gains = [K, K] + ([K_ref] if K_ref is not None else [])
    Kb = np.concatenate([np.broadcast_to(G, (b, *K.shape)) for G in gains])
    x0 = np.concatenate([Xr, np.zeros((b, n))] + ([Xr] if K_ref is not None else []))
    r1 = rollout_of(plant, Kb, x0, tau, cont, np.tile(rows, len(gains)))
    c1 = np.asarray(r1.cost, dtype=float)
    bad1 = failed(r1)
    if cont:  # go on from x(tau) for another tau, the x0 and 0 rows again on common noise
        assert r1.x_end is not None
        xe = np.where(bad1[:2 * b, None], 0.0, r1.x_end[:2 * b])
        r2 = rollout_of(plant, Kb[:2 * b], xe, tau, False, np.tile(rows, 2))
        seg2 = np.asarray(r2.cost, dtype=float)
    else:
        r2 = rollout_of(plant, Kb[:2 * b], x0[:2 * b], 2.0 * tau, False, np.tile(rows, 2))
        seg2 = np.asarray(r2.cost, dtype=float) - c1[:2 * b]
    bad2 = failed(r2)
    blown = int(np.sum(bad1) + np.sum(bad2))
    f = noise_factors(rng, sigma, b)
    cK, c0 = c1[:b], c1[b:2 * b]
    okK = ~(bad1[:b] | bad2[:b])
    S = None
    S_count = 0
    if moments and cont and r1.S is not None:
        S, S_count = r1.S[:b][okK].sum(axis=0), int(np.count_nonzero(okK))
    nan = math.nan
    if np.any(bad1) or np.any(bad2):
        cost = float(np.mean(np.where(bad1[:b], cK, cK * f)))
        return NoisyMeasurement(cost, math.inf, nan, nan, nan, nan, nan, nan, len(Kb) + 2 * b, blown, S, S_count)
    T = seg2[:b] - seg2[b:]  # the transient's tail beyond tau, per row
    D2 = cK - c0 + T
    tail, tail_se = float(T.mean()), _stratified_se(T.reshape(reps, k))
    per_state = cK.reshape(reps, k)
    noise = float(math.sqrt(np.mean(per_state.var(axis=0, ddof=1))) / abs(cK.mean())) if cK.mean() != 0 else nan
    diff = se = nan
    if K_ref is not None:
        g = noise_factors(rng, sigma, b)
        d = (cK * f - c1[2 * b:] * g).reshape(reps, k)  # row j: the j-th repeat of every state
        diff, se = float(d.mean()), _stratified_se(d)
    return NoisyMeasurement(float(np.mean(cK * f)), float(np.mean((cK + seg2[:b]) * f)), diff, se, float(D2.mean()),
                            tail, tail_se, noise, len(Kb) + 2 * b, blown, S, S_count,
                            _stratified_se((cK * f).reshape(reps, k)), k * (reps - 1), b)



def _stratified_se(d: np.ndarray) -> float:
    """Standard error of the mean of ``d`` (row ``j``: the ``j``-th repeat of every state) when the states
    are fixed and only the noise is random: from the spread between repeats of each state."""
    reps, k = d.shape
    return float(math.sqrt(np.sum(d.var(axis=0, ddof=1)) / reps) / k)
