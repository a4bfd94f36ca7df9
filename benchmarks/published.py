"""Every built-in problem learned with default settings: time and rollouts to the target gap.

    python benchmarks/published.py [--seeds 0,1] [--max-time 60] [--target-gap 1e-3] [--method two-point]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse

import azopg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--max-time", type=float, default=60.0)
    ap.add_argument("--target-gap", type=float, default=1e-3)
    ap.add_argument("--problems", default=",".join(azopg.problem_names()))
    ap.add_argument("--method", default="two-point", help="update rule (default: the paper's two-point rule)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"default settings, method {args.method}, serial backend, target gap {args.target_gap:g}, "
          f"budget {args.max_time:g} s")
    print(f"{'problem':<8} {'n':>3} {'m':>3} {'seed':>4} {'status':<10} {'gap':>9} {'time [s]':>9} "
          f"{'updates':>8} {'rollouts':>9}")
    for name in args.problems.split(","):
        p = azopg.get_problem(name)
        for seed in seeds:
            r = azopg.train(p, seed=seed, max_time=args.max_time, target_gap=args.target_gap, method=args.method)
            print(f"{name:<8} {p.n:>3} {p.m:>3} {seed:>4} {r.status:<10} {r.relative_gap:>9.2e} "
                  f"{r.wall_time_s:>9.2f} {r.updates:>8} {r.rollouts:>9}", flush=True)


if __name__ == "__main__":
    main()
