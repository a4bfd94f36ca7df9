"""The time budget (``max_time``) holds outside the loop too: worker start-up, calibration and
a single task that would take far longer than the budget (a rollout latency of 1000 s).

No assertion is about how long anything took: a run that ignored the budget would sleep
1000 s per rollout, so ``wall_time_s < 1000`` can only fail if the budget is not enforced.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

import azopg
from azopg.errors import OutOfTime
from azopg.plants.latency import LatencyPlant
from azopg.plants.linear import LinearPlant


@pytest.mark.parametrize("backend", ["serial", "async"])
def test_calibration_cut_short_by_the_budget_returns_k0(chain3, backend: str) -> None:
    res = azopg.train(chain3, backend=backend, workers=1, rollout_latency=1000.0, max_time=1.0)
    assert res.status == "max_time"
    assert np.array_equal(res.K, chain3.K0)
    assert res.history[-1].event == "calibration-cut-short"
    assert res.wall_time_s < 1000.0
    assert res.stats["calibration_s"] is None


def test_latency_plant_never_sleeps_past_the_deadline(chain3) -> None:
    """A rollout of 1000 s latency whose deadline has passed answers at once, exactly."""
    exact = LinearPlant(chain3)
    plant = LatencyPlant(exact, 1000.0, deadline=time.monotonic())
    x0 = exact.initial_states(np.random.default_rng(0), 2)
    K = np.broadcast_to(chain3.K0, (2, *chain3.K0.shape))
    res = plant.rollout(K, x0, 5.0)
    np.testing.assert_array_equal(res.cost, exact.rollout(K, x0, 5.0).cost)


def test_blocking_run_gives_up_at_the_budget(chain3) -> None:
    """The process backend's ``run(task)`` raises OutOfTime once its clock passes the budget
    (here: already past, and the task would take 1000 s per rollout)."""
    from azopg.engine.backends import ExecutorOptions, make_executor
    from azopg.method.rule import UpdateRule
    from azopg.plants.latency import LatencyPlantFactory

    ex = make_executor("async", LatencyPlantFactory(functools.partial(LinearPlant, chain3), 1000.0), 1,
                       ExecutorOptions())
    try:
        ex.start()
        ex.budget = 0.0
        task = UpdateRule(chain3.K0, azopg.Settings()).issue(0, "evaluate")
        with pytest.raises(OutOfTime):
            ex.run(task)
    finally:
        ex.close()
