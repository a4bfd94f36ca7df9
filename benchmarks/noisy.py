"""Learning on the exact noisy plant: default settings, a time budget, the final gap by the exact oracle.

For each problem and noise level (``--process`` levels ``s``: ``W = s^2 Omega``; ``--measurement``
levels: ``V = s^2 Omega`` held ``--dt`` s, with process noise ``--with-process``) one serial run with
default settings (``method="auto"``) and ``max_time``; prints the rule ``auto`` picked, the rollouts, the
wall time (the budget is held if it is at most ``max_time`` + 1 s), the final gap of the noise-free oracle
``(f(K) - f(K*)) / f(K*)`` (``f = tr(P Omega)``, what ``K*`` minimizes -- also the average cost's
optimum under process noise), the horizon ``tau`` calibrated, the exact expected cost of the
returned gain over ``K0``'s at that horizon, ``E f_tau(K) / E f_tau(K0)`` (never above 1), and the
run's own 95 % confidence interval for the relative gap of the expected cost at ``tau`` to the optimum's
(``result.cost_interval``: ``K_tau``'s under measurement noise, :mod:`azopg.run.judge`, else ``K*``'s)
next to its exact value (``over`` = wall time - max_time).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/noisy.py --problems he1,rea1,chain3,tg1 --process 0.1 \\
        --measurement 0.05 --measurement-problems he1 --max-time 60

``--plant gym``: the same problems as a user's gymnasium plant instead, ``GymPlant(LinearEnv)`` (exact
zero-order hold at ``--gym-dt`` = 0.02 s, ``noise_std = s`` -- process noise of intensity ``s^2 I``,
``W = s^2 Omega`` for the built-in problems, whose ``Omega = I`` -- and ``obs_noise_std = s``, a new
sensor sample every step: ``V = s^2 Omega`` held ``--gym-dt``), trained as a black box with ``K0`` and
``R`` given (``--vector``: how a task's rollouts are stepped, default the environment's batched form).
No exact oracle reaches the run there: ``gap`` is the exact continuous-time gap of the returned gain,
whose floor is the sampled-data loop's (about 1e-4 ... 1e-3 at dt = 0.02); the ratio and the interval
columns are left empty.

``--out FILE`` appends each run's record (its gain included); ``--judge FILE[,FILE]`` prints those records with
the yardstick of what each run minimizes, the optimum ``K_tau`` of the expected cost at its own horizon (exact
plant: :func:`azopg.model.noise.noise_optimal_gain` with ``tau``; gymnasium: ``LinearEnv.expected_cost``, the
sampled-data loop under both noises), and the gap ``gap_tau`` of the run's gain to it (see :func:`judge`).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import functools
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

import azopg
from azopg.model.noise import expected_cost

_OUT: list[str] = []  # --out: the file each run's record (gain included) is appended to


def record(**row: Any) -> None:
    """Append one run's record (a line of JSON) to ``--out``, if given."""
    if _OUT:
        with open(_OUT[0], "a") as f:
            f.write(json.dumps(row) + "\n")


def run(problem: azopg.LQRProblem, noise: str, seed: int, max_time: float, method: str = "auto") -> None:
    res = azopg.train(problem, seed=seed, max_time=max_time, method=method)
    tau, gap = float(res.settings["tau"]), problem.relative_gap(res.K)  # the noise-free gap, to K*
    ratio = expected_cost(problem, res.K, tau) / expected_cost(problem, problem.K0, tau)
    ci = res.cost_interval
    interval, exact = "-", math.nan
    if ci is not None and "gap_low" in ci:
        interval = f"[{ci['gap_low']:.1e}, {ci['gap_high']:.1e}]"
        ref = ci["optimal_expected_cost"]
        exact = (expected_cost(problem, res.K, ci["tau"]) - ref) / ref
    print(f"{problem.name:>8} {noise:>14} {res.settings['method']:>10} {res.rollouts:>9} {res.wall_time_s:>8.1f} "
          f"{res.wall_time_s - max_time:>+6.1f} {res.status:>13} {gap:>10.2e} {tau:>7.3g} "
          f"{ratio:>10.4f} {interval:>22} {exact:>10.1e}", flush=True)
    record(plant="linear", problem=problem.name, noise=noise, rule=res.settings["method"], rollouts=res.rollouts,
           seconds=res.wall_time_s, status=res.status, gap=gap, tau=tau, K=np.asarray(res.K).tolist(),
           W=None if problem.process_noise is None else np.asarray(problem.process_noise).tolist(),
           V=None if problem.measurement_noise is None else np.asarray(problem.measurement_noise).tolist(),
           dt=problem.measurement_dt)


