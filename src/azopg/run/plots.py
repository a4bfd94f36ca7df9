"""Figures (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..model.problem import LQRProblem
from .records import Result

__all__ = ["plot_convergence", "plot_responses"]


#: Gaps below this (a converged gain's gap is rounding, often <= 0) are drawn on it.
GAP_FLOOR = 1e-16


def plot_convergence(result: Result, path: Path) -> Path:
    """Relative gap against rollouts and against wall time, log scale; a gap at or below
    :data:`GAP_FLOOR` (rounding: often exactly 0 or negative) is drawn on the floor."""
    rows = [h for h in result.history if math.isfinite(h.relative_gap)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    if rows:
        gap = [max(h.relative_gap, GAP_FLOOR) for h in rows]
        style = {"lw": 1.2, "marker": "o" if len(rows) < 50 else None, "ms": 3}
        axes[0].semilogy([h.rollouts for h in rows], gap, **style)
        axes[1].semilogy([h.time_s for h in rows], gap, **style)
    target = result.settings.get("target_gap")
    for ax, xlabel in zip(axes, ("rollouts", "wall time [s]"), strict=True):
        if target:
            ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:g}")
        if rows and min(h.relative_gap for h in rows) <= GAP_FLOOR:
            ax.axhline(GAP_FLOOR, color="grey", ls=":", lw=1, label="rounding (gap <= 1e-16)")
        if target or rows:
            ax.legend(loc="upper right")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("relative gap (f(K) - f*) / f*")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(
        f"{result.problem}: gap {result.relative_gap:.2e} after {result.updates} updates, "
        f"{result.rollouts} rollouts, {result.wall_time_s:.1f} s ({result.status})"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_speedup(runs: list, path: Path, title: str = "") -> Path:
    """Speedup against W with the ideal line; gap against time per W; delay histogram; updates and
    rollouts to the target against W. The title names the update rule."""
    import numpy as np

    from .speedup import summarize

    rows = summarize(runs)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4), constrained_layout=True)
    ax = axes[0]
    ws = [r["workers"] for r in rows]
    ax.plot(ws, ws, "k--", lw=1, label="ideal S(W) = W")
    ax.plot(ws, [r["speedup"] for r in rows], "o-", lw=2, label="measured (median)")
    for r in runs:
        if math.isfinite(r.speedup):
            ax.plot(r.workers, r.speedup, ".", color="C0", alpha=0.4)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(ws, [str(w) for w in ws])
    ax.set_xlabel("workers W")
    ax.set_ylabel("speedup T(1)/T(W)")
    ax.set_title("wall-time speedup to the target gap")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax = axes[1]
    cmap = plt.get_cmap("viridis")
    for i, w in enumerate(ws):
        r = next((r for r in runs if r.workers == w and r.result is not None), None)
        if r is None:
            continue
        start = r.result.stats.get("calibration_s") or 0.0
        pts = [(h.time_s - start, h.relative_gap) for h in r.result.history
               if h.event == "update" and math.isfinite(h.relative_gap) and h.relative_gap > 0
               and h.time_s > start]
        if pts:
            t, g = zip(*pts, strict=True)
            ax.semilogy(t, g, color=cmap(i / max(len(ws) - 1, 1)), lw=1.2, label=f"W = {w}")
    target = runs[0].result.settings.get("target_gap") if runs and runs[0].result else None
    if target:
        ax.axhline(target, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("wall time after calibration [s]")
    ax.set_ylabel("relative gap")
    ax.set_title("convergence (repeat 0)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax = axes[2]
    big = [w for w in ws if w > 1]
    for i, w in enumerate(big[-3:]):
        r = next((r for r in runs if r.workers == w and r.result is not None), None)
        if r is None:
            continue
        d = np.array([h.delay for h in r.result.history if h.event in ("update", "drop")])
        if d.size:
            ax.hist(d, bins=np.arange(d.max() + 2) - 0.5, alpha=0.5, label=f"W = {w}", color=f"C{i}")
    ax.set_xlabel("staleness d_t (versions)")
    ax.set_ylabel("applied estimates")
    ax.set_title("delay histogram")
    ax.legend()
    ax = axes[3]
    reached = [r for r in rows if r["reached"]]
    if reached:
        wr = [r["workers"] for r in reached]
        ax.loglog(wr, [r["updates"] for r in reached], "o-", label="updates")
        ax.loglog(wr, [r["rollouts"] for r in reached], "s-", label="rollouts")
        ax.set_xticks(wr, [str(w) for w in wr])
        ax.legend()
    ax.set_xlabel("workers W")
    ax.set_ylabel("to the target (median)")
    ax.set_title("updates and rollouts to the target")
    ax.grid(True, which="both", alpha=0.3)
    rule = runs[0].result.settings.get("method") if runs and runs[0].result else None
    fig.suptitle(title if rule is None or f"rule {rule}" in title else f"rule {rule}: {title}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_responses(problem: LQRProblem, K: Any, path: Path | str, x0s: Any = None, tau: float | None = None) -> Path:
    """Closed-loop responses of a gain ``K`` and of the optimal gain ``K*``.

    One column per initial state: the top panel shows every state ``x_i(t)``, the
    bottom one every input ``u_j(t) = -(K x(t))_j``, of ``dx/dt = (A - B K) x`` -- solid
    for ``K``, dashed in the same colour for ``K*``. Each column's title gives the
    cost from its initial state, ``x0' P(K) x0`` against ``x0' P* x0``; the figure's
    title the relative gap of ``K``.

    Parameters
    ----------
    problem : LQRProblem
        Supplies ``A, B``, the optimum and the initial-state covariance.
    K : array_like, shape (m, n)
        The gain to show (e.g. ``result.K``).
    path : path-like
        PNG file to write.
    x0s : array_like, shape (k, n), optional
        Initial states (one column each). Default: three states drawn from
        ``N(0, x0_cov)`` (seed 0).
    tau : float, optional
        Time span shown. Default: six time constants of the slowest closed-loop mode
        of ``K`` and ``K*``.

    Returns
    -------
    Path
    """
    import numpy as np
    import scipy.linalg as sla

    K = np.asarray(K, dtype=float).reshape(problem.m, problem.n)
    K_star = np.asarray(problem.optimal_gain)
    if x0s is None:
        L = np.linalg.cholesky(np.asarray(problem.x0_cov))
        x0s = np.random.default_rng(0).standard_normal((3, problem.n)) @ L.T
    x0s = np.atleast_2d(np.asarray(x0s, dtype=float))
    stable = problem.is_stabilizing(K)
    discrete = problem.discrete_time  # time in steps; decay rate -ln(spectral radius) per step
    rate = (lambda G: -math.log(problem.spectral_radius(G))) if discrete else (
        lambda G: -problem.spectral_abscissa(G))
    if tau is None:
        slow = rate(K_star)
        if stable:
            slow = min(slow, rate(K))
        tau = 6.0 / slow
    t = np.arange(max(2, math.ceil(tau)) + 1.0) if discrete else np.linspace(0.0, tau, 401)

    def response(G: np.ndarray, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        E = problem.closed_loop(G) if discrete else sla.expm(problem.closed_loop(G) * (t[1] - t[0]))
        X = np.empty((t.size, problem.n))
        X[0] = x0
        with np.errstate(all="ignore"):
            for i in range(1, t.size):
                X[i] = E @ X[i - 1]
        return X, -X @ G.T

    P = problem.value_matrix(K) if stable else None
    P_star = problem.value_matrix(K_star)
    k = x0s.shape[0]
    fig, axes = plt.subplots(2, k, figsize=(4.4 * k, 6.2), sharex=True, squeeze=False, constrained_layout=True)
    colors = plt.get_cmap("tab10" if max(problem.n, problem.m) <= 10 else "viridis")
    ncol = max(problem.n, problem.m)
    for j, x0 in enumerate(x0s):
        X, U = response(K, x0)
        Xs, Us = response(K_star, x0)
        for row, (Y, Ys, name) in enumerate(((X, Xs, "x"), (U, Us, "u"))):
            ax = axes[row, j]
            for i in range(Y.shape[1]):
                c = colors(i / max(ncol - 1, 1)) if ncol > 10 else colors(i)
                ax.plot(t, Ys[:, i], ls="--", lw=1.2, color=c)
                ax.plot(t, Y[:, i], lw=1.6, color=c, label=f"${name}_{{{i + 1}}}$")
            lim = 1.15 * float(np.max(np.abs(Ys)))
            if stable:
                lim = max(lim, 1.15 * float(np.max(np.abs(Y))))
            ax.set_ylim(-lim, lim)
            ax.axhline(0.0, color="grey", lw=0.6)
            ax.grid(True, alpha=0.3)
            ax.set_ylabel("state $x(t)$" if row == 0 else "input $u(t)$")
            if row == 1:
                ax.set_xlabel("step $t$" if discrete else "time [s]")
            if j == 0 and Y.shape[1] <= 12:
                ax.legend(fontsize=8, ncol=2 if Y.shape[1] > 4 else 1, loc="upper right")
        cost = float(x0 @ P @ x0) if P is not None else math.inf
        axes[0, j].set_title(f"x0 = [{', '.join(f'{v:.2g}' for v in x0[:4])}{', ...' if x0.size > 4 else ''}]\n"
                             f"cost from x0: K {cost:.4g}, K* {float(x0 @ P_star @ x0):.4g}", fontsize=10)
    gap = problem.relative_gap(K)
    verdict = f"relative gap {gap:.2e}" if stable else "K does NOT stabilize A - BK"
    fig.suptitle(f"{problem.name}: closed-loop responses, learned K (solid) vs optimal K* (dashed); {verdict}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
