"""The plant protocol: finite-horizon rollout costs, and the one blow-up rule.

A learner reaches a plant only through :class:`Plant`: it hands over a batch of gains
and initial states and receives finite-horizon costs

    f_tau(x0; K) = int_0^tau (x'Qx + u'Ru) dt,   u = -K x,

each flagged if the rollout blew up. Any black-box simulator or real system that can
do this plugs in.

The blow-up rule, shared by every plant: a rollout is *blown up* when its state grew
more than :data:`GROWTH` times (2-norm) beyond ``x0``, or its cost is not finite or
exceeds :data:`COST_LIMIT`; its cost is then reported as the finite :data:`BLOWUP_COST`
(:func:`finalize`). The method, which cannot trust a black-box plant, also counts a
non-finite cost as blown up (:func:`failed`).

State moments: a plant whose attribute ``returns_moments`` is true (see
:func:`returns_moments`) also accepts ``rollout(K, x0, tau, moments=True)`` and then fills
:attr:`RolloutResult.S` ``= int_0^tau x x' dt`` and :attr:`RolloutResult.x_end` ``= x(tau)``:
with them one rollout of any gain gives one *linear* equation in the value matrix and
the gradient factor of another gain (see :mod:`azopg.method.regression`).

Snapshots: a plant with a method ``rollout_snapshots(K, x0, tau, k)`` (see
:func:`returns_snapshots`) returns each rollout cut into ``k`` intervals ``[t_j, t_{j+1}]``
(:class:`Trajectory`): the states ``x(t_j)``, the interval moments ``S_j`` and costs ``c_j``.
Each interval is one equation of the regression, so one rollout gives ``k`` of them.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, TypeGuard, runtime_checkable

import numpy as np

__all__ = ["BLOWUP_COST", "COST_LIMIT", "GROWTH", "MomentPlant", "Plant", "RolloutResult", "Trajectory", "common_noise",
           "failed", "finalize", "is_deterministic", "rollout_of", "returns_moments", "returns_snapshots",
           "with_moments"]

#: Finite value reported as the cost of a rollout that blew up.
BLOWUP_COST = 1e300
#: A larger cost counts as blown up.
COST_LIMIT = 1e200
#: A state with ``||x|| > GROWTH * ||x0||`` counts as blown up.
GROWTH = 1e6


class RolloutResult(NamedTuple):
    """Costs of a batch of rollouts.

    Attributes
    ----------
    cost : ndarray, shape (b,)
        Finite-horizon costs; always finite (``BLOWUP_COST`` where blown up).
    blown_up : ndarray of bool, shape (b,)
        True where the state diverged (the gain does not stabilize the plant at this
        horizon) or the cost overflowed.
    S : ndarray, shape (b, n, n), or None
        State second moments ``int_0^tau x x' dt`` (``rollout(..., moments=True)`` only;
        NaN where blown up).
    x_end : ndarray, shape (b, n), or None
        Final states ``x(tau)`` (``rollout(..., moments=True)`` only; NaN where blown up).
    """

    cost: np.ndarray
    blown_up: np.ndarray
    S: np.ndarray | None = None
    x_end: np.ndarray | None = None


class Trajectory(NamedTuple):
    """Rollouts cut into intervals ``0 = t_0 < ... < t_k = tau`` (``rollout_snapshots``).

    Attributes
    ----------
    x : ndarray, shape (b, k + 1, n)
        States ``x(t_j)`` (NaN where blown up).
    S : ndarray, shape (b, k, n, n)
        ``int_{t_j}^{t_{j+1}} x x' dt`` (NaN where blown up).
    cost : ndarray, shape (b, k)
        Cost of each interval (NaN where blown up).
    blown_up : ndarray of bool, shape (b,)
        The blow-up rule of :func:`finalize` applied to the whole rollout.
    t : ndarray, shape (k + 1,)
        The times ``t_j`` (steps in discrete time).
    """

    x: np.ndarray
    S: np.ndarray
    cost: np.ndarray
    blown_up: np.ndarray
    t: np.ndarray


def returns_snapshots(plant: object) -> bool:
    """Whether ``plant`` has ``rollout_snapshots(K, x0, tau, k) -> Trajectory`` (a wrapper may say
    otherwise by an attribute ``returns_snapshots``)."""
    return bool(getattr(plant, "returns_snapshots", callable(getattr(plant, "rollout_snapshots", None))))


@runtime_checkable
class Plant(Protocol):
    """What a learner needs from a plant: initial states and rollout costs.

    Optional attribute ``returns_moments: bool`` (absent means False): when true,
    ``rollout`` also takes the keyword ``moments: bool = False`` and, given
    ``moments=True``, fills :attr:`RolloutResult.S` and :attr:`RolloutResult.x_end`.
    It is not a protocol member, so plants without it still satisfy the protocol.
    """

    n: int
    m: int

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` initial states from the plant's distribution, shape (size, n)."""
        ...

    def rollout(self, K: np.ndarray, x0: np.ndarray, tau: float) -> RolloutResult:
        """Costs over ``[0, tau]`` of gains ``K`` (b, m, n) from states ``x0`` (b, n)."""
        ...


