"""A learner never gives up silently: stalls are recovered from, and said so in the history."""

from __future__ import annotations

import collections

import numpy as np

import azopg
from azopg.method.calibration import line_search


def test_line_search_is_a_pure_function_of_its_callable():
    # acceptable up to a step of 3: from 1 it doubles to 2 (4 is refused)
    assert line_search(lambda a: -a if a <= 3 else None, 1.0) == (2.0, -2.0)
    # from 10 it halves to 2.5, the first acceptable step
    assert line_search(lambda a: -a if a <= 3 else None, 10.0) == (2.5, -2.5)
    # never acceptable: halved `backtrack` times, no cost
    alpha, cost = line_search(lambda a: None, 1.0, backtrack=10)
    assert cost is None and alpha == 2.0**-10
    # stops expanding when the cost no longer falls
    assert line_search(lambda a: (a - 4) ** 2, 1.0) == (4.0, 0.0)


def test_uphill_first_estimate_is_re_estimated_not_trusted():
    """rea1 seed 8: the calibration's first few-direction estimate points uphill (its cosine with the
    exact gradient is negative); the step used to shrink to ~1e-24 and the run stalled at K0."""
    p = azopg.get_problem("rea1")
    res = azopg.train(p, seed=8, max_time=60)
    assert res.status == "converged" and res.relative_gap <= 1e-3
    assert res.settings["step"] > 1e-3


def test_a_step_too_small_to_move_the_gain_is_searched_again():
    """A step so small that the gain does not change cannot win a check: the run searches the step
    afresh at the anchor, logs it as "recalibrate", and converges."""
    p = azopg.get_problem("chain3")
    res = azopg.train(p, step=1e-300, max_time=60)
    events = collections.Counter(h.event for h in res.history)
    assert events["recalibrate"] >= 1
    assert res.status == "converged" and res.relative_gap <= 1e-3
    first = next(h for h in res.history if h.event == "recalibrate")
    assert first.step > 1e-6  # the recalibrated step, logged with the event


def test_recalibration_backs_off_when_no_step_helps():
    """At the optimum no step decreases the cost: the searches back off exponentially instead of
    spending the budget on them, and the gain returned is K0 itself."""
    p = azopg.get_problem("chain3")
    Kstar = p.optimal_gain
    res = azopg.train(p, K0=Kstar, step=1e-300, target_gap=None, max_updates=3000)
    events = collections.Counter(h.event for h in res.history)
    checks = events["check-reject"] + events["check-accept"]
    assert checks > 100
    assert 1 <= events["recalibrate"] <= 2 * np.log2(checks) + 2  # not one per check
    assert res.cost <= p.cost(Kstar) * (1 + 1e-12)
    assert np.all(np.isfinite(res.K))
