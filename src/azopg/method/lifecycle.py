"""A rule's life outside the loop: calibration, the step search after a stall, the final gain.

These are the orchestration around :meth:`~azopg.method.rule.UpdateRule.ask` and ``tell``:
each runs a few tasks at once (``run``, blocking) through the rule's :meth:`~Learner.probe`,
then sets the rule's tuning, anchor and versions. The rule calls them from its methods of the
same names, which a rule may extend (policy iteration's refill its buffer and recalibrate
without a line search).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
from scipy import stats as scipy_stats

from ..errors import OutOfTime
from ..settings import Settings
from .calibration import Probe, calibrate, search_step
from .kinds import Event, TaskKind
from .paired import CHECK_PAIRS, FINAL_PAIRS, significantly_cheaper
from .safeguards import Safeguards
from .stats import Stats, Tuning
from .tasks import Report, Task

__all__ = ["CostInterval", "FINAL_TASK", "INTERVAL_LEVEL", "INTERVAL_ROLLOUTS", "INTERVAL_TASK", "Learner",
           "NOISE_FLOOR", "NOISE_TASK", "OVERRUN", "PACE_MARGIN", "Runner", "calibrate_rule", "choose_final_gain",
           "closing_reserve", "cost_interval", "measure_noise", "recalibrate_rule", "timed_probe"]

#: Runs one task to completion and returns its report.
Runner = Callable[[Task], Report]
#: Task ids of the final paired checks under noise start here (far above any id a run issues).
FINAL_TASK = 2**48
#: Task id of the calibration's noise measurement (:func:`measure_noise`).
NOISE_TASK = FINAL_TASK - 1
#: Task id of the measurement of the returned gain's cost (:func:`cost_interval`).
INTERVAL_TASK = FINAL_TASK - 2
#: Rollouts (at least) of that measurement: each evaluation state repeated on independent noise.
INTERVAL_ROLLOUTS = 64
#: Confidence level of the interval.
INTERVAL_LEVEL = 0.95
#: Relative spread of one rollout's cost between repeats of a state above which a plant counts as noisy
#: (a deterministic plant repeats to rounding).
NOISE_FLOOR = 1e-9
#: Seconds past the time budget a calibration probe may be predicted to end and still be started.
OVERRUN = 0.5
#: Factor on the last probe's pace in that prediction: a shared machine's load makes the next probe slower
#: (tg1 under process noise: probes of 5.1, 6.1, then 7.1 s; the run ended 7.8 s past its budget).
PACE_MARGIN = 1.5


class Learner(Protocol):
    """What the orchestration reads and writes of a rule (:class:`~azopg.method.rule.UpdateRule`)."""

    K: np.ndarray
    K0: np.ndarray
    version: int
    settings: Settings
    tuning: Tuning
    stats: Stats
    safeguards: Safeguards
    out_of_time: Callable[[], bool]
    time_left: Callable[[], float]
    pace: dict[str, float]  #: seconds per unit of horizon of the last calibration probe, by task kind
    deterministic_plant: bool  #: the plant declares itself noise-free: :func:`measure_noise` is skipped
    noisy: bool  #: the plant's own noise was measured (:func:`measure_noise`): checks are paired
    noise: float  #: the relative standard deviation of one rollout's cost at ``K0`` measured
    noise_measured: bool  #: :func:`measure_noise` ran (it runs once)

    @property
    def line_search(self) -> bool: ...

    def probe(self, run: Runner, kind: TaskKind, K: np.ndarray, tau: float | None = None, r: float | None = None,
              N: int | None = None, *, ref: np.ndarray | None = None, pairs: int = CHECK_PAIRS,
              task_id: int | None = None) -> Report: ...

    def new_version(self, K: np.ndarray) -> None: ...

    def log(self, event: Event, delay: int = 0, worker: int = -1, version_read: int = -1) -> None: ...


def timed_probe(rule: Learner, run: Runner) -> Probe:
    """The rule's probe with ``run`` for a calibration or step search: raises
    :class:`~azopg.errors.OutOfTime` before a probe once the time budget is spent, once the rollout
    budget (``max_rollouts``) is, or when the last probe of its kind predicts (seconds per unit of
    horizon times ``tau``, times :data:`PACE_MARGIN`) an end more than :data:`OVERRUN` s past the time budget."""
    def probe(kind: TaskKind, K: np.ndarray, tau: float, r: float, N: int, *, ref: np.ndarray | None = None,
              pairs: int = CHECK_PAIRS, task_id: int | None = None) -> Report:
        cap = rule.settings.max_rollouts
        left = rule.time_left()
        late = rule.out_of_time() or PACE_MARGIN * rule.pace.get(kind, 0.0) * tau > left + OVERRUN
        if late or (cap is not None and rule.stats.rollouts >= cap):
            what = "time" if late else "rollout"
            raise OutOfTime(f"the {what} budget ran out during the {'re' if rule.version else ''}calibration")
        rep = rule.probe(run, kind, K, tau, r, N, ref=ref, pairs=pairs, task_id=task_id)
        if math.isfinite(left):
            rule.pace[kind] = max(left - rule.time_left(), 0.0) / tau
        return rep

    return probe


def calibrate_rule(rule: Learner, run: Runner) -> None:
    """Choose ``tau``, ``r`` and ``alpha`` from rollouts at ``K0`` (see :func:`~.calibration.calibrate`);
    the line search's step, if it found one, is the first update. The plant's own noise is
    measured first (:func:`measure_noise`)."""
    probe = timed_probe(rule, run)
    measure_noise(rule, probe)
    settings, t = rule.settings, rule.tuning
    if not rule.line_search and settings.step is None:  # the rule's own initial step is kept
        settings = dataclasses.replace(settings, step=t.alpha)
    cal = calibrate(probe, rule.K.copy(), settings, t.N, tau=t.tau, r=t.r, alpha=t.alpha, noisy=rule.noisy)
    t.tau, t.r, t.alpha = cal.tau, cal.r, cal.alpha
    rule.safeguards.anchor_cost = cal.f0
    if cal.K1 is not None and not rule.safeguards.plain:  # plain: every update is the rule's own
        rule.new_version(cal.K1)
        rule.safeguards.move_anchor(rule.K.copy(), cal.cost1, rule.version)
        rule.stats.updates += 1
    rule.log(Event.CALIBRATE)


def measure_noise(rule: Learner, probe: Probe) -> None:
    """Whether the plant has noise of its own: ``K0`` (nudged, :func:`_nudge`) is checked against ``K0``
    on repeated evaluation states (:func:`~azopg.method.noisy_eval.noisy_measure`); a deterministic plant
    repeats every state's cost exactly, a noisy one does not (relative spread above
    :data:`NOISE_FLOOR`). If noisy, the rule's checks from now on are paired with their anchor and
    judge the transient's tail (not the noise's ever-growing cost); ``rule.noise`` keeps the measured
    relative noise of one rollout. Deterministic in the run's seed (task identities), so a replay
    measures the same. Skipped for a plant that declares itself deterministic
    (:func:`~azopg.plants.base.is_deterministic`): its run costs the rollouts it did before; and if it ran
    already (``method="auto"`` measures before it picks the rule: :func:`~azopg.method.auto.measured_method`)."""
    if rule.deterministic_plant or rule.noise_measured:
        return
    rule.noise_measured = True
    rule.noisy = True
    tasks = rule.stats.tasks  # its own identity: the run's task ids (and their noise) stay as without it
    try:
        rep = probe(TaskKind.EVALUATE, rule.K + _nudge(rule), rule.tuning.tau, 0.0, rule.tuning.N,
                    ref=rule.K.copy(), pairs=1, task_id=NOISE_TASK)
    finally:
        rule.noisy = False
        rule.stats.tasks = tasks
    rule.noise = rep.noise if math.isfinite(rep.noise) else 0.0
    if rule.noise > NOISE_FLOOR:
        rule.noisy = rule.safeguards.paired = True
        rule.log(Event.MEASURE_NOISE)


def _nudge(rule: Learner) -> np.ndarray:
    """A tiny fixed perturbation of ``K0`` (relative 1e-3, as the radius search starts) at which the noise
    is measured: at ``K0 = 0`` measurement noise does not reach the input, so ``K0`` alone can look
    deterministic on a plant that is not."""
    U = np.random.default_rng([rule.settings.seed, 2**31 - 5]).standard_normal(rule.K.shape)
    return 1e-3 * max(float(np.linalg.norm(rule.K)), 1.0) * U / np.linalg.norm(U)


def recalibrate_rule(rule: Learner, run: Runner) -> None:
    """Search the step afresh at the anchor (re-measured at the current horizon), with new
    estimates: a run never gives up silently. Logged as ``recalibrate``."""
    g, t = rule.safeguards, rule.tuning
    found = False
    probe = timed_probe(rule, run)
    anchor = probe(TaskKind.EVALUATE, g.anchor_K.copy(), t.tau, t.r, t.N)
    if not anchor.blown_up:
        g.anchor_cost = anchor.cost
        t.alpha, K1, cost1 = search_step(probe, g.anchor_K.copy(), rule.settings, t.N, tau=t.tau, r=t.r,
                                         f0=anchor.cost, paired=rule.noisy)
        if K1 is not None:
            rule.new_version(K1)
            g.move_anchor(rule.K.copy(), cost1, rule.version)
            g.branch_start = rule.version  # estimates in flight were taken on the stalled branch
            rule.stats.updates += 1
            found = True
    g.searched(found)
    rule.log(Event.RECALIBRATE)


def choose_final_gain(rule: Learner, status: str, run: Runner) -> np.ndarray:
    """The gain a run returns: the current one if it reached the target (by the oracle),
    the anchor if interrupted, else whichever of the two a last rollout check finds
    cheaper -- never a gain costlier than ``K0``. Under measurement noise that gain is
    returned only if a larger paired check (:data:`~.paired.FINAL_PAIRS`) finds it
    significantly cheaper than ``K0`` itself; else ``K0`` is. Out of time or rollouts on a plant
    with noise of its own (measured at calibration): the anchor. In plain mode (the paper's rule,
    :mod:`~.plain`): always the current gain."""
    g = rule.safeguards
    if status == "converged" or g.plain:  # plain: the last iterate, as published
        return rule.K.copy()
    if status == "interrupted" or (status in ("max_time", "max_rollouts") and g.paired
                                   and rule.settings.cost_noise == 0):
        # out of time or rollouts on a plant with noise of its own: its rollouts are long, there is no budget
        # for the larger paired checks; the anchor is the last gain a paired check found significantly cheaper
        # than the anchor before it (chained: than K0). Under --cost-noise the final checks below still run.
        # A rule that keeps the gains of unresolved checks (policy iteration: a consistent fit) returns the last
        # one kept: not significantly costlier than the anchor, cheaper in expectation (``keeps_unresolved``).
        return (g.anchor_K if g.kept_K is None else g.kept_K).copy()
    if not g.paired:
        rep = rule.probe(run, TaskKind.EVALUATE, rule.K.copy())
        return rule.K.copy() if g.beats_anchor(rep) else g.anchor_K.copy()
    K = g.anchor_K.copy()
    if not np.array_equal(rule.K, K) and _cheaper(rule, run, rule.K, K, CHECK_PAIRS, 0):
        K = rule.K.copy()
    if np.array_equal(K, rule.K0) or not _cheaper(rule, run, K, rule.K0, FINAL_PAIRS, 1):
        return rule.K0.copy()
    return K


def _cheaper(rule: Learner, run: Runner, K: np.ndarray, ref: np.ndarray, pairs: int, i: int) -> bool:
    """Whether a paired check finds ``K`` significantly cheaper than ``ref`` (and trusted).
    The check's identity (so its noise) depends on the version only, not on how many tasks
    were in flight when the run stopped: a replay draws the same noise."""
    task_id = FINAL_TASK + 2 * rule.version + i
    rep = rule.probe(run, TaskKind.EVALUATE, K.copy(), ref=ref, pairs=pairs, task_id=task_id)
    return (not rep.blown_up and significantly_cheaper(rep.diff, rep.diff_se)
            and not rep.long_tail(rule.settings.tail_tol))


@dataclasses.dataclass(frozen=True)
class CostInterval:
    """Confidence intervals for the expected cost of a gain at the run's horizon, and for its difference to a
    reference gain's (:func:`cost_interval`).

    Attributes
    ----------
    tau : float
        The horizon: the intervals are for ``E[int_0^tau cost dt]`` from ``x0 ~ N(0, x0_cov)`` (the evaluation
        states) over the plant's noise -- what :func:`azopg.model.noise.expected_cost` gives exactly.
    mean, se : float
        The measured mean cost and its standard error (from the spread between repeats of each state).
    df : int
        Degrees of freedom of ``se``: ``states * (repeats - 1)``.
    low, high : float
        ``mean -+ t_{df} se``, at :attr:`level`.
    diff, diff_se, diff_low, diff_high : float
        The same for the expected cost of the gain minus the reference's, measured on common noise (paired:
        far tighter than the cost's own interval when the two gains are close).
    reference : str
        What the reference gain is (``"K0"``, or ``"K*"`` when the caller knows the optimum).
    rollouts : int
        Rollouts of the gain measured (``states * repeats``, independent noise each; as many of the reference).
    level : float
    """

    tau: float
    mean: float
    se: float
    df: int
    low: float
    high: float
    diff: float
    diff_se: float
    diff_low: float
    diff_high: float
    reference: str
    rollouts: int
    level: float = INTERVAL_LEVEL

    def to_dict(self) -> dict[str, float | int | str]:
        return dataclasses.asdict(self)


def cost_interval(rule: Learner, run: Runner, K: np.ndarray, ref: np.ndarray, reference: str) -> CostInterval | None:
    """:data:`INTERVAL_LEVEL` confidence intervals for the expected cost of ``K`` at the rule's horizon and for its
    difference to ``ref``'s (named ``reference``), from a measurement of their own (:data:`INTERVAL_TASK`:
    independent of the checks that chose ``K``, so no winner's curse; replayable): each evaluation state
    repeated on independent noise paths, ``K`` and ``ref`` on the same ones, until there are at least
    :data:`INTERVAL_ROLLOUTS` rollouts of each; ``mean -+ t se`` with the standard errors stratified by state
    (the states are fixed; only the noise is random). ``None`` unless the plant's own noise was measured
    (``rule.noisy``), or if the measurement blew up."""
    if not rule.noisy:
        return None
    tasks = rule.stats.tasks
    try:
        rep = rule.probe(run, TaskKind.EVALUATE, K.copy(), ref=np.array(ref, dtype=float), pairs=INTERVAL_ROLLOUTS,
                         task_id=INTERVAL_TASK)
    finally:
        rule.stats.tasks = tasks
    if rep.blown_up or not (math.isfinite(rep.cost_se) and math.isfinite(rep.diff_se) and rep.cost_df > 0):
        return None
    t = float(scipy_stats.t.ppf(0.5 + INTERVAL_LEVEL / 2, rep.cost_df))
    return CostInterval(rule.tuning.tau, rep.cost, rep.cost_se, rep.cost_df, rep.cost - t * rep.cost_se,
                        rep.cost + t * rep.cost_se, rep.diff, rep.diff_se, rep.diff - t * rep.diff_se,
                        rep.diff + t * rep.diff_se, reference, rep.cost_rows)


def closing_reserve(rule: Learner, pace: Mapping[str, float] | None = None) -> float:
    """Seconds to keep at the end of the time budget for :func:`cost_interval` (a plant with noise of its own):
    the slower of the calibration's last check (of :data:`CHECK_PAIRS` pairs) and the last check ``pace`` holds
    (seconds per unit of horizon and per pair, by task kind: the serial executor's), per pair, at the rule's
    horizon, times :data:`PACE_MARGIN` and the measurement's :data:`INTERVAL_ROLLOUTS` per gain (a long
    rollout's time grows with the rows; tg1 and cola5 ended 1.1-1.3 s late without it)."""
    if not rule.noisy:
        return 0.0
    check = max(rule.pace.get(TaskKind.EVALUATE, 0.0) / CHECK_PAIRS, (pace or {}).get(TaskKind.EVALUATE, 0.0))
    return PACE_MARGIN * check * rule.tuning.tau * INTERVAL_ROLLOUTS
