"""``method="auto"``: the update rule chosen once, at the start of a run, from what the plant offers.

The choice is a pure function of the settings and of whether the plant returns state
moments (``S`` and ``x(tau)``, see :func:`azopg.plants.base.returns_moments`), so a resumed
or replayed run resolves it identically. Measured on every built-in problem (README,
"Choosing an update rule"):

* the plant returns *exact* moments of a linear model (a :class:`~azopg.plants.linear.LinearPlant`
  without noise, or any plant with a true attribute ``exact_moments``) and the cost noise is at most
  :data:`PI_MAX_COST_NOISE`: ``policy-iteration`` -- Kleinman's steps on least-squares
  ``(P, E)`` reach gap 1e-6 and gain error 1e-3 with 3 to 20 times fewer rollouts than the
  others (``R`` is used when known, estimated with ``(P, E)`` otherwise);
* the plant returns moments that are only approximate (a gymnasium env's sampled
  observations, a nonlinear plant: the regression's identity does not hold) or the costs are
  noisier: ``natural`` -- it uses the moments only as a preconditioner and degrades
  gracefully under 1e-2 cost noise, where the regression sometimes stalls far from the optimum;
* no moments: ``two-point`` -- the paper's rule needs costs only (``natural`` without
  moments would lose its whitening and keep a step tuned for it).

A plant whose moments are exact but which does not declare itself deterministic
(:func:`~azopg.plants.base.is_deterministic`) is *measured* before policy iteration is chosen
(:func:`azopg.run.train` calls :func:`~azopg.method.lifecycle.measure_noise` on it, with the task
identity calibration would use): if it shows noise of its own it gets ``natural`` (process or
measurement noise biases the regression of policy iteration); if not, policy iteration, which does
not measure again. Except a linear plant whose noise is known to be process noise alone
(:func:`process_noise_only`: a noisy linear plant of a problem with ``process_noise`` and no
``measurement_noise``) with ``R`` known: policy iteration, whose fit is then the instrumented one
(:mod:`~azopg.method.pi_instrumented`; measured against ``natural`` in docs/noise.md). A resumed run
takes the measurement its checkpoint saved; a replay, the rule its result names.
"""

from __future__ import annotations

import dataclasses

from ..plants.base import Plant, returns_moments
from ..plants.linear import LinearPlant
from ..settings import Settings
from .pi_defaults import MAX_FACTOR_COLUMNS, factor_columns

__all__ = ["AUTO", "PI_MAX_COST_NOISE", "choose_method", "exact_moments", "process_noise_only", "resolve_settings"]

#: The ``Settings.method`` resolved at the start of a run.
AUTO = "auto"
#: Largest relative cost noise under which ``auto`` chooses policy iteration.
PI_MAX_COST_NOISE = 1e-3


def choose_method(settings: Settings, moments: bool, exact: bool = True) -> str:
    """The concrete rule of ``settings`` (unchanged unless ``settings.method == "auto"``) for a plant
    that does (``moments``) or does not return state moments, ``exact`` for a linear model or not."""
    if settings.method != AUTO:
        return settings.method
    if not moments:
        return "two-point"
    return "policy-iteration" if exact and settings.cost_noise <= PI_MAX_COST_NOISE else "natural"


def exact_moments(plant: Plant) -> bool:
    """Whether ``plant``'s moments are those of a linear model, exactly (the regression's identity holds):
    its attribute ``exact_moments`` if it has one (a noisy linear plant says False), else whether it is a
    :class:`~azopg.plants.linear.LinearPlant`."""
    flag = getattr(plant, "exact_moments", None)
    return bool(flag) if flag is not None else isinstance(plant, LinearPlant)


def process_noise_only(plant: Plant) -> bool:
    """Whether ``plant`` (or the plant it wraps) is a linear plant of a continuous-time problem whose noise is
    known to be process noise alone (``process_noise`` given, ``measurement_noise`` not): the interval
    identity of policy iteration holds with a ``tr(PW)`` term, and the instrumented fit is consistent. Not
    where policy iteration would run its buffered method (a large factor: eb5, cse2), whose fit is not
    instrumented."""
    problem = getattr(getattr(plant, "plant", plant), "problem", None)
    return bool(isinstance(getattr(plant, "plant", plant), LinearPlant) and problem is not None
                and not problem.discrete_time and getattr(problem, "process_noise", None) is not None
                and getattr(problem, "measurement_noise", None) is None
                and factor_columns(problem.n, problem.m) <= MAX_FACTOR_COLUMNS)


def resolve_settings(settings: Settings, plant: Plant) -> Settings:
    """``settings`` with ``method="auto"`` replaced by the rule :func:`choose_method` picks for ``plant``."""
    if settings.method != AUTO:
        return settings
    return dataclasses.replace(settings, method=choose_method(settings, returns_moments(plant),
                                                              exact_moments(plant) or process_noise_only(plant)))
