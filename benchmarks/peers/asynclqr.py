"""Peer comparison: the asynchronous heterogeneous LQR algorithm of Toso, Wang & Anderson (2024) and azopg.

Our own re-implementation of the algorithm as published in the notebooks of the public
repository jd-anderson/AsyncLQR ("Asynchronous Heterogenous LQR - Comparison Async LQR and
Sync LQR" and "... - Optimality gap - Varying staleness"), with their settings:

* M copies ``(A_i, B_i, Q_i, R_i) = nominal + mask * U(0, eps)``, copy 0 the nominal system,
  masks ``diag(1, 2, 3, 4)``, ``ones(4, 2)``, ``2 I``, ``2 I``, eps = 0.01 for all four;
* each copy's local step: ``-eta_l`` times the two-point zeroth-order gradient of m = 20 pairs
  ``K +- U`` (``U`` Gaussian, scaled to Frobenius norm r = 1e-4), each cost the exact 100-step
  cost from ``x0 ~ N(0.5, 1e-3^2)`` per component (the notebooks' ``lqr_cost``);
* the server adds ``eta_g / bs`` times the sum of a buffer of local steps (bs = 20): on the
  ticks with ``n % tau_max != 0`` the first bs non-stragglers' (then every non-straggler
  recomputes at the new K), otherwise the stragglers' and then non-stragglers' until the
  count hits bs (then only the stragglers recompute). As published, a count that starts at
  or above bs never hits it again, so that branch adds *every* non-straggler's step; and in
  the async/sync notebook ``n`` is never advanced, so every tick takes that branch;
* the synchronous baseline waits tau_max ticks for the stragglers, then applies all M steps;
* the gap is ``J(K) - J(K*)`` on the nominal system, 100-step cost from
  ``x_0 = (0.25, 0.55, 0.35, 0.45)``; the notebooks stop at 0.3.

The script first checks the re-implementation against the notebooks' printed figures (ticks
or iterations to the gap 0.3), then runs both it and azopg on the nominal system (built-in
problem ``toso4``): ticks and rollouts to the notebook's gap (measured, for both, by the
notebook's ``x_0`` cost) and to azopg's relative gap 1e-3 (``tr(P_K)``, x0 covariance I).
A tick is the time one worker needs for 2m = 40 rollouts (one AsyncLQR local step); for
azopg's simulated backend it is the virtual time of 40 rollouts. ``control.dlqr`` is the
ground truth of both. A target not reached shows the rollouts spent; the last column is the
smallest relative gap (x0 covariance I) of the run. Only numpy, scipy and python-control are
needed (the project's venv)::

    OMP_NUM_THREADS=1 PYTHONPATH=src nice python benchmarks/peers/asynclqr.py [--seeds 3] [--ticks 1500]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import functools
import math
from dataclasses import dataclass

import control
import numpy as np

import azopg
from azopg.plants.discrete import plant_for

X0 = np.array([0.25, 0.55, 0.35, 0.45])  # the notebooks' x_0 (gap)
THRESHOLD = 0.3  # the notebooks' gap threshold
MASKS = (np.diag([1.0, 2, 3, 4]), np.ones((4, 2)), 2 * np.eye(4), 2 * np.eye(2))
EPS = 0.01
T_STEPS = 100  # the notebooks' rollout length
M_PAIRS, RADIUS = 20, 1e-4


@dataclass
class Config:
    """One AsyncLQR experiment of the notebooks."""

    name: str
    M: int  # systems that take part
    stragglers: int  # drawn from 1..49
    tau_max: int
    eta_l: float
    eta_g: float
    bs: int = 20
    eps: float = EPS
    n_advances: bool = True  # False: the async/sync notebook, whose n stays 0
    sync: bool = False


def copies(nominal: azopg.LQRProblem, M: int, eps: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The notebooks' ``perturbe_matrices``: stacked (A_i, B_i, Q_i, R_i), copy 0 nominal."""
    out = []
    for X, mask in zip((nominal.A, nominal.B, nominal.Q, nominal.R), MASKS, strict=True):
        noise = np.concatenate([[0.0], rng.uniform(0.0, eps, M - 1)])
        out.append(X[None] + noise[:, None, None] * mask[None])
    return tuple(out)


