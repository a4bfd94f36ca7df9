"""Why a slow, lightly damped problem (eb5) needs thousands of rollouts from ``K0``: the exact oracle's view.

For each problem, from the model (no rollouts learned from):

1. Kleinman's exact sequence from ``K0``: steps to the target gap, and ``||K_i||`` (the first step's
   overshoot, then halving).
2. The first step scaled, ``K0 + alpha (K1 - K0)``: its gap, and exact Kleinman steps from the best
   ``alpha`` of the grid (what a step search on the first step alone would save).
3. How large an error the first step tolerates: share of 16 gains ``K1 + eps ||K1 - K0|| Z / ||Z||``
   (``Z`` Gaussian) that are not stabilizing.
4. The exact plant's precision at the calibrated horizon: the relative error of a rollout's cost at ``K0``
   against ``x0' P x0 - x_end' P x_end`` (``P`` from Lyapunov's equation), and of an antithetic pair's
   difference at radius ``r`` against the exact one.

    python benchmarks/slow_start.py [--problems eb5,carex2.9] [--tau 2e8] [--r 1.2e-9] [--seed 0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse

import numpy as np
import scipy.linalg as sla

import azopg
from azopg.plants.linear import LinearPlant


def value(p: azopg.LQRProblem, K: np.ndarray) -> np.ndarray:
    """``P_K`` by Lyapunov's equation."""
    Acl = p.A - p.B @ K
    return np.asarray(sla.solve_continuous_lyapunov(Acl.T, -(p.Q + K.T @ p.R @ K)))


def kleinman(p: azopg.LQRProblem, K: np.ndarray) -> np.ndarray:
    """The exact Kleinman step's gain ``R^-1 B' P_K``."""
    return np.asarray(np.linalg.solve(p.R, p.B.T @ value(p, K)))


def steps_to(p: azopg.LQRProblem, K: np.ndarray, gap: float, limit: int = 60) -> tuple[int, list[float]]:
    """Exact Kleinman steps from ``K`` until the relative gap is at most ``gap``, and the gains' norms."""
    norms = [float(np.linalg.norm(K))]
    for i in range(limit):
        if p.relative_gap(K) <= gap:
            return i, norms
        K = kleinman(p, K)
        norms.append(float(np.linalg.norm(K)))
    return limit, norms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="eb5")
    ap.add_argument("--target-gap", type=float, default=1e-6)
    ap.add_argument("--tau", type=float, default=2e8, help="horizon of the precision check (eb5's calibrated)")
    ap.add_argument("--r", type=float, default=1.2e-9, help="pair radius of the precision check (eb5's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for name in args.problems.split(","):
        p = azopg.get_problem(name)
        rng = np.random.default_rng([args.seed, 0, 0])
        K0 = np.asarray(p.K0, dtype=float)
        print(f"== {name}: n {p.n}, m {p.m}, open-loop abscissa {p.spectral_abscissa(K0):.3g}, "
              f"gap of K0 {p.relative_gap(K0):.3g}")
        count, norms = steps_to(p, K0, args.target_gap)
        print(f"exact Kleinman from K0: {count} steps to gap {args.target_gap:g}; ||K_i||: "
              + " ".join(f"{v:.3g}" for v in norms))
        K1 = kleinman(p, K0)
        best, best_gap = 1.0, np.inf
        for alpha in 10.0 ** -np.arange(0, 8, 0.5):
            K = K0 + alpha * (K1 - K0)
            g = p.relative_gap(K) if p.is_stabilizing(K) else np.inf
            if g < best_gap:
                best, best_gap = float(alpha), g
        count, _ = steps_to(p, K0 + best * (K1 - K0), args.target_gap)
        print(f"first step scaled: best alpha {best:.3g} (gap {best_gap:.3g}), then {count} exact steps")
        line = []
        for eps in (1e-8, 1e-6, 1e-4, 1e-2):
            Z = rng.standard_normal((16, p.m, p.n))
            Z *= eps * np.linalg.norm(K1 - K0) / np.linalg.norm(Z, axis=(1, 2))[:, None, None]
            line.append(f"{eps:g}: {sum(not p.is_stabilizing(K1 + z) for z in Z)}/16")
        print("K1 + error, not stabilizing: " + ", ".join(line))
        plant = LinearPlant(p)
        x0 = plant.initial_states(rng, 4)
        P0 = value(p, K0)
        res = plant.rollout(K0, x0, args.tau, moments=True)
        exact = np.einsum("bi,ij,bj->b", x0, P0, x0) - np.einsum("bi,ij,bj->b", res.x_end, P0, res.x_end)
        print(f"plant at tau {args.tau:g}: cost relative error {np.abs(res.cost / exact - 1).max():.2g}")
        Z = rng.standard_normal((p.m, p.n))
        Z *= args.r * np.sqrt(p.m * p.n) / np.linalg.norm(Z)
        a, b = plant.rollout(K0 + Z, x0, args.tau), plant.rollout(K0 - Z, x0, args.tau)
        Pa, Pb = value(p, K0 + Z), value(p, K0 - Z)
        diff = np.einsum("bi,ij,bj->b", x0, Pa - Pb, x0)
        print(f"pair at r {args.r:g}: difference {np.abs(diff / exact).max():.2g} of the cost, "
              f"its relative error {np.abs((a.cost - b.cost) / diff - 1).max():.2g}")


if __name__ == "__main__":
    main()
