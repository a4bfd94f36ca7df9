"""The natural (whitened zero-order) rule: AZOPG along the Gauss--Newton direction.

Each estimate task is sent whitening factors ``L = R^-1/2``, ``M = c Xh^-1/2``
(:mod:`azopg.method.whitening`); its two-point estimate with directions ``L Z M``, divided
by ``c^2``, estimates ``R^-1 grad f Xh^-1 ~ 2 R^-1 E_K``, so the update

    K_{t+1} = K_t - alpha * g_nat(K_{t - d_t})

with ``alpha = 0.5`` is a (noisy) Kleinman step. ``Xh`` is the mean state moment ``S`` of
the rollouts of recent reports (workers stay cost-only apart from the summed ``S`` of a
task); it changes only when a new gain version is made, so the factors of a task are
those of the version it read -- replay rebuilds them from the reports alone. An estimate
from ``N`` directions has relative variance about ``(mn + 1) / N``, so the initial step is
``0.5 / (1 + (mn + 1) / N)``, then adapted by the shared safeguards (no line search). A step is shrunk to the trust
region ``tr(Xh D'R D) <= TRUST f(anchor)``: a noisy step in a weakly excited direction
(a large ``Xh^-1``) cannot throw the gain far outside the region the quadratic model holds.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np

from ..settings import Settings
from .kinds import TaskKind
from .rule import Runner, UpdateRule
from .tasks import Report, report_gradient
from .whitening import Factors, Whitening

__all__ = ["Natural", "KLEINMAN_STEP"]

#: The step along the natural direction ``2 R^-1 E`` that is a Kleinman step.
KLEINMAN_STEP = 0.5
#: Trust region: a step's second-order cost ``tr(Xh D'R D)`` is at most ``TRUST`` times the
#: anchor's cost (an exact Kleinman step's is about the gap ``f(K) - f*``, below that).
TRUST = 1.0


class Natural(UpdateRule):
    """Asynchronous zero-order Gauss--Newton: whitened directions, estimates applied as they arrive."""

    name = "natural"
    grows_batch = True
    estimator = "two-point"
    line_search = False

    def __init__(self, K0: np.ndarray, settings: Settings, **kw: Any) -> None:
        super().__init__(K0, settings, **kw)
        self.whitening = Whitening(np.eye(self.m) if self.R is None else self.R, self.n)
        if settings.step is None:
            self.tuning.alpha = KLEINMAN_STEP / (1.0 + (self.m * self.n + 1) / self.tuning.N)
        self._current = self.whitening.factors()
        self._factors: dict[int, Factors] = {self.version: self._current}

    def factors_at(self, version: int) -> Factors:
        """The factors sent with tasks at gain ``version`` (-1, or unknown: the current ones)."""
        return self._factors.get(version, self._current)

    def task_fields(self, version: int) -> dict[str, Any]:
        f = self.factors_at(version)
        return {"L": f.L, "M": f.M, "moments": True}

    def gradient(self, rep: Report) -> np.ndarray:
        f = self.factors_at(rep.version)
        return report_gradient(rep, self.settings.seed, self.m, self.n, f.L, f.M) / f.scale

    def _tell(self, rep: Report, delay: int) -> None:
        self.whitening.add(rep.S, rep.S_count)
        self._step(-self.stale_step(delay) * self.gradient(rep), delay, rep.worker, rep.version)

    def _tell_round(self, reports: list[Report]) -> None:
        for rep in reports:
            self.whitening.add(rep.S, rep.S_count)
        g = cast(np.ndarray, sum(self.gradient(rep) for rep in reports)) / len(reports)
        self._step(-self.tuning.alpha * g, 0, -1, self.version)

    def _step(self, D: np.ndarray, delay: int, worker: int, version_read: int) -> None:
        """Apply ``K + D``, ``D`` shrunk to the trust region ``tr(Xh D'RD) <= TRUST f(anchor)``."""
        q, limit = self.whitening.curvature(D), TRUST * self.safeguards.anchor_cost
        if q > limit:
            D = D * math.sqrt(limit / q)
        self.apply(self.K + D, delay, worker, version_read)

    def new_version(self, K: np.ndarray) -> None:
        super().new_version(K)
        self._refresh()

    def _refresh(self) -> None:
        """The factors of the current version, from ``Xh`` as it is now."""
        self._current = self._factors[self.version] = self.whitening.factors()
        for v in [v for v in self._factors if v not in self._gains]:
            del self._factors[v]

    def probe(self, run: Runner, kind: TaskKind, K: np.ndarray, tau: float | None = None, r: float | None = None,
              N: int | None = None, **paired: Any) -> Report:
        rep = super().probe(run, kind, K, tau, r, N, **paired)
        self.whitening.add(rep.S, rep.S_count)  # the calibration's checks give Xh its first moments
        return rep

    def calibrate(self, run: Runner) -> None:
        super().calibrate(run)
        self._refresh()

    def state_dict(self) -> dict[str, Any]:
        """The base state and ``Xh`` (its window is restarted from it at resume)."""
        X = self.whitening.X()
        return {**super().state_dict(), "X_hat": None if X is None else X.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        X = state.get("X_hat")
        self.whitening.load(None if X is None else np.array(X, dtype=float))
        self._factors.clear()
        self._refresh()
