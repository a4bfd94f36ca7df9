"""Rollout throughput and accuracy of :class:`azopg.LinearPlant`.

Prints rollouts per second for n = 4, 10, 30 and batch sizes 1 ... 1000 (one core), and
the relative error of the cost against the Lyapunov closed form
``x0'(P - E'PE)x0`` -- next to a single Van Loan exponential of the whole horizon.

    python benchmarks/rollouts.py [--tau 50] [--seconds 0.5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import time

import numpy as np
import scipy.linalg as sla

from azopg import LinearPlant, random_system


def lyapunov_costs(problem, K, x0, tau):
    """Closed form f_tau = x0'(P - E'PE)x0 for each (K, x0)."""
    out = []
    for Ki, xi in zip(K, x0, strict=True):
        P = problem.value_matrix(Ki)
        E = sla.expm(problem.closed_loop(Ki) * tau)
        out.append(xi @ (P - E.T @ P @ E) @ xi)
    return np.array(out)


def van_loan_costs(problem, K, x0, tau):
    """One Van Loan exponential of the whole horizon (what not to do)."""
    n = problem.n
    out = []
    for Ki, xi in zip(K, x0, strict=True):
        Acl = problem.closed_loop(Ki)
        Qk = problem.Q + Ki.T @ problem.R @ Ki
        F = sla.expm(np.block([[-Acl.T, Qk], [np.zeros((n, n)), Acl]]) * tau)
        M = F[n:, n:].T @ F[:n, n:]
        out.append(xi @ M @ xi)
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tau", type=float, default=50.0, help="rollout horizon")
    ap.add_argument("--seconds", type=float, default=0.5, help="timing budget per cell")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    batches = (1, 10, 100, 1000)
    print(f"LinearPlant rollouts per second, tau = {args.tau:g}, one thread")
    print(f"{'n':>4} {'m':>3} " + " ".join(f"{'b=' + str(b):>10}" for b in batches)
          + f" {'rel.err':>10} {'VanLoan err':>12}")
    for n in (4, 10, 30):
        m = 2
        problem = random_system(n, m, seed=1)
        plant = LinearPlant(problem)
        rates = []
        for b in batches:
            K = problem.K0 + 0.05 * rng.standard_normal((b, m, n))
            x0 = plant.initial_states(rng, b)
            plant.rollout(K, x0, args.tau)  # warm up
            t0, calls = time.perf_counter(), 0
            while time.perf_counter() - t0 < args.seconds:
                plant.rollout(K, x0, args.tau)
                calls += 1
            rates.append(b * calls / (time.perf_counter() - t0))
        K = problem.K0 + 0.05 * rng.standard_normal((20, m, n))
        x0 = plant.initial_states(rng, 20)
        exact = lyapunov_costs(problem, K, x0, args.tau)
        err = np.max(np.abs(plant.rollout(K, x0, args.tau).cost - exact) / exact)
        with np.errstate(all="ignore"):
            vl = np.max(np.abs(van_loan_costs(problem, K, x0, args.tau) - exact) / exact)
        print(f"{n:>4} {m:>3} " + " ".join(f"{r:>10.0f}" for r in rates) + f" {err:>10.1e} {vl:>12.1e}")
    print("\nrelative error against the Lyapunov closed form by horizon (n = 10):")
    problem = random_system(10, 2, seed=1)
    plant = LinearPlant(problem)
    K = problem.K0 + 0.05 * rng.standard_normal((20, 2, 10))
    x0 = plant.initial_states(rng, 20)
    print(f"{'tau':>8} {'doubling':>10} {'VanLoan':>10}")
    for tau in (1.0, 10.0, 20.0, 50.0, 200.0, 1000.0):
        exact = lyapunov_costs(problem, K, x0, tau)
        err = np.max(np.abs(plant.rollout(K, x0, tau).cost - exact) / exact)
        with np.errstate(all="ignore"):
            vl = np.max(np.abs(van_loan_costs(problem, K, x0, tau) - exact) / exact)
        print(f"{tau:>8g} {err:>10.1e} {vl:>10.1e}")


if __name__ == "__main__":
    main()
