"""Policy iteration (and natural) with noise on the state moments ``S`` as well as on the costs.

Each worker's plant is a LinearPlant whose measured ``S`` carries relative noise ``--s-noise``
(:class:`azopg.method.tasks.NoisyCosts` with ``moments_noise``; the cost noise is ``--cost-noise``,
applied by the run as usual). Prints the final gap and gain error per problem and rule.

    python benchmarks/noisy_moments.py [--problems he1,he3,tg1] [--rules policy-iteration,natural]
                                       [--s-noise 1e-3] [--cost-noise 0] [--max-time 30]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import functools
import time

import numpy as np

import azopg
from azopg.method.tasks import NoisyCosts


def noisy_plant(problem: azopg.LQRProblem, s_noise: float, seed: int) -> NoisyCosts:
    """A LinearPlant of ``problem`` whose moments carry relative noise ``s_noise`` (exact costs)."""
    return NoisyCosts(azopg.LinearPlant(problem), 0.0, np.random.default_rng([seed, 7]), moments_noise=s_noise)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="he1,rea1,he3,tg1")
    ap.add_argument("--rules", default="policy-iteration,natural")
    ap.add_argument("--s-noise", type=float, default=1e-3)
    ap.add_argument("--cost-noise", type=float, default=0.0)
    ap.add_argument("--max-time", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"serial, S noise {args.s_noise:g}, cost noise {args.cost_noise:g}, budget {args.max_time:g} s")
    print(f"{'problem':<8} {'rule':<17} {'status':<11} {'gap':>9} {'|dK|/|K*|':>10} {'rollouts':>9} {'seconds':>8}")
    for name in args.problems.split(","):
        p = azopg.get_problem(name)
        for rule in args.rules.split(","):
            t0 = time.perf_counter()
            res = azopg.train(p, method=rule, seed=args.seed, target_gap=1e-6, target_gain_error=1e-3,
                              max_time=args.max_time, cost_noise=args.cost_noise,
                              plant_factory=functools.partial(noisy_plant, p, args.s_noise, args.seed))
            print(f"{name:<8} {rule:<17} {res.status:<11} {res.relative_gap:>9.2e} {res.gain_error:>10.2e} "
                  f"{res.rollouts:>9} {time.perf_counter() - t0:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
