"""The learner's state as one value: what a checkpoint holds and a resumed rule starts from.

:class:`LearnerState` gathers the gain and its version, the tuning, the anchor, the safeguards'
counters and the statistics; :meth:`LearnerState.to_dict` is the ``master`` block of
``checkpoint.json`` (see :mod:`azopg.run.checkpoint`). Tasks in flight are not part of it: after
a restore their reports are simply never received.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .safeguards import STALL_REJECTS
from .stats import Stats, Tuning

__all__ = ["FORMAT2_FIELDS", "LearnerState", "NOISE_FIELDS", "STALL_FIELDS", "STATE_FIELDS"]

#: The safeguards' stall counters (checkpoint format 3; a format-2 checkpoint lacks them and
#: resumes with no rejection counted and the first stall limit).
STALL_FIELDS = ("rejects_in_row", "stall_limit", "anchor_serial")
#: The plant's measured noise (:func:`~azopg.method.lifecycle.measure_noise`; absent from older checkpoints:
#: resumed as not noisy).
NOISE_FIELDS = ("noisy", "noise")
#: The scalar fields of :meth:`LearnerState.to_dict` that every checkpoint of format 3 has (besides the gains
#: ``K`` and ``anchor_K``, and the optional :data:`NOISE_FIELDS`).
STATE_FIELDS = ("version", "alpha", "r", "tau", "N", "check_every", "max_delay", "anchor_cost", "anchor_version",
                "_since_check", "_branch_start", *STALL_FIELDS, *(f.name for f in dataclasses.fields(Stats)))
#: The scalar fields a format-2 checkpoint has; the others (the stall counters and counters added
#: since) start from their defaults when one is resumed.
FORMAT2_FIELDS = ("version", "alpha", "r", "tau", "N", "check_every", "max_delay", "anchor_cost", "anchor_version",
                  "_since_check", "_branch_start", "updates", "rollouts", "tasks", "dropped", "rejected", "accepted",
                  "rollbacks", "max_seen_delay", "delay_sum", "delay_count", "bytes_received", "workers_replaced",
                  "lost_tasks", "ignored_reports")


@dataclass
class LearnerState:
    """Everything a rule decides from, besides its settings and the tasks in flight."""

    K: np.ndarray
    version: int
    tuning: Tuning
    max_delay: int
    anchor_K: np.ndarray
    anchor_cost: float
    anchor_version: int
    check_every: int
    since_check: int  #: updates applied since the last check was issued
    branch_start: int  #: versions before this one were discarded by a rollback
    rejects_in_row: int
    stall_limit: int
    anchor_serial: int  #: counts the anchor's moves
    stats: Stats
    noisy: bool = False  #: the plant's own noise was measured at calibration (checks paired)
    noise: float = 0.0  #: the relative standard deviation of one rollout's cost measured then
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers as strings)."""
        t = self.tuning
        state: dict[str, Any] = {
            "K": self.K.tolist(), "anchor_K": self.anchor_K.tolist(), "version": self.version,
            "alpha": t.alpha, "r": t.r, "tau": t.tau, "N": t.N, "check_every": self.check_every,
            "max_delay": self.max_delay, "anchor_cost": self.anchor_cost, "anchor_version": self.anchor_version,
            "_since_check": self.since_check, "_branch_start": self.branch_start,
            "rejects_in_row": self.rejects_in_row, "stall_limit": self.stall_limit,
            "anchor_serial": self.anchor_serial, **self.stats.state(), "noisy": self.noisy, "noise": self.noise,
        }
        return {k: v if not isinstance(v, float) or math.isfinite(v) else repr(v) for k, v in state.items()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LearnerState:
        """Inverse of :meth:`to_dict` (a state without :data:`STALL_FIELDS`, of checkpoint format 2,
        starts counting rejections afresh; one without :data:`NOISE_FIELDS` is of a plant not measured noisy)."""
        def num(name: str) -> Any:
            value = state[name]
            return float(value) if isinstance(value, str) else value

        stats = Stats()
        stats.load(state)
        return cls(
            K=np.array(state["K"], dtype=float), version=num("version"),
            tuning=Tuning(tau=num("tau"), r=num("r"), alpha=num("alpha"), N=num("N")), max_delay=num("max_delay"),
            anchor_K=np.array(state["anchor_K"], dtype=float), anchor_cost=num("anchor_cost"),
            anchor_version=num("anchor_version"), check_every=num("check_every"), since_check=num("_since_check"),
            branch_start=num("_branch_start"), rejects_in_row=state.get("rejects_in_row", 0),
            stall_limit=state.get("stall_limit", STALL_REJECTS), anchor_serial=state.get("anchor_serial", 0),
            stats=stats, noisy=bool(state.get("noisy", False)), noise=float(state.get("noise", 0.0)),
        )