def lqr_cost(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, K: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """The notebooks' ``lqr_cost`` over a batch: ``x0' P x0`` after ``P <- Q + K'RK + A_K' P A_K``
    101 times from ``P = Q``, computed as the rollout it is (the stage costs of x_0..x_100 plus
    ``x_101' Q x_101``)."""
    Acl = A - B @ K
    S = Q + np.swapaxes(K, -1, -2) @ R @ K

    def quad(M: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (np.einsum("...ij,...j->...i", M, x) * x).sum(axis=-1)

    x = np.broadcast_to(x0, Acl.shape[:-1])
    J = np.zeros(Acl.shape[:-2])
    for _ in range(T_STEPS + 1):
        J += quad(S, x)
        x = np.einsum("...ij,...j->...i", Acl, x)
    return J + quad(Q, x)


def local_steps(sys: tuple[np.ndarray, ...], idx: np.ndarray, K: np.ndarray, eta_l: float,
                rng: np.random.Generator) -> np.ndarray:
    """``local_step`` of the systems ``idx`` at ``K``: ``-eta_l`` times ``grad_zo`` (2m rollouts each)."""
    nu, nx = K.shape
    U = rng.standard_normal((len(idx), M_PAIRS, nu, nx))
    U *= RADIUS / np.linalg.norm(U, axis=(2, 3), keepdims=True)
    x0 = rng.normal(0.5, 1e-3, (len(idx), M_PAIRS, 1, nx))[:, :, 0]
    A, B, Q, R = (X[idx][:, None] for X in sys)
    dc = lqr_cost(A, B, Q, R, K + U, x0) - lqr_cost(A, B, Q, R, K - U, x0)
    grad = (nx * nu) / (2 * M_PAIRS * RADIUS**2) * np.einsum("wl,wlij->wij", dc, U)
    return -eta_l * grad


def run(cfg: Config, nominal: azopg.LQRProblem, seed: int, ticks: int, stop_gap: float | None) -> list[dict]:
    """One run of ``async_LQR`` (or ``sync_LQR``): per aggregation, ticks, rollouts, both gaps."""
    rng = np.random.default_rng(seed)
    sys = copies(nominal, 100, cfg.eps, rng)  # the notebooks draw 100 copies ...
    sys = tuple(X[: cfg.M] for X in sys)  # ... and use the first M
    strag = np.array(rng.choice(np.arange(1, 50), cfg.stragglers, replace=False))
    others = np.array([i for i in range(cfg.M) if i not in set(strag)])
    Kstar = np.asarray(control.dlqr(nominal.A, nominal.B, nominal.Q, nominal.R)[0])
    J = functools.partial(lqr_cost, nominal.A, nominal.B, nominal.Q, nominal.R, x0=X0)
    Jstar = float(J(K=Kstar))
    K = np.array(nominal.K0)
    D = local_steps(sys, np.arange(cfg.M), K, cfg.eta_l, rng)
    rollouts = cfg.M * 2 * M_PAIRS
    trace = []
    for n in range(1, ticks + 1):
        if cfg.sync:
            if n % cfg.tau_max:
                continue
            K = K + cfg.eta_g / cfg.bs * D.sum(axis=0)
            fresh = np.arange(cfg.M)
        elif (n - 1 if cfg.n_advances else 0) % cfg.tau_max:
            K = K + cfg.eta_g / cfg.bs * D[others[: cfg.bs]].sum(axis=0)
            fresh = others
        else:  # the stragglers, then non-stragglers until the count hits bs (never, once past it)
            take = others[: max(cfg.bs - len(strag), 0)] if len(strag) < cfg.bs else others
            K = K + cfg.eta_g / cfg.bs * (D[strag].sum(axis=0) + D[take].sum(axis=0))
            fresh = strag
        D[fresh] = local_steps(sys, fresh, K, cfg.eta_l, rng)
        rollouts += len(fresh) * 2 * M_PAIRS
        gap = float(J(K=K)) - Jstar
        trace.append({"tick": n, "rollouts": rollouts, "gap": gap, "rel": nominal.relative_gap(K)
                      if nominal.is_stabilizing(K) else math.inf})
        if stop_gap is not None and gap <= stop_gap:
            break
    return trace


def first(trace: list[dict], key: str, level: float) -> dict | None:
    return next((row for row in trace if row[key] <= level), None)


#: The notebooks' experiments and their printed results (ticks or iterations to the gap 0.3).
CHECKS = [
    (Config("async (async/sync notebook)", 50, 10, 20, 1e-3, 0.75e-2, n_advances=False), 98, "ticks"),
    (Config("sync (async/sync notebook)", 50, 10, 20, 1e-3, 0.75e-2, sync=True), 1160, "ticks"),
    (Config("async, tau_max = 1 (staleness notebook)", 100, 20, 1, 1e-3, 1e-2), 13, "iterations"),
    (Config("async, tau_max = 3 (staleness notebook)", 100, 20, 3, 1e-3, 1e-2), 46, "iterations"),
    (Config("async, tau_max = 10 (staleness notebook)", 100, 20, 10, 1e-3, 1e-2), 77, "iterations"),
]


def check_reproduction(nominal: azopg.LQRProblem, seeds: int) -> None:
    print("Re-implementation against the notebooks (to the gap 0.3; the notebooks' counter is 1 + ticks):")
    for cfg, published, unit in CHECKS:
        got = []
        for seed in range(seeds):
            row = first(run(cfg, nominal, seed, 4000, THRESHOLD), "gap", THRESHOLD)
            got.append(math.inf if row is None else row["tick"])
        print(f"  {cfg.name:<42} published {published:>5} {unit}, ours (seeds 0-{seeds - 1}) "
              f"{', '.join(str(g) for g in got)}")


def azopg_row(problem: azopg.LQRProblem, notebook: azopg.LQRProblem, backend: str, W: int, method: str,
              seed: int, target: str) -> tuple[float, int, float]:
    """(ticks or seconds, rollouts, reached gap) of one azopg run to ``target`` ('notebook' or '1e-3')."""
    judge = notebook if target == "notebook" else problem
    gap = THRESHOLD / notebook.optimal_cost if target == "notebook" else 1e-3
    r = azopg.train(judge, plant_factory=functools.partial(plant_for, problem), workers=W, backend=backend,
                    method=method, target_gap=gap, seed=seed, max_time=120.0)
    if r.status != "converged":
        return math.inf, r.rollouts, r.relative_gap
    per_tick = 2 * M_PAIRS * (r.settings.get("rollout_latency") or 0.01)
    return (r.wall_time_s / per_tick if backend == "simulated" else r.wall_time_s), r.rollouts, r.relative_gap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ticks", type=int, default=1500, help="AsyncLQR budget for the gap 1e-3")
    ap.add_argument("--workers", type=int, default=4, help="worker processes of the --backend async rows")
    args = ap.parse_args()
    problem = azopg.get_problem("toso4")
    Kd, Pd, _ = control.dlqr(problem.A, problem.B, problem.Q, problem.R)
    Kstar = problem.optimal_gain
    print(f"control.dlqr against azopg's oracle on toso4: ||K_dlqr - K*|| / ||K*|| = "
          f"{np.linalg.norm(Kd - Kstar) / np.linalg.norm(Kstar):.1e}, "
          f"|tr P_dlqr - f*| / f* = {abs(np.trace(Pd) - problem.optimal_cost) / problem.optimal_cost:.1e}")
    notebook = azopg.LQRProblem(problem.A, problem.B, problem.Q, problem.R, x0_cov=np.outer(X0, X0) + 1e-12 * np.eye(4),
                                K0=problem.K0, discrete_time=True, name="toso4-x0")
    print(f"notebook's J(K*) from x_0: {float(lqr_cost(problem.A, problem.B, problem.Q, problem.R, Kd, X0)):.10f} "
          f"(notebook: 2.7147945922); infinite horizon x_0'P*x_0 = {notebook.optimal_cost:.10f}")
    check_reproduction(problem, args.seeds)

    rows = []
    for cfg, _, _ in CHECKS[:2]:
        for seed in range(args.seeds):
            tr = run(cfg, problem, seed, args.ticks, None)
            a, b = first(tr, "gap", THRESHOLD), first(tr, "rel", 1e-3)
            best = min(row["rel"] for row in tr)
            rows.append((f"AsyncLQR {cfg.name}", f"M = {cfg.M}", seed,
                         *(("ticks", x["tick"], x["rollouts"]) if x else ("ticks", math.inf, tr[-1]["rollouts"])
                           for x in (a, b)), best))
    for backend, W, methods in (("simulated", 50, ("two-point", "natural", "policy-iteration")),
                                ("async", args.workers, ("two-point", "policy-iteration"))):
        for method in methods:
            for seed in range(args.seeds):
                a = azopg_row(problem, notebook, backend, W, method, seed, "notebook")
                b = azopg_row(problem, notebook, backend, W, method, seed, "1e-3")
                unit = "ticks" if backend == "simulated" else "s"
                rows.append((f"azopg {method}, {backend}", f"W = {W}", seed, (unit, a[0], a[1]),
                             (unit, b[0], b[1]), b[2]))
    print()
    print(f"toso4 (nominal system of Toso, Wang & Anderson); notebook gap = J(K) - J* <= {THRESHOLD} from x_0; "
          f"AsyncLQR budget {args.ticks} ticks")
    print(f"| {'method':<52} | {'workers':<7} | seed | to notebook gap: time | rollouts "
          f"| to 1e-3: time | rollouts | best rel. gap |")
    print("|" + "---|" * 8)
    for name, workers, seed, (u1, t1, r1), (u2, t2, r2), best in rows:
        def fmt(u: str, t: float) -> str:
            return "not reached" if not math.isfinite(t) else (f"{t:.0f} {u}" if u == "ticks" else f"{t:.2f} s")
        print(f"| {name:<52} | {workers:<7} | {seed:>4} | {fmt(u1, t1):>21} | {r1:>8.0f} | {fmt(u2, t2):>13} "
              f"| {r2:>8.0f} | {best:>14.2e} |")


if __name__ == "__main__":
    main()
