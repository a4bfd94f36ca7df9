"""The final gap against the rollout budget under noise in the dynamics (the 1/sqrt(rollouts) plot).

For each problem and noise level (``--process`` levels ``s``: ``W = s^2 Omega``; ``--measurement``
levels: ``V = s^2 Omega`` held ``--dt`` s) and each budget of the ladder ``--budgets``, one serial run per
seed with default settings (``method="auto"``) except ``max_rollouts = N`` and no target (``target_gap``
off, so a run is not stopped when it reaches 1e-3), and a wall-clock cap ``--max-time`` as a safety net;
records the rollouts used, the status, and the exact noise-free gap ``(f(K) - f(K*)) / f(K*)`` of the
returned gain (``f = tr(P Omega)``; under process noise also the average cost's optimum). Each run is one
line of JSON appended to ``--out`` (a run already in the file is not run again: long ladders go in pieces).

``--table`` / ``--plot`` read the file: per curve (problem, noise) the median (and worst) gap over seeds per budget, and
the least-squares slope of log(median gap) against log(rollouts) over the budgets from ``--fit-from`` on
(the smaller budgets are spent by the calibration and the first, fast descent); the plot is log-log,
one curve per (problem, noise), with a ``1/sqrt(N)`` reference line.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/noise_budget.py --problems he1,rea1,ac1,chain3 \\
        --process 0.01,0.1 --measurement 0.01 --budgets 1e3,3e3,1e4,3e4,1e5 --seeds 0,1,2 --out runs/budget.jsonl
    .venv/bin/python benchmarks/noise_budget.py --out runs/budget.jsonl --table --plot docs/img/noise-budget.png
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import azopg


def _problem(name: str, noise: str, dt: float) -> azopg.LQRProblem:
    base = azopg.get_problem(name)
    Om = np.asarray(base.x0_cov)
    kind, s = noise.split()
    level = float(s) ** 2 * Om
    return base.with_noise(W=level) if kind == "W" else base.with_noise(V=level, dt=dt)


def run_one(name: str, noise: str, budget: int, seed: int, dt: float, max_time: float,
            method: str = "auto") -> dict[str, Any]:
    """One run: default settings but ``method``, ``max_rollouts = budget``, no target; what the ladder records."""
    res = azopg.train(_problem(name, noise, dt), seed=seed, max_rollouts=budget, target_gap=None,
                      max_time=max_time, method=method)
    return {"problem": name, "noise": noise, "budget": budget, "seed": seed, "rollouts": res.rollouts,
            "status": res.status, "gap": float(res.relative_gap), "seconds": round(res.wall_time_s, 2),
            "tau": float(res.settings["tau"]), "method": res.settings["method"]}


def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, list[dict[str, Any]]]]:
    """Rows grouped by (problem, noise), then by budget."""
    out: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[(r["problem"], r["noise"])][int(r["budget"])].append(r)
    return out


def slope(N: list[float], gap: list[float]) -> float:
    """Least-squares slope of log(gap) on log(N) (nan below two points or with a non-positive gap)."""
    if len(N) < 2 or min(gap) <= 0:
        return math.nan
    return float(np.polyfit(np.log(N), np.log(gap), 1)[0])


def summary(rows: list[dict[str, Any]],
            fit_from: float) -> list[tuple[str, str, list[tuple[int, float, float, float, str]], float]]:
    """Per curve: (budget, median rollouts used, median gap, worst gap, statuses) per budget, and the slope
    over the budgets of at least ``fit_from``."""
    out = []
    for (name, noise), by_budget in sorted(curves(rows).items()):
        points = []
        for budget in sorted(by_budget):
            rs = by_budget[budget]
            gaps = [r["gap"] for r in rs]
            statuses = ",".join(sorted({r["status"] for r in rs}))
            points.append((budget, float(np.median([r["rollouts"] for r in rs])), float(np.median(gaps)),
                           float(max(gaps)), statuses))
        fit = [p for p in points if p[0] >= fit_from]
        out.append((name, noise, points, slope([p[1] for p in fit], [p[2] for p in fit])))
    return out


def table(rows: list[dict[str, Any]], fit_from: float) -> None:
    """One line per curve: the median (worst) gap of the seeds at each budget, and the slope."""
    data = summary(rows, fit_from)
    budgets = sorted({p[0] for d in data for p in d[2]})
    print("| problem | noise | " + " | ".join(f"N = {b:.0e}" for b in budgets) + f" | slope from {fit_from:.0e} |")
    print("|---|---|" + "---|" * len(budgets) + "---|")
    for name, noise, points, s in data:
        at = {p[0]: p for p in points}
        cells = [f"{at[b][2]:.1e} ({at[b][3]:.1e})" if b in at else "" for b in budgets]
        slope_cell = f"**{s:+.2f}**" if math.isfinite(s) else "- (one point)"
        print(f"| {name} | {noise} | " + " | ".join(cells) + f" | {slope_cell} |")


def plot(rows: list[dict[str, Any]], path: Path, fit_from: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = summary(rows, fit_from)
    noises = sorted({d[1] for d in data}, key=lambda z: (z[0] != "W", float(z.split()[1])))  # process noise first
    fig, axes = plt.subplots(1, len(noises), figsize=(5.2 * len(noises), 4.6), sharey=True, squeeze=False)
    names = sorted({d[0] for d in data})
    colours = {name: f"C{i}" for i, name in enumerate(names)}  # a problem keeps its colour in every panel
    for ax, noise in zip(axes[0], noises, strict=True):
        at_fit: list[tuple[float, float]] = []  # each curve's first point in the fitted range
        hi = 0.0
        for name, nz, points, s in data:
            if nz != noise:
                continue
            N = [p[1] for p in points]
            label = f"{name} (slope {s:+.2f})" if math.isfinite(s) else f"{name} (one point: no slope)"
            ax.loglog(N, [p[2] for p in points], "o-", color=colours[name], label=label)
            at_fit += [(p[1], p[2]) for p in points if p[0] >= fit_from][:1]
            hi = max(hi, *N)
        if at_fit:  # the reference through the highest curve where the fit starts
            N0, g0 = max(at_fit, key=lambda p: p[1])
            ref = np.geomspace(N0, hi, 20)
            ax.loglog(ref, g0 * np.sqrt(N0 / ref), "k--", lw=1.5, label=r"$\propto 1/\sqrt{N}$")
        ax.set_title(f"noise {noise} (relative to $\\Omega$)")
        ax.set_xlabel("rollouts N (median over seeds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title=f"slope fitted from N = {fit_from:.0e}", title_fontsize=8)
    axes[0][0].set_ylabel("final gap (median over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="he1,rea1,ac1,chain3")
    ap.add_argument("--process", default="0.01,0.1", help="process noise levels s (W = s^2 Omega)")
    ap.add_argument("--measurement", default="0.01", help="measurement noise levels s (V = s^2 Omega)")
    ap.add_argument("--dt", type=float, default=0.01, help="measurement sampling interval (s)")
    ap.add_argument("--budgets", default="1e3,3e3,1e4,3e4", help="max_rollouts ladder")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--method", default="auto", help="the update rule (default: auto, the rule auto picks)")
    ap.add_argument("--max-time", type=float, default=300.0, help="wall-clock cap per run (s), a safety net")
    ap.add_argument("--out", default="runs/noise_budget.jsonl",
                    help="JSON lines, appended to; runs in it are kept (with --table/--plot: several, comma-separated)")
    ap.add_argument("--fit-from", type=float, default=1e4, help="budgets the slope is fitted over: from this on")
    ap.add_argument("--table", action="store_true", help="print the table of --out (no runs)")
    ap.add_argument("--plot", default=None, help="save the log-log plot of --out to this PNG (no runs)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table or args.plot:
        rows = [r for p in args.out.split(",") for r in load(Path(p))]
        if args.table:
            table(rows, args.fit_from)
        if args.plot:
            plot(rows, Path(args.plot), args.fit_from)
        return
    done = {(r["problem"], r["noise"], int(r["budget"]), int(r["seed"])) for r in load(out)}
    noises = [f"W {v}" for v in args.process.split(",") if v] + [f"V {v}" for v in args.measurement.split(",") if v]
    out.parent.mkdir(parents=True, exist_ok=True)
    for budget in [int(float(b)) for b in args.budgets.split(",")]:
        for name in args.problems.split(","):
            for noise in noises:
                for seed in [int(s) for s in args.seeds.split(",")]:
                    if (name, noise, budget, seed) in done:
                        continue
                    row = run_one(name, noise, budget, seed, args.dt, args.max_time, args.method)
                    print(json.dumps(row), flush=True)
                    with out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
