"""Policy iteration with one equation per rollout (``--snapshots 1``) against every interval of
every rollout (the default), serial, exact plants, the default rule (``auto``).

For each problem: the rollouts spent until the gap first reached the target (all of them:
calibration and checks included), with ``--snapshots 1`` and with the default, their ratio, and
the same for a copy of the problem whose states are rescaled ``x -> T x`` with
``T = diag(logspace(-s, s, n))`` (``A -> T A T^-1``, ``B -> T B``, ``Q -> T^-T Q T^-1``,
``x0_cov -> T x0_cov T'``, ``K0 -> K0 T^-1``): a unit-invariant method takes as many rollouts. Also
the master's CPU seconds per rollout and the bytes received per rollout of the default runs.

    python benchmarks/snapshots.py [--problems he1,msd10] [--target-gap 1e-6] [--max-time 120]
                                   [--scale 3] [--seed 0] [--skip-old]

``msd10`` is ``mass_spring_chain(10, damping=1.0)`` (n = 20, m = 10).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse

import numpy as np

import azopg
from azopg.errors import AzopgError
from azopg.model.hard import rescaled
from azopg.model.library import mass_spring_chain


def problem(name: str) -> azopg.LQRProblem:
    return mass_spring_chain(10, damping=1.0) if name == "msd10" else azopg.get_problem(name)


def run(p: azopg.LQRProblem, snapshots: int | None, args: argparse.Namespace) -> tuple[str, object]:
    """``(rollouts to the target or status, result)``."""
    try:
        res = azopg.train(p, seed=args.seed, target_gap=args.target_gap, max_time=args.max_time, snapshots=snapshots)
    except AzopgError as exc:
        return f"error: {str(exc)[:40]}", None
    hit = next((row.rollouts for row in res.history if row.relative_gap <= args.target_gap), None)
    return (str(hit) if hit is not None else f"{res.status}({res.rollouts})"), res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=",".join([*azopg.problem_names(), "msd10"]))
    ap.add_argument("--target-gap", type=float, default=1e-6)
    ap.add_argument("--max-time", type=float, default=120.0)
    ap.add_argument("--scale", type=float, default=3.0, help="states rescaled by 10^-s .. 10^s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-old", action="store_true", help="do not run --snapshots 1")
    args = ap.parse_args()
    print(f"serial, method auto (policy iteration), target gap {args.target_gap:g}, budget {args.max_time:g} s "
          f"per run, seed {args.seed}; rollouts in all until the gap first reached the target")
    print(f"{'problem':<9} {'n':>3} {'m':>3} {'snapshots 1':>13} {'default':>9} {'ratio':>7} "
          f"{'scaled 1e' + format(args.scale, 'g'):>12} {'master ms/rollout':>18} {'bytes/rollout':>14}")
    for name in args.problems.split(","):
        p = problem(name)
        old, _ = ("-", None) if args.skip_old else run(p, 1, args)
        new, res = run(p, None, args)
        try:
            scaled, _ = run(rescaled(p, np.logspace(-args.scale, args.scale, p.n)), None, args)
        except AzopgError as exc:  # e.g. a covariance the validation no longer accepts as positive definite
            scaled = f"-({str(exc)[:20]})"
        ratio = f"{int(old) / int(new):.1f}" if old.isdigit() and new.isdigit() else "-"
        ms = f"{1e3 * res.stats.get('master_cpu_s_per_rollout', float('nan')):.2f}" if res is not None else "-"
        nbytes = f"{res.stats.get('bytes_per_rollout', float('nan')):.0f}" if res is not None else "-"
        print(f"{name:<9} {p.n:>3} {p.m:>3} {old:>13} {new:>9} {ratio:>7} {scaled:>12} {ms:>18} {nbytes:>14}",
              flush=True)


if __name__ == "__main__":
    main()
