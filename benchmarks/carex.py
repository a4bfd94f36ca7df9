"""Default ``azopg.train`` on every CAREX example, judged by an independent CARE check.

    OMP_NUM_THREADS=1 python benchmarks/carex.py [--max-time 60] [--seed 0] [--problems carex1.1,...]

For each problem of the ``carex`` collection (``azopg.problem_names("carex")``) one run with
default settings (serial backend, target gap 1e-6, ``--max-time`` seconds). The learned gain
is judged with scipy alone, not the library's oracle: ``X`` from ``solve_continuous_are``,
``K* = R^-1 B'X``, ``J* = tr(X Omega)``, ``J(K) = tr(P_K Omega)`` from
``solve_continuous_lyapunov``; the table prints the gap ``J(K)/J* - 1`` and the gain error
``||K - K*|| / ||K*||`` (Frobenius). Diagnostics per run: updates, the history's events
(``rej`` rejected checks and rollbacks, ``ill`` fits refused as ill-conditioned, ``imp`` Kleinman
steps refused as imprecise -- their standard error too large -- or unrepresentable), the number
of policy-iteration fits, the seconds spent in them, and their condition numbers (smallest and
largest; ``+inf``: a fit was singular), measured by wrapping the solvers of the interval equations,
of the rollout buffer and of the antithetic pairs (under noise, with one equation per rollout and in
the buffered method a fit above the rule's ``NOISY_CONDITION`` = 1e14 is refused: logged ``ill-conditioned``; with
snapshots on exact data a fit is judged by its step's standard error, not by this condition).

``--balance`` (a diagnosis) trains on the same problem in states ``x' = D x``,
``D = diag(X(K0))^-1/2`` (every state of unit variance under ``K0``; a learner could measure
this from its rollouts), and judges the gain mapped back: a unit-invariant learner would print
the same row as without it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import time
from collections import Counter

import numpy as np
import scipy.linalg as sla

import azopg
from azopg.method import buffer as _buffer
from azopg.method import equations as _equations
from azopg.method import pairs as _pairs

CONDITIONS: list[float] = []
FIT_SECONDS = [0.0]


def _recording(solve):  # type: ignore[no-untyped-def]
    def recorded(*args):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = solve(*args)
        FIT_SECONDS[0] += time.perf_counter() - t0
        CONDITIONS.append(float((out[0] if isinstance(out, tuple) else out).condition))
        return out
    return recorded


_equations.IntervalEquations.evaluate = _recording(_equations.IntervalEquations.evaluate)  # type: ignore[method-assign]
_buffer.RolloutBuffer.evaluate = _recording(_buffer.RolloutBuffer.evaluate)  # type: ignore[method-assign]
_pairs.PairBuffer.evaluate = _recording(_pairs.PairBuffer.evaluate)  # type: ignore[method-assign]


def independent_check(p: azopg.LQRProblem, K: np.ndarray) -> tuple[float, float]:
    """``(gap, gain error)`` of ``K`` from scipy's CARE and Lyapunov solvers."""
    X = sla.solve_continuous_are(p.A, p.B, p.Q, p.R)
    Ks = np.linalg.solve(p.R, p.B.T @ X)
    J_opt = float(np.trace(X @ p.x0_cov))
    Acl = p.A - p.B @ K
    if np.max(np.linalg.eigvals(Acl).real) >= 0:
        return math.inf, float(np.linalg.norm(K - Ks) / np.linalg.norm(Ks))
    P = sla.solve_continuous_lyapunov(Acl.T, -(p.Q + K.T @ p.R @ K))
    return float(np.trace(P @ p.x0_cov)) / J_opt - 1.0, float(np.linalg.norm(K - Ks) / np.linalg.norm(Ks))


def balanced(p: azopg.LQRProblem, d: np.ndarray) -> azopg.LQRProblem:
    """``p`` in states ``D x`` (``D = diag(d)``): the same problem in other units (``K -> K D^-1``)."""
    if np.all(d == 1):
        return p
    return azopg.LQRProblem(d[:, None] * p.A / d[None, :], d[:, None] * p.B, p.Q / np.outer(d, d), p.R,
                            x0_cov=np.outer(d, d) * p.x0_cov, K0=p.K0 / d[None, :], name=p.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-time", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-gap", type=float, default=1e-6)
    ap.add_argument("--problems", default=",".join(azopg.problem_names("carex")))
    ap.add_argument("--balance", action="store_true", help="train in states D x, D = diag(X(K0))^-1/2 (diagnosis)")
    args = ap.parse_args()
    print(f"default settings, serial backend, seed {args.seed}, target gap {args.target_gap:g}, "
          f"budget {args.max_time:g} s, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"{'problem':<13} {'n':>3} {'m':>3} {'method':<17} {'rollouts':>8} {'s':>6} {'gap':>9} {'gain err':>9} "
          f"{'status':<11} {'upd':>4} {'rej':>4} {'ill':>4} {'imp':>4} {'fits':>5} {'fit s':>6} "
          f"{'fit cond min..max':>19}")
    for name in args.problems.split(","):
        p = azopg.get_problem(name)
        d = 1 / np.sqrt(np.diag(p.state_covariance(p.K0))) if args.balance else np.ones(p.n)
        CONDITIONS.clear()
        FIT_SECONDS[0] = 0.0
        try:
            r = azopg.train(balanced(p, d), seed=args.seed, max_time=args.max_time, target_gap=args.target_gap)
        except azopg.AzopgError as exc:
            print(f"{name:<13} {p.n:>3} {p.m:>3} refused: {exc}", flush=True)
            continue
        gap, err = independent_check(p, r.K * d[None, :])
        ev = Counter(h.event for h in r.history)
        rej = ev["check-reject"] + sum(v for k, v in ev.items() if k.startswith("rollback"))
        cond = [c for c in CONDITIONS if math.isfinite(c)]
        span = f"{min(cond):.1e}..{max(cond):.1e}" if cond else "-"
        if len(cond) < len(CONDITIONS):
            span += "+inf"
        imprecise = ev["step-imprecise"] + ev["step-overflow"]
        print(f"{name:<13} {p.n:>3} {p.m:>3} {r.settings.get('method', '?'):<17} {r.rollouts:>8} "
              f"{r.wall_time_s:>6.1f} {gap:>9.2e} {err:>9.2e} {r.status:<11} {r.updates:>4} {rej:>4} "
              f"{ev['ill-conditioned']:>4} {imprecise:>4} {len(CONDITIONS):>5} {FIT_SECONDS[0]:>6.1f} {span:>19}",
              flush=True)


if __name__ == "__main__":
    main()
