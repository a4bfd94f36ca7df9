"""Policy iteration on W workers: time to a target gap against W = 1.

Default: one equation per rollout (``--snapshots 1``, the regime of noisy or black-box plants) on
simulated workers (virtual time: ``--latency`` s per rollout, load-free). ``--backend async`` runs
real worker processes whose rollouts each take ``--latency`` s of wall time (wall-time figures: on
a loaded machine, pessimistic). ``--backend master-timed``: simulated workers whose virtual clock also
counts this process's own CPU time as the master's (:class:`MasterTimedExecutor`: the master's fits,
asks and logging are on the clock, the workers' CPU and the pipes are not) -- the time to target of a
machine with as many free cores as workers, load-free but for the master's CPU. ``--snapshots 0``
leaves the number of snapshots to the learner.

For each W: the seconds until the gap first reached the target (virtual or wall; ``T``: from the
start of the run, its serial calibration included; ``loop``: after calibration), the rollouts spent
by then, the reports dropped as too stale, the speedup ``T(1) / T(W)`` and its efficiency
``T(1) / (W T(W))`` (the aim: at least 0.8; with ``--backend async`` and ``master-timed`` on the
``loop`` times, as the calibration's wall time there is mostly the start of W worker processes), the
master's CPU seconds
per rollout on the fits (``result.json`` stats) and the Amdahl limit on W it implies
(``latency / master CPU per rollout``: beyond it the master cannot keep up), and this process's CPU
seconds. With ``--backend async`` also (``result.json`` stats of the worker processes): the workers'
CPU per rollout (running the task and pickling its report), the bytes of a report, the workers' idle
fraction (from sending a report to receiving the next task), the seconds to start the workers, until
all of them had a task (after start-up: the calibration runs on one) and to stop them, this
process's CPU per rollout (the master whole: fits, pickling, pipes) and the limit on W that the
machine's cores put (``cores x latency / (worker + master CPU per rollout)``: beyond it the CPU, not
the rollouts, sets the pace; ``--cores``, default: this machine's).

    python benchmarks/pi_parallel.py [--problem msd10] [--workers 1,8,32] [--target-gap 1e-3]
                                     [--latency 0.01] [--snapshots 1] [--backend simulated|async|master-timed]
                                     [--max-time 600] [--seed 0] [--batch B] [--cores C]

``msd10`` is ``mass_spring_chain(10, damping=1.0)``; other names are built-in problems (``cse1``,
``eb4``, ...).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import heapq
import math
import time

import azopg
from azopg.engine import backends
from azopg.engine.backends import SimulatedExecutor
from azopg.method.tasks import Report, Task
from azopg.model.library import mass_spring_chain


class MasterTimedExecutor(SimulatedExecutor):
    """Simulated workers (virtual time, as many as W, no load) and the master's own CPU time: the virtual
    clock also advances by the CPU seconds this process spends between two calls of the executor that are
    not a worker's task (the master's fits, asks, logging; not the pipes' pickling), and the reports that
    finished meanwhile arrive together (a take), as with worker processes: a worker whose report arrives
    during a fit waits for the fit's end."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self._mark: float | None = None

    def _advance(self) -> None:
        now = time.process_time()
        if self._mark is not None:
            self._now += now - self._mark
        self._mark = now

    def _resume(self) -> None:
        self._mark = time.process_time()

    def clock(self) -> float:
        """Virtual seconds, the master's CPU so far included (an update is logged after its fit)."""
        self._advance()
        return self._now

    def run(self, task: Task) -> Report:
        self._advance()
        rep = super().run(task)
        self._resume()
        return rep

    def submit(self, task: Task) -> None:
        self._advance()
        super().submit(task)  # the task runs here: a worker's time, not the master's
        self._resume()

    def next_report(self, timeout: float | None = None) -> Report | None:
        self._advance()
        rep = super().next_report(timeout)
        self._resume()
        return rep

    def ready_reports(self) -> list[Report]:
        self._advance()
        out = []
        while self._heap and self._heap[0][0] <= self._now:
            out.append(heapq.heappop(self._heap)[2])
        self._resume()
        return out


