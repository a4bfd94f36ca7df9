"""Balance a non-linear pendulum upright with a learned linear state feedback.

    python examples/gym_pendulum.py [--quick] [--max-updates 200] [--seed 0]

The plant is ``azopg.plants.pendulum_env.PendulumEnv`` (a damped pendulum, ``theta = 0`` upright, torque
input, RK4 integration, episodes end as blown up when ``|theta| > pi/2``), seen by the
learner only through ``GymPlant``. Learning starts from a crude stabilizing gain built from
the physical parameters (``env.nominal_gain``) with initial states drawn by the env
(``|theta|, |theta_dot| <= 0.2``). The learned gain is then checked on the non-linear
plant: from a grid of initial states up to 1 rad away from upright, every simulation
must return to upright (``|x| < 1e-3`` after 10 s). Exit status 1 if one does not.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

import azopg
from azopg.plants.gym import GymPlant
from azopg.plants.pendulum_env import PendulumEnv

#: Initial states of the final check: theta in {0, +-0.25, +-0.5, +-1} rad, theta_dot in {0, +-1} rad/s.
CHECK_STATES = np.array([s for s in itertools.product([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0], [-1.0, 0.0, 1.0])
                         if any(s)])


def learn(quick: bool = False, max_updates: int | None = None, seed: int = 0) -> tuple[np.ndarray, azopg.Result]:
    """Learn a gain on the non-linear pendulum; return it and the run's result."""
    env = PendulumEnv()
    plant = GymPlant(PendulumEnv, n=2, m=1)
    updates = max_updates or (100 if quick else 200)
    result = azopg.train(plant, K0=env.nominal_gain, max_updates=updates, seed=seed, tail_tol=1e-5)
    return result.K, result


def simulate(K: np.ndarray, x0s: np.ndarray, duration: float = 10.0) -> np.ndarray:
    """Final states of the non-linear pendulum under ``u = -K x`` from each of ``x0s``
    (``nan`` where it fell over)."""
    env = PendulumEnv()
    finals = np.empty_like(np.asarray(x0s, dtype=float))
    for i, x0 in enumerate(x0s):
        obs, _ = env.reset(options={"x0": x0})
        for _ in range(round(duration / env.dt)):
            obs, _, terminated, _, _ = env.step(-K @ obs)
            if terminated:
                obs = np.full(2, np.nan)
                break
        finals[i] = obs
    return finals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer updates (a few seconds), for CI")
    ap.add_argument("--max-updates", type=int, default=None, help="default 200 (--quick: 100)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    env = PendulumEnv()
    K, result = learn(args.quick, args.max_updates, args.seed)
    lin = env.linearization()
    print(f"PendulumEnv (m = {env.mass} kg, l = {env.length} m, b = {env.damping} N m s, dt = {env.dt} s)")
    print(f"  {result.updates} updates, {result.rollouts} rollouts, {result.wall_time_s:.1f} s, "
          f"horizon tau = {result.settings['tau']:g} s")
    print(f"  K0 (nominal)  = {np.array2string(env.nominal_gain, precision=4)}")
    print(f"  learned K     = {np.array2string(K, precision=4)}")
    print(f"  LQR of the linearization at upright (for reference) = "
          f"{np.array2string(np.asarray(lin.optimal_gain), precision=4)}")
    print(f"  cost of the linearization: K0 {lin.cost(env.nominal_gain):.4g}, learned {lin.cost(K):.4g}, "
          f"optimum {lin.optimal_cost:.4g}")
    finals = simulate(K, CHECK_STATES)
    norms = np.linalg.norm(finals, axis=1)
    ok = bool(np.all(norms < 1e-3))
    print(f"  non-linear simulation, 10 s from {len(CHECK_STATES)} initial states with |theta0| <= 1 rad, "
          f"|theta_dot0| <= 1 rad/s:")
    print(f"  largest final |x| = {np.nanmax(norms) if np.any(np.isfinite(norms)) else np.nan:.2e}, "
          f"fell over: {int(np.sum(~np.isfinite(norms)))}")
    k0 = np.linalg.norm(simulate(env.nominal_gain, CHECK_STATES), axis=1)
    print(f"  (for comparison, K0: largest final |x| = {np.nanmax(k0) if np.any(np.isfinite(k0)) else np.nan:.2e}, "
          f"fell over: {int(np.sum(~np.isfinite(k0)))})")
    print("OK: all converge to upright" if ok else "FAILED: not all converge to upright")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
