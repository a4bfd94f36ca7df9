"""Policy iteration's calibration with snapshots, and its recalibration (:mod:`azopg.method.policy_iteration`).

No step search (Kleinman's step needs none, ``alpha = 1``): the horizon from the interval costs of single long
rollouts at ``K0``, the perturbations from their states; the first rollouts of the fit are the loop's, asked of
all workers at once. Every calibration rollout is kept as equations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..errors import NotStabilizingError, ProblemError
from .calibration import MAX_NOISE_SMOOTHING, NOISE_SMOOTHING, Probe, _horizon, _radius
from .discrete import start_tau
from .kinds import Event, TaskKind
from .lifecycle import FINAL_TASK, Learner, Runner, measure_noise, timed_probe
from .tasks import Report, TrajectoryData

__all__ = ["JUMP", "NOISY_PERTURBATION", "NOISY_SNAPSHOTS", "PERTURBATION", "SHAPE_LIMIT", "calibrate_snapshots",
           "measure_radius", "recalibrate", "shape_perturbations"]

#: The horizon is calibrated by single rollouts ``JUMP`` times longer than the horizon tried, cut into
#: at least ``JUMP`` intervals: their interval costs give the tail at every doubling up to it (4 doublings
#: per serial probe).
JUMP = 16
#: With snapshots the perturbations are ``K + r L Z M``, ``L = R^-1/2``, ``M = diag(f / s)^1/2``
#: (``s = diag S`` and ``f`` the cost of a rollout at ``K0``: scaled to the states and inputs) and
#: ``r^2 m n = PERTURBATION``: their second-order cost is about ``PERTURBATION`` times the cost.
PERTURBATION = 1e-2
#: Under process noise with the instrumented fit (:mod:`~.pi_instrumented`) ``r^2 m n`` is
#: ``NOISY_PERTURBATION``: the fit's error in ``E`` falls like ``1 / |D|`` (he1 at ``K0``, process noise 0.1:
#: perturbations of 10 % then 30 % of ``|K|``, 0.03 then 0.008 at 200 rollouts), so as large as the weighted
#: rows allow (the cost noise's radius, 0.5 by the smoothing, unweighted: he1 a perturbed gain in 4
#: unstable). 0.1 left chain3, ac1 and he3 at process noise 0.1 with every step imprecise (gaps 2e-2 ...
#: 7e-2 in 60 s); 0.3 converged on all three (benchmarks/noisy.py).
NOISY_PERTURBATION = 3e-1
#: Snapshots per rollout under process noise with the instrumented fit (unless ``settings.snapshots``): the
#: noisy plant simulates interval by interval (he1: 8 intervals 1.5x a whole rollout's time, 32: 4x), and
#: 8 gave the fit's error of 32 per rollout (he1 at ``K0``, process noise 0.1, 2000 rollouts: 0.8 % in ``E``).
NOISY_SNAPSHOTS = 8
#: Under process noise with the instrumented fit the perturbations are shaped per input and per state
#: (:func:`shape_perturbations`): a row (one input against every state) or a column (every input against one
#: state) of the perturbation, at its share of the radius, whose gains ``K0 +- Delta`` cost more than
#: ``SHAPE_LIMIT`` times ``K0``'s (or blow up) is scaled by ``SHAPE_SHRINK``, at most ``SHAPE_TRIES`` times.
SHAPE_LIMIT, SHAPE_SHRINK, SHAPE_TRIES = 2.0, 0.25, 8
#: Rollouts of each shaping probe (random initial states: their mean cost against ``K0``'s).
SHAPE_ROLLOUTS = 8
#: The perturbations are shaped only if more than ``SHAPE_TRIAL_BLOWN`` of ``SHAPE_TRIAL`` perturbed rollouts
#: at ``K0`` blow up (most of them: there halving the radius until few blow up leaves it orders of magnitude too
#: small in the other directions). Fewer blow-ups are left to the radius
#: (:meth:`~.policy_iteration.PolicyIteration._blowup_rate`): shaped at 5 to 9 of 16 (cola5, eb4, cse1) the
#: probes' coherent rows over-shrank (cola5 at 0.1: rows by 1/64, gap 5.6e-3 after 60 s; by the radius alone
#: 7.6e-4 in 19 s). Trial blow-ups at 0.01 ... 1: tg1 14-15, cola5 0-8, eb4 5-9, cse1 0-8; at 0.1 the others <= 2.
SHAPE_TRIAL, SHAPE_TRIAL_BLOWN = 16, 12
#: Task id of that trial (:data:`~.lifecycle.FINAL_TASK` and below are ids no loop issues).
SHAPE_TASK = FINAL_TASK - 3


class Calibrated(Learner, Protocol):
    """What the calibration reads and writes of a :class:`~.policy_iteration.PolicyIteration`."""

    R: np.ndarray | None
    m: int
    n: int
    discrete_time: bool
    radius: float
    scales: tuple[np.ndarray | None, np.ndarray | None]
    shape: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
    snapshots: int
    @property
    def instrumented(self) -> bool: ...
    @property
    def on_pairs(self) -> bool: ...

    def _add(self, rep: Report) -> None: ...


def calibrate_snapshots(rule: Calibrated, run: Runner) -> None:
    """The plant's own noise measured first (:func:`~.lifecycle.measure_noise`); horizon from single
    rollouts at ``K0`` ``JUMP`` times longer than the horizon tried, cut into at least ``JUMP``
    intervals (the tail beyond each doubling read off their interval costs; a plant without
    snapshots: doubled by checks), confirmed by one check of ``K0`` (whose cost is the first
    anchor's); perturbations scaled to the states and inputs seen (:data:`PERTURBATION`, more
    under noise). Every rollout is kept as equations. No serial batch: the fit's first rollouts
    are the loop's, asked of all workers at once."""
    s, K0 = rule.settings, rule.K.copy()
    probe = timed_probe(rule, run)  # the time budget is held: OutOfTime before a probe once it is spent
    measure_noise(rule, probe)
    if rule.instrumented:  # a step of the noisy fit is not stabilizing for sure: each is checked
        rule.snapshots = NOISY_SNAPSHOTS if s.snapshots is None else s.snapshots
        if s.check_every is None:
            rule.safeguards.check_every = 1
    tau = s.tau or start_tau(rule.discrete_time)
    for _ in range(40):
        rep = probe(TaskKind.MOMENTS, K0, JUMP * tau, 0.0, 1)
        if rep.data is None or rep.data.Ki.shape[0] == 0:
            raise NotStabilizingError("rollouts from the initial gain K0 blow up")
        rule._add(rep)
        costs = np.asarray(rep.data.cost[0], dtype=float).reshape(-1)
        spent = np.concatenate([[0.0], np.cumsum(costs)])
        t = getattr(rep.data, "t", None)
        t = np.linspace(0.0, JUMP * tau, costs.size + 1) if t is None else t
        cost_to = _cost_to(spent, t)
        if rule.scales[1] is None:
            S = np.sum(rep.data.S[0], axis=0) if isinstance(rep.data, TrajectoryData) else rep.data.S[0]
            d = np.sqrt(float(spent[-1]) / np.maximum(np.diag(S), np.finfo(float).tiny))
            L = None if rule.R is None else np.linalg.inv(np.linalg.cholesky(rule.R)).T
            rule.scales = (L, np.diag(d))
        found = 0 if rule.safeguards.paired else next(  # noisy: the horizon from the transient (below)
            (i for i in range(int(math.log2(JUMP))) if cost_to(2.0 ** (i + 1) * tau) - cost_to(2.0**i * tau)
             <= s.tail_tol * cost_to(2.0 ** (i + 1) * tau)), None)
        if s.tau is not None or found is not None:
            tau *= 2.0 ** (found or 0)
            break
        tau *= JUMP
    if rule.safeguards.paired:  # under noise the first anchor is measured here, unpaired
        tau, rep = _horizon(probe, K0, s, tau, rule.tuning.N)
        if not rep.cost > 0:
            raise ProblemError("rollouts from K0 cost nothing: there is nothing to learn")
        rule.safeguards.anchor_cost = rep.cost
    else:  # measured by the loop's first task (:meth:`~.policy_iteration.PolicyIteration.ask`), beside the
        rule.safeguards.anchor_cost = math.inf  # first rollouts of the fit
    rule.tuning.tau = tau
    if s.r is None:  # under noise as large as the shared calibration's radius would be (its smoothing)
        noise = s.cost_noise if rule.instrumented else max(s.cost_noise, rule.noise)
        least = NOISY_PERTURBATION if rule.instrumented else PERTURBATION
        rule.tuning.r = math.sqrt(max(least, min(NOISE_SMOOTHING * noise, MAX_NOISE_SMOOTHING)) / (rule.m * rule.n))
    if rule.instrumented and s.r is None and math.isfinite(rule.safeguards.anchor_cost):
        tasks = rule.stats.tasks  # its own identity: without shaping the run's tasks (and noise) are as before
        rep = probe(TaskKind.MOMENTS, K0, tau, rule.tuning.r, SHAPE_TRIAL, task_id=SHAPE_TASK)
        rule.stats.tasks = tasks
        if rep.blown_up > SHAPE_TRIAL_BLOWN:  # the perturbations blow up: shaped (their rows kept)
            rule._add(rep)
            shape_perturbations(rule, probe, K0, tau)
    rule.radius = rule.tuning.r
    if rule.tuning.N > 1 and not rule.on_pairs:  # (one rollout: as the probes above; on pairs: the rule's, in
        # pairs) a batch too large for memory is refused here, before the run is saved -- the first task of the run
        rule._add(probe(TaskKind.MOMENTS, rule.K.copy(), rule.tuning.tau, rule.tuning.r, rule.tuning.N))
    rule.log(Event.CALIBRATE)


