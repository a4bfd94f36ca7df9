"""The update rules side by side on every built-in problem (serial, default settings).

For each problem and rule: the run's status, the final relative gap, ``||K - K*|| / ||K*||``,
the rollouts spent (in all, and until the gap first reached 1e-3), the wall seconds and the
CPU seconds of the process (the robust figure on a shared machine).

    python benchmarks/rules.py [--rules natural,policy-iteration] [--problems he3,tg1]
                               [--target-gap 1e-6] [--target-gain-error 1e-3] [--cost-noise 0]
                               [--max-time 60] [--seed 0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import time

import numpy as np

import azopg
from azopg.settings import METHODS


def rollouts_to(history, gap: float) -> int | None:
    """Rollouts spent when the gap first reached ``gap`` (``None`` if never)."""
    return next((row.rollouts for row in history if row.relative_gap <= gap), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", default="two-point,natural,policy-iteration")
    ap.add_argument("--problems", default=",".join(azopg.problem_names()))
    ap.add_argument("--target-gap", type=float, default=1e-6)
    ap.add_argument("--target-gain-error", type=float, default=None)
    ap.add_argument("--cost-noise", type=float, default=0.0)
    ap.add_argument("--max-time", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rules = args.rules.split(",")
    bad = [r for r in rules if r not in METHODS]
    if bad:
        ap.error(f"unknown rule(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    print(f"serial, target gap {args.target_gap:g}, gain error {args.target_gain_error}, "
          f"cost noise {args.cost_noise:g}, budget {args.max_time:g} s, seed {args.seed}")
    print(f"{'problem':<8} {'n':>3} {'m':>2} {'rule':<17} {'status':<11} {'gap':>9} {'|dK|/|K*|':>10} "
          f"{'rollouts':>9} {'to 1e-3':>8} {'seconds':>8} {'CPU s':>8}")
    for name in args.problems.split(","):
        p = azopg.get_problem(name)
        Ks = p.optimal_gain
        for rule in rules:
            t0, c0 = time.perf_counter(), time.process_time()
            res = azopg.train(p, method=rule, seed=args.seed, target_gap=args.target_gap, max_time=args.max_time,
                              target_gain_error=args.target_gain_error, cost_noise=args.cost_noise)
            sec, cpu = time.perf_counter() - t0, time.process_time() - c0
            rel = float(np.linalg.norm(res.K - Ks) / np.linalg.norm(Ks))
            r3 = rollouts_to(res.history, 1e-3)
            print(f"{name:<8} {p.n:>3} {p.m:>2} {rule:<17} {res.status:<11} {res.relative_gap:>9.2e} {rel:>10.2e} "
                  f"{res.rollouts:>9} {'-' if r3 is None else r3:>8} {sec:>8.2f} {cpu:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