def run_gym(problem: azopg.LQRProblem, process: float, measurement: float, seed: int, max_time: float, dt: float,
            vector: str) -> None:
    from azopg.plants.envs import LinearEnv

    if not np.allclose(problem.x0_cov, np.eye(problem.n)):  # LinearEnv's noise is isotropic
        print(f"{problem.name:>8}: skipped, x0_cov is not the identity", flush=True)
        return
    env = functools.partial(LinearEnv.from_problem, problem, dt=dt, noise_std=process, obs_noise_std=measurement)
    plant = azopg.GymPlant(env, problem.n, problem.m, R=problem.R, vector=vector,
                           vector_factory=functools.partial(_vector_env, env) if vector == "native" else None)
    res = azopg.train(plant, K0=problem.K0, seed=seed, max_time=max_time)
    noise = " ".join(([f"V {measurement:g}"] if measurement else []) + ([f"W {process:g}"] if process else [])) or "-"
    print(f"{problem.name:>8} {noise:>14} {res.settings['method']:>10} {res.rollouts:>9} {res.wall_time_s:>8.1f} "
          f"{res.wall_time_s - max_time:>+6.1f} {res.status:>13} {problem.relative_gap(res.K):>10.2e} "
          f"{float(res.settings['tau']):>7.3g}", flush=True)
    record(plant="gym", problem=problem.name, noise=noise, rule=res.settings["method"], rollouts=res.rollouts,
           seconds=res.wall_time_s, status=res.status, gap=problem.relative_gap(res.K),
           tau=float(res.settings["tau"]), K=np.asarray(res.K).tolist(), process=process, measurement=measurement,
           dt=dt)


def judge(paths: str, max_params: int) -> None:
    """The table of ``--out`` records with the yardstick of what the run minimizes: the static gain of least
    expected cost at the run's own horizon, ``K_tau`` -- on the exact plant
    (:func:`azopg.model.noise.noise_optimal_gain` with ``tau``; under process noise alone it is ``K*`` up to
    the horizon's truncation, under measurement noise it is not ``K*``), on ``GymPlant(LinearEnv)`` the
    sampled-data loop's under both noises (``LinearEnv.expected_cost``). ``gap_tau`` is the returned gain's
    expected cost at ``tau`` relative to ``K_tau``'s; ``K_tau gap`` the noise-free continuous-time gap of
    ``K_tau`` itself (how far the objective's optimum is from ``K*``: the floor of the ``gap`` column).
    Problems with more than ``max_params`` gain entries are not judged (the Hessian's cost)."""
    from azopg.model.noise import minimize_gain, noise_optimal_gain
    from azopg.plants.envs import LinearEnv

    print(f"{'problem':>8} {'noise':>14} {'rollouts':>9} {'seconds':>8} {'status':>13} {'gap':>10} {'tau':>7} "
          f"{'K_tau gap':>10} {'gap_tau':>10}", flush=True)
    for path in paths.split(","):
        for line in open(path):
            r = json.loads(line)
            p = azopg.get_problem(r["problem"])
            K, tau = np.array(r["K"]), r["tau"]
            kt, gt = math.nan, math.nan
            if p.m * p.n <= max_params:
                try:
                    if r["plant"] == "linear":
                        q = p.with_noise(W=r["W"], V=r["V"], dt=r["dt"])
                        Kt = noise_optimal_gain(q, tau=tau)
                        cost = functools.partial(expected_cost, q, tau=tau)
                    else:
                        env = LinearEnv.from_problem(p, dt=r["dt"], noise_std=r["process"],
                                                     obs_noise_std=r["measurement"])
                        steps = max(1, round(tau / r["dt"]))
                        cost = functools.partial(env.expected_cost, steps=steps)
                        Kt = minimize_gain(cost, _sampled_data_gain(env), functools.partial(_schur, env))
                    kt, gt = p.relative_gap(Kt), (cost(K) - cost(Kt)) / cost(Kt)
                except azopg.AzopgError as e:  # not converged: say so
                    print(f"{r['problem']:>8}: {e}", flush=True)
            print(f"{r['problem']:>8} {r['noise']:>14} {r['rollouts']:>9} {r['seconds']:>8.1f} {r['status']:>13} "
                  f"{r['gap']:>10.2e} {tau:>7.3g} {kt:>10.2e} {gt:>10.2e}", flush=True)