def measure_radius(rule: Calibrated, run: Runner) -> None:
    """The buffered method's first anchor and radius on exact data, after :func:`calibrate_snapshots` (its
    horizon): the anchor's cost from one evaluation at ``K0``, the radius (unless given) as the shared
    calibration measures it (:func:`~.calibration.calibrate`: cost changes of about ``smoothing``) but from
    single evaluations, exact on an exact plant. eb5 (the shared calibration: 3,280 rollouts, most of them the
    horizon's and the radius's batches of 20): 27 rollouts for the horizon, the same radius (2.1e-8).

    Raises
    ------
    NotStabilizingError
        If the evaluation of ``K0`` blows up.
    """
    s, K0, tau = rule.settings, rule.K.copy(), rule.tuning.tau
    probe = timed_probe(rule, run)
    rep = probe(TaskKind.EVALUATE, K0, tau, 0.0, 1)
    if rep.blown_up or not rep.cost > 0:
        raise NotStabilizingError("rollouts from the initial gain K0 blow up")
    rule.safeguards.anchor_cost = rep.cost
    if s.r is None:
        rule.tuning.r = rule.radius = _radius(probe, K0, s, tau, 1, rep.cost, False)


def shape_perturbations(rule: Calibrated, probe: Probe, K0: np.ndarray, tau: float) -> None:
    """Scale the perturbations ``r L Z M`` per input (``L -> L diag(l)``) and per state (``M -> diag(g) M``)
    until none of their rows and columns destabilizes the loop.

    ``M`` sizes a perturbation by the input energy it adds (``r^2 m n`` of the cost), which says nothing of
    the closed loop's sensitivity: on tg1 (``K0 = 0``, lightly damped modes, a fast actuator) 98 % of the
    perturbed gains at ``r^2 m n = 0.3`` are unstable and even 71 % at ``1e-3``; the radius shrank on their
    blow-ups to 2e-4, where the fit's error (``~ 1 / r``) kept every step imprecise. Here each row
    ``Delta = r L e_i 1' M`` (one input fed back from every state, as large as a row of ``Z`` is) and then
    each column ``r L diag(l) 1 e_j' M`` is rolled out with both signs (:data:`SHAPE_ROLLOUTS` rollouts each
    at ``tau``); while either blows up or costs more than :data:`SHAPE_LIMIT` times ``K0``
    (``rule.safeguards.anchor_cost``) its scale is multiplied by :data:`SHAPE_SHRINK`. Cost ratios: invariant
    to the units of states and inputs. The rollouts are kept as equations of the fit (their gains are known).
    Deterministic in the run's task identities (replayable). The shape is relaxed as the gain moves
    (:meth:`~.policy_iteration.PolicyIteration._relax_shape`)."""
    L, M = rule.scales
    assert M is not None
    m, n, r, f0 = rule.m, rule.n, rule.tuning.r, rule.safeguards.anchor_cost
    L0 = np.eye(m) if L is None else L
    l, g = np.ones(m), np.ones(n)

    def fine(Delta: np.ndarray) -> bool:
        for sign in (1.0, -1.0):
            rep = probe(TaskKind.MOMENTS, K0 + sign * Delta, tau, 0.0, SHAPE_ROLLOUTS)
            rule._add(rep)
            if rep.blown_up or not rep.center_cost <= SHAPE_LIMIT * f0:
                return False
        return True

    for i in range(m):
        for _ in range(SHAPE_TRIES):
            if fine(r * l[i] * np.outer(L0[:, i], np.ones(n)) @ M):
                break
            l[i] *= SHAPE_SHRINK
    for j in range(n):
        for _ in range(SHAPE_TRIES):
            if fine(r * g[j] * np.outer(L0 @ l, M[j])):
                break
            g[j] *= SHAPE_SHRINK
    if np.any(l < 1.0) or np.any(g < 1.0):
        rule.scales = (L0 * l, g[:, None] * M)
        rule.shape = (L0, M, l, g)


def _cost_to(spent: np.ndarray, t: np.ndarray) -> Callable[[float], float]:
    """The cost of a probe up to time ``T`` (its intervals ending by ``T``): ``spent`` the cumulative
    interval costs at the interval ends ``t``."""
    def cost_to(T: float) -> float:
        return float(spent[np.searchsorted(t, T * (1 + 1e-9), side="right") - 1])
    return cost_to


def recalibrate(rule: Calibrated, run: Runner) -> None:
    """Checks keep failing (the step has halved to nothing, e.g. under cost noise): re-measure the
    anchor -- a lucky low measurement of it rejects every check -- and restart from a full
    Kleinman step. Logged as ``recalibrate``; no line search (it would need a gradient estimator)."""
    g = rule.safeguards
    anchor = rule.probe(run, TaskKind.EVALUATE, g.anchor_K.copy())
    if not anchor.blown_up:
        g.anchor_cost = anchor.cost
    rule.tuning.alpha = 1.0
    g.searched(False)  # back off until a check accepts again (which resets the limit)
    rule.log(Event.RECALIBRATE)
