"""``azopg train``: learn a gain for a problem or an environment, with a progress bar."""

from __future__ import annotations

import math
import sys
from typing import Any

import click

from ..errors import AzopgError, SettingsError
from ..model.library import DEFAULT_PROBLEM, load_problem
from ..settings import METHODS
from ._group import cli, interrupted_code, parse_backend, parse_settings

__all__ = ["Progress", "train"]


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
              help="Stop when the relative gap (f(K) - f*)/f* reported by the exact oracle is <= G. Under "
              "--measurement-noise: the gap of the expected cost at the run's current horizon tau to that of "
              "its optimum K_tau (not the CARE gain K*), judged from the calibration's end.")
@click.option("--target-gain-error", type=float, default=None, metavar="E",
              help="Stop when the gain error ||K - K*||_F/||K*||_F by the exact oracle is <= E (K_tau for K* "
              "under --measurement-noise) "
              "(with --target-gap too: when both are met).")
@click.option("--out", "out_dir", default="azopg-run", show_default=True, metavar="DIR",
              help="Directory for result.json, history.csv, arrivals.csv, problem.json and the plots.")
@click.option("--batch", type=int, default=None, metavar="N",
              help="Directions per gradient estimate (2N rollouts).  [default: ceil(mn/2W)]")
@click.option("--r", "r", type=float, default=None, help="Smoothing radius.  [default: calibrated]")
@click.option("--tau", type=float, default=None, help="Rollout horizon.  [default: grown until the tail is negligible]")
@click.option("--step", type=float, default=None,
              help="Initial step size (with --plain: the step of every update).  [default: line search]")
@click.option("--plain", is_flag=True,
              help="The paper's rule exactly as published: K <- K - alpha g for every estimate as it arrives, with "
              "alpha, r, tau and N fixed (those not given by --step, --r, --tau, --batch calibrated once at K0, "
              "then frozen); no rollout checks, rollback, step growth or horizon doubling. An estimate any of "
              "whose rollouts blew up is skipped (no update) and counted: stats.blown_estimates in result.json, "
              "a skip-blowup row in history.csv; after 20 W in a row (the gain destabilized) the run stops, status "
              "blown_up. The run returns its last gain (even if costlier than K0). "
              "Only with --method two-point or one-point (auto: two-point).")
@click.option("--method", type=click.Choice(list(METHODS)), default="auto",
              show_default=True, help="Update rule: AZOPG with a zero-order estimator (two-point, one-point), "
              "whitened zero-order Gauss-Newton (natural) or model-free policy iteration; auto: policy-iteration "
              "where the moments are exact (a known problem, azopg/DiscreteLinear-v0, azopg/Dean3-v0), "
              "--cost-noise <= 1e-3 and the plant shows no noise of its own (measured first unless it declares "
              "itself deterministic), else natural.")
@click.option("--workers", "-W", type=int, default=1, show_default=True, help="Parallel workers W.")
@click.option("--backend", default=None, metavar="NAME",
              help="serial | async | sync | simulated | simulated-sync | ray.  "
              "[default: serial for W = 1, else async]")
@click.option("--ray-address", default=None, metavar="HOST:PORT",
              help="With --backend ray: join this Ray cluster (`ray start --head`) and leave it running.  "
              "[default: a private local Ray instance]")
@click.option("--max-delay", type=int, default=None, metavar="D",
              help="Drop estimates more than D versions stale.  [default: 4W + 4; 4W depth + 4 with --depth]")
@click.option("--depth", type=int, default=None, metavar="D",
              help="With --backend ray: tasks each worker holds, carried by one Ray call.  [default: 2]")
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
@click.option("--snapshots", type=int, default=None, metavar="K",
              help="Policy iteration: cut each rollout into K intervals, one equation each (plants with exact "
              "snapshots; others use whole rollouts); 1: one equation per rollout.  [default: chosen by the learner]")
@click.option("--process-noise", type=float, default=0.0, show_default=True, metavar="S",
              help="Process noise of the known problem's plant: dx = (Ax + Bu) dt + dw with E[dw dw'] = S^2 x0_cov dt "
              "(S in 1/sqrt(seconds): the noise that spreads the state by S sqrt(t) initial standard deviations "
              "in t seconds).")
@click.option("--measurement-noise", type=float, default=0.0, show_default=True, metavar="S",
              help="Measurement noise of the known problem's plant: u = -K (x + v), v ~ N(0, S^2 x0_cov) drawn anew "
              "every --measurement-dt seconds and held in between (S: in initial standard deviations).")
@click.option("--measurement-dt", type=float, default=0.01, show_default=True, metavar="SEC",
              help="Sampling interval of the noisy measurement (with --measurement-noise).")
