"""A bounded buffer of raw rollouts with state moments, for model-free policy evaluation.

Each rollout of *any* gain is one exact linear equation in ``(P_K, E_K)`` of *any* base
gain ``K`` (:mod:`azopg.method.regression`), so the buffer stores the raw data -- the gain
rolled out, ``x0``, ``x(tau)``, ``S`` and the cost -- and re-bases it to whatever the
current gain is when it is solved: stale rollouts are exact, not biased. The most recent
``capacity`` rollouts are kept (whole reports are dropped oldest first).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from .regression import PolicyEvaluation, evaluate_policy
from .tasks import RolloutData

__all__ = ["RolloutBuffer"]


class RolloutBuffer:
    """The most recent rollouts, at least ``capacity`` of them once that many arrived.

    Parameters
    ----------
    capacity : int
        Rollouts kept.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._chunks: deque[RolloutData] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, data: RolloutData | None) -> None:
        """Append a report's rollouts; drop the oldest reports beyond ``capacity``."""
        if data is None or data.cost.size == 0:
            return
        self._chunks.append(data)
        self._size += data.cost.size
        while self._size - self._chunks[0].cost.size >= self.capacity:
            self._size -= self._chunks.popleft().cost.size

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0

    def evaluate(self, K: np.ndarray, R: np.ndarray | None,
                 stop: Callable[[], bool] | None = None) -> PolicyEvaluation:
        """Least-squares ``(P, E)`` of base gain ``K`` from every buffered rollout
        (``R`` estimated too if ``None``), most recent first; one solve (``stop``, the time budget, is asked
        by :class:`~.pairs.PairBuffer`'s chunked fits only)."""
        chunks = list(reversed(self._chunks))
        Ki, x0, x_end, S, cost = (np.concatenate(a) for a in zip(*(c.arrays() for c in chunks), strict=True))
        return evaluate_policy(K, Ki, x0, x_end, S, cost, R, solver="auto")
