"""Peers on noisy plants: sb3-contrib's ARS on the gymnasium form, at the budgets of ``noisy_peers.py``.

ARS (Mania, Guy & Recht 2018; sb3-contrib, ``LinearPolicy`` ``u = W x`` without bias or
squashing, its default step 0.02, exploration 0.05 and 8 directions, so 16 episodes per update)
learns from ``K0`` on :class:`~azopg.plants.envs.LinearEnv` with the same noise and episodes as the
data of ``noisy_peers.py``: zero-order hold at ``--dt``, ``--tau`` seconds per episode, process
noise ``noise_std = s`` (increments ``N(0, s^2 dt I)``), measurement noise ``obs_noise_std``, its
own resets ``x0 ~ N(0, x0_cov)``. The gain after ``N`` episodes (rollouts) is the policy after
the last update whose episodes fit in ``N``; it is judged by the same exact noise-free
continuous-time oracle (gap and gain error), and the script prints the same table. sb3-contrib
pulls torch, so the script runs itself in its own environment (``--venv``, created on first use
as in ``ars_dean.py``)::

    OMP_NUM_THREADS=1 nice python3 benchmarks/peers/ars_noisy.py --plants he1,rea1 --noise W0.01,W0.1,V0.01 \\
        --budgets 10,30,100,300,1000,3000 --seeds 3 --venv /tmp/azopg-peers-venv --out /tmp/ars_noisy.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import time
from pathlib import Path

from ars_dean import ensure_venv


def run_ars(plant: str, sw: float, sv: float, seed: int, budgets: list[int], dt: float, tau: float) -> list[dict]:
    """One ARS run up to the largest budget; the judged gain at every budget."""
    import gymnasium as gym
    import numpy as np
    import torch
    from noisy_peers import judge
    from sb3_contrib import ARS
    from stable_baselines3.common.callbacks import BaseCallback

    import azopg
    from azopg.plants.envs import LinearEnv

    problem = azopg.get_problem(plant)
    if not np.allclose(problem.x0_cov, np.eye(problem.n)):
        raise SystemExit(f"{plant}: LinearEnv's process noise is s^2 I; this comparison needs x0_cov = I")
    n_delta = 8
    per_update = 2 * n_delta

    class Done(Exception):
        """ARS ignores a callback's request to stop."""

    class Snapshots(BaseCallback):
        """The policy at the start of each update, with the episodes spent before it."""

        def __init__(self) -> None:
            super().__init__()
            self.gains: list[tuple[int, np.ndarray]] = []

        def _on_rollout_start(self) -> None:
            episodes = per_update * self.model._n_updates
            self.gains.append((episodes, -self.model.weights.cpu().numpy().astype(float).reshape(problem.K0.shape)))
            if episodes + per_update > budgets[-1]:
                raise Done

        def _on_step(self) -> bool:
            return True

    torch.set_num_threads(1)
    env = LinearEnv.from_problem(problem, dt=dt, noise_std=sw, obs_noise_std=sv)
    env.action_space = gym.spaces.Box(-1e3, 1e3, env.action_space.shape, np.float64)  # ARS needs finite bounds
    env = gym.wrappers.TimeLimit(env, max_episode_steps=round(tau / dt))
    model = ARS("LinearPolicy", env, seed=seed, verbose=0, n_delta=n_delta,
                policy_kwargs={"with_bias": False, "squash_output": False})
    layer = model.policy.action_net[0]
    layer.weight.data = torch.as_tensor(-problem.K0, dtype=layer.weight.dtype)
    model.weights = torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach()  # ARS searches from here
    snaps = Snapshots()
    t0 = time.process_time()
    try:
        model.learn(total_timesteps=10**12, callback=snaps)
    except Done:
        pass
    cpu = time.process_time() - t0
    rows = []
    for N in budgets:
        episodes, K = [s for s in snaps.gains if s[0] <= N][-1]
        gap, err = judge(problem, K)
        rows.append({"learner": "ars", "N": N, "rollouts": episodes, "gap": gap, "gain_error": err, "cpu_s": cpu})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plants", default="he1,rea1")
    ap.add_argument("--noise", default="W0.01,W0.1,V0.01")
    ap.add_argument("--budgets", default="10,30,100,300,1000,3000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dt", type=float, default=0.02)
    ap.add_argument("--tau", type=float, default=2.0)
    ap.add_argument("--venv", type=Path, default=Path("/tmp/azopg-peers-venv"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ensure_venv(args.venv, __file__)
    from noisy_peers import noise_levels, tables

    budgets = sorted(int(b) for b in args.budgets.split(","))
    runs: list[dict] = []
    for plant in args.plants.split(","):
        for label, sw, sv in noise_levels(args.noise):
            for seed in range(args.seeds):
                rows = run_ars(plant, sw, sv, seed, budgets, args.dt, args.tau)
                for r in rows:
                    r.update(plant=plant, noise=label, seed=seed)
                runs += rows
                print(f"# {plant} {label} seed {seed}: {rows[-1]['cpu_s']:.0f} CPU s", flush=True)
                if args.out:
                    with open(args.out, "w") as f:
                        json.dump({"args": vars(args), "runs": runs}, f, indent=1, default=str)
    print(tables(runs, ["ars"]))


if __name__ == "__main__":
    main()
