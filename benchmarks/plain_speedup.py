"""The plain two-point rule on msd10: updates to the target gap against W (the paper's linear-speedup regime).

msd10 is the mass-spring-damper chain of 10 masses, ``A = [[0, I], [-T, -T]]``, ``B = [[0], [I]]``,
``T`` tridiagonal Toeplitz (2 on the diagonal, -1 beside), ``Q = R = Omega = I``, ``K0 = 0``,
``n = 20``, ``m = 10`` (:func:`azopg.model.library.mass_spring_chain` with ``damping=1``). The rule is
the paper's, as published (``plain=True``: fixed ``alpha``, ``r``, ``tau``, ``N = 1``, no checks), on
the simulated backend (``rollout_latency`` virtual seconds per rollout, W virtual workers, so the
figures do not depend on this machine's cores). Each repeat calibrates ``r`` and ``tau`` once at
``K0`` for all its W (seed ``seed + repeat``); the step is given, the same for every W: ``--step``,
default ``6.5e-5 / max(W)``. 6.5e-5 is the calibration's line-search step at ``K0`` (before its
scaling for one-direction estimates, which makes it ~100 times smaller); it reaches gap 1e-2 in
~25,000 updates at W = 1 but destabilizes K at W = 32 within 43 updates (the first W estimates
are all taken at ``K0``, so their W steps add up to W times the step along one gradient), after
which every estimate blows up and is skipped. The paper's linear-speedup regime is a step small
enough for the largest delay, hence the division by max(W). Each run is bounded by
``--max-updates`` applied updates and ``4 x`` that many estimates' rollouts; a run whose gain
destabilized stops as ``blown_up`` (20 W blown-up estimates in a row) and counts as never reaching
the target (paired speedup 0, no updates ratio).

The acceptance line: updates to gap 1e-2 within 10 % of W = 1's up to W = 32, median of >= 5 paired
repeats; the last columns give, per W, the paired ratio U_k(W) / U_k(1) (median [min-max] over
repeats k) and whether its median is within 10 %.

With ``--out DIR`` the runs so far are written to ``DIR/speedup.csv`` and ``DIR/speedup_summary.csv``
after every run (the columns of ``azopg speedup``), so a long study can be followed and survives a
stop. A run's history is dropped once its row is written (an 800k-update run holds ~1 GB of it).

    python benchmarks/plain_speedup.py                     # W = 1..32, 5 repeats: ~800k updates per run (hours)
    python benchmarks/plain_speedup.py --workers 1,2,4 --target-gap 0.1 --max-updates 40000   # ~20 min
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import sys
import time
from pathlib import Path

from azopg.model.library import mass_spring_chain
from azopg.run.speedup import SpeedupRun, run_speedup, summarize, write_speedup_csv, write_summary_csv
from azopg.settings import Settings

#: A step for W = 1 (see the module docstring); the default is this over max(W).
STEP_W1 = 6.5e-5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4,8,16,32", help="comma-separated W (the first is the reference)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--step", type=float, default=None, help=f"default {STEP_W1:g} / max(W)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--target-gap", type=float, default=1e-2)
    ap.add_argument("--max-updates", type=int, default=200_000, help="bound of each run")
    ap.add_argument("--latency", type=float, default=0.01, help="virtual seconds per rollout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="directory for speedup.csv and speedup_summary.csv (after every run)")
    a = ap.parse_args()
    workers = sorted({int(w) for w in a.workers.split(",")})
    a.step = a.step or STEP_W1 / max(workers)
    problem = mass_spring_chain(10, damping=1.0)
    base = Settings(plain=True, method="two-point", step=a.step, batch=a.batch, target_gap=a.target_gap,
                    max_updates=a.max_updates, max_rollouts=4 * 2 * a.batch * a.max_updates,
                    rollout_latency=a.latency, seed=a.seed, max_time=1e9)
    t0 = time.perf_counter()
    done: list[SpeedupRun] = []
    out = Path(a.out) if a.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    last = [t0]

    def report(run: SpeedupRun) -> None:
        now = time.perf_counter()
        run.result = None  # the history of a long run is large; the row is all this study needs
        done.append(run)
        if out is not None:
            summarize(done)
            write_speedup_csv(out / "speedup.csv", done)
            write_summary_csv(out / "speedup_summary.csv", done)
        print(f"  W={run.workers:<3} repeat {run.repeat}: {run.status:<11} {run.updates:>7} updates, "
              f"virtual {run.time_to_target_s:9.2f} s, {run.blown_estimates} blown-up estimates skipped, "
              f"{1e3 * (now - last[0]) / max(run.updates, 1):.3f} ms per update [{now - t0:.0f} s]",
              file=sys.stderr, flush=True)
        last[0] = now

    print(f"msd10 (n = {problem.n}, m = {problem.m}), plain two-point rule, step {a.step:g}, batch {a.batch}, "
          f"simulated backend {a.latency:g} s/rollout, target gap {a.target_gap:g}, {a.repeats} paired repeats, "
          f"at most {a.max_updates} updates per run", flush=True)
    runs = run_speedup(problem, workers, backend="simulated", repeats=a.repeats, base=base, report=report)
    rows = summarize(runs)
    w0 = workers[0]
    print(f"{'W':>4} {'reached':>8} {'updates (med)':>14} {f'U(W)/U({w0}) med [min-max]':>28} {'within 10%':>11} "
          f"{'paired speedup med [min-max]':>30} {'mean delay':>11}")
    for r in rows:
        ratio = (f"{r['updates_ratio']:.3f} [{r['updates_ratio_min']:.3f}-{r['updates_ratio_max']:.3f}]"
                 if math.isfinite(r["updates_ratio"]) else "-")
        paired = (f"{r['paired_speedup']:.2f} [{r['paired_speedup_min']:.2f}-{r['paired_speedup_max']:.2f}]"
                  if math.isfinite(r["paired_speedup"]) else "-")
        ok = "yes" if math.isfinite(r["updates_ratio"]) and abs(r["updates_ratio"] - 1) <= 0.1 else "no"
        print(f"{r['workers']:>4} {r['reached']:>4}/{r['runs']:<3} {r['updates']:>14.0f} {ratio:>28} {ok:>11} "
              f"{paired:>30} {r['mean_delay']:>11.1f}")
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
