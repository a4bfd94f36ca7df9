"""What travels between the master and a worker, and what a worker does with it.

A :class:`Task` names the gain to work at (and its version), the rollout settings and
the task's identity; every random draw of the task comes from
``numpy.random.default_rng([seed, worker, task_id])``, so a task is reproducible from
its identity alone. :func:`run_task` is the whole of a worker's job; every backend
calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..plants.base import Plant, RolloutResult, common_noise, failed, returns_moments, returns_snapshots, rollout_of
from ..plants.checked import CheckedPlant, check_states, require_task_memory
from ..plants.deadline import check_deadline, deadline_scope
from .estimators import estimate_gradient, rebuild_estimate, sphere_directions
from .kinds import TaskKind
from .noisy_eval import NOISY_TAIL_TOL, TAIL_Z, noisy_measure
from .paired import CHECK_PAIRS, noise_factors, paired_measure

__all__ = ["TASK_KINDS", "Report", "RolloutData", "Task", "TrajectoryData", "estimate_rollouts", "evaluation_count",
           "evaluation_states", "report_gradient", "run_task", "task_rng", "task_rollouts"]

#: What a task can ask of a worker (see :func:`run_task`).
TASK_KINDS = tuple(TaskKind)
_EVAL_STREAM = 2**31 - 1  # generator stream of the fixed evaluation states
_NOISE_STREAM = 2**31 - 3  # generator stream of a task's measurement noise
_PLANT_STREAM = 2**31 - 4  # generator stream of a noisy plant's process and measurement noise


class NoisyCosts:
    """A plant whose measured rollout costs carry relative noise ``sigma`` (see
    :attr:`azopg.settings.Settings.cost_noise`); blown-up rollouts stay as they are. State
    moments (``moments=True``) pass through exact unless ``moments_noise`` > 0: then each
    measured ``S`` is ``S + moments_noise * D^1/2 G D^1/2`` (``D = diag S``, ``G`` symmetric with
    standard normal entries) -- noise of every entry relative to its own scale, also along ``S``'s
    small directions (errors in variables for the regression)."""

    def __init__(self, plant: Plant, sigma: float, rng: np.random.Generator, moments_noise: float = 0.0) -> None:
        self.plant, self.sigma, self.rng, self.moments_noise = plant, sigma, rng, moments_noise
        self.n, self.m = plant.n, plant.m
        self.returns_moments = returns_moments(plant)
        self.common_noise = common_noise(plant)

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.plant.initial_states(rng, size)

    def rollout(self, K: np.ndarray, x0: np.ndarray, tau: float, *, moments: bool = False,
                noise_rows: np.ndarray | None = None) -> RolloutResult:
        res = rollout_of(self.plant, K, x0, tau, moments, noise_rows)
        cost = np.asarray(res.cost, dtype=float)
        noisy = cost * noise_factors(self.rng, self.sigma, cost.shape[0])
        S = res.S
        if S is not None and self.moments_noise > 0:
            G = self.rng.standard_normal(S.shape)
            d = np.sqrt(np.abs(np.diagonal(S, axis1=1, axis2=2)))[:, :, None]
            S = S + self.moments_noise * d * (0.5 * (G + np.swapaxes(G, 1, 2))) * np.swapaxes(d, 1, 2)
        return RolloutResult(np.where(res.blown_up, cost, noisy), res.blown_up, S, res.x_end)


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker.

    ``kind`` is ``"estimate"`` (a zero-order gradient estimate at ``K``),
    ``"evaluate"`` (the cost of ``K`` at horizons ``tau`` and ``2 tau`` from fixed
    evaluation states -- common random numbers, so two gains compare exactly) or
    ``"moments"`` (``N`` rollouts of gains ``K + r Z_i``, returned raw with their state
    moments: :class:`RolloutData`). ``L`` and ``M`` whiten an estimate's directions
    (``L Z M``, see :func:`~azopg.method.estimators.estimate_gradient`); with ``moments`` an
    estimate or check also returns the sum of its rollouts' ``S`` (if the plant has them).
    A *paired* check (``K_ref`` given, measurement noise) also measures ``K_ref`` on the same
    states, each state repeated until there are at least ``pairs`` pairs (see
    :func:`~azopg.method.paired.paired_measure`). A ``moments`` task with ``snapshots`` > 1 on a
    plant that has ``rollout_snapshots`` returns each rollout cut into that many intervals
    (:class:`TrajectoryData`); other plants return whole rollouts. An ``antithetic`` ``moments`` task
    returns pairs: ``K + r Z_i`` and ``K - r Z_i`` from the same state (the first half of its rollouts,
    then the second; ``N // 2`` pairs, at least one; see :mod:`~azopg.method.pairs`). On a plant with
    its own noise (``noisy``) a check measures the transient against the stationary cost instead, on common noise
    (:func:`~azopg.method.noisy_eval.noisy_measure`).
    """

    task_id: int
    worker: int
    kind: TaskKind
    K: np.ndarray
    version: int
    tau: float
    r: float
    N: int
    method: str
    seed: int
    light: bool = False
    cost_noise: float = 0.0
    L: np.ndarray | None = None
    M: np.ndarray | None = None
    moments: bool = False
    K_ref: np.ndarray | None = None
    pairs: int = 0
    snapshots: int = 1
    noisy: bool = False
    antithetic: bool = False
    deadline: float | None = None  #: :func:`time.monotonic` at which the task stops (OutOfTime); None: never

    @property
    def size(self) -> int:
        """What the task's time grows with besides its horizon: the directions ``N`` of an estimate, the pairs of
        a paired check (:data:`~.paired.CHECK_PAIRS` for any other check): both grow with the batch."""
        return self.N if self.kind == TaskKind.ESTIMATE else (self.pairs or CHECK_PAIRS)


