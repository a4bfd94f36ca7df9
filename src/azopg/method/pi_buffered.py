"""Policy iteration's buffered method (:attr:`~.policy_iteration.PolicyIteration.buffer`): where the default is
one equation per rollout only because the interval equations' factor would be large (eb5, cse2).

The most recent rollouts (:class:`~.buffer.RolloutBuffer`) are refitted about the current gain, after the
shared calibration (horizon, radius and step search, serial); a fit waits for :data:`OVERDETERMINED` rollouts
per unknown, and :data:`FRESH` ``m n`` since the last step. There it converges and the interval equations do
not: eb5 (damping 1e-7, ``K0 = 0``) needs the radius measured by cost changes (2e-8), and perturbations of the
snapshots' size destabilise it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .buffer import RolloutBuffer
from .pairs import PairBuffer
from .regression import PolicyEvaluation
from .tasks import RolloutData, TrajectoryData

__all__ = ["EXACT_OVERDETERMINED", "FRESH", "NOISY_CONDITION", "OVERDETERMINED", "BufferedFits"]

#: The first fit waits for ``OVERDETERMINED`` rollouts per unknown; after a step, the next waits for
#: ``FRESH * m * n`` rollouts since.
OVERDETERMINED, FRESH = 2.0, 1.0
#: On exact data (no cost noise, a plant without noise: :meth:`BufferedFits.exact`) the first fit waits for
#: ``EXACT_OVERDETERMINED`` rollouts per unknown: the fit's error is the data's rounding, not noise averaged
#: down by the rows (eb5: first gap 1e-6 at 3,667 rollouts instead of 4,307; 1.05: 3,627).
EXACT_OVERDETERMINED = 1.25
#: A fit whose column-scaled normal matrix has a larger condition number waits for more data.
#: The fit is solved by QR, not by normal equations. Under cost noise (or on a plant with noise of its
#: own), and with one equation per rollout (``snapshots=1``, the regime of noisy and black-box plants,
#: and the default where the factor is large, whose rollouts are the least exact: eb5's first fit at
#: 1e18 gave unstable gains), the error of a fit is the data's times the square root of that number:
#: fits above ``NOISY_CONDITION`` are refused (and by the buffered method). Exact data with snapshots
#: is judged by the step's precision instead (:data:`~.policy_iteration.STEP_PRECISION`).
NOISY_CONDITION = 1e14


class BufferedFits:
    """The buffer of the most recent rollouts and when it is fitted.

    Parameters
    ----------
    capacity : int
        Rollouts kept (:class:`~.buffer.RolloutBuffer`).
    unknowns : int
        Unknowns ``p`` of ``(P, E, [R])``.
    m, n : int
        Inputs and states.
    """

    def __init__(self, capacity: int, unknowns: int, m: int, n: int) -> None:
        self.buffer = RolloutBuffer(capacity)
        self.needed, self.fresh = math.ceil(OVERDETERMINED * unknowns), math.ceil(FRESH * m * n)
        self.unknowns = unknowns
        #: Whether the buffer holds antithetic pairs (:meth:`of_pairs`).
        self.pairs = False

    @classmethod
    def of_pairs(cls, needed: int, m: int, n: int) -> BufferedFits:
        """Fits of ``E`` alone from the most recent antithetic pairs (:class:`~.pairs.PairBuffer`): the
        first once ``needed`` rollouts (two per pair) arrived, then after :data:`FRESH` ``m n`` more."""
        fits = cls(needed, 0, m, n)
        fits.buffer, fits.needed, fits.pairs = PairBuffer(needed), needed, True
        return fits

    def exact(self) -> None:
        """The data are exact (known after calibration): the first fit waits for :data:`EXACT_OVERDETERMINED`
        rollouts per unknown (not for pairs)."""
        if not self.pairs:
            self.needed = math.ceil(EXACT_OVERDETERMINED * self.unknowns)

    def __len__(self) -> int:
        return len(self.buffer)

    def add(self, data: RolloutData | TrajectoryData | None) -> None:
        """Buffer a report's whole rollouts (:meth:`~.buffer.RolloutBuffer.add`); rollouts cut into intervals
        (the calibration's probes of the horizon) are not equations of the fit."""
        if isinstance(data, RolloutData):
            self.buffer.add(data)

    def clear(self) -> None:
        self.buffer.clear()

    def due(self, idle: int) -> bool:
        """Whether a fit is due: :data:`OVERDETERMINED` rollouts per unknown buffered, and :data:`FRESH`
        ``m n`` of them (``idle``) received since the last step."""
        return len(self.buffer) >= self.needed and idle >= self.fresh

    def fit(self, K: np.ndarray, R: np.ndarray | None, stop: Callable[[], bool] | None = None) -> PolicyEvaluation:
        """The least-squares ``(P, E, [R])`` of base gain ``K`` from the buffered rollouts (``stop``: the time
        budget, asked during a long fit of pairs).

        Raises
        ------
        numpy.linalg.LinAlgError
            If its condition number is not below :data:`NOISY_CONDITION`.
        OutOfTime
            If ``stop()`` ended a long fit.
        """
        fit = self.buffer.evaluate(K, R, stop)
        if not fit.condition < NOISY_CONDITION:
            raise np.linalg.LinAlgError
        return fit