@click.option("--resume", "resume_dir", default=None, metavar="DIR",
              help="Continue the run in DIR from its checkpoint.json (its own settings; other options ignored).")
@click.option("--overwrite", is_flag=True,
              help="Replace the run --out holds: remove its result.json, checkpoint.json, history.csv, arrivals.csv, "
              "problem.json, convergence.png, responses.png and compare.json (nothing else).  "
              "[default: a directory that holds a run is refused]")
@click.option("--env", "env_name", default=None, metavar="ID|MODULE:FACTORY",
              help="Learn a gymnasium environment instead of --problem: a registered id (`module:Env-v0` imports "
              "module first; azopg/Linear-v0, azopg/Pendulum-v0, azopg/HE1-v0, azopg/DiscreteLinear-v0, azopg/Dean3-v0 "
              "built in) or a factory. "
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
              help="With --env: how a task's rollouts are stepped: auto | loop | sync | async | native "
              "(auto: native if the id registers a batched form, a vector_entry_point, else sync).")
@click.option("--judge", "judge_spec", default=None, metavar="NAME|FILE",
              help="With --env: a known problem whose exact oracle reports the gap of the learned gains.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(problem_spec: str, seed: int, max_time: float | None, max_updates: int | None,
          max_rollouts: int | None, target_gap: float, target_gain_error: float | None, out_dir: str,
          batch: int | None,
          r: float | None, tau: float | None, step: float | None, method: str, workers: int,
          backend: str | None, max_delay: int | None, depth: int | None, staleness: str, rollout_latency: float,
          latency_model: str, light: bool, task_timeout: float | None, cost_noise: float, snapshots: int | None,
          resume_dir: str | None, quiet: bool, ray_address: str | None, overwrite: bool, env_name: str | None,
          env_kwargs: str | None, K0_text: str | None, R_text: str | None, eval_text: str | None,
          episode_steps: int | None, dt: float | None, vector: str, judge_spec: str | None,
          process_noise: float, measurement_noise: float, measurement_dt: float, plain: bool) -> None:
    """Learn a gain for a problem (or a gymnasium environment, --env) and write DIR/result.json,
    history.csv, arrivals.csv, problem.json, convergence.png and responses.png (checkpoint.json and
    the logs are kept up to date during the run, for --resume). SIGINT or SIGTERM stops the run at
    once: workers stopped, result.json ("status": "interrupted") and the logs written, no plots; exit
    code 130 or 143."""
    from ..run.output import write_run
    from ..run.rundir import claim
    from ..run.train import train as run_train

    if resume_dir is not None:
        from ..run.checkpoint import FINISHED, open_run
        from ..run.train import resume

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
        with Progress(name, ckpt["settings"].get("target_gap"), quiet,
                       ckpt["settings"].get("target_gain_error")) as bar:
            try:
                result = resume(out, progress=bar.update)
            except SettingsError as exc:
                raise SettingsError(f"--resume {exc}") from None
    else:
        if env_name is not None:
            from ..run.envspec import prepare_env

            if process_noise or measurement_noise:
                raise SettingsError("--process-noise and --measurement-noise apply to a known problem (--problem), "
                                    "not to --env (give the environment its own noise in --env-kwargs)")

            spec, problem, K0 = prepare_env(env_name, env_kwargs, K0_text, R_text, eval_text, episode_steps, dt,
                                            vector, judge_spec)
        else:
            try:
                problem = load_problem(problem_spec)
            except AzopgError as exc:
                raise SettingsError(f"--problem {problem_spec!r}: {exc}") from None
            problem = with_cli_noise(problem, process_noise, measurement_noise, measurement_dt)
        settings = parse_settings(seed=seed, max_time=max_time, max_updates=max_updates, max_rollouts=max_rollouts,
                             target_gap=target_gap, target_gain_error=target_gain_error,
                             batch=batch, r=r, tau=tau, step=step, method=method,
                             workers=workers, max_delay=max_delay, staleness=staleness,
                             rollout_latency=rollout_latency, latency_model=latency_model, light=light,
                             task_timeout=task_timeout, cost_noise=cost_noise, ray_address=ray_address,
                             depth=depth, plain=plain, snapshots=snapshots)
        backend = parse_backend(backend, workers, ray_address)
        _ = problem is None or problem.optimal_cost  # fail early if the Riccati equation has no solution
        out = claim(out_dir, overwrite=overwrite)  # only now, with the input checked, is --out touched
        click.get_current_context().call_on_close(out.release)
        with Progress(env_name or problem.name, target_gap, quiet, target_gain_error) as bar:
            if env_name is not None:
                plant = spec.plant()
                result = run_train(plant, settings, K0=K0, backend=backend, plant_factory=plant.copy,
                                   progress=bar.update, out_dir=out, judge=problem, env=spec.to_dict())
            else:
                result = run_train(problem, settings, backend=backend, progress=bar.update, out_dir=out)
    files = write_run(out.path, result, plot=result.status != "interrupted")  # stopped: exit promptly, no plots
    click.echo(
        f"{result.problem}: {result.status} after {result.updates} updates, {result.rollouts} rollouts, "
        f"{result.wall_time_s:.2f} s (no exact oracle; --judge PROBLEM reports the gap)"
        if result.problem_data is None else
        f"{result.problem}: {result.status}, relative gap {result.relative_gap:.3e}{_against(result.judge)}, "
        f"gain error {result.gain_error:.3e} "
        f"(cost {result.cost:.6g}, optimum {result.optimal_cost:.6g}) after {result.updates} updates, "
        f"{result.rollouts} rollouts, {result.wall_time_s:.2f} s"
    )
    ci = result.cost_interval
    if ci is not None:  # under noise: how good the result is, from rollouts of its own
        pm = "+-"
        click.echo(f"expected cost of K at tau = {ci['tau']:g}: {ci['mean']:.6g} {pm} {ci['high'] - ci['mean']:.2g}, "
                   f"minus {ci['reference']}'s: {ci['diff']:.3g} {pm} {ci['diff_high'] - ci['diff']:.2g} "
                   f"({100 * ci['level']:g} % confidence, {ci['rollouts']} rollouts each)")
        if "gap_low" in ci:
            click.echo(f"relative gap of the expected cost to {ci['reference']}'s {ci['optimal_expected_cost']:.6g}: "
                       f"[{ci['gap_low']:.2e}, {ci['gap_high']:.2e}]")
        elif "relative_diff_low" in ci:  # K* is not the optimum under measurement noise: not a gap
            click.echo(f"relative difference of the expected cost to K*'s {ci['optimal_expected_cost']:.6g} "
                       f"(not a gap: K* is not the optimum under measurement noise): "
                       f"[{ci['relative_diff_low']:.2e}, {ci['relative_diff_high']:.2e}]")
    if result.stats.get("blown_estimates"):
        click.echo(f"{result.stats['blown_estimates']} estimates blew up"
                   + (" and were skipped (--plain)" if result.settings.get("plain") else ""))
    if out.path / "result.json" not in files:  # the gain must not be lost with the file
        click.echo(f"K = {result.K.tolist()}")
    click.echo("wrote " + (", ".join(str(f) for f in files) or "nothing"))
    if result.status == "interrupted":
        sys.exit(interrupted_code())



