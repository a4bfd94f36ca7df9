"""The update rules by name (``Settings.method``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SettingsError
from ..settings import Settings
from .azopg import AZOPG
from .natural import Natural
from .policy_iteration import PolicyIteration
from .rule import UpdateRule

__all__ = ["RULES", "make_rule"]

#: ``Settings.method`` -> rule class. The estimator names select AZOPG with that estimator.
RULES: dict[str, type[UpdateRule]] = {"two-point": AZOPG, "one-point": AZOPG, "natural": Natural,
                                      "policy-iteration": PolicyIteration}


def make_rule(K0: np.ndarray, settings: Settings, *, R: np.ndarray | None = None, **kw: Any) -> UpdateRule:
    """The rule of ``settings.method`` from ``K0`` (``R``: the input weight, if known); ``"auto"``
    must be resolved first (:func:`azopg.method.auto.resolve_settings`)."""
    if settings.method not in RULES:
        raise SettingsError(f"method {settings.method!r} must be resolved to one of {', '.join(RULES)} "
                            "before a rule is made (azopg.method.auto.resolve_settings)")
    return RULES[settings.method](K0, settings, R=R, **kw)
