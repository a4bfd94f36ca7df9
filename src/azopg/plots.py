"""Figures (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .learner import Result

__all__ = ["plot_convergence"]


def plot_convergence(result: Result, path: Path) -> Path:
    """Relative gap against updates and against wall time, log scale."""
    rows = [h for h in result.history if math.isfinite(h.relative_gap) and h.relative_gap > 0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    if rows:
        upd = [h.update for h in rows]
        t = [h.time_s for h in rows]
        gap = [h.relative_gap for h in rows]
        axes[0].semilogy(upd, gap, lw=1.2)
        axes[1].semilogy(t, gap, lw=1.2)
    target = result.settings.get("target_gap")
    for ax, xlabel in zip(axes, ("applied updates", "wall time [s]"), strict=True):
        if target:
            ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:g}")
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
    """Speedup against W with the ideal line; gap against time per W; delay histogram."""
    import numpy as np

    from .speedup import summarize

    rows = summarize(runs)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
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
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
