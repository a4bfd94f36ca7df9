"""Command-line interface: ``azopg train``, ``azopg problems``.

Bad input of any kind ends with one line on stderr and exit code 2. SIGINT and SIGTERM stop
a run the same way (workers stopped, result.json written with ``"status": "interrupted"``)
and exit with 130 and 143.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from typing import Any

import click
import numpy as np

from .errors import AzopgError, SettingsError
from .model.library import DEFAULT_PROBLEM, get_problem, load_problem, problem_names
from .settings import METHODS

__all__ = ["main", "cli"]

_OPTION_OF = {  # Settings field -> CLI option, for error messages
    "max_time": "--max-time", "max_updates": "--max-updates", "max_rollouts": "--max-rollouts",
    "target_gap": "--target-gap", "batch": "--batch", "r": "--r", "tau": "--tau", "step": "--step",
    "target_gain_error": "--target-gain-error",
    "seed": "--seed", "workers": "--workers", "max_delay": "--max-delay",
    "rollout_latency": "--rollout-latency", "method": "--method", "check_every": "--check-every",
    "task_timeout": "--task-timeout", "cost_noise": "--cost-noise", "ray_address": "--ray-address",
    "out_dir": "--out",
}


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so a run stops exactly as on Ctrl-C."""


_signals_received: list[int] = []


def _on_sigterm(signum: int, frame: object) -> None:
    if not _signals_received:  # the first one stops the run; later ones must not break the cleanup
        _signals_received.append(signum)
        raise Terminated


def _interrupted_code() -> int:
    """Exit code of an interrupted command: 128 + the signal (SIGTERM 143, else SIGINT 130)."""
    return 128 + (_signals_received[0] if _signals_received else signal.SIGINT)


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
@click.option("--max-time", type=float, default=None, metavar="SEC",
              help="Wall-clock budget in seconds, worker start-up and calibration included (with --backend "
                   "simulated: virtual seconds of the simulated workers).")
@click.option("--max-updates", type=int, default=None, metavar="N", help="Budget of applied updates.")
@click.option("--max-rollouts", type=int, default=None, metavar="N", help="Budget of rollouts.")
@click.option("--target-gap", type=float, default=1e-3, show_default=True, metavar="G",
              help="Stop when the relative gap (f(K) - f*)/f* reported by the exact oracle is <= G.")
@click.option("--target-gain-error", type=float, default=None, metavar="E",
              help="Stop when the gain error ||K - K*||_F/||K*||_F by the exact oracle is <= E "
              "(with --target-gap too: when both are met).")
@click.option("--out", "out_dir", default="azopg-run", show_default=True, metavar="DIR",
              help="Directory for result.json, history.csv, arrivals.csv, problem.json and the plots.")
@click.option("--batch", type=int, default=None, metavar="N",
              help="Directions per gradient estimate (2N rollouts).  [default: ceil(mn/2W)]")
@click.option("--r", "r", type=float, default=None, help="Smoothing radius.  [default: calibrated]")
@click.option("--tau", type=float, default=None, help="Rollout horizon.  [default: grown until the tail is negligible]")
@click.option("--step", type=float, default=None, help="Initial step size.  [default: line search]")
@click.option("--method", type=click.Choice(list(METHODS)), default="auto",
              show_default=True, help="Update rule: AZOPG with a zero-order estimator (two-point, one-point), "
              "whitened zero-order Gauss-Newton (natural) or model-free policy iteration; auto: policy-iteration "
              "for a known problem's exact plant with --cost-noise <= 1e-3, natural under more noise.")
@click.option("--workers", "-W", type=int, default=1, show_default=True, help="Parallel workers W.")
@click.option("--backend", default=None, metavar="NAME",
              help="serial | async | sync | simulated | simulated-sync | ray.  "
              "[default: serial for W = 1, else async]")
@click.option("--ray-address", default=None, metavar="HOST:PORT",
              help="With --backend ray: join this Ray cluster (`ray start --head`) and leave it running.  "
              "[default: a private local Ray instance]")
@click.option("--max-delay", type=int, default=None, metavar="D",
              help="Drop estimates more than D versions stale.  [default: 4W + 4]")
@click.option("--staleness", type=click.Choice(["constant", "inverse"]), default="constant", show_default=True,
              help="inverse: step of an estimate of delay d scaled by 1/(1 + d/W).")
@click.option("--rollout-latency", type=float, default=0.0, show_default=True, metavar="SEC",
              help="Extra wall time per rollout, as a physical plant takes (virtual time when simulated).")
@click.option("--latency-model", type=click.Choice(["constant", "uniform", "exponential", "pareto"]),
              default="constant", show_default=True, help="Random factor of each task's rollout time "
              "(pareto: heavy-tailed stragglers).")
