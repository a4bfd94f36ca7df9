"""Cost of state moments: :class:`azopg.LinearPlant` rollouts with and without ``moments=True``.

Prints, for n = 4, 10, 30 (m = 2) and a batch of b rollouts, the time of one batched
rollout call without and with moments (best of repeated calls, one thread) and their
ratio, and the relative error of ``S`` against the finite-horizon Lyapunov closed form
``Acl S + S Acl' = x_end x_end' - x0 x0'``.

    python benchmarks/moments.py [--tau 50] [--batch 100] [--repeats 20]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import time

import numpy as np
import scipy.linalg as sla

from azopg import LinearPlant, random_system


def best_time(fn, repeats: int) -> float:
    """Smallest wall time of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def moment_error(problem, K, x0, S, tau) -> float:
    """Largest relative error of ``S`` against the Lyapunov closed form (first 5 rollouts)."""
    err = 0.0
    for Ki, xi, Si in list(zip(K, x0, S, strict=True))[:5]:
        Acl = problem.closed_loop(Ki)
        xe = sla.expm(Acl * tau) @ xi
        ref = sla.solve_continuous_lyapunov(Acl, np.outer(xe, xe) - np.outer(xi, xi))
        err = max(err, float(np.max(np.abs(Si - ref)) / np.max(np.abs(ref))))
    return err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tau", type=float, default=50.0, help="rollout horizon")
    ap.add_argument("--batch", type=int, default=100, help="rollouts per call")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per cell")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    b = args.batch
    print(f"LinearPlant.rollout, b = {b}, tau = {args.tau:g}, one thread (best of {args.repeats})")
    print(f"{'n':>4} {'m':>3} {'plain ms':>10} {'moments ms':>11} {'ratio':>7} {'S rel.err':>10}")
    for n in (4, 10, 30):
        m = 2
        problem = random_system(n, m, seed=1)
        plant = LinearPlant(problem)
        K = problem.K0 + 0.05 * rng.standard_normal((b, m, n))
        x0 = plant.initial_states(rng, b)
        plain = best_time(lambda: plant.rollout(K, x0, args.tau), args.repeats)  # noqa: B023
        with_m = best_time(lambda: plant.rollout(K, x0, args.tau, moments=True), args.repeats)  # noqa: B023
        res = plant.rollout(K, x0, args.tau, moments=True)
        err = moment_error(problem, K, x0, res.S, args.tau)
        print(f"{n:>4} {m:>3} {1e3 * plain:>10.2f} {1e3 * with_m:>11.2f} {with_m / plain:>7.2f} {err:>10.1e}")


if __name__ == "__main__":
    main()
