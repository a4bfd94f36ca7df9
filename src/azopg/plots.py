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
