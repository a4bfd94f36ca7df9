"""What a run learns: :class:`Job` -- the arguments of :func:`azopg.train` parsed once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ProblemError, SettingsError
from ..model.compare import relative_gain_error as gain_error
from ..model.problem import LQRProblem, as_matrix
from ..plants.base import Plant
from ..plants.discrete import plant_for
from ..settings import Settings
from .history import Monitor

__all__ = ["Job"]


@dataclass
class Job:
    """What a run learns: its name, the initial gain, how workers build their plants and, for a
    known problem, the exact oracle (used only to report the gap and stop at the target). ``R``,
    the input weight if known (the problem's, or a black-box plant's attribute ``R``), is given
    to the rules that use it."""

    name: str
    K0: np.ndarray
    plant_factory: Callable[[], Plant]
    oracle: LQRProblem | None = None
    R: np.ndarray | None = None
    discrete_time: bool = False
    #: The environment spec of a ``--env`` run (:class:`azopg.run.envspec.EnvSpec`), kept for resume.
    env: dict[str, Any] | None = None

    @classmethod
    def of(cls, problem: LQRProblem | Plant, settings: Settings, K0: Any = None,
           plant_factory: Callable[[], Plant] | None = None, judge: LQRProblem | None = None) -> Job:
        """Parse :func:`train`'s arguments (see there); ``judge``: a known problem whose exact
        oracle reports the gap of a black-box plant's gains."""
        if isinstance(problem, LQRProblem):
            K0 = problem.K0 if K0 is None else as_matrix(K0, "K0", problem.m, problem.n)
            return cls(problem.name, np.array(K0, dtype=float),
                       plant_factory or functools.partial(plant_for, problem), problem, np.array(problem.R),
                       problem.discrete_time)
        plant = problem
        if K0 is None:
            raise SettingsError("K0 is required for a black-box plant")
        K0 = as_matrix(K0, "K0", plant.m, plant.n)
        if settings.target_gain_error is not None and judge is None:
            raise SettingsError("target_gain_error needs a known LQR problem (K* of the exact oracle); "
                                "a black-box plant has none")
        if not (settings.max_updates or settings.max_rollouts or settings.max_time):
            raise SettingsError("a black-box plant needs a budget: max_updates, max_rollouts or max_time")
        R = getattr(plant, "R", None)
        if judge is not None and (judge.n, judge.m) != (plant.n, plant.m):
            raise SettingsError(f"the judge problem {judge.name!r} has n = {judge.n}, m = {judge.m}; the plant "
                                f"n = {plant.n}, m = {plant.m}")
        return cls(type(plant).__name__, np.array(K0, dtype=float), plant_factory or (lambda: plant), judge,
                   R=None if R is None else as_matrix(R, "R", plant.m, plant.m),
                   discrete_time=bool(getattr(plant, "discrete_time", False)))

    def monitor(self) -> Monitor | None:
        """``K -> (cost, relative gap, gain error)`` by the exact oracle, if the problem is known
        (:func:`azopg.model.compare.relative_gain_error`)."""
        oracle = self.oracle
        if oracle is None:
            return None
        fstar = oracle.optimal_cost
        if fstar == 0:
            raise ProblemError("the optimal cost is 0 (is Q zero?): there is nothing to learn")
        scale = abs(fstar)  # f* < 0 is possible with an indefinite Q
        Kstar = oracle.optimal_gain

        def monitor(K: np.ndarray) -> tuple[float, float, float]:
            f = oracle.cost(K)
            return f, (f - fstar) / scale, gain_error(K, Kstar)

        return monitor
