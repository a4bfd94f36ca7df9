"""Master overhead per applied update (the AZOPG master's own work, no rollouts).

Feeds pre-computed estimate reports to :class:`azopg.method.azopg.AZOPG` as fast as it can
take them -- ``receive`` (apply the update, log the event) plus ``make_task`` (the
next task for that worker) -- and reports microseconds per update, with and without
the exact-oracle monitor (which only reports the gap), and in communication-light
mode (the master rebuilds the estimate from the seed).

    python benchmarks/master_overhead.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time

import numpy as np

from azopg import Settings, get_problem
from azopg.method.azopg import AZOPG
from azopg.method.tasks import run_task
from azopg.plants.linear import LinearPlant
from azopg.run.history import RunLog


def measure(problem, *, workers: int, monitor: bool, light: bool, updates: int = 3000) -> float:
    plant = LinearPlant(problem)
    s = Settings(workers=workers, tau=20.0, r=1e-4, step=1e-6, check_every=10**9, light=light, batch=1)
    fstar = problem.optimal_cost

    def mon(K):
        f = problem.cost(K)
        return f, (f - fstar) / fstar

    master = AZOPG(np.array(problem.K0), s, observer=RunLog(mon if monitor else None, time.perf_counter, workers))
    # a pool of real reports, one per worker, re-stamped with fresh ids and versions
    tasks = [master.ask(w) for w in range(workers)]
    reports = [run_task(plant, t) for t in tasks]
    t0 = time.perf_counter()
    for i in range(updates):
        rep = reports[i % workers]
        task = master.ask(rep.worker)
        rep.task_id, rep.version = task.task_id - workers, max(master.version - workers + 1, 0)
        master._issued.setdefault(rep.task_id, (s.tau, s.r, 1))
        master.tell(rep)
    return (time.perf_counter() - t0) / updates * 1e6


def main() -> None:
    print("master overhead per applied update (microseconds), one thread")
    print(f"{'problem':<8} {'n':>3} {'m':>3} {'W':>4} {'plain':>8} {'light':>8} {'+monitor':>9}")
    for name in ("chain3", "he3", "tg1"):
        p = get_problem(name)
        for W in (1, 32):
            plain = measure(p, workers=W, monitor=False, light=False)
            light = measure(p, workers=W, monitor=False, light=True)
            mon = measure(p, workers=W, monitor=True, light=False)
            print(f"{name:<8} {p.n:>3} {p.m:>3} {W:>4} {plain:>8.1f} {light:>8.1f} {mon:>9.1f}")


if __name__ == "__main__":
    main()