@click.option("--light", is_flag=True,
              help="Communication-light: workers send seed + N scalars, not the m x n estimate.")
@click.option("--task-timeout", type=float, default=None, metavar="SEC",
              help="Abandon a worker's task after SEC seconds and replace the worker.  "
              "[default: max(10 x median time per rollout x rollouts, 5 s)]")
@click.option("--cost-noise", type=float, default=0.0, show_default=True, metavar="S",
              help="Relative measurement noise of every rollout cost (emulates a noisy plant).")
@click.option("--resume", "resume_dir", default=None, metavar="DIR",
              help="Continue the run in DIR from its checkpoint.json (its own settings; other options ignored).")
@click.option("--overwrite", is_flag=True,
              help="Replace the run --out holds: remove its result.json, checkpoint.json, history.csv, arrivals.csv, "
              "problem.json, convergence.png, responses.png and compare.json (nothing else).  "
              "[default: a directory that holds a run is refused]")
@click.option("--env", "env_name", default=None, metavar="ID|MODULE:FACTORY",
              help="Learn a gymnasium environment instead of --problem: a registered id (`module:Env-v0` imports "
              "module first; azopg/Linear-v0, azopg/Pendulum-v0, azopg/HE1-v0 built in) or a factory. "
              "Observation = state, action = input, cost = minus the summed reward.")
@click.option("--env-kwargs", default=None, metavar="JSON", help="With --env: keyword arguments of the environment.")
@click.option("--K0", "K0_text", default=None, metavar="FILE|JSON",
              help="With --env: the initial stabilizing gain (m x n JSON, or a file holding it or a result.json).")
@click.option("--R", "R_text", default=None, metavar="FILE|JSON",
              help="With --env: the reward's input weight, for the methods that use it (natural, policy-iteration).")
@click.option("--eval-states", "eval_text", default=None, metavar="K|FILE|JSON",
              help="With --env: how many states the checks draw from the environment's resets, or fixed states "
              "(k x n; needs an environment whose reset takes the 'x0' option).  [default: max(n, 8) drawn]")
@click.option("--episode-steps", type=int, default=None, metavar="N", help="With --env: steps per episode at most.")
@click.option("--dt", type=float, default=None, metavar="SEC",
              help="With --env: seconds per step.  [default: the environment's dt; without one, discrete time]")
@click.option("--vector", default="auto", show_default=True, metavar="MODE",
              help="With --env: how a task's rollouts are stepped: auto | loop | sync | async | native.")
