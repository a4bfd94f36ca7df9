"""``azopg speedup``, ``replay``, ``compare`` and ``problems``."""

from __future__ import annotations

import math
import sys
from typing import Any

import click
import numpy as np

from ..errors import SettingsError
from ..model.library import DEFAULT_PROBLEM, get_problem, load_problem, problem_names
from ..settings import METHODS
from ._group import cli, int_list, interrupted_code, parse_backend, parse_settings

__all__ = ["compare", "problems", "replay", "speedup"]


@cli.command()
@click.option("--workers", "-W", "workers_text", default="1,2,4,8,16,32", show_default=True, metavar="LIST",
              help="Comma-separated worker counts.")
@click.option("--backend", default="async", show_default=True, metavar="NAME",
              help="async | sync | simulated | simulated-sync | ray.")
@click.option("--ray-address", default=None, metavar="HOST:PORT",
              help="With --backend ray: the Ray cluster to run on.  [default: a private local instance]")
@click.option("--rollout-latency", type=float, default=0.01, show_default=True, metavar="SEC",
              help="Wall time per rollout (virtual time for the simulated backends).")
@click.option("--latency-model", type=click.Choice(["constant", "uniform", "exponential", "pareto"]),
              default="constant", show_default=True, help="Random factor of each task's rollout time.")
@click.option("--target-gap", type=float, default=1e-2, show_default=True, metavar="G")
@click.option("--repeats", type=int, default=3, show_default=True,
              help="Repeats of every worker count; each repeat calibrates once, for all its W.")
@click.option("--problem", "problem_spec", default=DEFAULT_PROBLEM, show_default=True, metavar="NAME|FILE")
@click.option("--batch", type=int, default=1, show_default=True, metavar="N",
              help="Directions per estimate: 1 keeps each worker's estimate cheap and noisy, the regime "
              "where asynchronous averaging pays off.")
@click.option("--step", type=float, default=None,
              help="Step size alpha (initial; with --plain, of every update).  [default: calibrated per repeat]")
@click.option("--r", "r", type=float, default=None, help="Smoothing radius.  [default: calibrated per repeat]")
@click.option("--tau", type=float, default=None, help="Rollout horizon.  [default: calibrated per repeat]")
@click.option("--plain", is_flag=True,
              help="The paper's rule exactly as published (see `azopg train --help`): alpha, r, tau, N fixed, "
              "no checks or rollback; blown-up estimates skipped and counted.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of repeat 0 (repeat k: seed + k).")
@click.option("--max-time", type=float, default=600.0, show_default=True, metavar="SEC", help="Budget per run.")
@click.option("--max-updates", type=int, default=None, metavar="N", help="Budget of updates per run.")
@click.option("--staleness", type=click.Choice(["constant", "inverse"]), default="constant", show_default=True)
@click.option("--method", type=click.Choice(list(METHODS)), default="two-point", show_default=True,
              help="Update rule (see `azopg train --help`).")
@click.option("--depth", type=int, default=None, metavar="D",
              help="With --backend ray: tasks each worker holds, carried by one Ray call.  [default: 2]")
@click.option("--out", "out_dir", default="azopg-speedup", show_default=True, metavar="DIR")
@click.option("--overwrite", is_flag=True,
              help="Replace DIR/speedup.csv, speedup_summary.csv and speedup.png if DIR has them.")