def _sampled_data_gain(env: Any) -> np.ndarray:
    """The best sampled-data gain without noise (the DARE of the exact zero-order-hold cost, cross term
    included): a start that stabilizes the sampled loop (``K*`` need not, tg1 at dt = 0.02)."""
    import scipy.linalg as sla

    n, Wc = env.n, env.W
    P = sla.solve_discrete_are(env.Ad, env.Bd, Wc[:n, :n], Wc[n:, n:], s=Wc[:n, n:])
    return np.linalg.solve(Wc[n:, n:] + env.Bd.T @ P @ env.Bd, env.Bd.T @ P @ env.Ad + Wc[n:, :n])


def _schur(env: Any, K: np.ndarray) -> bool:
    return bool(np.max(np.abs(np.linalg.eigvals(env.Ad - env.Bd @ K))) < 1.0)


def _vector_env(env: Callable[[], Any], num_envs: int) -> Any:
    from azopg.plants.envs_vector import LinearVectorEnv

    return LinearVectorEnv(num_envs, env=env())


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
    ap.add_argument("--plant", choices=("linear", "gym"), default="linear",
                    help="the exact noisy plant, or GymPlant(LinearEnv) (module docstring)")
    ap.add_argument("--gym-dt", type=float, default=0.02, help="--plant gym: seconds per environment step")
    ap.add_argument("--vector", default="native", help="--plant gym: GymPlant's vector mode")
    ap.add_argument("--method", default="auto", help="the update rule (default: auto, the rule auto picks)")
    ap.add_argument("--out", default=None, help="append each run's record (a line of JSON, the gain included)")
    ap.add_argument("--judge", default=None, help="print the table of these --out files (comma-separated) with "
                    "the measurement-noise yardstick (judge's docstring); no runs")
    ap.add_argument("--judge-max-params", type=int, default=40, help="--judge: largest m*n judged")
    args = ap.parse_args()
    if args.judge:
        judge(args.judge, args.judge_max_params)
        return
    if args.out:
        _OUT.append(args.out)
    print(f"serial runs, default settings, max_time {args.max_time:g} s, seed {args.seed}, plant {args.plant}")
    if args.plant == "gym":
        main_gym(args)
        return
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


def main_gym(args: argparse.Namespace) -> None:
    print(f"{'problem':>8} {'noise':>14} {'rule':>10} {'rollouts':>9} {'seconds':>8} {'over':>6} {'status':>13} "
          f"{'gap':>10} {'tau':>7}", flush=True)
    for name in args.problems.split(","):
        for s in (float(v) for v in args.process.split(",") if v):
            run_gym(azopg.get_problem(name), s, 0.0, args.seed, args.max_time, args.gym_dt, args.vector)
    for name in (args.measurement_problems or args.problems).split(","):
        for s in (float(v) for v in args.measurement.split(",") if v):
            run_gym(azopg.get_problem(name), args.with_process, s, args.seed, args.max_time, args.gym_dt, args.vector)


if __name__ == "__main__":
    main()
