"""Peers on noisy plants: certainty equivalence, LSPI and azopg at equal numbers of rollouts.

For each plant, noise level, seed and budget ``N`` of rollouts, learns a gain by

* ``ce-care`` / ``ce-dare``: certainty equivalence (Dean, Mania, Matni, Recht & Tu) --
  least-squares ``(Ad, Bd)`` from ``N`` episodes of the sampled-data plant under the exploring
  policy ``u = -K0 y + sigma_u e`` (:mod:`model_based`: the :class:`~azopg.plants.envs.LinearEnv`
  form, zero-order hold at ``--dt``, ``--tau`` seconds per episode), then the CARE of the model
  by the matrix logarithm, or the DARE of the sampled-data model; ``ce-iv``: the CARE of the model
  identified by instrumental variables (the previous observation and the exploration), consistent
  under measurement noise;
* ``lspi``: LSTD-Q policy iteration (Krauth, Tu & Recht 2019) on the same episodes;
* ``azopg``: ``azopg.train(problem.with_noise(W, V, dt), max_rollouts=N, target_gap=None)`` --
  default settings on the package's exact noisy plant (continuous-time feedback
  ``u = -K (x + v)``, ``v`` held over ``--dt``), its own horizon; only the stop at the oracle's
  gap 1e-3 is switched off, so that it spends the budget as the peers do,

and judges each gain by the exact noise-free continuous-time oracle: the relative gap
``(f(K) - f*) / f*`` with ``f = tr(P_K Omega)`` (``K*`` is also the average-cost optimum under
process noise; under measurement noise the static optimum moves by ``O(V)``) and the gain error
``|K - K*| / |K*|`` (Frobenius). Noise levels are relative to ``Omega = x0_cov`` (identity on
these plants): ``W s`` is process noise of intensity ``s^2 Omega`` (increments ``N(0, s^2 dt
Omega)`` per step), ``V s`` measurement noise ``N(0, s^2 Omega)`` per sample. Prints a markdown
table of median [min, max] over the seeds; ``--out`` keeps every run as JSON. The table of
``docs/benchmarks/peers.md`` ("Noisy plants")::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/peers/noisy_peers.py --plants he1,rea1 \\
        --noise W0.01,W0.1,V0.01 --budgets 10,30,100,300,1000,3000,10000 --seeds 3 --out /tmp/noisy_peers.json

sb3-contrib's ARS on the same plants: ``benchmarks/peers/ars_noisy.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import math
import time

import numpy as np
from model_based import Statistics, certainty_equivalent, lspi, simulate

import azopg

LEARNERS = ("ce-care", "ce-dare", "ce-iv", "lspi", "azopg")  # and "azopg-gym" on request


def noise_levels(spec: str) -> list[tuple[str, float, float]]:
    """``"W0.01,V0.01"`` -> ``[("W 0.01", 0.01, 0.0), ("V 0.01", 0.0, 0.01)]``; ``W0.1+V0.01`` combines."""
    levels = []
    for item in spec.split(","):
        sw = sv = 0.0
        for part in item.split("+"):
            if part[:1] == "W":
                sw = float(part[1:])
            elif part[:1] == "V":
                sv = float(part[1:])
            else:
                raise SystemExit(f"noise level {part!r}: expected W<s> or V<s>")
        levels.append((item.replace("+", " ").replace("W", "W ").replace("V", "V "), sw, sv))
    return levels


def noisy_problem(base: azopg.LQRProblem, sw: float, sv: float, dt: float) -> azopg.LQRProblem:
    """``base`` with process noise ``sw^2 Omega`` and measurement noise ``sv^2 Omega`` held ``dt`` s."""
    Om = np.asarray(base.x0_cov)
    return base.with_noise(W=sw**2 * Om if sw else None, V=sv**2 * Om if sv else None, dt=dt if sv else None)


def judge(problem: azopg.LQRProblem, K: np.ndarray) -> tuple[float, float]:
    """Noise-free continuous-time relative gap (inf if not stabilizing) and relative gain error."""
    Ks = problem.optimal_gain
    gap = problem.relative_gap(K) if np.all(np.isfinite(K)) and problem.is_stabilizing(K) else math.inf
    return float(gap), float(np.linalg.norm(K - Ks) / np.linalg.norm(Ks))


def model_based_runs(base: azopg.LQRProblem, sw: float, sv: float, seed: int, budgets: list[int],
                     args: argparse.Namespace) -> list[dict]:
    """CE and LSPI at every budget, from the first ``N`` episodes of one stream of data."""
    n = base.n
    Om = np.asarray(base.x0_cov)
    steps = round(args.tau / args.dt)
    stats = Statistics(n, base.m)
    rows, done = [], 0
    for N in budgets:
        while done < N:
            b = min(N - done, 500)
            simulate(stats, base, base.K0, range(done, done + b), steps, args.dt, sw**2 * Om, sv**2 * Om,
                     args.sigma_u, seed)
            done += b
        for name in LEARNERS[:4]:
            t0 = time.process_time()
            try:
                if name == "lspi":
                    K, _ = lspi(stats, base.K0)
                else:
                    K = certainty_equivalent(stats, base.Q, base.R, args.dt, "dare" if name == "ce-dare" else "care",
                                             iv=name == "ce-iv")
            except (np.linalg.LinAlgError, ValueError):
                K = np.full_like(base.K0, np.nan)
            gap, err = judge(base, K)
            rows.append({"learner": name, "N": N, "rollouts": N, "gap": gap, "gain_error": err,
                         "cpu_s": time.process_time() - t0})
    return rows


def azopg_runs(base: azopg.LQRProblem, sw: float, sv: float, seed: int, budgets: list[int], dt: float,
               gym: bool = False) -> list[dict]:
    """azopg with default settings and ``max_rollouts = N``, one run per budget: on the exact noisy plant, or
    (``gym``) on ``GymPlant(LinearEnv(noise_std=sw, obs_noise_std=sv, dt=dt))`` (``x0_cov = I`` only)."""
    from azopg.plants.envs import LinearEnv
    from azopg.plants.gym import GymPlant

    def make_env() -> LinearEnv:
        return LinearEnv.from_problem(base, dt=dt, noise_std=sw, obs_noise_std=sv)

    rows = []
    for N in budgets:
        if gym:
            plant = GymPlant(make_env, base.n, base.m)
            res = azopg.train(plant, K0=base.K0, judge=base, seed=seed, max_rollouts=N, target_gap=None)
        else:
            res = azopg.train(noisy_problem(base, sw, sv, dt), seed=seed, max_rollouts=N, target_gap=None)
        gap, err = judge(base, np.asarray(res.K))
        rows.append({"learner": "azopg-gym" if gym else "azopg", "N": N, "rollouts": res.rollouts, "gap": gap,
                     "gain_error": err, "tau": float(res.settings["tau"]), "status": res.status,
                     "wall_s": res.wall_time_s})
    return rows


def fmt(values: list[float]) -> str:
    """``median [min, max]`` in 2 significant digits."""
    v = np.sort(np.asarray(values, float))
    med = float(np.median(v))
    return f"{med:.2g} [{v[0]:.2g}, {v[-1]:.2g}]" if len(v) > 1 else f"{med:.2g}"


def table(runs: list[dict], learners: list[str], metric: str = "gap") -> str:
    """Markdown: one row per plant, noise and budget; ``metric`` (``"gap"`` or ``"gain_error"``) of each learner."""
    lines = ["| plant | noise | rollouts | " + " | ".join(learners) + " |", "|" + "---|" * (3 + len(learners))]
    keys = sorted({(r["plant"], r["noise"], r["N"]) for r in runs})
    for plant, noise, N in keys:
        cells = []
        for lr in learners:
            sel = [r[metric] for r in runs if (r["plant"], r["noise"], r["N"], r["learner"]) == (plant, noise, N, lr)]
            cells.append(fmt(sel) if sel else "")
        lines.append(f"| {plant} | {noise} | {N} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(runs: list[dict], learners: list[str]) -> str:
    """The gap table and the gain-error table."""
    return "".join(f"\n{title}:\n\n{table(runs, learners, metric)}\n" for title, metric in
                   (("relative gap (f(K) - f*) / f*", "gap"), ("gain error |K - K*| / |K*|", "gain_error")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plants", default="he1,rea1")
    ap.add_argument("--noise", default="W0.01,W0.1,V0.01", help="levels W<s> (process), V<s> (measurement), "
                    "joined by + to combine")
    ap.add_argument("--budgets", default="10,30,100,300,1000,3000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--learners", default=",".join(LEARNERS), help="of " + ", ".join((*LEARNERS, "azopg-gym"))
                    + " (with --tables: also ars)")
    ap.add_argument("--dt", type=float, default=0.02, help="sampling interval of the peers' data (s)")
    ap.add_argument("--tau", type=float, default=2.0, help="seconds per episode of the peers' data")
    ap.add_argument("--sigma-u", type=float, default=1.0, help="exploration noise of the peers' data")
    ap.add_argument("--out", default=None, help="JSON file for every run")
    ap.add_argument("--tables", default=None, help="no runs: print the table of these JSON files (comma-separated, "
                    "from --out here and in ars_noisy.py), learners in the order of --learners, rows of --budgets")
    args = ap.parse_args()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    if args.tables:
        runs = [r for path in args.tables.split(",") for r in json.load(open(path))["runs"] if r["N"] in budgets]
        print(tables(runs, [lr for lr in args.learners.split(",") if any(r["learner"] == lr for r in runs)]))
        return
    learners = args.learners.split(",")
    runs: list[dict] = []
    for plant in args.plants.split(","):
        base = azopg.get_problem(plant)
        for label, sw, sv in noise_levels(args.noise):
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                rows = model_based_runs(base, sw, sv, seed, budgets, args) if set(learners) & set(LEARNERS[:4]) else []
                rows += azopg_runs(base, sw, sv, seed, budgets, args.dt) if "azopg" in learners else []
                rows += azopg_runs(base, sw, sv, seed, budgets, args.dt, gym=True) if "azopg-gym" in learners else []
                for r in rows:
                    r.update(plant=plant, noise=label, seed=seed)
                runs += [r for r in rows if r["learner"] in learners]
                print(f"# {plant} {label} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
                if args.out:
                    with open(args.out, "w") as f:
                        json.dump({"args": vars(args), "runs": runs}, f, indent=1, default=str)
    print(tables(runs, learners))
    for lr in ("azopg", "azopg-gym"):
        az = [r for r in runs if r["learner"] == lr]
        if az:
            print(f"\n{lr}: rollouts spent for each budget (max), final tau (s):")
            for N in budgets:
                sel = [r for r in az if r["N"] == N]
                print(f"  N = {N}: spent {max(r['rollouts'] for r in sel)}, tau {sorted({r['tau'] for r in sel})}")


if __name__ == "__main__":
    main()
