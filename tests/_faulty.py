"""Plants that misbehave, for the reliability tests (and one that logs when it is busy, for the engine's).

They are built in worker processes by a picklable :class:`FaultyFactory`; forkserver
workers import this module by name, so the tests directory must be on their
``sys.path`` (pytest puts it on the test process's path, which the fork server inherits
when it starts; :func:`ensure_importable` makes sure).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time

import numpy as np

import azopg
from azopg.plants.base import BLOWUP_COST, RolloutResult

HERE = os.path.dirname(os.path.abspath(__file__))


def ensure_importable() -> None:
    """Put this directory on ``sys.path`` (before the fork server starts)."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)


def claim_once(marker: str | None) -> bool:
    """True for the first caller across all processes (creates ``marker``); always True without one."""
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class FaultyPlant:
    """A :class:`azopg.LinearPlant` whose rollout call number ``at`` (counted per process) misbehaves.

    Modes: ``hang`` (sleeps for an hour, in a worker other than worker 0, once across
    processes with a ``marker`` file), ``die`` (worker 0 SIGKILLs itself, once: during
    the calibration, which runs on worker 0), ``raise`` (raises RuntimeError), ``nan`` (every
    ``at``-th call returns NaN costs, not flagged as blown up), ``blowup`` (from call
    ``at`` on, every rollout is reported blown up: the plant broke), ``die-ray`` (the Ray
    actor named ``azopg-worker-1`` exits on every rollout, however often Ray restarts it).
    """

    #: its rollout takes no ``moments`` (not delegated to the LinearPlant inside)
    returns_moments = False

    def __init__(self, problem: azopg.LQRProblem, mode: str, at: int, marker: str | None = None) -> None:
        self.inner = azopg.LinearPlant(problem)
        self.n, self.m = problem.n, problem.m
        self.mode, self.at, self.marker = mode, at, marker
        self.calls = 0

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def initial_states(self, rng, size):
        return self.inner.initial_states(rng, size)

    def rollout(self, K, x0, tau):
        self.calls += 1
        out = self.inner.rollout(K, x0, tau)
        if self.mode == "hang":
            if (self.calls == self.at and mp.current_process().name != "azopg-worker-0"
                    and claim_once(self.marker)):
                time.sleep(3600)
        elif self.mode == "die":
            if self.calls == self.at and mp.current_process().name == "azopg-worker-0" and claim_once(self.marker):
                os.kill(os.getpid(), signal.SIGKILL)
        elif self.mode == "raise":
            if self.calls == self.at and claim_once(self.marker):
                raise RuntimeError("the plant's actuator driver crashed")
        elif self.mode == "nan":
            if self.calls % self.at == 0:
                return RolloutResult(np.full_like(out.cost, np.nan), np.zeros_like(out.blown_up))
        elif self.mode == "die-ray":
            import ray

            if ray.get_runtime_context().get_actor_name() == "azopg-worker-1":
                os._exit(1)
        elif self.mode == "blowup":
            if self.calls >= self.at:
                return RolloutResult(np.full_like(out.cost, BLOWUP_COST), np.ones_like(out.blown_up))
        return out


class FaultyFactory:
    """Picklable: each call builds a fresh :class:`FaultyPlant`."""

    def __init__(self, problem: azopg.LQRProblem, mode: str, at: int, marker: str | None = None) -> None:
        self.problem, self.mode, self.at, self.marker = problem, mode, at, marker

    def __call__(self) -> FaultyPlant:
        return FaultyPlant(self.problem, self.mode, self.at, self.marker)


class BusyLog:
    """Picklable factory of :class:`azopg.LinearPlant` s whose every rollout call first sleeps ``latency``
    seconds, then appends its ``start end`` (``time.monotonic``: one clock for all processes) to the file
    ``<log_dir>/<pid>``: when each worker process was busy, to see whether workers overlapped."""

    def __init__(self, problem: azopg.LQRProblem, latency: float, log_dir: str) -> None:
        self.problem, self.latency, self.log_dir = problem, latency, log_dir

    def __call__(self) -> BusyPlant:
        return BusyPlant(self)


class BusyPlant:
    """See :class:`BusyLog`."""

    returns_moments = False  # its rollout takes no ``moments``

    def __init__(self, log: BusyLog) -> None:
        self.inner = azopg.LinearPlant(log.problem)
        self.n, self.m = log.problem.n, log.problem.m
        self.log = log

    def initial_states(self, rng, size):
        return self.inner.initial_states(rng, size)

    def rollout(self, K, x0, tau):
        start = time.monotonic()
        time.sleep(self.log.latency)
        out = self.inner.rollout(K, x0, tau)
        with open(os.path.join(self.log.log_dir, str(os.getpid())), "a") as fh:
            fh.write(f"{start!r} {time.monotonic()!r}\n")
        return out

    @staticmethod
    def most_at_once(log_dir: str) -> int:
        """The largest number of worker processes busy at one instant, from the logs in ``log_dir``."""
        edges = []
        for name in os.listdir(log_dir):
            with open(os.path.join(log_dir, name)) as fh:
                for line in fh:
                    start, end = map(float, line.split())
                    edges += [(start, 1), (end, -1)]
        busy = most = 0
        for _, step in sorted(edges):  # an end before a start at the same instant: touching is no overlap
            busy += step
            most = max(most, busy)
        return most
