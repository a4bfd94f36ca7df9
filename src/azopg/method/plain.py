"""Plain mode: the paper's rule exactly as published, without the safeguards (``Settings.plain``).

The AZOPG paper (Sha, Zhao & You) applies every estimate that arrives,

    K_{t+1} = K_t - alpha * g(K_{t - d_t}),

with ``alpha``, the radius ``r``, the horizon ``tau`` and the batch ``N`` fixed for the whole
run. :class:`PlainGuards` replaces :class:`~azopg.method.safeguards.Safeguards` so that a rule
does exactly that: no rollout checks are issued (so no rollback, no step growth or halving, no
horizon doubling, no step search when checks keep failing), and a blown-up estimate never
changes the gain or a setting.

The paper has no rule for a blown-up estimate (a rollout whose cost is infinite or NaN makes
the estimate undefined). Plain mode defines one: an estimate any of whose rollouts blew up is
*skipped* -- no update, the gain and its version unchanged -- counted in
``Stats.blown_estimates`` (``stats["blown_estimates"]`` of ``result.json``) and logged as a
``skip-blowup`` history row. As the gain then stays, a gain that destabilized the plant makes
every later estimate blow up: after :data:`STUCK_SKIPS` ``x W`` blown-up estimates in a row the
run stops with status ``"blown_up"`` (a stable gain is practically never stuck so long).
Estimates more than ``max_delay`` versions stale are dropped, as in every mode (the paper's
bounded delay).
"""

from __future__ import annotations

from .kinds import Event
from .safeguards import Safeguards, Verdict
from .tasks import Report

__all__ = ["PlainGuards", "SKIP_EVENT", "STUCK_SKIPS"]

#: History event of a skipped blown-up estimate.
SKIP_EVENT = Event.SKIP_BLOWUP
#: Blown-up estimates in a row, per worker, after which a plain run stops (status ``"blown_up"``).
STUCK_SKIPS = 20


class PlainGuards(Safeguards):
    """No safeguards: never a check, a rollback or a change of ``alpha``, ``r``, ``tau`` or ``N``;
    a blown-up estimate is skipped (see the module docstring)."""

    plain = True
    skipped_in_row = 0  # blown-up estimates since the last update

    def check_due(self) -> bool:
        return False

    @property
    def stalled(self) -> bool:
        return False

    def blown_estimate(self, rep: Report) -> bool:
        """Any rollout of the estimate blew up (the estimator's reweighting of the surviving
        samples is not the paper's estimate)."""
        return rep.blown_up > 0 or super().blown_estimate(rep)

    def counted(self) -> None:
        super().counted()
        self.skipped_in_row = 0

    def stuck(self) -> bool:
        return self.skipped_in_row >= STUCK_SKIPS * self.settings.workers

    def blown(self, rep: Report, delay: int) -> Verdict:
        """Skip the estimate: the gain, its version and every setting stay."""
        self.skipped_in_row += 1
        return Verdict(SKIP_EVENT, delay, rep.worker, rep.version)

    def blown_round(self, estimates: list[Report], good: list[Report]) -> list[Verdict]:
        """Skip each blown-up estimate of a synchronous round (the others are averaged)."""
        return [self.blown(rep, 0) for rep in estimates if self.blown_estimate(rep)]
