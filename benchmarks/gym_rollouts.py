"""Rollouts per second of :class:`azopg.GymPlant` on the example environments, by stepping mode.

``loop`` steps one rollout at a time on one environment; ``sync`` steps a task's rollouts in
lockstep over copies of the environment (64 at a time); ``native`` in lockstep through the
environment's batched form (:mod:`azopg.plants.envs_vector`, all copies stepped by array
operations, 1024 at a time): each mode with GymPlant's defaults. The costs are identical
(tests/test_gym_cli.py::test_lockstep_costs_identical_to_the_loop). 200 steps per rollout.
Two tables: rollouts per wall-clock second, and rollouts per CPU second of the process (less
sensitive to other jobs on the machine).

    python benchmarks/gym_rollouts.py [--seconds 0.5] [--modes loop,sync,native]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import functools
import time

import numpy as np

import azopg
from azopg.plants.envs import LinearEnv
from azopg.plants.envs_vector import LinearVectorEnv, PendulumVectorEnv
from azopg.plants.pendulum_env import PendulumEnv


def rate(plant: azopg.GymPlant, K: np.ndarray, b: int, tau: float, seconds: float) -> tuple[float, float]:
    """Rollouts per wall-clock second, and CPU seconds per rollout."""
    X = plant.initial_states(np.random.default_rng(0), b)
    plant.rollout(K, X, tau)  # build the environments
    t0, c0, done = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - t0 < seconds:
        plant.rollout(K, X, tau)
        done += b
    return done / (time.perf_counter() - t0), (time.process_time() - c0) / done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="timing budget per cell")
    ap.add_argument("--modes", default="loop,sync,native", help="comma-separated stepping modes")
    args = ap.parse_args()
    he1 = azopg.get_problem("he1")
    cases = {"linear (he1, dt 0.05)": (functools.partial(LinearEnv.from_problem, he1, dt=0.05),
                                       functools.partial(LinearVectorEnv.from_problem, he1, dt=0.05),
                                       4, 2, he1.K0, 10.0),
             "pendulum (dt 0.02)": (PendulumEnv, PendulumVectorEnv, 2, 1, PendulumEnv().nominal_gain, 4.0)}
    batches = (1, 4, 16, 64, 256)
    rows = []
    print(f"{'rollouts/s (wall)':<24} {'mode':<6} " + " ".join(f"{'b=' + str(b):>8}" for b in batches))
    for name, (factory, vector_factory, n, m, K, tau) in cases.items():
        for mode in args.modes.split(","):
            plant = azopg.GymPlant(factory, n, m, vector=mode, vector_factory=vector_factory)
            cells = [rate(plant, K, b, tau, args.seconds) for b in batches]
            rows.append((name, mode, cells))
            print(f"{name:<24} {mode:<6} " + " ".join(f"{r:>8.0f}" for r, _ in cells), flush=True)
    print(f"\n{'rollouts per CPU second':<24} {'mode':<6} " + " ".join(f"{'b=' + str(b):>8}" for b in batches))
    for name, mode, cells in rows:
        print(f"{name:<24} {mode:<6} " + " ".join(f"{1 / c:>8.0f}" for _, c in cells))


if __name__ == "__main__":
    main()
