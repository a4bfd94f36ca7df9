"""Policy evaluation under process noise: plain least squares against the instrumented fit.

Rollouts of ``K0 + D`` (``D = r N(0, 1)`` per rollout) on the noisy exact plant
(:class:`azopg.plants.noisy.NoisyLinearPlant`, ``W = w I``), each cut into ``--intervals`` intervals
of a horizon ``--tau``; prints, per number of rollouts, the median over seeds of the relative error
``||P_hat - P||_F / ||P||_F`` in the value matrix of ``K0`` and of ``|tr(P_hat W) - tr(PW)| / tr(PW)``,
for :func:`~azopg.method.instrumented.least_squares_fit` (LS) and
:func:`~azopg.method.instrumented.instrumented_fit`, just identified (IV) and over-identified (2SLS).
A biased fit's error levels off as rollouts grow;
a consistent one keeps falling like ``1/sqrt(rollouts)``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/noise_fit.py [--problem he1] [--w 0.01,0.1]
                                                              [--rollouts 50,100,200,400,800] [--seeds 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics

import numpy as np

import azopg
from azopg.method.instrumented import instrumented_fit, least_squares_fit
from azopg.plants.noisy import NoisyLinearPlant


def interval_data(plant: NoisyLinearPlant, K: np.ndarray, rollouts: int, count: int, tau: float, r: float,
                  seed: int) -> list[np.ndarray]:
    """``(D, x_j, x_{j+1}, S_j, c_j)`` of ``rollouts`` rollouts cut into ``count`` intervals."""
    rng = np.random.default_rng([seed, 0])
    plant.bind_rng(np.random.default_rng([seed, 1]))
    D = r * rng.standard_normal((rollouts, *K.shape))
    x = plant.initial_states(rng, rollouts)
    out = []
    for _ in range(count):
        res = plant.rollout(K + D, x, tau / count, moments=True)
        out.append((D, x, res.x_end, res.S, res.cost))
        x = res.x_end
    return [np.concatenate([o[i] for o in out]) for i in range(5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="he1")
    ap.add_argument("--w", default="0.01,0.1", help="process-noise intensities W = w I")
    ap.add_argument("--rollouts", default="50,100,200,400,800")
    ap.add_argument("--intervals", type=int, default=20)
    ap.add_argument("--tau", type=float, default=10.0)
    ap.add_argument("--r", type=float, default=0.1, help="size of the gain perturbations D")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    problem = azopg.get_problem(args.problem)
    K = np.array(problem.K0)
    P = problem.value_matrix(K)
    print(f"{problem.name} at K0: {args.intervals} intervals of {args.tau / args.intervals:g} s per rollout, "
          f"D = {args.r:g} N(0, 1), median of {args.seeds} seeds")
    print(f"{'w':>6} {'rollouts':>8} {'LS err P':>9} {'IV err P':>9} {'2SLS err P':>11} {'LS err trPW':>12} "
          f"{'IV err trPW':>12} {'2SLS err trPW':>14}")
    for w in (float(s) for s in args.w.split(",")):
        W = w * np.eye(problem.n)
        plant = NoisyLinearPlant(problem.with_noise(W=W))
        trPW = float(np.trace(P @ W))
        for b in (int(s) for s in args.rollouts.split(",")):
            errs: dict[str, list[tuple[float, float]]] = {"ls": [], "iv": [], "2sls": []}
            for seed in range(args.seeds):
                data = interval_data(plant, K, b, args.intervals, args.tau, args.r, seed)
                dt = args.tau / args.intervals
                for key, ev in (("ls", least_squares_fit(*data, dt, problem.R)),
                                ("iv", instrumented_fit(*data, dt, problem.R)),
                                ("2sls", instrumented_fit(*data, dt, problem.R, overidentify=True))):
                    errs[key].append((float(np.linalg.norm(ev.P - P) / np.linalg.norm(P)),
                                      abs(ev.trPW - trPW) / trPW))
            med = {k: [statistics.median(e[i] for e in v) for i in range(2)] for k, v in errs.items()}
            print(f"{w:6g} {b:8d} {med['ls'][0]:9.3f} {med['iv'][0]:9.3f} {med['2sls'][0]:11.3f} {med['ls'][1]:12.3f} "
                  f"{med['iv'][1]:12.3f} {med['2sls'][1]:14.3f}", flush=True)


if __name__ == "__main__":
    main()