@click.option("--judge", "judge_spec", default=None, metavar="NAME|FILE",
              help="With --env: a known problem whose exact oracle reports the gap of the learned gains.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(problem_spec: str, seed: int, max_time: float | None, max_updates: int | None,
          max_rollouts: int | None, target_gap: float, target_gain_error: float | None, out_dir: str,
          batch: int | None,
          r: float | None, tau: float | None, step: float | None, method: str, workers: int,
          backend: str | None, max_delay: int | None, staleness: str, rollout_latency: float,
          latency_model: str, light: bool, task_timeout: float | None, cost_noise: float,
          resume_dir: str | None, quiet: bool, ray_address: str | None, overwrite: bool, env_name: str | None,
          env_kwargs: str | None, K0_text: str | None, R_text: str | None, eval_text: str | None,
          episode_steps: int | None, dt: float | None, vector: str, judge_spec: str | None) -> None:
    """Learn a gain for a problem (or a gymnasium environment, --env) and write DIR/result.json,
    history.csv, arrivals.csv, problem.json, convergence.png and responses.png (checkpoint.json and
    the logs are kept up to date during the run, for --resume)."""
    from .run.output import write_run
    from .run.rundir import claim
    from .run.train import train as run_train

    if resume_dir is not None:
        from .run.checkpoint import FINISHED, open_run
        from .run.train import resume

        try:
            out, ckpt = open_run(resume_dir)
        except SettingsError as exc:
            raise SettingsError(f"--resume {exc}") from None
        click.get_current_context().call_on_close(out.release)
        if ckpt["status"] in FINISHED:
            gap = ckpt.get("relative_gap")
            click.echo(f"{resume_dir}: the run already finished ({ckpt['status']}"
                       + (f", relative gap {gap:.3e}" if isinstance(gap, float) else "")
                       + f" after {ckpt['master']['updates']} updates); nothing to resume")
            return
        name = (ckpt.get("problem") or {}).get("name", str(resume_dir))
        with _Progress(name, ckpt["settings"].get("target_gap"), quiet,
                       ckpt["settings"].get("target_gain_error")) as bar:
            try:
                result = resume(out, progress=bar.update)
            except SettingsError as exc:
                raise SettingsError(f"--resume {exc}") from None
    else:
        if env_name is not None:
            from .run.envspec import prepare_env

            spec, problem, K0 = prepare_env(env_name, env_kwargs, K0_text, R_text, eval_text, episode_steps, dt,
                                            vector, judge_spec)
        else:
            try:
                problem = load_problem(problem_spec)
            except AzopgError as exc:
                raise SettingsError(f"--problem {problem_spec!r}: {exc}") from None
        settings = _settings(seed=seed, max_time=max_time, max_updates=max_updates, max_rollouts=max_rollouts,
                             target_gap=target_gap, target_gain_error=target_gain_error,
                             batch=batch, r=r, tau=tau, step=step, method=method,
                             workers=workers, max_delay=max_delay, staleness=staleness,
                             rollout_latency=rollout_latency, latency_model=latency_model, light=light,
                             task_timeout=task_timeout, cost_noise=cost_noise, ray_address=ray_address)
        backend = _backend(backend, workers, ray_address)
        _ = problem is None or problem.optimal_cost  # fail early if the Riccati equation has no solution
        out = claim(out_dir, overwrite=overwrite)  # only now, with the input checked, is --out touched
        click.get_current_context().call_on_close(out.release)
        with _Progress(env_name or problem.name, target_gap, quiet, target_gain_error) as bar:
            if env_name is not None:
                plant = spec.plant()
                result = run_train(plant, settings, K0=K0, backend=backend, plant_factory=plant.copy,
                                   progress=bar.update, out_dir=out, judge=problem, env=spec.to_dict())
            else:
                result = run_train(problem, settings, backend=backend, progress=bar.update, out_dir=out)
    files = write_run(out.path, result)
    click.echo(
        f"{result.problem}: {result.status} after {result.updates} updates, {result.rollouts} rollouts, "
        f"{result.wall_time_s:.2f} s (no exact oracle; --judge PROBLEM reports the gap)"
        if result.problem_data is None else
        f"{result.problem}: {result.status}, relative gap {result.relative_gap:.3e}, "
        f"gain error {result.gain_error:.3e} "
        f"(cost {result.cost:.6g}, optimum {result.optimal_cost:.6g}) after {result.updates} updates, "
        f"{result.rollouts} rollouts, {result.wall_time_s:.2f} s"
    )
    if out.path / "result.json" not in files:  # the gain must not be lost with the file
        click.echo(f"K = {result.K.tolist()}")
    click.echo("wrote " + (", ".join(str(f) for f in files) or "nothing"))
    if result.status == "interrupted":
        sys.exit(_interrupted_code())


def _settings(**values: Any) -> Any:
    from .settings import Settings

    try:
        return Settings(**values)
    except SettingsError as exc:
        raise SettingsError(_option_message(exc)) from None


def _backend(name: str | None, workers: int, ray_address: str | None = None) -> str:
    from .engine.backends import check_backend

    name = name or ("serial" if workers == 1 else "async")
    check_backend(name, workers, ray_address)
    return name


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SettingsError(f"--workers {text!r}: expected a comma-separated list of integers") from None
    if not values or any(v < 1 for v in values):
        raise SettingsError(f"--workers {text!r}: every worker count must be >= 1")
    return sorted(set(values))


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
@click.option("--repeats", type=int, default=3, show_default=True, help="Runs per worker count (median taken).")
@click.option("--problem", "problem_spec", default=DEFAULT_PROBLEM, show_default=True, metavar="NAME|FILE")
@click.option("--batch", type=int, default=1, show_default=True, metavar="N",
              help="Directions per estimate: 1 keeps each worker's estimate cheap and noisy, the regime "
              "where asynchronous averaging pays off.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-time", type=float, default=600.0, show_default=True, metavar="SEC", help="Budget per run.")
@click.option("--staleness", type=click.Choice(["constant", "inverse"]), default="constant", show_default=True)
@click.option("--method", type=click.Choice(list(METHODS)), default="two-point", show_default=True,
              help="Update rule (see `azopg train --help`).")
