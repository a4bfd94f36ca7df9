"""The ``azopg`` command group and what its commands share: settings parsed once, option names in
error messages, the interrupt signals."""

from __future__ import annotations

import signal
from typing import Any

import click

from ..errors import SettingsError

__all__ = ["cli", "int_list", "interrupted_code", "on_sigterm", "option_message", "parse_backend", "parse_settings",
           "signals_received"]

OPTION_OF = {  # Settings field -> CLI option, for error messages
    "max_time": "--max-time", "max_updates": "--max-updates", "max_rollouts": "--max-rollouts",
    "target_gap": "--target-gap", "batch": "--batch", "r": "--r", "tau": "--tau", "step": "--step",
    "target_gain_error": "--target-gain-error",
    "seed": "--seed", "workers": "--workers", "max_delay": "--max-delay",
    "rollout_latency": "--rollout-latency", "method": "--method", "check_every": "--check-every",
    "task_timeout": "--task-timeout", "cost_noise": "--cost-noise", "ray_address": "--ray-address",
    "depth": "--depth", "backend": "--backend", "plain": "--plain",
    "out_dir": "--out",
}



class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so a run stops exactly as on Ctrl-C."""


signals_received: list[int] = []


def on_sigterm(signum: int, frame: object) -> None:
    if not signals_received:  # the first one stops the run; later ones must not break the cleanup
        signals_received.append(signum)
        raise Terminated


def interrupted_code() -> int:
    """Exit code of an interrupted command: 128 + the signal (SIGTERM 143, else SIGINT 130)."""
    return 128 + (signals_received[0] if signals_received else signal.SIGINT)


def option_message(exc: SettingsError) -> str:
    msg = str(exc)
    field = msg.split(" ", 1)[0]
    return OPTION_OF[field] + msg[len(field):] if field in OPTION_OF else msg


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="azopg", prog_name="azopg")
def cli() -> None:
    """Learn optimal LQR gains model-free, from rollout costs, with asynchronous
    parallel zeroth-order policy gradient (AZOPG).

    Start with `azopg train` (a built-in mass-spring chain) or `azopg problems`.
    """


def parse_settings(**values: Any) -> Any:
    from ..settings import Settings

    try:
        return Settings(**values)
    except SettingsError as exc:
        raise SettingsError(option_message(exc)) from None


def parse_backend(name: str | None, workers: int, ray_address: str | None = None) -> str:
    from ..engine.backends import check_backend

    name = name or ("serial" if workers == 1 else "async")
    try:
        check_backend(name, workers, ray_address)
    except SettingsError as exc:
        raise SettingsError(option_message(exc)) from None
    return name


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SettingsError(f"--workers {text!r}: expected a comma-separated list of integers") from None
    if not values or any(v < 1 for v in values):
        raise SettingsError(f"--workers {text!r}: every worker count must be >= 1")
    return sorted(set(values))


