"""Peer comparison: sb3-contrib's ARS and azopg through one gymnasium environment of the Dean et al. system.

The environment is ``azopg/Dean3-v0`` (:func:`azopg.plants.discrete_env.dean3_env`: the
built-in problem ``dean3`` of Dean, Mania, Matni, Recht & Tu 2017, the LQR instance of the ARS
paper of Mania, Guy & Recht 2018; ``x_{t+1} = A x_t + u_t``, reward ``-(x'Qx + u'Ru)``,
``Q = 1e-3 I``, ``R = I``, noise-free, its own resets ``x_0 ~ N(0, I)``, no ``x0`` reset
option, 300-step episodes). Both learners start from dean3's ``K0`` and see only the
environment:

* ARS (sb3-contrib, ``LinearPolicy`` ``u = W x`` without bias or squashing, ``W`` set to
  ``-K0``; 8 directions, with its default step 0.02 and exploration 0.05, and with both
  scaled by 0.1, to the size of ``K0``, whose norm is 0.05);
* azopg's policy-iteration rule, given ``R``, the same as
  ``azopg train --env azopg/Dean3-v0 --K0 "$K0" --R "[[1,0,0],[0,1,0],[0,0,1]]" --judge dean3``.

Each run gets ``--steps`` environment steps (azopg: that over 300 rollouts, and it stops at the
gap 1e-9); the gap is the
exact relative gap by dean3's oracle (``control.dlqr`` is checked to give the same ``K*``),
recorded with the environment steps and the CPU and wall seconds spent. sb3-contrib pulls
torch, so the script installs it into its own environment (``--venv``, created on first use)
and runs itself there::

    OMP_NUM_THREADS=1 nice python benchmarks/peers/ars_dean.py [--seeds 3] [--steps 120000] \\
        [--venv /tmp/azopg-peers-venv]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGES = ["sb3-contrib", "gymnasium", "numpy", "scipy", "control", "click", "rich", "matplotlib"]
LEVELS = (1e-1, 1e-2, 1e-3)


def ensure_venv(venv: Path, script: str = __file__) -> None:
    """Re-run ``script`` (default: this one) inside ``venv`` (created, with :data:`PACKAGES`, if missing)."""
    try:
        import sb3_contrib  # noqa: F401

        return
    except ImportError:
        pass
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with {' '.join(PACKAGES)} (torch comes with sb3-contrib) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    os.execve(str(python), [str(python), script, *sys.argv[1:]], env)


class Clock:
    """CPU and wall seconds since the start, environment steps, and the gap trace."""

    def __init__(self) -> None:
        self.cpu0, self.wall0, self.steps = time.process_time(), time.perf_counter(), 0
        self.trace: list[tuple[int, float, float, float]] = []  # (steps, cpu, wall, gap)

    def cpu(self) -> float:
        return time.process_time() - self.cpu0

    def record(self, gap: float) -> None:
        self.trace.append((self.steps, self.cpu(), time.perf_counter() - self.wall0, gap))

    def first(self, level: float) -> tuple[int, float, float, float] | None:
        return next((row for row in self.trace if row[3] <= level), None)


def run_ars(seed: int, steps: int, problem, K0, scale: float = 1.0) -> Clock:
    import gymnasium as gym
    import numpy as np
    import torch
    from sb3_contrib import ARS
    from stable_baselines3.common.callbacks import BaseCallback

    class TimeUp(Exception):
        """ARS ignores a callback's request to stop."""

    class Probe(BaseCallback):
        def __init__(self, clock: Clock) -> None:
            super().__init__()
            self.clock = clock

        def gain(self) -> np.ndarray:  # the current policy (not the candidate being evaluated)
            return -self.model.weights.cpu().numpy().astype(float).reshape(K0.shape)

        def _on_step(self) -> bool:
            self.clock.steps = self.num_timesteps
            if self.num_timesteps % 3000 == 0:  # the oracle now and then: it must not slow ARS down
                K = self.gain()
                self.clock.record(problem.relative_gap(K) if problem.is_stabilizing(K) else math.inf)
                if self.num_timesteps >= steps:
                    raise TimeUp
            return True

    torch.set_num_threads(1)
    env = gym.make("azopg/Dean3-v0", action_bound=1e3)  # ARS needs a finite action box (never reached)
    model = ARS("LinearPolicy", env, seed=seed, verbose=0, learning_rate=0.02 * scale, delta_std=0.05 * scale,
                policy_kwargs={"with_bias": False, "squash_output": False})
    layer = model.policy.action_net[0]
    layer.weight.data = torch.as_tensor(-K0, dtype=layer.weight.dtype)
    model.weights = torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach()  # ARS searches from here
    clock = Clock()
    try:
        model.learn(total_timesteps=10**12, callback=Probe(clock))
    except TimeUp:
        pass
    return clock


def run_azopg(seed: int, steps: int, problem, K0, method: str) -> Clock:
    import gymnasium as gym
    import numpy as np

    import azopg
    from azopg.plants.gym import GymPlant

    clock = Clock()

    class Counted(gym.Wrapper):
        def step(self, action):
            clock.steps += 1
            return self.env.step(action)

    plant = GymPlant(lambda: Counted(gym.make("azopg/Dean3-v0")), 3, 3, R=np.eye(3), vector="loop")
    result = azopg.train(plant, K0=K0, judge=problem, seed=seed, method=method, max_rollouts=steps // 300,
                         target_gap=1e-9,
                         progress=lambda log: clock.record(log.last_gap))
    clock.record(result.relative_gap)
    return clock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=120_000, help="environment steps per run at most")
    ap.add_argument("--venv", type=Path, default=Path("/tmp/azopg-peers-venv"))
    args = ap.parse_args()
    ensure_venv(args.venv)

    import control
    import numpy as np

    import azopg
    from azopg.plants.envs import register_envs

    register_envs()
    problem = azopg.get_problem("dean3")
    Kd = np.asarray(control.dlqr(problem.A, problem.B, problem.Q, problem.R)[0])
    print(f"control.dlqr against azopg's oracle on dean3: ||K_dlqr - K*|| / ||K*|| = "
          f"{np.linalg.norm(Kd - problem.optimal_gain) / np.linalg.norm(problem.optimal_gain):.1e}; "
          f"relative gap of K_dlqr {problem.relative_gap(Kd):.1e}")
    runs = []
    for seed in range(args.seeds):
        for scale in (1.0, 0.1):
            runs.append((f"ARS (sb3-contrib), step {0.02 * scale:g}, exploration {0.05 * scale:g}", seed,
                         run_ars(seed, args.steps, problem, problem.K0, scale)))
        runs.append(("azopg policy-iteration", seed, run_azopg(seed, args.steps, problem, problem.K0,
                                                                "policy-iteration")))
    print()
    print(f"azopg/Dean3-v0, from dean3's K0 (gap {problem.relative_gap(problem.K0):.2f}); to each gap: "
          f"environment steps / CPU s / wall s (shared machine: wall time is pessimistic)")
    head = " | ".join(f"to gap {level:g}" for level in LEVELS)
    print(f"| learner | seed | {head} | steps in budget | best gap |")
    print("|" + "---|" * (4 + len(LEVELS)))
    for name, seed, clock in runs:
        cells = []
        for level in LEVELS:
            row = clock.first(level)
            cells.append("not reached" if row is None else f"{row[0]} / {row[1]:.1f} / {row[2]:.1f}")
        best = min((row[3] for row in clock.trace), default=math.inf)
        print(f"| {name} | {seed} | {' | '.join(cells)} | {clock.steps} | {best:.1e} |", flush=True)


if __name__ == "__main__":
    main()
