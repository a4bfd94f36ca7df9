"""The linear plant with process and measurement noise, simulated exactly on a grid.

The noise model is that of :mod:`azopg.model.noise`: ``dx = (Ax + Bu) dt + dw`` with
``E[dw dw'] = W dt``, ``u = -K (x + v_j)`` with ``v_j ~ N(0, V)`` held over the ``j``-th
sampling interval ``[j delta, (j+1) delta)``. With ``z = [x; v]`` (``z = x`` without measurement
noise) a step of length ``h`` is ``z_{k+1} = Phi z_k + e_k``, ``e_k ~ N(0, Qd)`` (Van Loan's
discretization, :func:`azopg.model.noise.short_step`): the states on the grid are **exact in
distribution**, for any ``h``. The grid has ``h = delta / k`` (each sampling instant a grid
point) or ``h = tau / N``, with ``rho(F) h <= theta`` (default 1; ``rho`` the spectral radius, the
closed loop's fastest rate: invariant to the state's units, unlike a norm of ``F``, which made a
badly scaled problem -- tg1: ``||F||_inf = 2942``, ``rho = 315`` -- take 10 times the steps) and at
least :data:`MIN_STEPS` steps (under process noise alone at most :data:`GRID_STEPS`). The states are exact
for any ``theta``, ``S`` and the cost exact in mean; ``theta`` only sets how much of the cost's fluctuation
*within* a step is kept: the cost's standard deviation at ``theta = 1`` was within 3.5 % of ``theta = 0.1``'s
(tg1, he1, chain3, 4000 rollouts each, 1-2 % standard error) at 10 times fewer steps on the stiff tg1
(``rho = 315``), whose noisy rollouts were otherwise too slow to learn from in a minute.

The moments ``S_z = int_0^tau z z' dt`` are the trapezoid sums ``(h/2) (z_k z_k' + z_{k+1} z_{k+1}')``
(``z_{k+1}`` with the ``v`` held over step ``k``) plus their exact conditional-mean correction

    int_0^h exp(F s) X exp(F's) ds - (h/2) (X + Phi X Phi')  +  Gamma - (h/2) Qd

per step from ``z_k z_k' = X`` (linear in ``X``, so applied once to the sum of the ``z_k z_k'``):
``E[S_z | grid states]``-corrections make ``E[S]`` and ``E[cost]`` exact given ``x0`` and the noise
samples, and the trapezoid keeps the correlation of ``S`` with each step's disturbance (what an
unbiased fit must cope with); only the within-step fluctuation of ``S`` is left out (``O(h)``).
The cost is ``tr(C S_z)``, ``S = S_z[:n, :n]``, ``x_end = x(tau)``.

Common random numbers: ``rollout(..., noise_rows=rows)`` gives every row ``i`` the noise path number
``rows[i]`` (process noise and measurement samples): rows with equal numbers see the *same* path, on the
same grid (one grid per call). A two-point estimate rolls ``K + rU`` and ``K - rU`` so, and a paired check
its gain and the anchor: the difference of two costs then carries the noise only through the gains'
difference, and its variance vanishes like ``r^2`` as ``r -> 0`` (instead of staying at twice a cost's).

Randomness: rollouts draw from the plant's generator, which :func:`azopg.method.tasks.run_task`
sets before each task with :meth:`NoisyLinearPlant.bind_rng` from ``(seed, worker, task)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..model.noise import Segment, augmented, gramian, short_step
from ..model.problem import LQRProblem
from .base import GROWTH, RolloutResult, Trajectory, finalize, with_moments
from .deadline import check_deadline
from .linear import LinearPlant

__all__ = ["GRID_STEPS", "MAX_STEPS", "MIN_STEPS", "NoisyLinearPlant"]

#: Fewest grid steps of a rollout.
MIN_STEPS = 64
#: Most grid steps of a rollout under measurement noise (beyond, its gain counts as blown up: see ``rollout``).
MAX_STEPS = 2**20
#: Under process noise alone a rollout takes at most this many grid steps (``rho(F) h`` may then exceed
#: ``theta``: the states stay exact in distribution, ``S`` and the cost exact in mean). A rollout's time is
#: bounded whatever the gain: a paired check of a gain whose loop was 300 times faster than tg1's (``rho`` ~ 1e5
#: at ``tau = 8``, 8e5 steps) ran 71 s as one task, 164 s past a 60 s budget.
GRID_STEPS = 2**13
_CHUNK = 2**20  # grid states held at once (floats) for the sums of outer products


def _sqrt_psd(M: np.ndarray) -> np.ndarray:
    """The symmetric square root ``L = U sqrt(lam) U'`` (``L L' = M``) of symmetric PSD ``M`` (..., d, d) (negative
    rounding clipped). Unique and continuous in ``M``, so two gains' disturbance covariances over a grid step (which
    differ a little) turn one path's draws into nearly the same disturbances: common random numbers. (The factor
    ``U sqrt(lam)`` is not: an eigenvector's sign or order flips between nearby ``M`` and decorrelates that
    component -- he1 under process noise, paired checks of two near-optimal gains: standard error 20 times as
    large.)"""
    lam, U = np.linalg.eigh(M)
    return np.matmul(U * np.sqrt(np.clip(lam, 0.0, None))[..., None, :], np.swapaxes(U, -1, -2))


def _rates(F: np.ndarray) -> np.ndarray:
    """The spectral radius of each ``F`` (b, d, d) -- the fastest rate of the closed loop, invariant to the
    units of the state (a similarity) -- ``inf`` where ``F`` is not finite."""
    ok = np.isfinite(F).all(axis=(1, 2))
    rates = np.full(F.shape[0], np.inf)
    if ok.any():
        rates[ok] = np.abs(np.linalg.eigvals(F[ok])).max(axis=1)
    return rates


def _short_steps(F: np.ndarray, C: np.ndarray, Wz: np.ndarray, h: float) -> tuple[Segment, np.ndarray]:
    """:func:`~azopg.model.noise.short_step` once per distinct closed loop, expanded to the rows: the rows of a
    check share one or two gains, and the block exponentials were most of its time."""
    b = F.shape[0]
    per_row = Wz.ndim == 3 and Wz.shape[0] == b > 1  # else one intensity broadcast to every row
    key = np.concatenate([F.reshape(b, -1), C.reshape(b, -1)] + ([Wz.reshape(b, -1)] if per_row else []), axis=1)
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    if len(first) == b:
        return short_step(F, C, Wz, h)
    seg, Gamma = short_step(F[first], C[first], Wz[first] if per_row else Wz, h)
    inv = inv.reshape(-1)
    return Segment(seg.Phi[inv], seg.Qd[inv], seg.M[inv], seg.c[inv], seg.h), Gamma[inv]


class NoisyLinearPlant(LinearPlant):
    """Rollouts of a noisy linear plant (module docstring), batched.

    Parameters
    ----------
    problem : LQRProblem
        A continuous-time problem with ``process_noise`` and/or ``measurement_noise``.
    rng : numpy.random.Generator, optional
        The generator of the noise until :meth:`bind_rng` sets another (default
        ``default_rng(0)``; within a run every task sets its own).
    theta : float, optional
        Bound on ``rho(F) h`` (spectral radius) of a grid step, in ``(0, 8]``. Means are exact for any value;
        a smaller one brings the fluctuation of ``S`` and of the cost closer to exact at proportionally more
        steps (``theta = 0.1``: the cost's variance measured 4 +- 3 % below a ten times finer grid's; the
        default's standard deviation within 3.5 % of ``theta = 0.1``'s).
    """

    returns_moments = True
    #: The moments are exact samples, but the regression's identity holds only in mean (Ito term,
    #: ``tr(PW)``): ``method="auto"`` does not choose policy iteration (:mod:`azopg.method.auto`).
    exact_moments = False
    #: ``rollout`` takes ``noise_rows`` (common random numbers, module docstring).
    common_noise = True
    #: Process and measurement noise: repeated rollouts differ (calibration measures by how much).
    deterministic = False

    def __init__(self, problem: LQRProblem, rng: np.random.Generator | None = None, theta: float = 1.0) -> None:
        if problem.discrete_time:
            raise ValueError("NoisyLinearPlant needs a continuous-time problem")
        super().__init__(problem)
        self.rng = np.random.default_rng(0) if rng is None else rng
        if not (0 < theta <= 8.0):
            raise ValueError(f"theta must be in (0, 8], got {theta!r}")
        self.theta = float(theta)
        V = problem.measurement_noise
        self._V_sqrt = None if V is None else _sqrt_psd(np.asarray(V))
        self._dt = problem.measurement_dt
        self._spread = float(np.trace(np.asarray(problem.x0_cov)))

    def __repr__(self) -> str:
        return f"NoisyLinearPlant({self.problem.name!r}, n={self.n}, m={self.m})"

    def bind_rng(self, rng: np.random.Generator) -> None:
        """Draw the noise of the following rollouts from ``rng``."""
        self.rng = rng

    def rollout(self, K: Any, x0: Any, tau: float, *, moments: bool = False,
                noise_rows: Any = None) -> RolloutResult:
        """As :meth:`LinearPlant.rollout`, with the noise drawn from :attr:`rng` (chunk by chunk of grid
        steps: the chunk's process noise, then the measurement samples as they fall due); row ``i`` gets
        noise path ``noise_rows[i]`` (default: its own), see the module docstring.

        Under measurement noise a rollout whose closed loop would need more than :data:`MAX_STEPS` grid steps
        (``rho(F) tau / theta``: a time constant below ``tau / 1e5``), and any of a non-finite gain, is not
        simulated and counts as blown up (under process noise alone the grid has at most :data:`GRID_STEPS`)."""
        if not (tau > 0 and math.isfinite(tau)):
            raise ValueError(f"tau must be a finite number > 0, got {tau}")
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        b, n = x0.shape[0], self.n
        K = np.asarray(K, dtype=float)
        K = np.array(np.broadcast_to(K, (b, self.m, n)) if K.ndim == 2 else K)
        with_v = self._V_sqrt is not None
        rows = np.arange(b) if noise_rows is None else np.asarray(noise_rows, dtype=int).reshape(b)
        if rows.size and rows.min() < 0:
            raise ValueError("noise_rows must be >= 0")
        with np.errstate(all="ignore"):
            F, C, Wz = augmented(self.problem, K, with_v)
            norms = _rates(F)
            # NaN too; under process noise alone the grid is bounded (GRID_STEPS): only a non-finite gain
            wild = ~(norms * tau <= MAX_STEPS * self.theta) if with_v else ~np.isfinite(norms)
            if wild.any():  # simulated at K0 instead (a stand-in), reported blown up
                K = np.where(wild[:, None, None], np.asarray(self.problem.K0), K)
                F, C, Wz = augmented(self.problem, K, with_v)
                norms = _rates(F)
            norm = float(np.max(norms))
            if with_v:  # each sampling instant a grid point; the horizon may end inside a step
                assert self._dt is not None
                per = max(1, math.ceil(norm * self._dt / self.theta), math.ceil(MIN_STEPS * self._dt / tau))
                h = self._dt / per
                steps = int(tau // h)
                rest = tau - steps * h
                if rest <= 1e-9 * h:
                    rest = 0.0
            else:
                per, rest = 0, 0.0
                steps = min(max(MIN_STEPS, math.ceil(norm * tau / self.theta)), GRID_STEPS)
                h = tau / steps
            z = np.zeros((b, F.shape[1]))
            z[:, :n] = x0
            Sz, z = self._simulate(F, C, Wz, z, h, steps, per, rows)
            if rest > 0:  # the last, shorter step: no new measurement sample unless it starts at one
                S2, z = self._simulate(F, C, Wz, z, rest, 1, per if steps % per == 0 else 0, rows)
                Sz = Sz + S2
            cost = np.einsum("bij,bji->b", C, Sz)
            xT = z[:, :n]
            # blown up: grown GROWTH times beyond x0 -- or beyond the initial spread, since noise moves x0 = 0
            grow = np.sum(xT * xT, axis=1) > GROWTH**2 * (np.sum(x0 * x0, axis=1) + self._spread)
            bad = grow | ~np.isfinite(xT).all(axis=1) | wild
            res = finalize(cost, bad)
        return with_moments(res, Sz[:, :n, :n], xT) if moments else res

    @property
    def returns_snapshots(self) -> bool:
        """Under process noise alone: :meth:`rollout_snapshots` (a measurement sample held across an interval's
        end would tie two intervals' inputs)."""
        return self._V_sqrt is None

    def rollout_snapshots(self, K: Any, x0: Any, tau: float, k: int) -> Trajectory:
        """Rollouts of horizon ``tau`` cut into ``k`` equal intervals, under process noise only: the grid of
        :meth:`rollout` (at least as fine, a whole number of steps per interval), its states at the interval
        ends, each interval's ``S`` and cost (the process is Markov: one rollout observed at ``t_j``). Rows
        as in :meth:`rollout` (their own noise paths); blown-up rollouts are all NaN.

        Raises
        ------
        ValueError
            Under measurement noise (:attr:`returns_snapshots`), or for a ``tau`` or ``k`` out of range.
        """
        if self._V_sqrt is not None:
            raise ValueError("rollout_snapshots: not under measurement noise")
        if not (tau > 0 and math.isfinite(tau)) or int(k) < 1:
            raise ValueError(f"tau must be a finite number > 0 and k >= 1, got {tau}, {k}")
        k = int(k)
        x0 = np.atleast_2d(np.asarray(x0, dtype=float))
        b, n = x0.shape[0], self.n
        K = np.asarray(K, dtype=float)
        K = np.array(np.broadcast_to(K, (b, self.m, n)) if K.ndim == 2 else K)
        rows = np.arange(b)
        X, S, cost = np.empty((b, k + 1, n)), np.empty((b, k, n, n)), np.empty((b, k))
        with np.errstate(all="ignore"):
            F, C, Wz = augmented(self.problem, K, False)
            norms = _rates(F)
            wild = ~np.isfinite(norms)  # the grid is bounded (GRID_STEPS): only a non-finite gain
            if wild.any():  # simulated at K0 instead (a stand-in), reported blown up
                K = np.where(wild[:, None, None], np.asarray(self.problem.K0), K)
                F, C, Wz = augmented(self.problem, K, False)
                norms = _rates(F)
            grid = min(max(MIN_STEPS, math.ceil(float(np.max(norms)) * tau / self.theta)), GRID_STEPS)
            per = max(1, math.ceil(grid / k))
            z, h = x0.copy(), tau / (k * per)
            X[:, 0] = z
            steps_of = _short_steps(F, C, Wz, h)
            for j in range(k):
                Sz, z = self._simulate(F, C, Wz, z, h, per, 0, rows, steps_of)
                S[:, j], cost[:, j], X[:, j + 1] = Sz, np.einsum("bij,bji->b", C, Sz), z
            size = np.sum(X * X, axis=2)
            grow = np.max(size, axis=1) > GROWTH**2 * (size[:, 0] + self._spread)
            bad = grow | ~np.isfinite(X).all(axis=(1, 2)) | ~np.isfinite(S).all(axis=(1, 2, 3)) | wild
            bad = finalize(np.sum(cost, axis=1), bad).blown_up
        X[bad], S[bad], cost[bad] = np.nan, np.nan, np.nan
        return Trajectory(X, S, cost, bad, np.linspace(0.0, tau, k + 1))

    def _simulate(self, F: np.ndarray, C: np.ndarray, Wz: np.ndarray, z: np.ndarray, h: float, steps: int,
                  per: int, rows: np.ndarray,
                  steps_of: tuple[Segment, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``S_z`` (b, d, d) and the final ``z`` (b, d) of ``steps`` grid steps of length ``h`` from ``z``
        (b, d), a new measurement sample every ``per`` steps from the first (``per = 0``: none); row ``i``
        takes the standard normal draws of path ``rows[i]``; ``steps_of``: the grid step's matrices, if computed
        already."""
        b, d = z.shape
        n = self.n
        seg, Gamma = _short_steps(F, C, Wz, h) if steps_of is None else steps_of
        Phi = seg.Phi
        Lq = _sqrt_psd(seg.Qd[:, :n, :n])  # the disturbance enters x only
        z = z.copy()
        X = np.zeros((b, d, d))  # sum of z_k z_k' at the start of each step
        Y = np.zeros((b, d, d))  # sum of z_{k+1} z_{k+1}' at the end of each step (v of that step)
        rng = self.rng
        paths = int(rows.max()) + 1 if rows.size else 0
        own = np.array_equal(rows, np.arange(b))  # the default: draws exactly as before
        PhiT = np.ascontiguousarray(Phi.swapaxes(1, 2))
        chunk = max(1, min(steps, _CHUNK // max(1, b * d)))
        starts = np.empty((chunk, b, d))
        ends = np.empty((chunk, b, 1, d))  # z_{k+1} as rows (b, 1, d): a batched matmul per step, no einsum
        for k0 in range(0, steps, chunk):
            check_deadline()  # a long rollout stops between grid chunks once the run's time is spent
            c = min(chunk, steps - k0)
            G = rng.standard_normal((c, paths, n))
            # the chunk's disturbances E[c, b] = Lq[b] G[c, path of b], as batched matmuls (not einsum: 3x slower)
            E = np.matmul((G if own else G[:, rows]).transpose(1, 0, 2), Lq.transpose(0, 2, 1)).transpose(1, 0, 2)
            for i in range(c):
                if per and (k0 + i) % per == 0:
                    assert self._V_sqrt is not None
                    g = rng.standard_normal((paths, n))
                    z = z.copy()  # a view of the last step's end, which keeps its own v
                    z[:, n:] = (g if own else g[rows]) @ self._V_sqrt.T
                starts[i] = z
                zi = ends[i]
                np.matmul(z[:, None, :], PhiT, out=zi)
                zi[:, 0, :n] += E[i]
                z = zi[:, 0]
            z = z.copy()  # ends is overwritten by the next chunk
            Zs, Ze = starts[:c].transpose(1, 0, 2), ends[:c, :, 0].transpose(1, 0, 2)  # (b, c, d)
            X += np.matmul(Zs.transpose(0, 2, 1), Zs)
            Y += np.matmul(Ze.transpose(0, 2, 1), Ze)
        PXP = Phi @ X @ Phi.swapaxes(1, 2)
        Sz = 0.5 * h * (X + Y) + gramian(F, X, h) - 0.5 * h * (X + PXP) + steps * (Gamma - 0.5 * h * seg.Qd)
        return 0.5 * (Sz + Sz.swapaxes(1, 2)), z