@click.option("--out", "out_dir", default="azopg-speedup", show_default=True, metavar="DIR")
@click.option("--overwrite", is_flag=True, help="Replace DIR/speedup.csv and speedup.png if DIR has them.")
def speedup(workers_text: str, backend: str, rollout_latency: float, latency_model: str, target_gap: float,
            repeats: int, problem_spec: str, batch: int, seed: int, max_time: float, staleness: str,
            method: str, out_dir: str, ray_address: str | None, overwrite: bool) -> None:
    """Measure wall time to a target gap for each worker count; write DIR/speedup.csv and speedup.png."""
    from .run.plots import plot_speedup
    from .run.rundir import prepare_out_dir
    from .run.speedup import run_speedup, summarize, write_speedup_csv

    workers = _int_list(workers_text)
    if repeats < 1:
        raise SettingsError(f"--repeats {repeats}: must be >= 1")
    problem = load_problem(problem_spec)
    base = _settings(seed=seed, target_gap=target_gap, rollout_latency=rollout_latency,
                     latency_model=latency_model, batch=batch, max_time=max_time, staleness=staleness,
                     workers=max(workers), ray_address=ray_address, method=method)
    for w in workers:
        _backend(backend, w, ray_address)
    out = prepare_out_dir(out_dir, files=("speedup.csv",), overwrite=overwrite)

    def report(run: Any) -> None:
        click.echo(f"  W={run.workers:<3} repeat {run.repeat}: time to target {run.time_to_target_s:8.3f} s, "
                   f"{run.updates} updates, mean delay {run.mean_delay:.1f}", err=True)

    click.echo(f"{problem.name}: {backend}, rollout latency {rollout_latency:g} s ({latency_model}), "
               f"target gap {target_gap:g}, {repeats} repeat(s)", err=True)
    runs = run_speedup(problem, workers, backend=backend, repeats=repeats, base=base, report=report)
    rows = summarize(runs)
    rule = runs[0].result.settings["method"] if runs and runs[0].result is not None else method
    click.echo(f"rule {rule}", err=True)
    click.echo(f"{'W':>4} {'T(W) [s]':>10} {'updates':>8} {'rollouts':>9} {'speedup':>8} {'effic.':>7} {'mean d':>7} "
               f"{'max d':>6} {'reached':>8}")
    for r in rows:
        click.echo(f"{r['workers']:>4} {r['time_to_target_s']:>10.3f} {r['updates']:>8.0f} {r['rollouts']:>9.0f} "
                   f"{r['speedup']:>8.2f} "
                   f"{r['efficiency']:>7.2f} {r['mean_delay']:>7.1f} {r['max_delay']:>6} "
                   f"{r['reached']:>4}/{r['runs']}")
    files = [write_speedup_csv(out / "speedup.csv", runs),
             plot_speedup(runs, out / "speedup.png", title=f"{problem.name}: rule {rule}, {backend}, latency "
                          f"{rollout_latency:g} s/rollout ({latency_model}), batch {batch}, target gap {target_gap:g}")]
    click.echo("wrote " + ", ".join(str(f) for f in files))


@cli.command()
@click.argument("run_dir", metavar="DIR")
def replay(run_dir: str) -> None:
    """Recompute an asynchronous run's final gain from DIR/arrivals.csv and compare it with DIR/result.json."""
    from .run.replay import replay_run

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

    from .model.compare import compare_run
    from .run.files import write_json_atomic

    comparison = compare_run(run_dir)
    click.echo(comparison.format())
    path = Path(run_dir) / "compare.json"
    try:
        write_json_atomic(path, comparison.to_dict())
    except OSError as exc:
        raise SettingsError(f"cannot write {str(path)!r} ({exc.strerror})") from None
    click.echo(f"wrote {path}")


class _Progress:
    """A rich progress bar on stderr; its fraction is the gap's way down to the target on a log scale
    (the gain error's, when only a gain-error target is given)."""

    def __init__(self, name: str, target: float | None, quiet: bool,
                 target_gain_error: float | None = None) -> None:
        self.quiet = quiet
        self.target, self.use_gain = ((target, False) if target is not None or target_gain_error is None
                                      else (target_gain_error, True))
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

    def update(self, runlog: Any) -> None:
        if self.quiet:
            return
        gap, err = runlog.last_gap, runlog.last_gain_error
        value = err if self.use_gain else gap
        frac = 0.0
        if self.target and math.isfinite(value) and value > 0:
            self.gap0 = self.gap0 or max(value, self.target * 10)
            frac = math.log(self.gap0 / value) / math.log(self.gap0 / self.target)
        self._p.update(self._task, completed=min(max(frac, 0.0), 1.0),
                       info=f"updates {runlog.updates}  cost {runlog.last_cost:.6g}  gap {gap:.2e}  "
                       f"gain err {err:.2e}")

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self._p.stop()


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every input error into one line and exit 2."""
    _signals_received.clear()
    main_thread = threading.current_thread() is threading.main_thread()  # handlers only go there
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        code = cli.main(args=argv, prog_name="azopg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("azopg: interrupted", err=True)
        return _interrupted_code()
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
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
