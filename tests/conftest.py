"""Fixtures shared by the engine, lifecycle and reliability tests."""

from __future__ import annotations

import pytest

import azopg
from azopg.engine import loops
from azopg.method import pi_defaults
from azopg.method.pairs import PairBuffer
from azopg.run.speedup import calibrated_settings
from azopg.settings import Settings


@pytest.fixture(autouse=True, scope="session")
def progress_after_every_report():
    """A run's progress callback is called after every report, not at most every 0.1 s: a callback
    that acts at its n-th call (interrupts, kills a worker) acts at the n-th report on any machine,
    however fast or loaded (see ``azopg.engine.loops.PROGRESS_PERIOD``). Session-scoped, so that it
    is in force before any fixture of a wider scope than a test runs a training."""
    saved, loops.PROGRESS_PERIOD = loops.PROGRESS_PERIOD, 0.0
    yield
    loops.PROGRESS_PERIOD = saved


@pytest.fixture(scope="module")
def chain3():
    return azopg.get_problem("chain3")


@pytest.fixture(scope="module")
def fixed(chain3):
    """Horizon, radius and step of a serial calibration: given to a run, they make its
    calibration a single check."""
    s = calibrated_settings(chain3, Settings(seed=0, method="two-point"))
    return {"tau": s.tau, "r": s.r, "step": s.step}


@pytest.fixture
def pair_fits(monkeypatch):
    """Policy iteration on antithetic pairs at any size (forced where the interval equations would run), and the
    base gains of its pair fits, in order, as the returned list."""
    monkeypatch.setattr(pi_defaults, "MAX_FACTOR_COLUMNS", 0)
    monkeypatch.setattr(pi_defaults, "PAIRS_FROM", 0)
    fits = []
    evaluate = PairBuffer.evaluate
    monkeypatch.setattr(PairBuffer, "evaluate",
                        lambda self, K, R, stop=None: fits.append(K) or evaluate(self, K, R, stop))
    return fits
