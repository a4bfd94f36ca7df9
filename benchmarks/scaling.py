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

import numpy as np
from carex import independent_check  # type: ignore[import-not-found]

import azopg
from azopg.method import folds
from azopg.method.equations import IntervalEquations
from azopg.method.folds import fold_rows
from azopg.method.policy_iteration import factor_columns
from azopg.plants.discrete import plant_for

COSTS_HEADER = (f"{'problem':<14} {'n':>5} {'m':>3} {'p':>6} {'p_L':>6} {'factor GB':>9} {'k':>4} {'rollout s':>9} "
                f"{'MB/rollout':>10} {'rows s':>7} {'fold s/row':>10} {'unblocked s/row':>15} {'rows/unknown':>12}")

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


def costs(name: str, max_bytes: float) -> str:
    """What one rollout with snapshots costs at a problem's size: the worker's rollout (``k`` intervals,
    the default snapshots at this ``p_L`` without the cap), the bytes it sends (``S`` per interval), and the
    master's work per row: building the rows, and folding them into the factor (blocked, and row by row)
    -- timed on a chunk of rows folded into a random triangular factor of the size of the equations'
    (the fold's work does not depend on the values). Skipped where the factor exceeds ``max_bytes``."""
    p = azopg.get_problem(name)
    n, m = p.n, p.m
    q = n * (n + 1) // 2
    pl = factor_columns(n, m)
    k = min(256, max(16, 2 ** int(np.ceil(np.log2(2 * (q + m * n))))))
    gb = 8.0 * (pl + 1) ** 2 / 1e9
    rng = np.random.default_rng(0)
    plant = plant_for(p)
    K = np.asarray(p.K0) + 1e-3 * rng.standard_normal((1, m, n))
    t0 = time.perf_counter()
    tr = plant.rollout_snapshots(K, plant.initial_states(rng, 1), 10.0 / max(1e-3, -p.spectral_abscissa(p.K0)), k)
    rollout_s = time.perf_counter() - t0
    mb = (tr.S.nbytes + tr.x.nbytes + tr.cost.nbytes) / 1e6
    eq = IntervalEquations(p.K0, p.R)
    t0 = time.perf_counter()
    rows = eq.rows_of(K, tr.x, tr.S, tr.cost)
    build = (time.perf_counter() - t0) / rows.shape[0]
    fold = unblocked = float("nan")
    if gb * 1e9 <= max_bytes:
        T = np.triu(rng.standard_normal((pl + 1, pl + 1)))
        chunk = rows[: folds.BLOCK]
        t0 = time.perf_counter()
        fold_rows(T, chunk)
        fold = (time.perf_counter() - t0) / chunk.shape[0]
        if pl + 1 <= 4100:  # the row-by-row fold: minutes per chunk above this
            saved = folds.UNBLOCKED_COLUMNS
            folds.UNBLOCKED_COLUMNS = 10**9
            t0 = time.perf_counter()
            fold_rows(T, chunk[:8])
            unblocked = (time.perf_counter() - t0) / 8
            folds.UNBLOCKED_COLUMNS = saved
        del T
    return (f"{name:<14} {n:>5} {m:>3} {q + m * n:>6} {pl:>6} {gb:>9.2f} {k:>4} {rollout_s:>9.2f} {mb:>10.1f} "
            f"{build:>7.4f} {fold:>10.4f} {unblocked:>15.4f} {rows.shape[0] / (q + m * n):>12.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="carex4.2-n100,carex4.3-l50,carex4.2-n200,carex4.3-l100")
    ap.add_argument("--methods", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-time", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--costs", action="store_true",
                    help="print what one rollout with snapshots costs the worker and the master instead of training")
    ap.add_argument("--max-gb", type=float, default=2.0, help="with --costs: largest factor to fold (GB)")
    args = ap.parse_args()
    if args.costs:
        print(COSTS_HEADER, flush=True)
        for name in args.problems.split(","):
            print(costs(name, args.max_gb * 1e9), flush=True)
        return
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
