"""Calibration: horizon, radius and step chosen from rollouts at ``K0`` -- pure functions of a probe.

:func:`calibrate` never touches a rule: it asks ``probe`` for rollouts (a check of a gain,
or a gradient estimate) and returns what it chose. :func:`line_search` is the plain
expanding/backtracking search it uses for the step, a pure function of a callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from ..errors import NotStabilizingError, ProblemError
from ..settings import Settings
from .kinds import TaskKind
from .paired import CHECK_PAIRS, significantly_cheaper
from .tasks import Report

__all__ = ["Calibration", "Probe", "calibrate", "line_search", "search_step", "NOISE_SMOOTHING", "MAX_NOISE_SMOOTHING"]

#: With measurement noise ``cost_noise``, the radius is calibrated for a relative cost change
#: of ``min(NOISE_SMOOTHING * cost_noise, MAX_NOISE_SMOOTHING)`` (if above ``smoothing``).
NOISE_SMOOTHING, MAX_NOISE_SMOOTHING = 30.0, 0.5
#: Fraction of the first-order decrease a step must achieve (Armijo's constant).
ARMIJO = 0.1
#: Fresh estimates the step search tries before it gives up: one estimate from few
#: directions and random initial states can point uphill.
STEP_TRIES = 5
#: Random directions measured at the first radius that does not blow up; the most sensitive of
#: them sizes the radius (its cost changes by about ``smoothing``). One direction nearly orthogonal
#: to the gradient gives a radius that destabilizes along others (eb5: 4 seeds in 50 got 6 times
#: the median radius; 2 of them stalled at ``K0``). Under cost noise one direction, as before:
#: the noisy regression needs the larger radius (with 3, policy iteration's final gap under 1e-3
#: noise was up to 140 times larger), and a direction's measured change never falls below the noise.
RADIUS_DIRECTIONS = 3

class Probe(Protocol):
    """``probe(kind, K, tau, r, N)``: run one task of ``kind`` ("evaluate" or "estimate") at gain
    ``K`` and return its report, with the estimate's gradient (``Report.grad``) filled in;
    ``ref=K_ref`` (asked only under measurement noise) makes a check paired with ``K_ref``
    (see :mod:`azopg.method.paired`); ``pairs`` and ``task_id`` as :meth:`UpdateRule.probe
    <azopg.method.rule.UpdateRule.probe>`."""

    def __call__(self, kind: TaskKind, K: np.ndarray, tau: float, r: float, N: int, *,
                 ref: np.ndarray | None = None, pairs: int = CHECK_PAIRS, task_id: int | None = None) -> Report: ...


@dataclass
class Calibration:
    """What :func:`calibrate` chose.

    Attributes
    ----------
    tau, r, alpha : float
        Horizon, radius and step (``alpha`` scaled for estimates of the run's batch ``N``).
    f0 : float
        Rollout cost of ``K0`` at horizon ``tau``.
    K1 : ndarray or None
        The gain after the line search's step, if it found a decrease.
    cost1 : float
        The rollout cost of ``K1``.
    """

    tau: float
    r: float
    alpha: float
    f0: float
    K1: np.ndarray | None = None
    cost1: float = math.nan


def line_search(accept: Callable[[float], float | None], alpha: float, *, expand: int = 60,
                backtrack: int = 80) -> tuple[float, float | None]:
    """Largest acceptable step on a doubling/halving grid from ``alpha``.

    ``accept(alpha)`` returns the cost at step ``alpha`` if the step is acceptable (a
    sufficient decrease), else ``None``. If ``alpha`` is acceptable, it is doubled while the
    cost keeps falling; else it is halved until acceptable (at most ``backtrack`` times).

    Returns
    -------
    alpha : float
    cost : float or None
        The cost at ``alpha``; ``None`` if no step on the grid was acceptable.
    """
    best = accept(alpha)
    if best is not None:
        for _ in range(expand):
            trial = accept(2.0 * alpha)
            if trial is None or trial >= best:
                break
            alpha, best = 2.0 * alpha, trial
        return alpha, best
    for _ in range(backtrack):
        alpha *= 0.5
        best = accept(alpha)
        if best is not None:
            break
    return alpha, best


def calibrate(probe: Probe, K0: np.ndarray, settings: Settings, N: int, *, tau: float, r: float,
              alpha: float, noisy: bool = False) -> Calibration:
    """Choose ``tau``, ``r`` and ``alpha`` from rollouts at ``K0``; settings given explicitly are kept.

    Horizon: doubled from ``tau`` until the cost between ``tau`` and ``2 tau`` is below
    ``tail_tol`` (on a ``noisy`` plant: the transient's, see :mod:`azopg.method.noisy_eval`).
    Radius: a perturbation along the most sensitive of :data:`RADIUS_DIRECTIONS`
    random directions changes the cost by about ``smoothing`` (one direction, well above the
    noise, under ``cost_noise``; on a ``noisy`` plant each change is a paired difference with
    ``K0`` on common noise, so the plant's noise does not enter it).
    Step: :func:`line_search` along a first, well-sampled estimate (paired checks if ``noisy``).

    Raises
    ------
    NotStabilizingError
        If rollouts from ``K0`` blow up.
    ProblemError
        If rollouts from ``K0`` cost nothing.
    """
    s = settings
    tau, rep = _horizon(probe, K0, s, tau, N)
    f0 = rep.cost
    if f0 < 0:
        raise ProblemError(f"rollouts from K0 have a negative mean cost ({f0:.3g}): the learner's calibration "
                           "needs positive rollout costs")
    if not f0 > 0:
        raise ProblemError("rollouts from K0 cost nothing: there is nothing to learn")
    if s.r is None:
        r = _radius(probe, K0, s, tau, N, f0, noisy)
    cal = Calibration(tau, r, alpha, f0)
    if s.step is None:
        _step(probe, K0, s, N, cal, noisy)
    return cal


def _horizon(probe: Probe, K0: np.ndarray, s: Settings, tau: float, N: int) -> tuple[float, Report]:
    for _ in range(80):
        rep = probe(TaskKind.EVALUATE, K0, tau, 0.0, N)
        if rep.blown_up:  # once more: a glitch of the plant is not an unstable K0
            rep = probe(TaskKind.EVALUATE, K0, tau, 0.0, N)
        if rep.blown_up:
            raise NotStabilizingError("rollouts from the initial gain K0 blow up")
        if s.tau is not None or not rep.long_tail(s.tail_tol):
            break
        tau *= 2.0
    return tau, rep


def _radius(probe: Probe, K0: np.ndarray, s: Settings, tau: float, N: int, f0: float, noisy: bool) -> float:
    smoothing = max(s.smoothing, min(NOISE_SMOOTHING * s.cost_noise, MAX_NOISE_SMOOTHING))
    rng = np.random.default_rng([s.seed, 2**31 - 2])
    candidates = rng.standard_normal((RADIUS_DIRECTIONS if s.cost_noise == 0 else 1, *K0.shape))
    candidates *= math.sqrt(K0.size) / np.linalg.norm(candidates, axis=(1, 2), keepdims=True)
    r = 1e-3 * max(float(np.linalg.norm(K0)), 1.0) / math.sqrt(K0.size)
    last: tuple[float, float] | None = None  # the previous radius and its change (noisy plants)
    for _ in range(40):
        changes = _changes(probe, K0, candidates, r, tau, N, f0, noisy)
        if changes is None:  # a perturbed gain blew up
            r *= 0.1
            continue
        j = int(np.argmax(changes))
        candidates, change = candidates[j:j + 1], changes[j]  # the most sensitive direction from now on
        if smoothing / 3 <= change <= 3 * smoothing:
            break
        if change <= 0:
            r *= 100.0
        elif noisy:  # a paired difference on common noise, measured precisely: jump by its order in r
            order = 1.0  # first order (a gradient), until two radii show the order (2 at a stationary K0)
            if last is not None and last[0] != r and last[1] > 0:
                order = min(max(math.log(change / last[1]) / math.log(r / last[0]), 1.0), 2.0)
            last = (r, change)
            r *= min(max(smoothing / change, 1e-3), 1e2) ** (1.0 / order)
        else:
            r *= min(max(smoothing / change, 1e-2), 1e2) ** 0.7
    return r


def _changes(probe: Probe, K0: np.ndarray, directions: np.ndarray, r: float, tau: float, N: int,
             f0: float, noisy: bool = False) -> list[float] | None:
    """The relative cost change of ``K0 +- r U`` (the larger of the two) for each of the
    ``directions``; ``None`` if one of them blew up. On a ``noisy`` plant each change is the paired
    difference with ``K0`` (common noise), not a difference of two independently noisy costs."""
    changes = []
    ref = K0 if noisy else None
    for U in directions:
        fp, fm = (probe(TaskKind.EVALUATE, K0 + sign * r * U, tau, 0.0, N, ref=ref) for sign in (1.0, -1.0))
        if fp.blown_up or fm.blown_up:
            return None
        dp, dm = (rep.diff if noisy else rep.cost - f0 for rep in (fp, fm))
        changes.append(max(abs(dp), abs(dm)) / f0)
    return changes


def _step(probe: Probe, K0: np.ndarray, s: Settings, N: int, cal: Calibration, noisy: bool) -> None:
    alpha, K1, cost1 = search_step(probe, K0, s, N, tau=cal.tau, r=cal.r, f0=cal.f0, paired=noisy)
    cal.alpha, cal.K1, cal.cost1 = alpha, K1, cost1


def search_step(probe: Probe, K0: np.ndarray, s: Settings, N: int, *, tau: float, r: float,
                f0: float, paired: bool = False) -> tuple[float, np.ndarray | None, float]:
    """Step size by :func:`line_search` along well-sampled estimates at ``K0`` (cost ``f0``).

    Each try takes a fresh estimate from ``max(N, mn)`` directions; the first whose line
    search finds a sufficient decrease gives the step, scaled for estimates of ``N``
    directions (they are noisier). Under measurement noise (or ``paired``: a noisy plant) a step is
    accepted only if a paired check finds it significantly cheaper than ``K0``. After
    :data:`STEP_TRIES` failures the last halved step is
    returned with no gain: the caller's safeguards take it from there.

    Returns
    -------
    alpha : float
    K1 : ndarray or None
        The gain after the step found (``None`` if none was).
    cost1 : float
        Its rollout cost (``nan`` if none).
    """
    d = K0.size
    Ncal = max(N, d)
    for _ in range(STEP_TRIES):
        g = probe(TaskKind.ESTIMATE, K0, tau, r, Ncal).grad
        assert g is not None
        gg = float(np.sum(g * g))

        def accept(alpha: float, g: np.ndarray = g, gg: float = gg) -> float | None:
            if s.cost_noise > 0 or paired:  # paired with K0 and significant: a lucky measurement is no decrease
                rep = probe(TaskKind.EVALUATE, K0 - alpha * g, tau, r, N, ref=K0)
                cost = f0 + rep.diff
                ok = significantly_cheaper(rep.diff, rep.diff_se) and rep.diff < -ARMIJO * alpha * gg
            else:
                rep = probe(TaskKind.EVALUATE, K0 - alpha * g, tau, r, N)
                cost = rep.cost
                ok = rep.cost < f0 - ARMIJO * alpha * gg
            return cost if ok and not rep.blown_up and not rep.long_tail(s.tail_tol) else None

        alpha, cost = line_search(accept, f0 / gg if gg > 0 else 1.0)
        if cost is not None:
            break
    # an estimate from N directions is noisier than one from Ncal
    scaled = alpha * (1 + (d + 1) / Ncal) / (1 + (d + 1) / N)
    if cost is None:
        return scaled, None, math.nan
    return scaled, K0 - alpha * cast(np.ndarray, g), cost
