"""The plant protocol checked at the boundary.

A black-box plant can answer anything. :func:`check_rollout` and :func:`check_states`
turn an answer that breaks the :class:`~azopg.plants.base.Plant` protocol into one
:class:`~azopg.errors.PlantProtocolError` naming the plant's class and the rule broken,
before the answer reaches the estimators; :class:`CheckedPlant` applies them to every
call. :func:`require_task_memory` refuses a task whose arrays do not fit in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PlantProtocolError, SettingsError
from ..model.validation import require_memory
from .base import Plant, RolloutResult, common_noise, is_deterministic, returns_moments, rollout_of
from .deadline import check_deadline

__all__ = ["CheckedPlant", "check_rollout", "check_states", "plant_name", "require_task_memory"]


def plant_name(plant: Any) -> str:
    """The class name of ``plant``, looking through wrappers that keep the plant in ``.plant``."""
    while type(plant).__name__ in ("LatencyPlant", "NoisyCosts", "CheckedPlant") and hasattr(plant, "plant"):
        plant = plant.plant
    return type(plant).__name__


def _vector(plant: Any, value: Any, what: str, b: int, kinds: str, wants: str) -> np.ndarray:
    where = f"{plant_name(plant)}.rollout returned {what}"
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise PlantProtocolError(f"{where} that is not an array; the protocol wants {wants} of shape ({b},)") from None
    if arr.dtype.kind not in kinds:
        got = type(value).__name__ if arr.dtype.kind == "O" else f"dtype {arr.dtype}"
        raise PlantProtocolError(f"{where} of {got}; the protocol wants {wants} of shape ({b},)")
    if arr.shape != (b,):
        raise PlantProtocolError(f"{where} of shape {arr.shape}; the protocol wants shape ({b},)")
    return arr


def check_rollout(plant: Any, result: Any, b: int) -> RolloutResult:
    """``result`` of ``plant.rollout`` for ``b`` rollouts, checked and converted.

    Returns
    -------
    RolloutResult
        ``cost`` as floats (b,) -- NaN and inf stay, the blow-up rule handles them --
        and ``blown_up`` as booleans (b,).

    Raises
    ------
    PlantProtocolError
        If ``result`` is not a ``RolloutResult``-like pair ``(cost, blown_up)``, or a field
        has the wrong type or shape.
    """
    if not (hasattr(result, "cost") and hasattr(result, "blown_up")):
        raise PlantProtocolError(f"{plant_name(plant)}.rollout returned {type(result).__name__}; the protocol "
                                 f"wants a RolloutResult(cost, blown_up) of {b} rollouts")
    cost = _vector(plant, result.cost, "cost", b, "iuf", "real numbers")
    blown = _vector(plant, result.blown_up, "blown_up", b, "biu", "booleans")
    if blown.dtype.kind != "b" and not np.all((blown == 0) | (blown == 1)):
        raise PlantProtocolError(f"{plant_name(plant)}.rollout returned blown_up values other than 0/1; "
                                 "the protocol wants booleans")
    return RolloutResult(cost.astype(float, copy=False), blown.astype(bool, copy=False))


def check_states(plant: Any, X: Any, size: int | None, what: str = "initial_states") -> np.ndarray:
    """States returned by ``plant.initial_states`` (``size`` rows; ``None``: at least one),
    checked: real, finite, shape (size, n).

    Raises
    ------
    PlantProtocolError
        On any other answer.
    """
    rows = "k" if size is None else str(size)
    where = f"{plant_name(plant)}.{what} returned"
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError):
        arr = np.asarray(None)
    if arr.dtype.kind not in "iuf":
        got = type(X).__name__ if arr.dtype.kind == "O" else f"dtype {arr.dtype}"
        raise PlantProtocolError(f"{where} {got}; the protocol wants real states of shape ({rows}, {plant.n})")
    if arr.ndim != 2 or arr.shape[1] != plant.n or (arr.shape[0] != size if size is not None else arr.shape[0] < 1):
        raise PlantProtocolError(f"{where} states of shape {arr.shape}; the protocol wants shape ({rows}, {plant.n})")
    if not np.all(np.isfinite(arr)):
        raise PlantProtocolError(f"{where} NaN or inf states; the protocol wants finite states")
    return arr.astype(float, copy=False)


class CheckedPlant:
    """``plant`` with every answer checked by :func:`check_states` and :func:`check_rollout`."""

    def __init__(self, plant: Plant) -> None:
        self.plant = plant
        self.n, self.m = plant.n, plant.m
        self.returns_moments = returns_moments(plant)
        self.common_noise = common_noise(plant)
        self.deterministic = is_deterministic(plant)

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return check_states(self.plant, self.plant.initial_states(rng, size), size)

    def rollout(self, K: np.ndarray, x0: np.ndarray, tau: float, *, moments: bool = False,
                noise_rows: np.ndarray | None = None) -> RolloutResult:
        b = np.shape(x0)[0]
        check_deadline()  # the run's time budget: a task stops between its rollouts
        if not moments:
            return check_rollout(self.plant, rollout_of(self.plant, K, x0, tau, False, noise_rows), b)
        plant = self.plant
        if not returns_moments(plant):
            raise PlantProtocolError(f"{plant_name(plant)} returns no state moments (no returns_moments attribute)")
        res = rollout_of(plant, K, x0, tau, True, noise_rows)
        checked = check_rollout(plant, res, b)
        S, x_end = getattr(res, "S", None), getattr(res, "x_end", None)
        n = self.n
        if S is None or x_end is None or np.shape(S) != (b, n, n) or np.shape(x_end) != (b, n):
            shapes = [None if v is None else np.shape(v) for v in (S, x_end)]
            raise PlantProtocolError(f"{plant_name(self.plant)}.rollout(moments=True) returned S of shape "
                                     f"{shapes[0]} and x_end of shape {shapes[1]}; the protocol wants "
                                     f"({b}, {n}, {n}) and ({b}, {n})")
        return checked._replace(S=np.asarray(S, dtype=float), x_end=np.asarray(x_end, dtype=float))


def require_task_memory(plant: Any, N: int, rollouts: int) -> None:
    """Refuse an estimate of ``N`` directions (``rollouts`` rollouts) whose arrays do not fit in memory.

    The estimator holds about 6 arrays of ``N m n`` floats (directions, perturbed gains)
    and the initial states of every rollout.

    Raises
    ------
    SettingsError
        Starting with ``batch`` (the setting to lower).
    """
    nbytes = 8.0 * (6.0 * N * plant.m * plant.n + rollouts * (2 * plant.n + 2))
    require_memory(nbytes, f"batch {N}: a gradient estimate of {N} directions ({rollouts} rollouts, "
                   f"n = {plant.n}, m = {plant.m})", SettingsError)
