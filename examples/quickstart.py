"""Learn the VTOL helicopter's LQR gain from rollouts, then compare with the Riccati optimum.

    python examples/quickstart.py [--problem he1] [--max-time 60]
"""

from __future__ import annotations

import argparse

import numpy as np

import azopg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="he1")
    ap.add_argument("--max-time", type=float, default=60.0)
    ap.add_argument("--target-gap", type=float, default=1e-3)
    args = ap.parse_args()

    problem = azopg.get_problem(args.problem)
    print(f"{problem.name}: {problem.title}")
    print(f"  n = {problem.n}, m = {problem.m}, f(K0) = {problem.cost(problem.K0):.6g}")
    result = azopg.train(problem, seed=0, max_time=args.max_time, target_gap=args.target_gap)
    K_star = problem.optimal_gain
    print(f"  {result.status} after {result.updates} updates, {result.rollouts} rollouts, {result.wall_time_s:.2f} s")
    print(f"  learned cost {result.cost:.6g}, optimum {result.optimal_cost:.6g}, gap {result.relative_gap:.2e}")
    print(f"  ||K - K*|| / ||K*|| = {np.linalg.norm(result.K - K_star) / np.linalg.norm(K_star):.2e}")
    print(f"  closed-loop spectral abscissa: learned {problem.spectral_abscissa(result.K):.4f}, "
          f"optimal {problem.spectral_abscissa(K_star):.4f}")


if __name__ == "__main__":
    main()