def finalize(cost: np.ndarray, bad: np.ndarray) -> RolloutResult:
    """Apply the blow-up rule to raw costs ``cost`` (b,) with ``bad`` already flagged."""
    with np.errstate(invalid="ignore"):
        bad = bad | ~np.isfinite(cost) | (cost > COST_LIMIT)
    return RolloutResult(np.where(bad, BLOWUP_COST, cost), bad)


def with_moments(res: RolloutResult, S: np.ndarray, x_end: np.ndarray) -> RolloutResult:
    """``res`` with the moments ``S`` (b, n, n) and ``x_end`` (b, n) attached.

    A rollout whose moments are not finite is flagged blown up as well (its data is of no
    use); the moments of blown-up rollouts are set to NaN, so they cannot be used by mistake.
    """
    S = np.asarray(S, dtype=float)
    x_end = np.asarray(x_end, dtype=float)
    with np.errstate(invalid="ignore"):
        bad = np.asarray(res.blown_up, dtype=bool) | ~np.isfinite(S).all(axis=(1, 2)) \
            | ~np.isfinite(x_end).all(axis=1)
    return RolloutResult(np.where(bad, BLOWUP_COST, res.cost), bad,
                         np.where(bad[:, None, None], np.nan, S), np.where(bad[:, None], np.nan, x_end))


class MomentPlant(Plant, Protocol):
    """A plant whose ``rollout(..., moments=True)`` also returns ``S`` and ``x_end``."""

    returns_moments: bool

    def rollout(self, K: np.ndarray, x0: np.ndarray, tau: float, *, moments: bool = False) -> RolloutResult:
        """As :meth:`Plant.rollout`; with ``moments`` the result carries ``S`` and ``x_end``."""
        ...


def returns_moments(plant: object) -> TypeGuard[MomentPlant]:
    """Whether ``plant.rollout(..., moments=True)`` returns state moments (``returns_moments``
    attribute; plants without it do not)."""
    return bool(getattr(plant, "returns_moments", False))


def common_noise(plant: object) -> bool:
    """Whether ``plant.rollout(..., noise_rows=rows)`` gives rows with equal ``rows[i]`` the same noise path
    (common random numbers: ``common_noise`` attribute, e.g.
    :class:`~azopg.plants.noisy.NoisyLinearPlant`; plants without it take no such argument)."""
    return bool(getattr(plant, "common_noise", False))


def is_deterministic(plant: object) -> bool:
    """Whether the plant declares that its rollouts repeat exactly (``deterministic`` attribute, e.g.
    :class:`~azopg.plants.linear.LinearPlant`): then a run does not measure its noise. A plant that
    does not say (a black box) is measured."""
    return bool(getattr(plant, "deterministic", False))


def rollout_of(plant: Plant, K: np.ndarray, x0: np.ndarray, tau: float, moments: bool = False,
               noise_rows: np.ndarray | None = None) -> RolloutResult:
    """``plant.rollout(K, x0, tau)``, with ``moments=True`` only when asked and ``noise_rows`` only when
    given and the plant has :func:`common_noise` (a wrapper's pass-through).

    Raises
    ------
    ValueError
        If moments are asked of a plant that returns none.
    """
    extra: dict[str, Any] = {"noise_rows": noise_rows} if noise_rows is not None and common_noise(plant) else {}
    if not moments:
        return plant.rollout(K, x0, tau, **extra)
    if not returns_moments(plant):
        raise ValueError(f"{type(plant).__name__} returns no state moments")
    return plant.rollout(K, x0, tau, moments=True, **extra)


def failed(res: RolloutResult) -> np.ndarray:
    """Rollouts flagged as blown up, or whose cost is not a finite number (a faulty plant)."""
    cost = np.asarray(res.cost, dtype=float)
    return np.asarray(res.blown_up, dtype=bool) | ~np.isfinite(cost)
