"""How close to K* a noisy plant lets AZOPG get: the size of the neighbourhood.

Every rollout cost is measured with relative noise ``cost_noise`` (``Settings.cost_noise``).
For each noise level, runs with ``--updates`` applied updates on the simulated backend
(bit-for-bit reproducible) and prints, over seeds, the final relative gap of the returned
gain, the median gap over the last quarter of the updates and the best gap seen.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/noisy_plant.py [--problem chain3] [--updates 3000]
"""

from __future__ import annotations

import argparse
import math
import statistics

import azopg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="chain3")
    ap.add_argument("--updates", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--noise", default="0,1e-4,1e-3,1e-2,3e-2")
    args = ap.parse_args()
    problem = azopg.get_problem(args.problem)
    print(f"{problem.name}: simulated backend, W = {args.workers}, {args.updates} updates, {args.seeds} seeds")
    print(f"{'cost_noise':>10} {'final gap (median, max)':>26} {'last-quarter median gap':>24} {'best gap':>10}")
    for noise in (float(v) for v in args.noise.split(",")):
        finals, tails, bests = [], [], []
        for seed in range(args.seeds):
            res = azopg.train(problem, backend="simulated", workers=args.workers, seed=seed, target_gap=None,
                              max_updates=args.updates, cost_noise=noise)
            gaps = [(h.update, h.relative_gap) for h in res.history if math.isfinite(h.relative_gap)]
            tail = [g for u, g in gaps if u >= 0.75 * res.updates]
            finals.append(res.relative_gap)
            tails.append(statistics.median(tail) if tail else math.nan)
            bests.append(min(g for _, g in gaps))
        print(f"{noise:>10.0e} {statistics.median(finals):>14.2e} {max(finals):>11.2e} "
              f"{statistics.median(tails):>24.2e} {min(bests):>10.2e}", flush=True)


if __name__ == "__main__":
    main()
