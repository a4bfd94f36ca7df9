"""Learner settings, validated once, with scale-free defaults."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import SettingsError

__all__ = ["LATENCY_MODELS", "METHODS", "MIN_TASK_TIMEOUT", "Settings"]

#: Random factors of a task's rollout time (see :func:`azopg.plants.latency.latency_factor`).
LATENCY_MODELS = ("constant", "uniform", "exponential", "pareto")
#: Smallest accepted ``task_timeout`` (seconds).
MIN_TASK_TIMEOUT = 0.1
#: Update rules: AZOPG with the two-point or one-point estimator, the whitened (natural)
#: zero-order rule, model-free policy iteration (see :mod:`azopg.method.rules`); ``auto``
#: picks one of them per plant at the start of a run (see :mod:`azopg.method.auto`).
METHODS = ("auto", "two-point", "one-point", "natural", "policy-iteration")


def _positive(name: str, value: float | None, *, allow_none: bool = True, integer: bool = False) -> None:
    if value is None:
        if allow_none:
            return
        raise SettingsError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    if integer and (not float(value).is_integer()):
        raise SettingsError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass
class Settings:
    """How a run learns and when it stops. ``None`` means *choose automatically*.

    Parameters
    ----------
    seed : int
        Root of every random draw; task generators derive from (seed, worker, task).
    batch : int, optional
        Directions ``N`` per gradient estimate (two-point: ``2N`` rollouts).
        Default: ``ceil(m n / 2W)``: W workers together sample about ``mn/2`` directions per round.
    method : {"auto", "two-point", "one-point", "natural", "policy-iteration"}
        Update rule. ``auto`` (the default) is resolved once at the start of a run
        (:func:`azopg.method.auto.choose_method`): ``policy-iteration`` when the plant returns
        exact state moments (a LinearPlant) and ``cost_noise <= 1e-3``, ``natural`` when it
        returns moments otherwise (a gym env's, or under more noise), else ``two-point``.
        The others: AZOPG with the two-point or one-point zero-order estimator; ``natural``,
        AZOPG along whitened directions (a zero-order Gauss--Newton step); ``policy-iteration``,
        Kleinman's steps on ``(P, E)`` fitted to rollouts with state moments (the plant must
        return them).
    r : float, optional
        Smoothing radius. Default: calibrated so a perturbation changes the rollout
        cost by about ``smoothing`` (relative).
    smoothing : float
        Relative cost change targeted when calibrating ``r``.
    tau : float, optional
        Rollout horizon. Default: grown from 1 until doubling it changes the cost by
        less than ``tail_tol`` (relative), and re-checked during the run.
    tail_tol : float
        Relative cost of the tail beyond ``tau`` that is tolerated.
    step : float, optional
        Initial step size ``alpha``. Default: line search along a first estimate.
    check_every : int, optional
        Applied updates between two rollout checks of the current gain (which adapt
        the step, reject steps that raise the cost and roll back). Default: ``ceil(4 mn / N)``,
        so the updates judged carry about 4 mn sampled directions;
        with several workers several checks may be in flight.
    max_updates, max_rollouts : int, optional
        Budgets.
    max_time : float, optional
        Wall-clock budget in seconds, worker start-up and calibration included (virtual
        seconds with the ``simulated`` backends).
    target_gap : float, optional
        Stop once the relative gap to the optimum (reported by the exact oracle,
        when the problem is known) is at most this -- and, for policy iteration on exact
        data, once the gain has settled: its last step within ``sqrt(target_gap)`` of the
        gain (:mod:`azopg.method.settle`).
    target_gain_error : float, optional
        Stop once the relative gain error ``||K - K*||_F / ||K*||_F`` (exact oracle; a
        known problem only) is at most this. With both targets, the run converges when
        both are met.
    workers : int
        Number of parallel workers W.
    max_delay : int, optional
        Estimates computed at a gain more than this many versions old are dropped.
        Default: ``4 W + 4``, ``4 W depth + 4`` with a ``depth`` given.
    staleness : {"constant", "inverse"}
        ``inverse`` scales the step of an estimate of delay ``d`` by ``1/(1+d/W)``.
    rollout_latency : float
        Extra wall time per rollout (seconds), emulating a physical plant (with the
        ``simulated`` backends: the virtual time per rollout, default 0.01 s).
    latency_model : {"constant", "uniform", "exponential", "pareto"}
        Random factor (mean 1) scaling each task's rollout time; ``pareto`` gives
        heavy-tailed stragglers.
    light : bool
        Communication-light mode: workers send the seed and ``N`` scalar cost
        differences; the master rebuilds the directions.
    task_timeout : float, optional
        Seconds after which a worker process's task is abandoned, the worker killed and
        replaced (process backends). Default: ``max(10 x median seconds per rollout x
        rollouts of the task, 5 s)`` once 3 tasks have returned (no timeout before).
    cost_noise : float
        Relative measurement noise of rollout costs: each measured cost is the true one
        times ``1 + cost_noise * e``, ``e ~ N(0, 1)`` drawn from the task's own stream
        (reproducible; the two horizons of a check share it). Emulates a noisy plant;
        the calibration then aims at a cost change of at least
        ``NOISE_SMOOTHING * cost_noise`` (30 x, at most 0.5; see :mod:`azopg.method.calibration`) per
        perturbation. Default 0 (exact costs).
    ray_address : str, optional
        The ``ray`` backend joins the Ray cluster at this address (``HOST:PORT`` of a head
        started with ``ray start --head``, or ``auto``) instead of starting a private local
        instance.
    snapshots : int, optional
        Policy iteration: each rollout is cut into this many intervals, each one equation of the
        regression (a plant with exact snapshots, ``rollout_snapshots``; other plants return
        whole rollouts). ``1``: one equation per rollout. Default: chosen by the learner
        (:func:`azopg.method.policy_iteration.default_snapshots`).
    depth : int, optional
        Tasks each worker holds at once in the asynchronous loop, all computed at the gain of
        when they were handed out (``ray`` backend only; its default 2: one Ray call carries
        them together, halving Ray's cost per update, at about twice the delay). Others: 1.
    plain : bool
        Run the paper's rule exactly as published (:mod:`azopg.method.plain`): ``alpha``, ``r``,
        ``tau`` and ``N`` fixed for the whole run (those not given are calibrated once at ``K0``
        and then frozen; the calibration's trial step is not applied), no rollout checks, no
        rollback, no step growth, no horizon doubling, no radius shrinking. An estimate any of
        whose rollouts blew up is skipped (no update) and counted (``stats["blown_estimates"]``,
        a ``skip-blowup`` history row). The run returns its last gain. Only the paper's
        estimators (``method`` ``two-point`` or ``one-point``; ``auto`` means ``two-point``) with
        ``staleness="constant"``.
    """

    seed: int = 0
    batch: int | None = None
    method: str = "auto"
    r: float | None = None
    smoothing: float = 1e-4
    tau: float | None = None
    tail_tol: float = 1e-7
    step: float | None = None
    check_every: int | None = None
    max_updates: int | None = None
    max_rollouts: int | None = None
    max_time: float | None = None
    target_gap: float | None = 1e-3
    target_gain_error: float | None = None
    workers: int = 1
    max_delay: int | None = None
    staleness: str = "constant"
    rollout_latency: float = 0.0
    latency_model: str = "constant"
    light: bool = False
    task_timeout: float | None = None
    cost_noise: float = 0.0
    ray_address: str | None = None
    depth: int | None = None
    plain: bool = False
    snapshots: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SettingsError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("batch", "check_every", "max_updates", "max_rollouts", "max_delay", "depth", "snapshots"):
            _positive(name, getattr(self, name), integer=True)
        for name in ("r", "tau", "step", "max_time", "target_gap", "target_gain_error", "task_timeout"):
            _positive(name, getattr(self, name))
        if self.task_timeout is not None and self.task_timeout < MIN_TASK_TIMEOUT:
            raise SettingsError(f"task_timeout must be >= {MIN_TASK_TIMEOUT} s (a task's round trip to a worker "
                                "takes milliseconds, so a shorter timeout abandons every task), "
                                f"got {self.task_timeout!r}")
        for name in ("smoothing", "tail_tol"):
            _positive(name, getattr(self, name), allow_none=False)
        _positive("workers", self.workers, allow_none=False, integer=True)
        noise = self.cost_noise
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 0.3:
            raise SettingsError(f"cost_noise must be a number in [0, 0.3), got {noise!r}")
        lat = self.rollout_latency
        if isinstance(lat, bool) or not isinstance(lat, (int, float)) or not math.isfinite(lat) or lat < 0:
            raise SettingsError(f"rollout_latency must be a finite number >= 0, got {lat!r}")
        if self.method not in METHODS:
            raise SettingsError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.latency_model not in LATENCY_MODELS:
            raise SettingsError(
                f"latency_model must be one of {', '.join(LATENCY_MODELS)}, got {self.latency_model!r}"
            )
        addr = self.ray_address
        if addr is not None and (not isinstance(addr, str) or not addr.strip() or any(c.isspace() for c in addr)):
            raise SettingsError(f"ray_address must be HOST:PORT or 'auto', got {addr!r}")
        if self.staleness not in ("constant", "inverse"):
            raise SettingsError(f"staleness must be 'constant' or 'inverse', got {self.staleness!r}")
        if not isinstance(self.plain, bool):
            raise SettingsError(f"plain must be true or false, got {self.plain!r}")
        if self.plain:
            if self.method == "auto":
                self.method = "two-point"  # the paper's estimator
            if self.method not in ("two-point", "one-point"):
                raise SettingsError(f"plain runs the paper's AZOPG rule: method must be two-point or one-point, "
                                    f"got {self.method!r}")
            if self.staleness != "constant":
                raise SettingsError("plain runs the paper's rule with a constant step: staleness must be "
                                    f"'constant', got {self.staleness!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
