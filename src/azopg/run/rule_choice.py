"""The run's update rule: ``method="auto"`` resolved once for the plant -- by the noise it measures when the
plant's moments are exact but it does not declare itself deterministic -- and restored from a checkpoint."""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

from ..errors import OutOfTime, SettingsError
from ..method.auto import process_noise_only, resolve_settings
from ..method.lifecycle import measure_noise, timed_probe
from ..method.rule import UpdateRule
from ..method.rules import make_rule
from ..method.tasks import evaluation_count, run_task, task_rollouts
from ..plants.base import Plant, common_noise, is_deterministic, returns_moments
from ..settings import Settings
from .history import RunLog
from .job import Job

__all__ = ["hold_budget", "make_run_rule"]

log = logging.getLogger("azopg")


def make_run_rule(job: Job, plant: Plant, given: Settings, runlog: RunLog,
                  restore: dict[str, Any] | None) -> UpdateRule:
    """The run's update rule (``method="auto"`` resolved once, for ``plant``, by its noise if it may have some:
    :func:`_measured_rule`), restored from a checkpoint."""
    settings = resolve_settings(given, plant) if given.method == "auto" else given
    deterministic = is_deterministic(plant)
    measured = None
    if given.method == "auto" and settings.method == "policy-iteration" and not deterministic:
        # exact moments, but noise of its own would bias the regression: measured first (a resumed run: as saved)
        measured = _measured_rule(job, plant, settings, runlog, restore)
    if measured is not None and measured.noisy and not (process_noise_only(plant) and job.R is not None):
        rule = measured
    else:
        rule = make_rule(job.K0, settings, R=job.R, observer=runlog, discrete_time=job.discrete_time,
                         deterministic_plant=deterministic)
        if measured is not None:  # measured: policy iteration, not measured again, its rollouts counted; noisy
            rule.noise_measured, rule.noise = True, measured.noise  # (process noise alone): instrumented
            rule.noisy = rule.safeguards.paired = measured.noisy
            rule.stats.rollouts += measured.stats.rollouts
    hold_budget(rule, plant)
    if rule.needs_moments and not returns_moments(plant):
        raise SettingsError(f"method {settings.method!r} needs a plant that returns state moments (rollout(..., "
                            "moments=True), see azopg.plants.base)")
    if restore is not None:
        if restore["format"] < 3:
            log.warning("azopg: a format-%d checkpoint does not hold how many checks were rejected in a row; the "
                        "resumed run counts them afresh", restore["format"])
        rule.load_state(restore["master"])
    return rule


def _measured_rule(job: Job, plant: Plant, settings: Settings, runlog: RunLog,
                   restore: dict[str, Any] | None) -> UpdateRule | None:
    """``auto`` on a plant whose moments are exact but which does not declare itself deterministic: its noise is
    measured (:func:`~azopg.method.lifecycle.measure_noise`, on the master's plant, the task identity the
    calibration would use), and a noisy plant gets the ``natural`` rule instead of policy iteration (whose
    regression noise of the plant's own would bias) -- unless its noise is known to be process noise alone and
    ``R`` is known (:func:`~azopg.method.auto.process_noise_only`): policy iteration's instrumented fit. Returns
    the natural rule that measured (``noisy`` or not); ``None`` for a resumed run saved as not noisy (it takes
    the saved measurement, ``master.noisy``)."""
    natural = dataclasses.replace(settings, method="natural")
    rule = make_rule(job.K0, natural, R=job.R, observer=runlog, discrete_time=job.discrete_time)
    if restore is not None:
        rule.noisy = restore["master"].get("noisy", False) is True
        return rule if rule.noisy else None
    hold_budget(rule, plant)
    try:
        measure_noise(rule, timed_probe(rule, functools.partial(run_task, plant)))
    except OutOfTime:  # the rollout budget holds no measurement: the run's calibration stops at it too
        return None
    return rule


def hold_budget(rule: UpdateRule, plant: Plant) -> None:
    """Tell ``rule`` how many rollouts each task will run on ``plant`` (its evaluation states, its common
    noise: :func:`~azopg.method.tasks.task_rollouts`), so that ``max_rollouts`` holds exactly
    (:meth:`~azopg.method.rule.UpdateRule.admit`)."""
    if rule.settings.max_rollouts is not None:
        rule.budget.planned = functools.partial(task_rollouts, states=evaluation_count(plant),
                                                common=common_noise(plant))
