"""The master process's CPU per applied update in a real run, by backend and W.

Unlike ``master_overhead.py`` (the update alone), this times the whole loop of a real run
-- receiving each report from a worker process or Ray actor, applying it, sending the next
task -- with ``os.times`` around :func:`azopg.run.train.run_loop`, on chain3 with ``--batch 1``
and a rollout latency, as in the speedup study. The last column is the CPU of every process
of the run per update (the master, its workers or Ray's actors, raylet and GCS; from
``/proc``, Linux only): what W workers cost a machine, whatever else runs on it.

    python benchmarks/driver_cpu.py                       # async W = 16, 32; ray W = 16
    python benchmarks/driver_cpu.py --runs async:8 ray:8 --latency 0.02
    python benchmarks/driver_cpu.py --runs ray:16 --depth 1        # one task per Ray call
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import time

import azopg
from azopg import Settings, get_problem
from azopg.engine import loops
from azopg.run.speedup import calibrated_settings


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and all its descendants, from ``/proc``
    (NaN where there is no ``/proc``)."""
    if not os.path.isdir("/proc"):
        return math.nan
    parent, cpu = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(d)] = int(fields[1])
            cpu[int(d)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    for pid, pp in parent.items():
        children.setdefault(pp, []).append(pid)
    total, stack = 0.0, [os.getpid()]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack += children.get(pid, [])
    return total


def measure(backend: str, workers: int, latency: float, method: str = "two-point",
            depth: int | None = None) -> dict[str, float]:
    """One run to the 1e-2 gap; the loop's updates per second and master CPU per update."""
    problem = get_problem("chain3")
    cal = calibrated_settings(problem, Settings(rollout_latency=latency, target_gap=1e-2, batch=1, method=method))
    settings = Settings.from_dict({**cal.to_dict(), "workers": workers, "depth": depth})
    out: dict[str, float] = {}
    original = loops.LOOPS["async"]

    def timed_loop(rule, executor, should_stop, tick):
        t0, w0, u0, c0 = os.times(), time.perf_counter(), rule.stats.updates, tree_cpu()
        try:
            return original(rule, executor, should_stop, tick)
        finally:
            t1, w1, c1 = os.times(), time.perf_counter(), tree_cpu()
            n = max(rule.stats.updates - u0, 1)
            out.update(updates=n, seconds=w1 - w0, rate=n / (w1 - w0),
                       cpu_ms=(t1.user + t1.system - t0.user - t0.system) / n * 1e3, all_ms=(c1 - c0) / n * 1e3)

    loops.LOOPS["async"] = timed_loop
    try:
        azopg.train(problem, settings, backend=backend)
    finally:
        loops.LOOPS["async"] = original
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["async:16", "async:32", "ray:16"], metavar="BACKEND:W")
    parser.add_argument("--latency", type=float, default=0.01, help="seconds per rollout")
    parser.add_argument("--method", default="two-point", help="update rule (default the paper's, as the speedup study)")
    parser.add_argument("--depth", type=int, default=None, help="tasks per Ray worker (default: the backend's)")
    args = parser.parse_args()
    print(f"chain3, {args.method}, batch 1, rollout latency {args.latency:g} s, to gap 1e-2")
    print(f"{'backend':>8} {'W':>4} {'updates':>8} {'upd/s':>7} {'master CPU/update [ms]':>23} "
          f"{'all CPU/update [ms]':>20}")
    for spec in args.runs:
        backend, _, w = spec.partition(":")
        r = measure(backend, int(w), args.latency, args.method, args.depth)
        print(f"{backend:>8} {int(w):>4} {r['updates']:>8.0f} {r['rate']:>7.0f} {r['cpu_ms']:>23.3f} "
              f"{r['all_ms']:>20.3f}")


if __name__ == "__main__":
    main()
