"""Under noise, a check that cannot tell the gain from its anchor doubles the batch, not halves the step.

Halving the step on such coin flips froze the gain (the step fell geometrically, ~0.5 at every other
check); doubling the directions per estimate and the check's pairs halves the variance of both, so
more rollouts keep buying precision (benchmarks/noise_budget.py, docs/noise.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import azopg
from azopg.method.kinds import Event, TaskKind
from azopg.method.paired import CHECK_PAIRS
from azopg.method.rules import make_rule
from azopg.method.safeguards import BATCH_GROWTH, SHRINK, Safeguards
from azopg.method.tasks import Report
from azopg.run.output import write_run
from azopg.run.replay import replay_run
from azopg.settings import Settings


def _guards(room: bool) -> Safeguards:
    g = Safeguards(np.zeros((1, 2)), Settings(cost_noise=0.01), check_every=2)
    g.batch_room = lambda: room
    g.move_anchor(np.zeros((1, 2)), 1.0, 0)
    return g


def _check(g: Safeguards, diff: float, se: float, task_id: int = 1) -> Report:
    g.watch(task_id, np.ones((1, 2)), g.anchor_serial)
    # a check of a gain made after the anchor; tail 0 with a finite standard error: the tail is negligible
    return Report(task_id, 0, TaskKind.EVALUATE, version=3, rollouts=48, blown_up=0, cost=1.0 + diff, cost2=1.0 + diff,
                  diff=diff, diff_se=se, transient=1.0, tail=0.0, tail_se=0.0)


@pytest.mark.parametrize("diff", [0.0, 1e-3, 2.9e-3])  # not cheaper, yet within 3 standard errors (1e-3)
def test_a_check_lost_in_the_noise_grows_the_batch_and_keeps_the_step(diff):
    g = _guards(room=True)
    v = g.judge(_check(g, diff, 1e-3), 0)
    assert v.event == Event.BATCH_GROW and v.batch == BATCH_GROWTH and v.alpha == 1.0 and v.rollback
    assert g.rejects_in_row == 0  # not a failed step: no search for a new step


def test_a_significantly_costlier_gain_still_halves_the_step():
    g = _guards(room=True)
    v = g.judge(_check(g, 3.1e-3, 1e-3), 0)
    assert v.event == Event.CHECK_REJECT and v.alpha == SHRINK and v.batch == 1 and v.rollback


def test_without_room_for_a_larger_batch_the_step_halves_as_before():
    g = _guards(room=False)
    v = g.judge(_check(g, 1e-3, 1e-3), 0)
    assert v.event == Event.CHECK_REJECT and v.alpha == SHRINK and v.batch == 1


def test_cheaper_checks_are_judged_as_before():
    g = _guards(room=True)
    assert g.judge(_check(g, -1e-3, 1e-3, 1), 0).event == Event.CHECK_INCONCLUSIVE
    assert g.judge(_check(g, -3.1e-3, 1e-3, 2), 0).event == Event.CHECK_ACCEPT


def test_room_follows_the_rollouts_spent_and_pairs_follow_the_batch(chain3):
    rule = make_rule(np.array(chain3.K0), Settings(method="natural", cost_noise=0.01), R=np.array(chain3.R))
    g, t = rule.safeguards, rule.tuning
    assert g.batch_room == rule.batch_room  # the natural and two-point rules opt in
    spend = 2 * 2 * t.N * g.check_every  # the next interval's estimates at twice the batch
    rule.stats.rollouts = spend - 1
    assert not g.batch_room()
    rule.stats.rollouts = spend
    assert g.batch_room()
    N0 = t.N
    rule.apply_verdict(g.judge(_check(g, 0.0, 1e-3, task_id=10**6), 0))
    assert t.N == BATCH_GROWTH * N0
    task = rule.issue(0, TaskKind.EVALUATE)
    assert task.K_ref is not None and task.pairs == BATCH_GROWTH * CHECK_PAIRS


def test_policy_iteration_grows_its_checks_within_a_share_of_the_rollouts(chain3):
    """Policy iteration keeps the gain of an unresolved check and doubles the checks' pairs (with its batch) while a
    check at twice them costs at most CHECK_SHARE of the rollouts spent (5 rollouts a pair)."""
    from azopg.method.policy_iteration import CHECK_SHARE
    rule = make_rule(np.array(chain3.K0), Settings(method="policy-iteration", cost_noise=0.01), R=np.array(chain3.R))
    assert rule.safeguards.keeps_unresolved and rule.check_pairs(rule.tuning.N) == CHECK_PAIRS
    assert rule.check_pairs(2 * rule.tuning.N) == 2 * CHECK_PAIRS
    rule.stats.rollouts = math.ceil(2 * 5 * CHECK_PAIRS / CHECK_SHARE)
    assert rule.safeguards.batch_room()
    rule.stats.rollouts -= 1
    assert not rule.safeguards.batch_room()


@pytest.mark.parametrize("method", ["natural", "two-point"])
def test_a_run_that_grows_its_batch_replays_bit_for_bit(chain3, tmp_path, method):
    res = azopg.train(chain3, method=method, backend="simulated", workers=3, seed=2, max_rollouts=8_000,
                      latency_model="exponential", target_gap=None, cost_noise=0.03, light=True)
    events = [h["event"] if isinstance(h, dict) else h.event for h in res.history]
    assert Event.BATCH_GROW in events and res.settings["batch"] > math.ceil(chain3.m * chain3.n / 6)
    write_run(tmp_path, res, plot=False)
    K, K_recorded, _ = replay_run(tmp_path)
    assert np.array_equal(K_recorded, res.K) and np.array_equal(K, K_recorded)
