"""Learn through gymnasium: a built-in problem as a ``LinearEnv``, wrapped by ``GymPlant``.

    python examples/gym_linear.py [--quick] [--problem rea1] [--dt 0.02] [--max-updates 300]
                                  [--plot responses.png]

The learner sees only episodes of the environment (observation = state, action = input,
reward = minus the exact stage cost of each zero-order-hold step). The learned gain is
then judged with the problem's exact oracle against the Riccati (CARE) optimum: its
continuous-time cost differs from the optimum by the learning error plus the price of
holding the input over each step of ``dt`` seconds (``O(dt^2)``: printed is the gap of
the best gain under that hold, from the discrete Riccati equation). Exit status 1 if the gap exceeds 1e-2.

``--quick`` learns the 2-state ``random-unstable-n2-m1-s0`` with ``dt = 0.1`` (a few
seconds); the default is the unstable chemical reactor ``rea1`` (about half a minute).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys

import numpy as np
import scipy.linalg as sla

import azopg
from azopg.plants.envs import LinearEnv
from azopg.plants.gym import GymPlant


def sampled_data_optimum(problem: azopg.LQRProblem, dt: float) -> np.ndarray:
    """The best gain under a zero-order hold of ``dt`` (discrete Riccati equation of the
    exact discretization, with its cross term) -- what the learner can at best reach."""
    env = LinearEnv.from_problem(problem, dt=dt)
    n = problem.n
    Wxx, Wxu, Wuu = env.W[:n, :n], env.W[:n, n:], env.W[n:, n:]
    P = sla.solve_discrete_are(env.Ad, env.Bd, Wxx, Wuu, s=Wxu)
    return np.linalg.solve(Wuu + env.Bd.T @ P @ env.Bd, env.Bd.T @ P @ env.Ad + Wxu.T)


def run(problem_name: str, dt: float, max_updates: int, seed: int = 0, plot: str | None = None) -> dict[str, float]:
    """Learn ``problem_name`` through its ``LinearEnv``; return the exact gap of the result."""
    problem = azopg.get_problem(problem_name)
    # the initial states are the env's (N(0, x0_cov)); the checks use the n states
    # sqrt(n) * chol(x0_cov)' whose mean cost is the expected cost of a linear plant
    eval_states = math.sqrt(problem.n) * np.linalg.cholesky(np.asarray(problem.x0_cov)).T
    plant = GymPlant(functools.partial(LinearEnv.from_problem, problem, dt=dt), problem.n, problem.m,
                     eval_states=eval_states)
    result = azopg.train(plant, K0=problem.K0, max_updates=max_updates, seed=seed, tail_tol=1e-5)
    gap = problem.relative_gap(result.K)
    floor = problem.relative_gap(sampled_data_optimum(problem, dt))
    print(f"{problem.name} ({problem.title}) as LinearEnv(dt={dt:g}), n = {problem.n}, m = {problem.m}")
    print(f"  {result.updates} updates, {result.rollouts} rollouts ({plant.steps} env steps), "
          f"{result.wall_time_s:.1f} s, horizon tau = {result.settings['tau']:g} s")
    print(f"  exact cost: K0 {problem.cost(problem.K0):.6g}, learned {problem.cost(result.K):.6g}, "
          f"CARE optimum {problem.optimal_cost:.6g}")
    print(f"  relative gap {gap:.2e} (K0: {problem.relative_gap(problem.K0):.2e}; the best gain under a "
          f"hold of dt = {dt:g}: {floor:.1e})")
    K_star = np.asarray(problem.optimal_gain)
    print(f"  ||K - K*|| / ||K*|| = {np.linalg.norm(result.K - K_star) / np.linalg.norm(K_star):.2e}")
    if plot:
        from azopg.run.plots import plot_responses

        print(f"  wrote {plot_responses(problem, result.K, plot)}")
    return {"gap": gap, "floor": floor}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2-state problem, a few seconds (CI)")
    ap.add_argument("--problem", default=None,
                    help="built-in problem (default rea1; --quick: random-unstable-n2-m1-s0)")
    ap.add_argument("--dt", type=float, default=None, help="seconds per env step (default 0.02; --quick: 0.1)")
    ap.add_argument("--max-updates", type=int, default=None, help="default 300")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=None, metavar="PNG", help="write the closed-loop responses figure")
    args = ap.parse_args()
    name = args.problem or ("random-unstable-n2-m1-s0" if args.quick else "rea1")
    dt = args.dt or (0.1 if args.quick else 0.02)
    updates = args.max_updates or 300
    out = run(name, dt, updates, args.seed, args.plot)
    ok = out["gap"] <= 1e-2
    print("OK: within 1e-2 of the CARE optimum" if ok else "FAILED: not within 1e-2 of the CARE optimum")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
