"""``max_rollouts`` holds exactly: a task asks for at most the rollouts left (estimates are cut, a check that
does not fit is not issued), calibration counts, and a budget below the calibration's stops the run at it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import azopg
from azopg.method.kinds import TaskKind
from azopg.method.rule import UpdateRule
from azopg.run.output import write_run

BUDGETS = range(1, 201)


def _he1(noisy: bool) -> azopg.LQRProblem:
    p = azopg.get_problem("he1")
    return p.with_noise(W=0.01 * np.asarray(p.x0_cov)) if noisy else p


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("noisy", [True, False])
def test_rollouts_used_never_exceed_the_budget(noisy: bool, workers: int) -> None:
    # every budget from 1 to 200: serial, and 4 simulated asynchronous workers (tasks in flight hold their rollouts);
    # two-point on the exact plant (auto's policy iteration converges there in a dozen rollouts); before, he1 under
    # process noise used 40 rollouts of a budget of 10 and 136 of 100
    p = _he1(noisy)
    kw = {"backend": "simulated", "workers": workers} if workers > 1 else {}
    used = []
    for cap in BUDGETS:
        res = azopg.train(p, seed=0, max_rollouts=cap, method="natural" if noisy else "two-point", **kw)
        assert res.rollouts <= cap, (cap, res.rollouts)
        assert res.status in ("max_rollouts", "converged")
        used.append(res.rollouts)
    assert max(used) > 100  # the budget bound: the runs did use it


def test_result_json_and_a_budget_below_the_calibration(tmp_path, caplog) -> None:
    # the runs of the report (``azopg train --problem he1 --process-noise 0.1 --max-rollouts B``): a budget below
    # the calibration's first task stops there (status max_rollouts, K0, one warning line); result.json counts
    # what was used
    p = _he1(True)
    for cap in (10, 100, 150):
        res = azopg.train(p, seed=0, max_rollouts=cap)
        (tmp_path / str(cap)).mkdir()
        write_run(tmp_path / str(cap), res, plot=False)
        saved = json.loads((tmp_path / str(cap) / "result.json").read_text())
        assert saved["rollouts"] == res.rollouts <= cap and saved["status"] == "max_rollouts"
        if cap == 10:
            assert np.array_equal(res.K, p.K0) and res.history[-1].event == "calibration-cut-short"
            assert "max_rollouts = 10 holds no complete calibration" in caplog.text


def test_an_estimate_is_cut_to_the_rollouts_left_and_a_check_that_does_not_fit_is_withdrawn() -> None:
    p = azopg.get_problem("he1")
    rule = UpdateRule(np.asarray(p.K0), azopg.Settings(method="two-point", batch=10, max_rollouts=25))
    first = rule.admit(rule.issue(0, TaskKind.ESTIMATE))
    assert first is not None and first.N == 10  # 20 rollouts held while in flight
    cut = rule.admit(rule.issue(1, TaskKind.ESTIMATE))
    assert cut is not None and cut.N == 2  # 5 left: two directions of two rollouts
    assert rule.admit(rule.issue(2, TaskKind.ESTIMATE)) is None and rule.budget_spent  # 1 left: not one direction
    rule.budget.planned = lambda task: 2 * 8 if task.kind == TaskKind.EVALUATE else 2 * task.N
    rule.budget.spent = False
    assert rule.admit(rule.issue(0, TaskKind.EVALUATE)) is None and rule.budget_spent
