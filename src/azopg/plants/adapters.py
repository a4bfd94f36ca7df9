"""Black-box plants behind the :class:`~azopg.plants.base.Plant` protocol (kept for imports).

:class:`~azopg.plants.callable.CallablePlant` (a Python function per rollout, or per batch)
lives in :mod:`azopg.plants.callable`, :class:`~azopg.plants.gym.GymPlant` (a gymnasium
environment, stepped in lockstep) in :mod:`azopg.plants.gym`, what they share in
:mod:`azopg.plants.blackbox`.
"""

from __future__ import annotations

from .blackbox import rollout_seed
from .callable import CallablePlant
from .gym import GymPlant, env_dt

__all__ = ["CallablePlant", "GymPlant", "env_dt", "rollout_seed"]
