"""Rollouts per second of :class:`azopg.GymPlant` on the example environments, by stepping mode.

``loop`` steps one rollout at a time on one environment; ``sync`` steps a task's rollouts in
lockstep over copies of the environment (``max_envs`` at a time). The costs are identical
(tests/test_gym_cli.py::test_lockstep_costs_identical_to_the_loop). 200 steps per rollout.

    python benchmarks/gym_rollouts.py [--seconds 0.5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import functools
import time

import numpy as np

import azopg
from azopg.plants.envs import LinearEnv, PendulumEnv


def rate(plant: azopg.GymPlant, K: np.ndarray, b: int, tau: float, seconds: float) -> float:
    X = plant.initial_states(np.random.default_rng(0), b)
    plant.rollout(K, X, tau)  # build the environments
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        plant.rollout(K, X, tau)
        done += b
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="timing budget per cell")
    args = ap.parse_args()
    he1 = azopg.get_problem("he1")
    cases = {"linear (he1, dt 0.05)": (functools.partial(LinearEnv.from_problem, he1, dt=0.05), 4, 2, he1.K0, 10.0),
             "pendulum (dt 0.02)": (PendulumEnv, 2, 1, PendulumEnv().nominal_gain, 4.0)}
    batches = (1, 4, 16, 64, 256)
    print(f"{'environment':<24} {'mode':<6} " + " ".join(f"{'b=' + str(b):>8}" for b in batches))
    for name, (factory, n, m, K, tau) in cases.items():
        for mode in ("loop", "sync"):
            plant = azopg.GymPlant(factory, n, m, vector=mode)
            print(f"{name:<24} {mode:<6} " + " ".join(f"{rate(plant, K, b, tau, args.seconds):>8.0f}"
                                                      for b in batches), flush=True)


if __name__ == "__main__":
    main()