def _master_timed() -> None:
    """Make the ``simulated`` backend a :class:`MasterTimedExecutor`."""
    def make(plant_factory, workers, o):  # type: ignore[no-untyped-def]
        return MasterTimedExecutor(plant_factory, workers, per_rollout=o.per_rollout, model=o.latency_model,
                                   seed=o.seed)

    backends._EXECUTORS["simulated"] = make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="msd10")
    ap.add_argument("--workers", default="1,8,32")
    ap.add_argument("--target-gap", type=float, default=1e-3)
    ap.add_argument("--latency", type=float, default=0.01)
    ap.add_argument("--snapshots", type=int, default=1, help="0: the learner's default")
    ap.add_argument("--backend", default="simulated", choices=["simulated", "async", "master-timed"],
                    help="master-timed: simulated workers, the master's CPU time on the virtual clock")
    ap.add_argument("--max-time", type=float, default=600.0, help="seconds per run (virtual when simulated)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=None, help="rollouts per task (default: the rule's)")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    p = mass_spring_chain(10, damping=1.0) if args.problem == "msd10" else azopg.get_problem(args.problem)
    clock = "wall" if args.backend == "async" else "virtual"
    backend = "async" if args.backend == "async" else "simulated"
    if args.backend == "master-timed":
        _master_timed()
    k = args.snapshots or None
    print(f"{args.problem} (n={p.n}, m={p.m}), policy iteration, --snapshots {k or 'default'}, {args.backend} backend, "
          f"{args.latency:g} s per rollout, target gap {args.target_gap:g}, seed {args.seed}")
    print(f"{'W':>4} {'status':<10} {clock + ' s':>10} {'loop s':>7} {'rollouts':>9} {'dropped':>8} {'speedup':>8} "
          f"{'efficiency':>11} {'master ms/rollout':>18} {'Amdahl W':>9} {'CPU s':>7}"
          + ("" if args.backend != "async" else
             f" {'worker ms/r':>11} {'proc ms/r':>9} {'B/report':>9} {'idle':>5} {'start s':>7} {'busy s':>6} "
             f"{'stop s':>6} {'cores W':>7}"))
    t1 = None
    for W in (int(w) for w in args.workers.split(",")):
        c0 = time.process_time()
        res = azopg.train(p, method="policy-iteration", snapshots=k, workers=W, backend=backend,
                          rollout_latency=args.latency, target_gap=args.target_gap, max_time=args.max_time,
                          seed=args.seed, batch=args.batch)
        hit = next((row for row in res.history if row.relative_gap <= args.target_gap), None)
        total = hit.time_s if hit is not None else float("nan")
        loop = res.stats.get("time_to_target_s") or float("nan")
        T = total if args.backend == "simulated" else loop
        rollouts = hit.rollouts if hit is not None else res.rollouts
        t1 = T if W == 1 else t1
        speed = t1 / T if t1 is not None else float("nan")
        master = float(res.stats.get("master_cpu_s_per_rollout", math.nan))
        amdahl = args.latency / master if master > 0 else math.inf
        cpu = time.process_time() - c0
        line = (f"{W:>4} {res.status:<10} {total:>10.2f} {loop:>7.2f} {rollouts:>9} {res.stats['dropped']:>8} "
                f"{speed:>8.2f} {speed / W:>11.2f} {1e3 * master:>18.3f} {amdahl:>9.0f} {cpu:>7.1f}")
        if args.backend == "async":
            st = res.stats
            worker = float(st.get("worker_cpu_s_per_rollout", math.nan))
            proc = cpu / max(res.rollouts, 1)  # the master process whole, calibration included
            line += (f" {1e3 * worker:>11.3f} {1e3 * proc:>9.3f} {st.get('bytes_per_report', math.nan):>9.0f} "
                     f"{st.get('worker_idle_fraction', math.nan):>5.2f} {st.get('worker_start_s', math.nan):>7.2f} "
                     f"{st.get('worker_all_busy_s') or math.nan:>6.2f} {st.get('worker_stop_s', math.nan):>6.2f} "
                     f"{args.cores * args.latency / (worker + proc):>7.0f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
