"""Ten times larger: CAREX's scalable examples at n = 100, 200 and about 1000, and the scaling table.

    OMP_NUM_THREADS=1 python benchmarks/scaling.py [--problems carex4.2-n100,carex4.3-l50] \
        [--methods auto,natural] [--workers 2] [--max-time 600] [--seed 0]

One run per problem and method (``--backend async`` with ``--workers`` worker processes, target gap
1e-6), then a row of the scaling table: n, m, the rule, rollouts, the master's CPU seconds (the
training process's own CPU time: the workers are separate processes), bytes received per update
(``result.json``'s ``stats.bytes_per_update``), wall seconds, the final gap and gain error judged
by scipy's CARE and Lyapunov solvers (``benchmarks/carex.py``'s check, not the library's oracle)
and the run's status. Problems are any names :func:`azopg.get_problem` accepts: the scalable
CAREX examples at any size (``carex4.2-nN``, ``carex4.3-lL``, :mod:`azopg.model.carex`).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import resource
import time

from carex import independent_check  # type: ignore[import-not-found]

import azopg

HEADER = (f"{'problem':<14} {'n':>5} {'m':>3} {'rule':<17} {'W':>2} {'rollouts':>8} {'updates':>7} "
          f"{'master cpu s':>12} {'bytes/update':>12} {'wall s':>7} {'gap':>9} {'gain err':>9} status")


def cpu_seconds() -> float:
    """CPU seconds of this process (user + system)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def row(name: str, method: str, workers: int, max_time: float, seed: int) -> str:
    """One run and its table row."""
    p = azopg.get_problem(name)
    cpu = cpu_seconds()
    r = azopg.train(p, seed=seed, max_time=max_time, target_gap=1e-6, method=method, workers=workers,
                    backend="async" if workers > 1 else "serial")
    cpu = cpu_seconds() - cpu
    gap, err = independent_check(p, r.K)
    rule = str(r.settings.get("method", method))
    per_update = r.stats.get("bytes_per_update", float("nan"))
    return (f"{name:<14} {p.n:>5} {p.m:>3} {rule:<17} {workers:>2} {r.rollouts:>8} {r.updates:>7} {cpu:>12.1f} "
            f"{per_update:>12.3g} {r.wall_time_s:>7.1f} {gap:>9.2e} {err:>9.2e} {r.status}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="carex4.2-n100,carex4.3-l50,carex4.2-n200,carex4.3-l100")
    ap.add_argument("--methods", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-time", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"seed {args.seed}, W = {args.workers}, budget {args.max_time:g} s, target gap 1e-6, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(HEADER, flush=True)
    for name in args.problems.split(","):
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            try:
                print(row(name, method, args.workers, args.max_time, args.seed), flush=True)
            except azopg.AzopgError as exc:
                print(f"{name:<14} {method}: refused after {time.perf_counter() - t0:.0f} s: {exc}", flush=True)


if __name__ == "__main__":
    main()