def speedup(workers_text: str, backend: str, rollout_latency: float, latency_model: str, target_gap: float,
            repeats: int, problem_spec: str, batch: int, seed: int, max_time: float, staleness: str,
            method: str, out_dir: str, ray_address: str | None, overwrite: bool, depth: int | None,
            step: float | None, r: float | None, tau: float | None, plain: bool, max_updates: int | None) -> None:
    """Measure wall time to a target gap for each worker count; write DIR/speedup.csv (one row per run),
    speedup_summary.csv (one row per W) and speedup.png.

    Each repeat calibrates once at K0 (what --step, --r, --tau, --batch do not give) and runs every W
    with that calibration, so a repeat's runs differ only in W. Besides the medians over repeats
    (T(W), updates, speedup of the medians W0 T(W0)/T(W)), the table gives the paired figures of each
    repeat -- speedup S = W0 T(W0)/T(W) and updates ratio U(W)/U(W0) within the repeat -- as median
    [min-max] over the repeats. SIGINT/SIGTERM stop the study at once (its workers with it), write
    the runs completed and exit with 130/143. speedup.csv and speedup_summary.csv are rewritten after
    every run, so a study stopped in any way keeps its completed runs.
    """
    from ..run.rundir import prepare_out_dir
    from ..run.speedup import SpeedupInterrupted, run_speedup, summarize, write_speedup_csv, write_summary_csv

    workers = int_list(workers_text)
    if repeats < 1:
        raise SettingsError(f"--repeats {repeats}: must be >= 1")
    problem = load_problem(problem_spec)
    base = parse_settings(seed=seed, target_gap=target_gap, rollout_latency=rollout_latency,
                          latency_model=latency_model, batch=batch, max_time=max_time, staleness=staleness,
                          workers=max(workers), ray_address=ray_address, method=method, depth=depth,
                          step=step, r=r, tau=tau, plain=plain, max_updates=max_updates)
    for w in workers:
        parse_backend(backend, w, ray_address)
    out = prepare_out_dir(out_dir, files=("speedup.csv", "speedup_summary.csv"), overwrite=overwrite)

    done: list[Any] = []

    def report(run: Any) -> None:
        done.append(run)  # the files are kept up to date: a study killed keeps its completed runs
        write_speedup_csv(out / "speedup.csv", done)
        write_summary_csv(out / "speedup_summary.csv", done)
        click.echo(f"  W={run.workers:<3} repeat {run.repeat}: time to target {run.time_to_target_s:8.3f} s, "
                   f"{run.updates} updates, mean delay {run.mean_delay:.1f}"
                   + (f", {run.blown_estimates} blown-up estimates skipped" if run.blown_estimates else ""), err=True)

    click.echo(f"{problem.name}: {backend}, rollout latency {rollout_latency:g} s ({latency_model}), "
               f"target gap {target_gap:g}, {repeats} repeat(s)" + (", plain rule" if plain else ""), err=True)
    try:
        runs = run_speedup(problem, workers, backend=backend, repeats=repeats, base=base, report=report)
    except SpeedupInterrupted as exc:
        if exc.runs:
            _speedup_table(summarize(exc.runs))
            click.echo("wrote " + ", ".join(str(f) for f in (write_speedup_csv(out / "speedup.csv", exc.runs),
                                                            write_summary_csv(out / "speedup_summary.csv", exc.runs))))
        click.echo(f"interrupted after {len(exc.runs)} complete run(s)")
        sys.exit(interrupted_code())
    rule = runs[0].result.settings["method"] if runs and runs[0].result is not None else method
    rule += " (plain)" if plain else ""
    click.echo(f"rule {rule}", err=True)
    _speedup_table(summarize(runs))
    from ..run.plots import plot_speedup

    files = [write_speedup_csv(out / "speedup.csv", runs), write_summary_csv(out / "speedup_summary.csv", runs),
             plot_speedup(runs, out / "speedup.png", title=f"{problem.name}: rule {rule}, {backend}, latency "
                          f"{rollout_latency:g} s/rollout ({latency_model}), batch {batch}, target gap {target_gap:g}")]
    click.echo("wrote " + ", ".join(str(f) for f in files))


def _range(median: float, lo: float, hi: float) -> str:
    return f"{median:.2f} [{lo:.2f}-{hi:.2f}]" if math.isfinite(median) else "-"


