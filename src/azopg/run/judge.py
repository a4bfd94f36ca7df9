"""The yardstick of a run under measurement noise: ``K_tau``, the optimum of what the learner minimizes.

Under measurement noise (``u = -K (x + v)``) the static gain of least expected cost at the run's horizon
``tau``, ``K_tau = noise_optimal_gain(problem, tau=tau)``, is not the CARE gain ``K*``, and ``K*`` is
costlier there: judged against ``K*`` a run stops at the noise-free target while its gain is still far
from the optimum of its own objective, and the "gap" of the expected cost to ``K*``'s can be negative.
:class:`TauJudge` judges a gain at the horizon the run uses *now* (``rule.tuning.tau``):

    cost = E f_tau(K),   optimum = E f_tau(K_tau),   gap_tau = (cost - optimum) / optimum  (>= 0),

the gain error ``||K - K_tau||_F / ||K_tau||_F``, all from the exact oracle
(:func:`~azopg.model.noise.expected_cost`). ``K_tau`` is computed once per horizon (the first at the end of
the calibration, warm-started from ``K*``; a later horizon from the last ``K_tau``) and cached: the
horizon is settled by then, so a run pays one minimization, rarely a few. Before the calibration ends
nothing is judged (``nan``: no target can be met). Under process noise alone or without noise the
optimum is ``K*`` and :meth:`azopg.run.job.Job.monitor` judges as before.

**Bounded cost.** ``K_tau`` is found by BFGS and Newton steps on a Hessian from differences of complex-step
gradients: about ``(m n)^2`` exact costs of ``O(n^3)`` each, paid on the master within the run's time budget.
Measured at ``tau`` = 16, V = 0.05^2 Omega (one core, a loaded machine): he1 (n 4, m 2) 0.7 s, ac17 0.2 s,
he3 (n 8, m 4) 24 s, eb4 (n 20, m 1) 96 s, cse1 (n 20, m 2) 200 s. So a problem whose
:func:`oracle_work` ``(m n)^2 n^3`` exceeds :data:`MAX_ORACLE_WORK` gets no judge (a deterministic bound,
not a timing: a run's stopping point never depends on the machine); it is judged by the noise-free gap to
``K*`` (>= 0, the gap printed and recorded as such, ``result.judge["optimum"] == "K*"``), and the difference
of the expected cost to ``K*``'s, which can be negative under measurement noise, is reported as a
difference, not a gap. ``benchmarks/noisy.py --judge`` computes ``gap_tau`` offline for those.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..model.compare import relative_gain_error as gain_error
from ..model.noise import expected_cost, noise_optimal_gain
from ..model.problem import LQRProblem

__all__ = ["MAX_ORACLE_WORK", "TauJudge", "measured_noisily", "oracle_work", "unjudged"]

#: The largest :func:`oracle_work` judged against ``K_tau`` in a run (module docstring): he1 (4096, 0.7 s),
#: chain3 (69984, 5 s), ac1, cola5 are; he3 (524288, 24 s), dis4, tg1 and the n = 20 problems are not.
MAX_ORACLE_WORK = 100_000


def oracle_work(problem: LQRProblem) -> int:
    """``(m n)^2 n^3``: the order of the work of finding ``K_tau`` (module docstring)."""
    return (problem.m * problem.n) ** 2 * problem.n**3


def measured_noisily(problem: LQRProblem | None) -> bool:
    """Whether ``problem`` has measurement noise (then ``K*`` is not the optimum of the expected cost)."""
    return problem is not None and problem.measurement_noise is not None and bool(np.any(problem.measurement_noise))


def unjudged(problem: LQRProblem) -> dict[str, Any]:
    """``result.json``'s ``judge`` for a problem with measurement noise whose ``K_tau`` is not computed."""
    return {"optimum": "K*", "reason": f"K_tau not computed in the run: (m n)^2 n^3 = {oracle_work(problem)} > "
            f"{MAX_ORACLE_WORK}; cost, relative_gap and gain_error are the noise-free ones, to K*"}


class TauJudge:
    """Judges gains against ``K_tau`` at the rule's current horizon (module docstring).

    Parameters
    ----------
    problem : LQRProblem
        A known problem with measurement noise.
    """

    def __init__(self, problem: LQRProblem) -> None:
        self.problem = problem
        #: The horizon to judge at (``rule.tuning.tau``); ``None`` until the calibration has settled it.
        self.horizon: Callable[[], float] | None = None
        self._optima: dict[float, tuple[np.ndarray, float]] = {}
        self._last = np.array(problem.optimal_gain, dtype=float)

    @classmethod
    def of(cls, problem: LQRProblem | None) -> TauJudge | None:
        """A judge for ``problem`` if it has measurement noise (else ``None``: ``K*`` is the optimum) and its
        ``K_tau`` is affordable (:data:`MAX_ORACLE_WORK`; else ``None`` too: judged against ``K*``)."""
        if problem is None or not measured_noisily(problem) or oracle_work(problem) > MAX_ORACLE_WORK:
            return None
        return cls(problem)

    def optimum(self, tau: float) -> tuple[np.ndarray, float]:
        """``(K_tau, E f_tau(K_tau))``, computed once per ``tau``."""
        tau = float(tau)
        if tau not in self._optima:
            K = noise_optimal_gain(self.problem, self._last, tau=tau)
            self._optima[tau] = (K, float(expected_cost(self.problem, K, tau)))
            self._last = K
        return self._optima[tau]

    def judge(self, K: np.ndarray, tau: float) -> tuple[float, float, float]:
        """``(E f_tau(K), gap_tau, gain error to K_tau)`` at horizon ``tau``."""
        K_tau, f_tau = self.optimum(tau)
        if not self.problem.is_stabilizing(K):
            return math.inf, math.inf, gain_error(K, K_tau)
        f = float(expected_cost(self.problem, K, tau))
        return f, (f - f_tau) / abs(f_tau), gain_error(K, K_tau)

    def monitor(self, K: np.ndarray) -> tuple[float, float, float]:
        """The run's monitor (:data:`azopg.run.history.Monitor`): ``nan`` until the horizon is settled."""
        if self.horizon is None:
            return math.nan, math.nan, math.nan
        return self.judge(K, self.horizon())

    def summary(self, K: np.ndarray, tau: float) -> dict[str, Any]:
        """``result.json``'s ``judge``: what ``cost``, ``optimal_cost``, ``relative_gap`` and ``gain_error``
        are measured against, and the noise-free gap to ``K*`` for comparison."""
        K_tau, _ = self.optimum(tau)
        p = self.problem
        return {"optimum": "K_tau", "tau": float(tau), "K_tau": K_tau.tolist(),
                "noise_free_gap": float(p.relative_gap(K)) if p.is_stabilizing(K) else math.inf,
                "K_tau_noise_free_gap": float(p.relative_gap(K_tau))}
