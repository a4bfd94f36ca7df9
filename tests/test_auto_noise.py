"""``method="auto"`` picks by the noise it measures: a plant whose moments are exact but which does not declare
itself deterministic has its noise measured before the rule is chosen; noisy: ``natural`` (the regression of
policy iteration would be biased by the plant's own noise), noise-free: policy iteration, measured once."""

from __future__ import annotations

import numpy as np

import azopg
from azopg.method.auto import resolve_settings
from azopg.method.lifecycle import measure_noise, timed_probe
from azopg.method.rules import make_rule
from azopg.method.tasks import run_task
from azopg.plants.noisy import NoisyLinearPlant


class ClaimsExactMoments(NoisyLinearPlant):
    """A noisy plant that says its moments are a linear model's exact ones (as a user's plant may)."""

    exact_moments = True


class Undeclared(azopg.LinearPlant):
    """An exact linear plant that does not declare itself deterministic (as a black box would not)."""

    deterministic = False


def test_auto_measures_a_plant_with_exact_moments_and_picks_natural_if_it_is_noisy() -> None:
    base = azopg.get_problem("he1")
    plant = ClaimsExactMoments(base.with_noise(W=0.01 * np.asarray(base.x0_cov)))
    assert resolve_settings(azopg.Settings(), plant).method == "policy-iteration"  # by its attributes alone
    res = azopg.train(plant, K0=base.K0, max_rollouts=800)
    assert res.settings["method"] == "natural" and res.given_settings["method"] == "auto"
    assert [h.event for h in res.history].count("measure-noise") == 1  # measured once, before the rule


def test_auto_keeps_policy_iteration_on_a_noise_free_plant_and_counts_the_measurement_once() -> None:
    problem = azopg.get_problem("he1")
    declared = azopg.train(azopg.LinearPlant(problem), K0=problem.K0, max_updates=3)
    measured = azopg.train(Undeclared(problem), K0=problem.K0, max_updates=3)
    assert declared.settings["method"] == measured.settings["method"] == "policy-iteration"
    assert np.array_equal(declared.K, measured.K)  # the same run, bit for bit ...
    rule = make_rule(np.asarray(problem.K0), azopg.Settings(method="natural"))
    measure_noise(rule, timed_probe(rule, lambda task: run_task(Undeclared(problem), task)))
    assert not rule.noisy and rule.stats.rollouts > 0
    assert measured.rollouts == declared.rollouts + rule.stats.rollouts  # ... plus one measurement
