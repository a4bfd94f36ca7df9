"""AZOPG -- the paper's update rule (Sha, Zhao & You, IEEE TAC 2025).

A master holds the gain ``K_t``; each worker reads the current gain and its version,
computes a zero-order estimate on its own clock and sends it back; the master applies it
at once,

    K_{t+1} = K_t - alpha * g(K_{t - d_t}),

dropping estimates whose staleness ``d_t`` exceeds ``max_delay`` (done by the base class,
:class:`~azopg.method.rule.UpdateRule`, with the rest of the bookkeeping and the
safeguards). With ``staleness="inverse"`` an estimate of delay ``d`` takes the step
``alpha / (1 + d / W)``. The synchronous baseline averages one round's estimates into a
single update.
"""

from __future__ import annotations

from .rule import UpdateRule
from .tasks import Report

__all__ = ["AZOPG"]


class AZOPG(UpdateRule):
    """Asynchronous zero-order policy gradient: each estimate applied as soon as it arrives."""

    name = "azopg"
    grows_batch = True

    def _tell(self, rep: Report, delay: int) -> None:
        self.apply(self.K - self.stale_step(delay) * self.gradient(rep), delay, rep.worker, rep.version)

    def _tell_round(self, reports: list[Report]) -> None:
        g = sum(self.gradient(rep) for rep in reports) / len(reports)
        self.apply(self.K - self.tuning.alpha * g, 0, -1, self.version)