@dataclass
class RolloutData:
    """Raw rollouts of a ``"moments"`` task: what the regression of
    :mod:`azopg.method.regression` needs, for any base gain.

    Attributes
    ----------
    Ki : ndarray, shape (b, m, n)
        The gains rolled out.
    x0, x_end : ndarray, shape (b, n)
    S : ndarray, shape (b, n, n)
    cost : ndarray, shape (b,)
    tau : float
        The horizon (not an input of the regression; the instrumented fit's ``tr(PW)`` column).
    """

    Ki: np.ndarray
    x0: np.ndarray
    x_end: np.ndarray
    S: np.ndarray
    cost: np.ndarray
    tau: float = math.nan

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.Ki, self.x0, self.x_end, self.S, self.cost


@dataclass
class TrajectoryData:
    """Rollouts of a ``"moments"`` task cut into ``k`` intervals (see
    :class:`~azopg.plants.base.Trajectory`): ``k`` equations of the regression each.

    Attributes
    ----------
    Ki : ndarray, shape (b, m, n)
    x : ndarray, shape (b, k + 1, n)
    S : ndarray, shape (b, k, n, n)
    cost : ndarray, shape (b, k)
    t : ndarray, shape (k + 1,), optional
        The times ``t_j`` (not an input of the regression).
    """

    Ki: np.ndarray
    x: np.ndarray
    S: np.ndarray
    cost: np.ndarray
    t: np.ndarray | None = None

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.Ki, self.x, self.S, self.cost


@dataclass
class Report:
    """A worker's answer to a :class:`Task`.

    In communication-light mode (``task.light``) an estimate travels as its ``N``
    scalar weights only; the master rebuilds the directions from the task's seed. A paired
    check also carries ``diff``, the mean measured cost of ``K`` minus that of ``K_ref``, and
    its standard error ``diff_se``.
    """

    task_id: int
    worker: int
    kind: TaskKind
    version: int
    rollouts: int
    blown_up: int
    grad: np.ndarray | None = None
    weights: np.ndarray | None = None
    center_cost: float = float("nan")
    cost: float = float("nan")
    cost2: float = float("nan")
    S: np.ndarray | None = None
    S_count: int = 0
    data: RolloutData | TrajectoryData | None = None
    diff: float = float("nan")
    diff_se: float = float("nan")
    transient: float = float("nan")
    tail: float = float("nan")
    tail_se: float = float("nan")
    noise: float = float("nan")
    cost_se: float = float("nan")  #: standard error of ``cost`` given the states (noisy plant), else nan
    cost_df: int = 0  #: its degrees of freedom
    cost_rows: int = 0  #: rollouts of ``K`` behind ``cost`` (noisy plant)

    def long_tail(self, tail_tol: float) -> bool:
        """Whether a check's cost between ``tau`` and ``2 tau`` is not negligible (relative
        ``tail_tol``): a slow or unstable mode that has not yet shown. On a noisy plant (a check
        that measured its ``tail_se``) only the transient's tail counts, beyond its standard error and
        relative to the transient at least :data:`~.noisy_eval.NOISY_TAIL_TOL` (:mod:`azopg.method.noisy_eval`):
        the noise's own cost grows with ``tau`` forever."""
        if math.isfinite(self.tail_se):
            return self.tail > max(tail_tol, NOISY_TAIL_TOL) * self.transient + TAIL_Z * self.tail_se
        return self.cost2 - self.cost > tail_tol * self.cost2

    def short_tail(self, tail_tol: float) -> bool:
        """Whether the horizon could be halved (a noisy plant's check only): the transient's tail beyond ``tau``,
        by :data:`~.noisy_eval.TAIL_Z` standard errors, is at most ``tol**2`` of the transient, ``tol`` the
        noisy tail tolerance of :meth:`long_tail`. The tail of a sum of decaying modes is log-convex,
        ``tail(tau/2)**2 <= tail(0) tail(tau)``, so the tail beyond ``tau / 2`` is then about ``tol`` at most: the
        halved horizon is not long by :meth:`long_tail` (a band of ``tol**2 ... tol`` keeps the two apart)."""
        if not math.isfinite(self.tail_se):
            return False
        return self.tail + TAIL_Z * self.tail_se <= max(tail_tol, NOISY_TAIL_TOL) ** 2 * self.transient

    def payload_bytes(self) -> int:
        """Bytes of numerical payload this report carries back to the master."""
        size = 8 * 4  # ids and the scalar costs
        arrays = [self.grad, self.weights, self.S, *(self.data.arrays() if self.data is not None else ())]
        for arr in arrays:
            if arr is not None:
                size += arr.nbytes
        return size


