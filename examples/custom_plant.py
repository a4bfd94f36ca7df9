"""Learn an LQR gain for your own simulator, wrapped as a plant with ``CallablePlant``.

    python examples/custom_plant.py [--quick] [--max-updates 400] [--seed 0]

The "user code" below is a hand-written simulator of a DC motor with a spring-loaded
load (angle and speed; torque input), integrated by fixed-step RK4 in plain Python.
``azopg`` only ever calls ``motor_rollout(K, x0, tau, rng)`` and reads the cost it
returns; the motor's over-speed protection raising an exception is reported to the
learner as a blown-up rollout. The model is used afterwards only to compare the
learned gain with the Riccati optimum. Exit status 1 if the learned gain is not within
1e-2 (relative) of the optimal cost.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

import azopg
from azopg.plants.callable import CallablePlant

# --- the user's simulator: known only to this file, never to the learner --------------
TIME_CONSTANT = 0.5  # s, mechanical time constant of the motor
MOTOR_GAIN = 2.0  # rad/s^2 per unit input, divided by TIME_CONSTANT
STIFFNESS = 1.0  # spring on the load, 1/s^2
STEP = 0.01  # s, RK4 step
MAX_SPEED = 1e3  # rad/s, the protection trips beyond this


def motor_rollout(K: np.ndarray, x0: np.ndarray, tau: float, rng: np.random.Generator) -> float:
    """Cost ``int_0^tau (theta^2 + omega^2 + u^2) dt`` of the motor under ``u = -K x``.

    Raises
    ------
    RuntimeError
        When the over-speed protection trips (the gain destabilizes the motor).
    """
    k1, k2 = float(K[0, 0]), float(K[0, 1])
    th, om = float(x0[0]), float(x0[1])
    a, b = 1.0 / TIME_CONSTANT, MOTOR_GAIN / TIME_CONSTANT

    def f(th: float, om: float) -> tuple[float, float, float]:
        u = -(k1 * th + k2 * om)
        return om, -STIFFNESS * th - a * om + b * u, th * th + om * om + u * u

    cost = 0.0
    h = STEP
    for _ in range(max(1, round(tau / h))):
        d1 = f(th, om)
        d2 = f(th + 0.5 * h * d1[0], om + 0.5 * h * d1[1])
        d3 = f(th + 0.5 * h * d2[0], om + 0.5 * h * d2[1])
        d4 = f(th + h * d3[0], om + h * d3[1])
        th += h / 6.0 * (d1[0] + 2.0 * d2[0] + 2.0 * d3[0] + d4[0])
        om += h / 6.0 * (d1[1] + 2.0 * d2[1] + 2.0 * d3[1] + d4[1])
        cost += h / 6.0 * (d1[2] + 2.0 * d2[2] + 2.0 * d3[2] + d4[2])
        if not abs(om) <= MAX_SPEED:
            raise RuntimeError(f"over-speed protection tripped at {om:.3g} rad/s")
    return cost


def motor_model() -> azopg.LQRProblem:
    """The model behind :func:`motor_rollout`, for the comparison only."""
    A = [[0.0, 1.0], [-STIFFNESS, -1.0 / TIME_CONSTANT]]
    B = [[0.0], [MOTOR_GAIN / TIME_CONSTANT]]
    return azopg.LQRProblem(A, B, name="dc-motor", title="DC motor with a spring-loaded load")


def run(quick: bool = False, max_updates: int | None = None, seed: int = 0) -> dict[str, float]:
    """Learn on the motor from ``K0 = 0`` and return the learned gain's exact gap."""
    plant = CallablePlant(motor_rollout, n=2, m=1)
    K0 = np.zeros((1, 2))  # the motor is stable in open loop
    updates = max_updates or (60 if quick else 400)
    result = azopg.train(plant, K0=K0, max_updates=updates, seed=seed, tail_tol=1e-5)
    model = motor_model()
    gap = model.relative_gap(result.K)
    print(f"CallablePlant(motor_rollout): {result.updates} updates, {result.rollouts} rollouts, "
          f"{result.wall_time_s:.1f} s, horizon tau = {result.settings['tau']:g} s")
    print(f"  learned K = {np.array2string(result.K, precision=4)}")
    print(f"  optimal K* = {np.array2string(np.asarray(model.optimal_gain), precision=4)} (Riccati, from the model)")
    print(f"  cost: K0 {model.cost(K0):.6g}, learned {model.cost(result.K):.6g}, optimum {model.optimal_cost:.6g}; "
          f"relative gap {gap:.2e}")
    print(f"  rollouts that raised in motor_rollout (flagged as blown up): {plant.errors}")
    return {"gap": gap, "cost": model.cost(result.K), "optimal_cost": model.optimal_cost}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few updates (a few seconds), for CI")
    ap.add_argument("--max-updates", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = run(args.quick, args.max_updates, args.seed)
    ok = math.isfinite(out["gap"]) and out["gap"] <= 1e-2
    print("OK: within 1e-2 of the optimum" if ok else "FAILED: not within 1e-2 of the optimum")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
