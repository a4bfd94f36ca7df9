"""Does any built-in problem stall? Every problem, many seeds, default settings, one budget per run.

For each problem: runs that reached the target gap, runs *stalled* (final gap at least half the
gap of ``K0``: the run made no real progress) and runs *not converged in budget* (progress, but
the target not reached before ``--max-time``), the median wall seconds and rollouts of all runs,
and the worst final gap.

    python benchmarks/stalls.py [--seeds 0-49] [--max-time 20] [--target-gap 1e-3]
                                [--problems he3,tg1] [--method policy-iteration] [--max-rollouts N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics

import azopg


def seed_list(text: str) -> list[int]:
    """``"0-49"`` or ``"0,3,7"`` (or a mix) as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-49")
    ap.add_argument("--max-time", type=float, default=20.0)
    ap.add_argument("--target-gap", type=float, default=1e-3)
    ap.add_argument("--problems", default=",".join(azopg.problem_names()))
    ap.add_argument("--method", default="auto")
    ap.add_argument("--max-rollouts", type=int, default=None,
                    help="a rollout budget as well (a load-independent budget on a busy machine)")
    ap.add_argument("--verbose", action="store_true", help="a line per run as well")
    args = ap.parse_args()
    seeds = seed_list(args.seeds)
    rollouts = f" or {args.max_rollouts} rollouts" if args.max_rollouts else ""
    print(f"method {args.method}, default settings, serial backend, target gap {args.target_gap:g}, "
          f"budget {args.max_time:g} s{rollouts} per run, seeds {args.seeds}")
    print(f"{'problem':<8} {'n':>3} {'m':>3} {'converged':>10} {'stalled':>8} {'in budget':>10} "
          f"{'median s':>9} {'median rollouts':>16} {'worst gap':>10} {'gap of K0':>10}", flush=True)
    for name in args.problems.split(","):
        p = azopg.get_problem(name)
        fstar = p.optimal_cost
        gap0 = (p.cost(p.K0) - fstar) / abs(fstar)
        runs = []
        for seed in seeds:
            r = azopg.train(p, seed=seed, max_time=args.max_time, max_rollouts=args.max_rollouts,
                            target_gap=args.target_gap, method=args.method)
            runs.append(r)
            if args.verbose:
                print(f"  {name} seed {seed}: {r.status} gap {r.relative_gap:.2e} {r.wall_time_s:.1f} s "
                      f"{r.rollouts} rollouts", flush=True)
        converged = sum(r.status == "converged" for r in runs)
        stalled = sum(r.status != "converged" and r.relative_gap >= 0.5 * gap0 for r in runs)
        print(f"{name:<8} {p.n:>3} {p.m:>3} {f'{converged}/{len(runs)}':>10} {stalled:>8} "
              f"{len(runs) - converged - stalled:>10} {statistics.median(r.wall_time_s for r in runs):>9.2f} "
              f"{statistics.median(r.rollouts for r in runs):>16.0f} {max(r.relative_gap for r in runs):>10.2e} "
              f"{gap0:>10.2e}", flush=True)


if __name__ == "__main__":
    main()
