"""Command-line interface: ``azopg train``, ``azopg problems``.

Bad input of any kind ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import click
import numpy as np

from .errors import AzopgError, SettingsError
from .library import DEFAULT_PROBLEM, get_problem, load_problem, problem_names

__all__ = ["main", "cli"]

_OPTION_OF = {  # Settings field -> CLI option, for error messages
    "max_time": "--max-time", "max_updates": "--max-updates", "max_rollouts": "--max-rollouts",
    "target_gap": "--target-gap", "batch": "--batch", "r": "--r", "tau": "--tau", "step": "--step",
    "seed": "--seed", "workers": "--workers", "max_delay": "--max-delay",
    "rollout_latency": "--rollout-latency", "method": "--method", "check_every": "--check-every",
}


def _option_message(exc: SettingsError) -> str:
    msg = str(exc)
    field = msg.split(" ", 1)[0]
    return _OPTION_OF[field] + msg[len(field):] if field in _OPTION_OF else msg


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="azopg", prog_name="azopg")
def cli() -> None:
    """Learn optimal LQR gains model-free, from rollout costs, with asynchronous
    parallel zeroth-order policy gradient (AZOPG).

    Start with `azopg train` (a built-in mass-spring chain) or `azopg problems`.
    """


@cli.command()
@click.option("--problem", "problem_spec", default=DEFAULT_PROBLEM, show_default=True,
              metavar="NAME|FILE", help="Built-in problem name (see `azopg problems`) or a JSON problem file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Root seed of every random draw.")
@click.option("--max-time", type=float, default=None, metavar="SEC", help="Wall-clock budget in seconds.")
@click.option("--max-updates", type=int, default=None, metavar="N", help="Budget of applied updates.")
@click.option("--max-rollouts", type=int, default=None, metavar="N", help="Budget of rollouts.")
@click.option("--target-gap", type=float, default=1e-3, show_default=True, metavar="G",
              help="Stop when the relative gap (f(K) - f*)/f* reported by the exact oracle is <= G.")
@click.option("--out", "out_dir", default="azopg-run", show_default=True, metavar="DIR",
              help="Directory for result.json, history.csv and convergence.png.")
@click.option("--batch", type=int, default=None, metavar="N",
              help="Directions per gradient estimate (2N rollouts).  [default: ceil(mn/8)]")
@click.option("--r", "r", type=float, default=None, help="Smoothing radius.  [default: calibrated]")
@click.option("--tau", type=float, default=None, help="Rollout horizon.  [default: grown until the tail is negligible]")
@click.option("--step", type=float, default=None, help="Initial step size.  [default: line search]")
@click.option("--method", type=click.Choice(["two-point", "one-point"]), default="two-point",
              show_default=True, help="Zero-order gradient estimator.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(problem_spec: str, seed: int, max_time: float | None, max_updates: int | None,
          max_rollouts: int | None, target_gap: float, out_dir: str, batch: int | None,
          r: float | None, tau: float | None, step: float | None, method: str, quiet: bool) -> None:
    """Learn a gain for a problem and write DIR/result.json, history.csv, convergence.png."""
    from .learner import train as run_train
    from .output import prepare_out_dir, write_run
    from .settings import Settings

    problem = load_problem(problem_spec)
    try:
        settings = Settings(seed=seed, max_time=max_time, max_updates=max_updates,
                            max_rollouts=max_rollouts, target_gap=target_gap, batch=batch, r=r,
                            tau=tau, step=step, method=method)
    except SettingsError as exc:
        raise SettingsError(_option_message(exc)) from None
    out = prepare_out_dir(out_dir)
    _ = problem.optimal_cost  # fail early if the Riccati equation has no solution
    with _Progress(problem.name, target_gap, quiet) as bar:
        result = run_train(problem, settings, progress=bar.update)
    files = write_run(out, result)
    click.echo(
        f"{result.problem}: {result.status}, relative gap {result.relative_gap:.3e} "
        f"(cost {result.cost:.6g}, optimum {result.optimal_cost:.6g}) after {result.updates} updates, "
        f"{result.rollouts} rollouts, {result.wall_time_s:.2f} s"
    )
    click.echo("wrote " + ", ".join(str(f) for f in files))
    if result.status == "interrupted":
        sys.exit(130)


class _Progress:
    """A rich progress bar on stderr; its fraction is the gap's way down to the target on a log scale."""

    def __init__(self, name: str, target: float | None, quiet: bool) -> None:
        self.quiet = quiet
        self.target = target
        self.gap0: float | None = None
        self.name = name

    def __enter__(self) -> _Progress:
        if not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                               TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                               console=Console(stderr=True), transient=False)
            self._p.start()
            self._task = self._p.add_task(self.name, total=1.0, info="calibrating")
        return self

    def update(self, master: Any) -> None:
        if self.quiet:
            return
        gap = master.last_gap
        frac = 0.0
        if self.target and math.isfinite(gap) and gap > 0:
            self.gap0 = self.gap0 or max(gap, self.target * 10)
            frac = math.log(self.gap0 / gap) / math.log(self.gap0 / self.target)
        self._p.update(self._task, completed=min(max(frac, 0.0), 1.0),
                       info=f"updates {master.updates}  cost {master.last_cost:.6g}  gap {gap:.2e}")

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self._p.stop()


@cli.command()
@click.option("--show", "show", default=None, metavar="NAME", help="Print one problem's matrices, source and optimum.")
def problems(show: str | None) -> None:
    """List the built-in problems (n, m, open-loop stability, optimal cost)."""
    if show is not None:
        p = load_problem(show)
        np.set_printoptions(precision=6, suppress=False, linewidth=110)
        click.echo(f"{p.name}: {p.title}\nsource: {p.source or '-'}\nn = {p.n}, m = {p.m}")
        for label, M in (("A", p.A), ("B", p.B), ("Q", p.Q), ("R", p.R), ("x0_cov", p.x0_cov),
                         ("K0", p.K0), ("K* (CARE)", p.optimal_gain)):
            click.echo(f"{label} =\n{np.array2string(np.asarray(M))}")
        click.echo(f"f(K0) = {p.cost(p.K0):.6g}\nf*    = {p.optimal_cost:.6g}")
        return
    click.echo(f"{'name':<10} {'n':>3} {'m':>3}  {'open loop':<10} {'f(K0)':>11} {'f*':>11}  title")
    for name in problem_names():
        p = get_problem(name)
        stable = "stable" if p.spectral_abscissa(np.zeros((p.m, p.n))) < 0 else "unstable"
        click.echo(f"{name:<10} {p.n:>3} {p.m:>3}  {stable:<10} {p.cost(p.K0):>11.5g} "
                   f"{p.optimal_cost:>11.5g}  {p.title}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every input error into one line and exit 2."""
    try:
        code = cli.main(args=argv, prog_name="azopg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("azopg: interrupted", err=True)
        return 130
    except click.UsageError as exc:
        msg = exc.format_message()
        click.echo(f"azopg: error: {msg}", err=True)
        return 2
    except SettingsError as exc:
        click.echo(f"azopg: error: {_option_message(exc)}", err=True)
        return 2
    except AzopgError as exc:
        click.echo(f"azopg: error: {exc}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"azopg: error: {exc.format_message()}", err=True)
        return exc.exit_code
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
