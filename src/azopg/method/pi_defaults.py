"""Policy iteration's defaults (:mod:`azopg.method.policy_iteration`): its constants, the snapshots per rollout
(:func:`default_snapshots`) and where the buffered method runs instead (:func:`buffered_fits`)."""

from __future__ import annotations

import math
from typing import Any

from .pi_buffered import BufferedFits
from .regression import unknowns

__all__ = ["BLOWUP_RATE", "BLOWUP_SHRINKS", "CHECK_EVERY", "CHECK_SHARE", "MAX_FACTOR_COLUMNS", "MAX_SNAPSHOTS",
           "MIN_SNAPSHOTS", "PAIRS_FROM", "PAIRS_PER_UNKNOWN", "PAIR_CONTRACTION", "PAIR_HORIZON", "PAIR_PERTURBATION",
           "PATIENCE", "SNAPSHOTS_PER_UNKNOWN", "buffered_fits", "default_snapshots", "factor_columns"]

#: Rollouts without an applied step, per unknown of ``(P, E)``, after which a fit that stays
#: ill-conditioned rolls back to the anchor (:meth:`PolicyIteration._stuck`); the buffered method
#: keeps as many rollouts.
PATIENCE = 6.0
#: Where the buffered method would run and ``(P, E)`` has at least ``PAIRS_FROM`` unknowns, ``E`` alone is
#: fitted from antithetic pairs (:mod:`~azopg.method.pairs`, ``R`` known), ``PAIRS_PER_UNKNOWN`` pairs per
#: unknown of ``E``, the most recent kept: a first step after ``2.5 m n`` rollouts instead of the buffered
#: fit's ``n(n+1) + 2 m n`` (CAREX 2.9, 4.2-n50, 4.3: 437, 246 and 544 rollouts to gap 1e-6 instead of
#: none in 60 s, 4,450 and 7,860). Not below: eb5 (``p`` = 860, ``K0 = 0`` on damping 1e-7) needs the radius
#: the buffered method measures by cost changes (2e-8); on pairs every step blew up.
PAIRS_FROM, PAIRS_PER_UNKNOWN = 1024, 1.25
#: With pairs the calibrated horizon (tail at most ``tail_tol`` of the cost) is made ``PAIR_HORIZON`` times
#: longer: a pair's difference is about ``r ||E||`` of the cost, and shrinks with ``E`` near the optimum,
#: while the tails it neglects do not (an exponential tail: ``tail_tol^PAIR_HORIZON``).
PAIR_HORIZON = 3.0
#: With pairs on exact data the perturbations ``r L Z M`` (scaled to the inputs and states as the snapshots'
#: are) have ``r^2 m n = PAIR_PERTURBATION``: the pair's difference is first order in ``r`` and so is the
#: difference of its two tails, while a perturbed gain's slowest mode moves towards instability by more
#: (lightly damped modes: CAREX 2.9's tails were up to the whole difference at ``r^2 m n = 1e-2`` and
#: ``1e-4``); the rounding of a cost (1e-16 of it) is then 1e-13 of the difference.
PAIR_PERTURBATION = 1e-6
#: On pairs (exact data) Kleinman's steps are iterated on the same pairs while each is at most this fraction
#: of the one before (:meth:`~.pi_steps.KleinmanSteps._pair_steps`): CAREX 2.9 from ``K0``, 137 pairs: gain
#: errors 1.4, 0.38, 2.7e-2, 2.8e-4 (the exact Kleinman sequence's 2.0e-4), 9e-5, then steps of nothing.
#: Forced pairs to gap 1e-6 (the last step the movement): he1, ac1, he3, carex4.2-n20 in 29, 52, 97, 92
#: rollouts (one step per fit: 85, 152, 289, 172; at 0.5 and with the applied update as the movement: 61,
#: 110, 209, 112).
PAIR_CONTRACTION = 1.0
#: Applied updates between two rollout checks (unless ``check_every`` is set).
CHECK_EVERY = 2
#: Under noise an inconclusive check doubles the checks' pairs (:attr:`~.safeguards.Safeguards.keeps_unresolved`)
#: while a check at twice them (about 5 rollouts a pair: the gain from the states and from 0 to ``2 tau``, the
#: anchor to ``tau``) costs at most this share of the rollouts spent so far.
CHECK_SHARE = 1 / 8
#: Snapshots per rollout chosen by default: the power of two at least ``SNAPSHOTS_PER_UNKNOWN`` per
#: unknown, within the bounds.
SNAPSHOTS_PER_UNKNOWN, MIN_SNAPSHOTS, MAX_SNAPSHOTS = 2, 16, 256
#: Snapshots by default only while the interval equations' triangular factor has at most this many
#: columns ``p_L`` (:class:`~azopg.method.equations.IntervalEquations`): the master folds every interval
#: into it at ``O(p_L^2)`` (measured with the unblocked Householder fold, memory-bound once the factor leaves
#: the cache; the blocked fold is several times faster). One
#: rollout of 256 intervals: 0.08 s at ``p_L = 1020``, 0.29 s at 1680 (eb5), 4.2 s at 3780 (cse2), where
#: the buffered method (``snapshots = 1``: ``O(p^2)`` per rollout, a fit every ``m n`` rollouts) converges
#: in about a minute.
MAX_FACTOR_COLUMNS = 1024
#: With snapshots, blown-up perturbed rollouts in a row that only shrink the radius (then the shared rule).
BLOWUP_SHRINKS = 3
#: Under process noise the radius halves when more than this share of the perturbed rollouts blew up
#: (:meth:`~.policy_iteration.PolicyIteration._blowup_rate`).
BLOWUP_RATE = 0.1


def default_snapshots(settings: Any, n: int, m: int) -> int:
    """``settings.snapshots`` if given; else 1 under cost noise (each interval's cost would need its
    own noise model) or when the equations' factor would have more than :data:`MAX_FACTOR_COLUMNS` columns
    (the master's cost per rollout), else ``SNAPSHOTS_PER_UNKNOWN`` per unknown within
    ``[MIN_SNAPSHOTS, MAX_SNAPSHOTS]``."""
    if settings.snapshots is not None:
        return int(settings.snapshots)
    if settings.cost_noise > 0 or factor_columns(n, m) > MAX_FACTOR_COLUMNS:
        return 1
    want = max(SNAPSHOTS_PER_UNKNOWN * unknowns(n, m), MIN_SNAPSHOTS)
    return int(min(2 ** math.ceil(math.log2(want)), MAX_SNAPSHOTS))


def factor_columns(n: int, m: int) -> int:
    """Columns ``p_L = n(n+1) + m n`` of the interval equations' factor with ``R`` known (``P``, ``E``, ``W``)."""
    return n * (n + 1) + m * n


def buffered_fits(settings: Any, n: int, m: int, fit_R: Any) -> BufferedFits | None:
    """The buffered method's fits (:mod:`~.pi_buffered`), only where the default is one equation per rollout
    because the factor is large (more than :data:`MAX_FACTOR_COLUMNS` columns: eb5, cse2), else ``None``;
    with ``R`` known (``fit_R``) and at least :data:`PAIRS_FROM` unknowns, ``E`` alone from antithetic pairs."""
    if settings.snapshots is not None or factor_columns(n, m) <= MAX_FACTOR_COLUMNS:
        return None
    p = unknowns(n, m, fit_R is None)
    if fit_R is not None and p >= PAIRS_FROM:  # E alone, from pairs
        return BufferedFits.of_pairs(math.ceil(2 * PAIRS_PER_UNKNOWN * m * n), m, n)
    return BufferedFits(math.ceil(PATIENCE * p), p, m, n)