def _against(judge: dict[str, Any] | None) -> str:
    """What the gap is judged against under measurement noise (``result.judge``), else nothing (``K*``)."""
    if judge is None:
        return ""
    if judge["optimum"] == "K*":
        return " (noise-free, to K*: K_tau, the optimum under measurement noise, not computed for this size)"
    return (f" of the expected cost at tau = {judge['tau']:g} to its optimum K_tau's "
            f"(noise-free gap to K* {judge['noise_free_gap']:.3e})")


def with_cli_noise(problem: Any, process: float, measurement: float, dt: float) -> Any:
    """``problem`` with ``W = process^2 Omega`` and ``V = measurement^2 Omega`` sampled every ``dt``
    (``Omega`` its ``x0_cov``; see :mod:`azopg.model.noise`); unchanged when both are 0.

    Raises
    ------
    SettingsError
        On a level that is not a finite number >= 0, or a problem that cannot take noise.
    """
    for value, flag in ((process, "--process-noise"), (measurement, "--measurement-noise")):
        if not (math.isfinite(value) and value >= 0):
            raise SettingsError(f"{flag} must be a finite number >= 0, got {value!r}")
    if not (process or measurement):
        return problem
    Om = problem.x0_cov
    try:
        return problem.with_noise(W=process**2 * Om if process else None,
                                  V=measurement**2 * Om if measurement else None,
                                  dt=dt if measurement else None)
    except AzopgError as exc:
        raise SettingsError(f"--process-noise/--measurement-noise on {problem.name!r}: {exc}") from None


class Progress:
    """A rich progress bar on stderr; its fraction is the gap's way down to the target on a log scale
    (the gain error's, when only a gain-error target is given)."""

    def __init__(self, name: str, target: float | None, quiet: bool,
                 target_gain_error: float | None = None) -> None:
        self.quiet = quiet
        self.target, self.use_gain = ((target, False) if target is not None or target_gain_error is None
                                      else (target_gain_error, True))
        self.gap0: float | None = None
        self.name = name

    def __enter__(self) -> Progress:
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