def estimate_rollouts(method: str, N: int) -> int:
    """Rollouts of an estimate of ``N`` directions: two per direction (``"two-point"``), else one."""
    return 2 * N if method == "two-point" else N


def task_rollouts(task: Task, states: int = 0, common: bool = False) -> int:
    """The rollouts :func:`run_task` runs for ``task`` on a plant with ``states`` evaluation states
    (:func:`evaluation_count`; 0: unknown, a check then counts 0) and ``common`` noise paths
    (:func:`~azopg.plants.base.common_noise`): what a run reserves of its rollout budget for a task in flight."""
    if task.kind == TaskKind.ESTIMATE:
        return estimate_rollouts(task.method, task.N)
    if task.kind == TaskKind.MOMENTS:
        return task.N
    k = states
    if task.noisy and common:  # noisy_measure: K from the states and from 0, continued; K_ref from the states
        b = max(2, math.ceil((task.pairs or CHECK_PAIRS) / k)) * k if k else 0
        return (5 if task.K_ref is not None else 4) * b
    if task.K_ref is not None and task.cost_noise > 0:  # paired_measure: K at tau and 2 tau, K_ref at tau
        return 3 * max(2, math.ceil(task.pairs / k)) * k if k else 0
    return 2 * k


def task_rng(seed: int, worker: int, task_id: int) -> np.random.Generator:
    """The generator of task ``task_id`` run by ``worker`` in a run seeded ``seed``."""
    return np.random.default_rng([seed, worker, task_id])


def report_gradient(rep: Report, seed: int, m: int, n: int, L: np.ndarray | None = None,
                    M: np.ndarray | None = None) -> np.ndarray:
    """The gradient estimate a report carries, rebuilt from its task's seed (and the
    whitening factors the task was sent, if any) in light mode."""
    if rep.grad is not None:
        return rep.grad
    assert rep.weights is not None, "an estimate report carries grad or weights"
    return rebuild_estimate(rep.weights, task_rng(seed, rep.worker, rep.task_id), m, n, L, M)


def evaluation_states(plant: Plant, seed: int) -> np.ndarray:
    """Fixed states whose mean rollout cost estimates the expected cost.

    A plant may provide ``evaluation_states()`` (the :class:`~azopg.plants.linear.LinearPlant`
    returns exact square-root factors of the covariance, so the estimate is exact);
    otherwise ``max(n, 8)`` states are drawn once from the plant's distribution.
    """
    own = getattr(plant, "evaluation_states", None)
    if callable(own):
        return check_states(plant, own(), None, "evaluation_states")
    size = evaluation_count(plant)
    return check_states(plant, plant.initial_states(np.random.default_rng([seed, _EVAL_STREAM]), size), size)


def evaluation_count(plant: Plant) -> int:
    """How many states :func:`evaluation_states` gives (without drawing them)."""
    own = getattr(plant, "evaluation_states", None)
    if callable(own):
        return int(np.shape(own())[0])
    return int(getattr(plant, "eval_count", None) or max(plant.n, 8))  # a GymPlant may be told how many


