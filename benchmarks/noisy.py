"""Learning on the exact noisy plant: default settings, a time budget, the final gap by the exact oracle.

For each problem and noise level (``--process`` levels ``s``: ``W = s^2 Omega``; ``--measurement``
levels: ``V = s^2 Omega`` held ``--dt`` s, with process noise ``--with-process``) one serial run with
default settings (``method="auto"``) and ``max_time``; prints the rule ``auto`` picked, the rollouts, the
wall time (the budget is held if it is at most ``max_time`` + 1 s), the final gap of the noise-free oracle
``(f(K) - f(K*)) / f(K*)`` (``f = tr(P Omega)``, what ``K*`` minimizes -- also the average cost's
optimum under process noise), the horizon ``tau`` calibrated, the exact expected cost of the
returned gain over ``K0``'s at that horizon, ``E f_tau(K) / E f_tau(K0)`` (never above 1), and the
run's own 95 % confidence interval for the relative gap of the expected cost at ``tau`` to ``K*``'s
(``result.cost_interval``) next to its exact value (``over`` = wall time - max_time).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/noisy.py --problems he1,rea1,chain3,tg1 --process 0.1 \\
        --measurement 0.05 --measurement-problems he1 --max-time 60
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math

import numpy as np

import azopg
from azopg.model.noise import expected_cost


def run(problem: azopg.LQRProblem, noise: str, seed: int, max_time: float, method: str = "auto") -> None:
    res = azopg.train(problem, seed=seed, max_time=max_time, method=method)
    tau = float(res.settings["tau"])
    ratio = expected_cost(problem, res.K, tau) / expected_cost(problem, problem.K0, tau)
    ci = res.cost_interval
    interval, exact = "-", math.nan
    if ci is not None and "gap_low" in ci:
        interval = f"[{ci['gap_low']:.1e}, {ci['gap_high']:.1e}]"
        ref = ci["optimal_expected_cost"]
        exact = (expected_cost(problem, res.K, ci["tau"]) - ref) / ref
    print(f"{problem.name:>8} {noise:>14} {res.settings['method']:>10} {res.rollouts:>9} {res.wall_time_s:>8.1f} "
          f"{res.wall_time_s - max_time:>+6.1f} {res.status:>13} {res.relative_gap:>10.2e} {tau:>7.3g} "
          f"{ratio:>10.4f} {interval:>22} {exact:>10.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="he1,rea1,chain3,tg1")
    ap.add_argument("--process", default="0.01,0.1,1", help="process noise levels s (W = s^2 Omega)")
    ap.add_argument("--measurement", default="0.01,0.05", help="measurement noise levels s (V = s^2 Omega)")
    ap.add_argument("--measurement-problems", default=None, help="problems for the measurement noise rows "
                    "(default: --problems)")
    ap.add_argument("--with-process", type=float, default=0.0, help="process noise s added to measurement rows")
    ap.add_argument("--dt", type=float, default=0.01, help="measurement sampling interval (s)")
    ap.add_argument("--max-time", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="auto", help="the update rule (default: auto, the rule auto picks)")
    args = ap.parse_args()
    print(f"serial runs, default settings, max_time {args.max_time:g} s, seed {args.seed}")
    print(f"{'problem':>8} {'noise':>14} {'rule':>10} {'rollouts':>9} {'seconds':>8} {'over':>6} {'status':>13} "
          f"{'gap':>10} {'tau':>7} {'Ef(K)/Ef(K0)':>10} {'95 % CI, gap at tau':>22} {'exact':>10}")
    levels = [float(v) for v in args.process.split(",") if v]
    for name in args.problems.split(","):
        base = azopg.get_problem(name)
        Om = np.asarray(base.x0_cov)
        for s in levels:
            run(base.with_noise(W=s**2 * Om), f"W {s:g}", args.seed, args.max_time, args.method)
    meas = [float(v) for v in args.measurement.split(",") if v]
    for name in (args.measurement_problems or args.problems).split(","):
        base = azopg.get_problem(name)
        Om = np.asarray(base.x0_cov)
        w = args.with_process
        for s in meas:
            problem = base.with_noise(W=w**2 * Om if w else None, V=s**2 * Om, dt=args.dt)
            run(problem, f"V {s:g}" + (f" W {w:g}" if w else ""), args.seed, args.max_time, args.method)


if __name__ == "__main__":
    main()