def _speedup_table(rows: list[dict[str, Any]]) -> None:
    """The summary table: medians over repeats, and the paired figures as median [min-max]."""
    click.echo(f"{'W':>4} {'T(W) [s]':>10} {'updates':>8} {'rollouts':>9} {'speedup':>8} {'effic.':>7} "
               f"{'paired speedup':>20} {'updates / U(W0)':>20} {'mean d':>7} {'max d':>6} {'reached':>8}")
    for r in rows:
        paired = _range(r["paired_speedup"], r["paired_speedup_min"], r["paired_speedup_max"])
        ratio = _range(r["updates_ratio"], r["updates_ratio_min"], r["updates_ratio_max"])
        click.echo(f"{r['workers']:>4} {r['time_to_target_s']:>10.3f} {r['updates']:>8.0f} {r['rollouts']:>9.0f} "
                   f"{r['speedup']:>8.2f} {r['efficiency']:>7.2f} {paired:>20} {ratio:>20} "
                   f"{r['mean_delay']:>7.1f} {r['max_delay']:>6} {r['reached']:>4}/{r['runs']}")


@cli.command()
@click.argument("run_dir", metavar="DIR")
def replay(run_dir: str) -> None:
    """Recompute an asynchronous run's final gain from DIR/arrivals.csv and compare it with DIR/result.json."""
    from ..run.replay import replay_run

    K, K_rec, events = replay_run(run_dir)
    same = K.shape == K_rec.shape and np.array_equal(K, K_rec)
    diff = float(np.max(np.abs(K - K_rec))) if K.shape == K_rec.shape else math.inf
    click.echo(f"replayed {events} reports: final K {'identical to' if same else 'DIFFERS from'} "
               f"result.json (max |dK| = {diff:.3g})")
    if not same:
        sys.exit(1)


@cli.command()
@click.argument("run_dir", metavar="DIR")
def compare(run_dir: str) -> None:
    """Compare a run's learned gain with python-control's lqr (needs azopg[control]): print the cost gap,
    the gain error and the closed-loop eigenvalues, and write DIR/compare.json."""
    from pathlib import Path

    from ..model.compare import compare_run
    from ..run.files import write_json_atomic

    comparison = compare_run(run_dir)
    click.echo(comparison.format())
    path = Path(run_dir) / "compare.json"
    try:
        write_json_atomic(path, comparison.to_dict())
    except OSError as exc:
        raise SettingsError(f"cannot write {str(path)!r} ({exc.strerror})") from None
    click.echo(f"wrote {path}")



@cli.command()
@click.option("--show", "show", default=None, metavar="NAME", help="Print one problem's matrices, source and optimum.")
def problems(show: str | None) -> None:
    """List the built-in problems (n, m, time domain, open-loop stability, optimal cost)."""
    if show is not None:
        p = load_problem(show)
        np.set_printoptions(precision=6, suppress=False, linewidth=110)
        click.echo(f"{p.name}: {p.title}\nsource: {p.source or '-'}\nn = {p.n}, m = {p.m}, time: {p.time_domain}")
        for label, M in (("A", p.A), ("B", p.B), ("Q", p.Q), ("R", p.R), ("x0_cov", p.x0_cov),
                         ("K0", p.K0), ("K* (DARE)" if p.discrete_time else "K* (CARE)", p.optimal_gain)):
            click.echo(f"{label} =\n{np.array2string(np.asarray(M))}")
        click.echo(f"f(K0) = {p.cost(p.K0):.6g}\nf*    = {p.optimal_cost:.6g}")
        return
    click.echo(f"{'name':<10} {'n':>3} {'m':>3}  {'time':<10} {'open loop':<10} {'f(K0)':>11} {'f*':>11}  title")
    for name in problem_names():
        p = get_problem(name)
        stable = "stable" if p.is_stabilizing(np.zeros((p.m, p.n))) else "unstable"
        click.echo(f"{name:<10} {p.n:>3} {p.m:>3}  {p.time_domain:<10} {stable:<10} {p.cost(p.K0):>11.5g} "
                   f"{p.optimal_cost:>11.5g}  {p.title}")