def run_task(plant: Plant, task: Task, eval_states: np.ndarray | None = None) -> Report:
    """Do one task on ``plant`` and return the report; past ``task.deadline`` it stops between rollouts (a long
    rollout between its steps or grid chunks: :mod:`~azopg.plants.deadline`).

    Raises
    ------
    OutOfTime
        If the task's deadline passed before it ended (no report: the run's time budget is spent).
    PlantProtocolError
        If the plant answers outside the protocol (see :mod:`azopg.plants.checked`).
    SettingsError
        If an estimate's batch does not fit in memory.
    """
    with deadline_scope(task.deadline):
        return _run_task(plant, task, eval_states)


def _run_task(plant: Plant, task: Task, eval_states: np.ndarray | None) -> Report:
    raw, plant = plant, CheckedPlant(plant)
    bind = getattr(raw, "bind_rng", None)
    if callable(bind):  # a noisy plant draws its noise from the task's own stream
        bind(np.random.default_rng([task.seed, task.worker, task.task_id, _PLANT_STREAM]))
    noise = (np.random.default_rng([task.seed, task.worker, task.task_id, _NOISE_STREAM])
             if task.cost_noise > 0 else None)
    moments = task.moments and returns_moments(plant)
    if task.kind == TaskKind.ESTIMATE:
        require_task_memory(raw, task.N, estimate_rollouts(task.method, task.N))
        est = estimate_gradient(
            plant if noise is None else NoisyCosts(plant, task.cost_noise, noise), task.K,
            r=task.r, N=task.N, tau=task.tau,
            rng=task_rng(task.seed, task.worker, task.task_id), method=task.method,  # type: ignore[arg-type]
            L=task.L, M=task.M, moments=moments,
        )
        return Report(
            task.task_id, task.worker, task.kind, task.version, est.rollouts, est.blown_up,
            grad=None if task.light else est.grad, weights=est.weights if task.light else None,
            center_cost=est.center_cost, S=est.S, S_count=est.S_count,
        )
    if task.kind == TaskKind.MOMENTS:  # each S (n x n per interval) counted as n/2 + 1 rollouts' states
        require_task_memory(raw, task.N, task.N * max(task.snapshots, 1) * (raw.n // 2 + 1))
        return _run_moments(plant if noise is None else NoisyCosts(plant, task.cost_noise, noise), task)
    if task.kind == TaskKind.EVALUATE and task.noisy and common_noise(raw):  # rows from 0 and x(tau), common noise
        X = evaluation_states(raw, task.seed) if eval_states is None else eval_states
        nm = noisy_measure(plant, task.K, task.K_ref, X, task.tau, task.cost_noise, task.pairs or CHECK_PAIRS,
                           np.random.default_rng([task.seed, task.worker, task.task_id, _NOISE_STREAM]), moments)
        return Report(task.task_id, task.worker, task.kind, task.version, nm.rollouts, nm.blown_up, cost=nm.cost,
                      cost2=nm.cost2, S=nm.S, S_count=nm.S_count, diff=nm.diff, diff_se=nm.diff_se,
                      transient=nm.transient, tail=nm.tail, tail_se=nm.tail_se, noise=nm.noise,
                      cost_se=nm.cost_se, cost_df=nm.cost_df, cost_rows=nm.cost_rows)
    if task.kind == TaskKind.EVALUATE and task.K_ref is not None and noise is not None:
        X = evaluation_states(raw, task.seed) if eval_states is None else eval_states
        pm = paired_measure(plant, task.K, task.K_ref, X, task.tau, task.cost_noise, task.pairs, noise, moments)
        return Report(task.task_id, task.worker, task.kind, task.version, pm.rollouts, pm.blown_up, cost=pm.cost,
                      cost2=pm.cost2, S=pm.S, S_count=pm.S_count, diff=pm.diff, diff_se=pm.diff_se)
    if task.kind == TaskKind.EVALUATE:
        X = evaluation_states(raw, task.seed) if eval_states is None else eval_states
        k = X.shape[0]
        r1 = plant.rollout(np.broadcast_to(task.K, (k, *task.K.shape)), X, task.tau, moments=moments)
        r2 = plant.rollout(np.broadcast_to(task.K, (k, *task.K.shape)), X, 2.0 * task.tau)
        if noise is not None:  # one noisy measurement per state, at both horizons of its rollout
            f = noise_factors(noise, task.cost_noise, k)
            r1 = RolloutResult(np.where(r1.blown_up, r1.cost, r1.cost * f), r1.blown_up)
            r2 = RolloutResult(np.where(r2.blown_up, r2.cost, r2.cost * f), r2.blown_up)
        blown = int(np.sum(failed(r1)) + np.sum(failed(r2)))
        fine = ~failed(r1)
        S = r1.S[fine].sum(axis=0) if r1.S is not None else None
        return Report(
            task.task_id, task.worker, task.kind, task.version, 2 * k, blown,
            cost=float(np.mean(r1.cost)), cost2=float(np.mean(r2.cost)),
            S=S, S_count=int(np.count_nonzero(fine)) if S is not None else 0,
        )
    raise ValueError(f"unknown task kind {task.kind!r}")


def _run_moments(plant: Plant, task: Task) -> Report:
    """``N`` rollouts of ``K + r L Z_i M`` (``Z_i`` on the sphere, drawn first, then the states),
    returned raw; blown-up rollouts are left out (and counted)."""
    if not returns_moments(plant):
        raise ValueError("a 'moments' task needs a plant that returns state moments")
    rng = task_rng(task.seed, task.worker, task.task_id)
    m, n = task.K.shape
    if task.antithetic:
        return _run_pairs(plant, task, rng)
    Z = sphere_directions(rng, task.N, m, n)
    if task.L is not None:  # perturbations scaled to the inputs and states (policy iteration's snapshots)
        Z = task.L @ Z
    if task.M is not None:
        Z = Z @ task.M
    Ki = task.K + task.r * Z
    x0 = plant.initial_states(rng, task.N)
    inner: Any = getattr(plant, "plant", plant)  # the snapshots of the plant a CheckedPlant wraps
    if task.snapshots > 1 and returns_snapshots(inner) and not isinstance(plant, NoisyCosts):
        check_deadline()
        tr = inner.rollout_snapshots(Ki, x0, task.tau, task.snapshots)
        ok = ~np.asarray(tr.blown_up, dtype=bool)
        nok = int(np.count_nonzero(ok))
        total = np.sum(tr.cost[ok], axis=1)
        return Report(task.task_id, task.worker, task.kind, task.version, task.N, task.N - nok,
                      center_cost=float(total.mean()) if nok else float("inf"),
                      data=TrajectoryData(Ki[ok], tr.x[ok], tr.S[ok], tr.cost[ok], np.asarray(tr.t, dtype=float)))
    res = plant.rollout(Ki, x0, task.tau, moments=True)
    ok = ~failed(res)
    assert res.S is not None and res.x_end is not None
    cost = np.asarray(res.cost, dtype=float)
    data = RolloutData(Ki[ok], x0[ok], res.x_end[ok], res.S[ok], cost[ok], task.tau)
    nok = int(np.count_nonzero(ok))
    return Report(task.task_id, task.worker, task.kind, task.version, task.N, task.N - nok,
                  center_cost=float(cost[ok].mean()) if nok else float("inf"), data=data)


def _run_pairs(plant: Plant, task: Task, rng: np.random.Generator) -> Report:
    """An antithetic ``moments`` task: ``h = max(1, N // 2)`` directions ``Z_i`` on the sphere (drawn
    first, then the states; scaled ``L Z_i M`` as in :func:`_run_moments`), rollouts of ``K + r Z_i`` and
    then of ``K - r Z_i`` from the same states; a pair with a blown-up rollout is left out whole (both
    counted)."""
    m, n = task.K.shape
    h = max(1, task.N // 2)
    Z = sphere_directions(rng, h, m, n)
    Z = task.r * (Z if task.L is None else task.L @ Z) @ (np.eye(n) if task.M is None else task.M)
    x0 = plant.initial_states(rng, h)
    Ki, x0 = np.concatenate([task.K + Z, task.K - Z]), np.concatenate([x0, x0])
    res = rollout_of(plant, Ki, x0, task.tau, True)
    assert res.S is not None and res.x_end is not None
    bad = failed(res)
    ok = np.tile(~(bad[:h] | bad[h:]), 2)
    cost = np.asarray(res.cost, dtype=float)
    data = RolloutData(Ki[ok], x0[ok], res.x_end[ok], res.S[ok], cost[ok])
    nok = int(np.count_nonzero(ok))
    return Report(task.task_id, task.worker, task.kind, task.version, 2 * h, 2 * h - nok,
                  center_cost=float(cost[ok].mean()) if nok else float("inf"), data=data)
