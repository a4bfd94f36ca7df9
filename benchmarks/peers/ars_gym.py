"""Peer comparison: sb3-contrib's ARS with a linear policy on the HE1 gymnasium environment.

The environment is ``azopg/HE1-v0`` (he1 under a zero-order hold at dt = 0.05, its own
reset distribution, no ``x0`` reset option, 200-step episodes). ARS learns a linear policy
``u = W x`` (no bias) for ``--seconds`` of wall time; the script prints the continuous-time
relative gap of ``K = -W`` by he1's exact oracle, next to the command that gives azopg's.

sb3-contrib pulls torch: install it in a separate environment, not the project's::

    python -m venv /tmp/ars-venv
    /tmp/ars-venv/bin/pip install sb3-contrib gymnasium numpy scipy
    PYTHONPATH=src /tmp/ars-venv/bin/python benchmarks/peers/ars_gym.py --seconds 300

azopg on the same environment (one command)::

    azopg train --env azopg/HE1-v0 --K0 "$(python -c 'import azopg; print(azopg.get_problem("he1").K0.tolist())')" \\
        --judge he1 --max-time 60 --target-gap 1e-9
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from sb3_contrib import ARS
from stable_baselines3.common.callbacks import BaseCallback

import azopg
from azopg.plants.envs import register_envs


class _TimeUp(Exception):
    """Raised by the callback: ARS ignores a callback's request to stop."""


class _Clock(BaseCallback):
    """Stops learning after ``seconds`` and records the gap of the current gain."""

    def __init__(self, seconds: float, problem: azopg.LQRProblem) -> None:
        super().__init__()
        self.seconds, self.problem, self.t0 = seconds, problem, time.perf_counter()
        self.trace: list[tuple[float, float]] = []

    def gain(self) -> np.ndarray:
        """The current policy's gain (``model.weights``; the network holds the candidate being evaluated)."""
        W = self.model.weights.cpu().numpy().astype(float)
        return -W.reshape(self.problem.m, self.problem.n)

    def _on_step(self) -> bool:
        t = time.perf_counter() - self.t0
        if t >= self.seconds:
            raise _TimeUp
        if self.num_timesteps % 20000 == 0:  # the oracle only now and then: it must not slow ARS down
            K = self.gain()
            self.trace.append((t, self.problem.relative_gap(K) if self.problem.is_stabilizing(K) else float("inf")))
        return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    register_envs()
    problem = azopg.get_problem("he1")
    env = gym.make("azopg/HE1-v0")
    env.action_space = gym.spaces.Box(-1e3, 1e3, env.action_space.shape, np.float64)  # ARS needs finite bounds
    model = ARS("LinearPolicy", env, seed=args.seed, verbose=0,
                policy_kwargs={"with_bias": False, "squash_output": False})
    with np.errstate(all="ignore"):
        import torch

        layer = model.policy.action_net[0]
        layer.weight.data = torch.as_tensor(-problem.K0, dtype=layer.weight.dtype)
        model.weights = torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach()  # ARS starts here
    clock = _Clock(args.seconds, problem)
    try:
        model.learn(total_timesteps=10**12, callback=clock)
    except _TimeUp:
        pass
    K = clock.gain()
    gap = problem.relative_gap(K) if problem.is_stabilizing(K) else float("inf")
    print(f"ARS (sb3-contrib, linear policy, from K0) on azopg/HE1-v0: {time.perf_counter() - clock.t0:.0f} s, "
          f"{model.num_timesteps} steps, continuous-time relative gap {gap:.3g}")
    for t, g in clock.trace[:: max(1, len(clock.trace) // 10)]:
        print(f"  t = {t:7.1f} s  gap {g:.3g}")


if __name__ == "__main__":
    main()
