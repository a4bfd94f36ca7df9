"""``method="auto"``: the update rule chosen once, at the start of a run, from what the plant offers.

The choice is a pure function of the settings and of whether the plant returns state
moments (``S`` and ``x(tau)``, see :func:`azopg.plants.base.returns_moments`), so a resumed
or replayed run resolves it identically. Measured on every built-in problem (README,
"Choosing an update rule"):

* the plant returns moments and the cost noise is at most :data:`PI_MAX_COST_NOISE`:
  ``policy-iteration`` -- Kleinman's steps on least-squares ``(P, E)`` reach gap 1e-6 and
  gain error 1e-3 with 5 to 20 times fewer rollouts than the others (``R`` is used when
  known, estimated with ``(P, E)`` otherwise);
* the plant returns moments but costs are noisier: ``natural`` -- the regression's fit
  degrades with noise on its right-hand side, the averaged whitened estimates do not;
* no moments: ``two-point`` -- the paper's rule needs costs only (``natural`` without
  moments would lose its whitening and keep a step tuned for it).
"""

from __future__ import annotations

import dataclasses

from ..plants.base import Plant, returns_moments
from ..settings import Settings

__all__ = ["AUTO", "PI_MAX_COST_NOISE", "choose_method", "resolve_settings"]

#: The ``Settings.method`` resolved at the start of a run.
AUTO = "auto"
#: Largest relative cost noise under which ``auto`` chooses policy iteration.
PI_MAX_COST_NOISE = 1e-3


def choose_method(settings: Settings, moments: bool) -> str:
    """The concrete rule of ``settings`` (unchanged unless ``settings.method == "auto"``) for a plant
    that does (``moments``) or does not return state moments."""
    if settings.method != AUTO:
        return settings.method
    if not moments:
        return "two-point"
    return "policy-iteration" if settings.cost_noise <= PI_MAX_COST_NOISE else "natural"


def resolve_settings(settings: Settings, plant: Plant) -> Settings:
    """``settings`` with ``method="auto"`` replaced by the rule :func:`choose_method` picks for ``plant``."""
    if settings.method != AUTO:
        return settings
    return dataclasses.replace(settings, method=choose_method(settings, returns_moments(plant)))
