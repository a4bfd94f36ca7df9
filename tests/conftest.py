"""Fixtures shared by the engine, lifecycle and reliability tests."""

from __future__ import annotations

import pytest

import azopg
from azopg.engine import loops
from azopg.run.speedup import calibrated_settings
from azopg.settings import Settings


@pytest.fixture(autouse=True)
def progress_after_every_report(monkeypatch):
    """A run's progress callback is called after every report, not at most every 0.1 s: a callback
    that acts at its n-th call (interrupts, kills a worker) acts at the n-th report on any machine,
    however fast or loaded (see ``azopg.engine.loops.PROGRESS_PERIOD``)."""
    monkeypatch.setattr(loops, "PROGRESS_PERIOD", 0.0)


@pytest.fixture(scope="module")
def chain3():
    return azopg.get_problem("chain3")


@pytest.fixture(scope="module")
def fixed(chain3):
    """Horizon, radius and step of a serial calibration: given to a run, they make its
    calibration a single check."""
    s = calibrated_settings(chain3, Settings(seed=0, method="two-point"))
    return {"tau": s.tau, "r": s.r, "step": s.step}
