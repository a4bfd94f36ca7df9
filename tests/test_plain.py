"""Plain mode (``Settings.plain``, ``azopg train --plain``): the paper's rule exactly as published.

The reference arithmetic is done here, by hand: each applied update is
``K_{t+1} = K_t - alpha * g(K_{t-d})`` with ``g`` recomputed from the task's own directions and
rollout costs at the gain this test recorded for the version the task read.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import azopg
from azopg.errors import SettingsError
from azopg.method.plain import SKIP_EVENT, STUCK_SKIPS
from azopg.method.rules import make_rule
from azopg.method.tasks import run_task, task_rng
from azopg.settings import Settings


class Events:
    """An observer that keeps the events' names."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def event(self, record) -> None:
        self.names.append(record.event)

    def arrival(self, row) -> None:
        pass


def by_hand(plant, task, K_read: np.ndarray) -> np.ndarray:
    """The paper's two-point estimate of the task, at the gain it read: directions drawn first
    from the task's generator, then the initial states."""
    rng = task_rng(task.seed, task.worker, task.task_id)
    m, n = K_read.shape
    G = rng.standard_normal((task.N, m, n))
    U = G * (np.sqrt(m * n) / np.sqrt(np.sum(G * G, axis=(1, 2), keepdims=True)))
    x0 = plant.initial_states(rng, task.N)
    fp = plant.rollout(K_read + task.r * U, x0, task.tau).cost
    fm = plant.rollout(K_read - task.r * U, x0, task.tau).cost
    return np.einsum("i,ijk->jk", (fp - fm) / (2 * task.r * task.N), U)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_applies_exactly_alpha_g_in_any_arrival_order(chain3, fixed, seed):
    W, alpha = 4, 0.05 * fixed["step"]  # short enough that no rollout blows up (asserted below)
    s = Settings(plain=True, workers=W, batch=2, seed=seed, max_delay=1000, **{**fixed, "step": alpha})
    rule = make_rule(np.array(chain3.K0), s)
    plant = azopg.LinearPlant(chain3)
    rng = np.random.default_rng([seed, 99])
    K = np.array(chain3.K0, dtype=float)
    gains = {0: K.copy()}  # this test's own record of the gain of each version
    inflight = [rule.ask(w) for w in range(W) for _ in range(2)]  # two tasks per worker: more shuffling
    delays = set()
    for _ in range(60):
        task = inflight.pop(int(rng.integers(len(inflight))))  # a random arrival order
        assert task.kind == "estimate"
        np.testing.assert_array_equal(task.K, gains[task.version])
        rep = run_task(plant, task)
        delays.add(rule.version - task.version)
        rule.tell(rep)
        K = K - alpha * by_hand(plant, task, gains[task.version])
        gains[rule.version] = K.copy()
        np.testing.assert_allclose(rule.K, K, rtol=1e-12, atol=1e-12 * np.abs(K).max())
        inflight.append(rule.ask(task.worker))
    assert max(delays) >= 3  # the arrivals were out of order: stale estimates were applied
    t = rule.tuning
    assert (t.alpha, t.r, t.tau, t.N) == (alpha, fixed["r"], fixed["tau"], 2)
    assert rule.version == rule.stats.updates == 60 and rule.stats.blown_estimates == 0
    assert rule.stats.rollbacks == rule.stats.rejected == rule.stats.accepted == 0


def test_a_blown_up_estimate_is_skipped_and_counted(chain3, fixed):
    events = Events()
    rule = make_rule(np.array(chain3.K0), Settings(plain=True, workers=2, batch=2, **fixed), observer=events)
    plant = azopg.LinearPlant(chain3)
    t1, t2, t3 = rule.ask(0), rule.ask(1), rule.ask(0)
    r1 = run_task(plant, t1)
    partly = dataclasses.replace(r1, blown_up=1)  # one rollout blew up, the survivors' average is finite
    rule.tell(partly)
    all_blown = dataclasses.replace(run_task(plant, t2), center_cost=float("inf"), blown_up=4)
    rule.tell(all_blown)
    np.testing.assert_array_equal(rule.K, chain3.K0)
    assert rule.version == rule.stats.updates == 0 and rule.stats.blown_estimates == 2
    assert events.names == [SKIP_EVENT, SKIP_EVENT]
    rule.tell(run_task(plant, t3))
    assert rule.version == 1 and rule.tuning.alpha == fixed["step"] and rule.tuning.r == fixed["r"]
    assert rule.tuning.tau == fixed["tau"]


def test_a_blown_up_estimate_of_a_round_is_skipped_the_others_averaged(chain3, fixed):
    rule = make_rule(np.array(chain3.K0), Settings(plain=True, workers=3, batch=2, **fixed))
    plant = azopg.LinearPlant(chain3)
    reps = [run_task(plant, rule.ask(w)) for w in range(3)]
    reps[1] = dataclasses.replace(reps[1], blown_up=2)
    rule.tell_round(reps)
    expected = np.array(chain3.K0) - fixed["step"] * (reps[0].grad + reps[2].grad) / 2
    np.testing.assert_allclose(rule.K, expected, rtol=1e-13, atol=1e-15)
    assert rule.stats.blown_estimates == 1 and rule.stats.updates == 1


def test_plain_run_never_checks_rolls_back_or_changes_its_settings(chain3, fixed):
    """A step 30 times too long: the safeguarded rule rolls back; plain mode applies every
    estimate with that step, and counts the estimates that blew up once the gain destabilized."""
    opts = dict(workers=4, backend="simulated", batch=2, max_rollouts=4000, target_gap=None, seed=3,
                **{**fixed, "step": 30 * fixed["step"]})
    guarded = azopg.train(chain3, method="two-point", **opts)
    assert guarded.stats["rollbacks"] > 0  # the step is long enough that the safeguards act
    res = azopg.train(chain3, plain=True, **opts)
    events = {h.event for h in res.history}
    assert events <= {"calibrate", "update", SKIP_EVENT}
    assert {h.step for h in res.history} == {30 * fixed["step"]}
    assert all(kind == "estimate" for _, _, kind, *_ in res.arrivals)
    assert res.stats["rollbacks"] == res.stats["checks_rejected"] == res.stats["checks_accepted"] == 0
    skipped = sum(h.event == SKIP_EVENT for h in res.history)
    assert skipped == res.stats["blown_estimates"] > 0
    assert res.updates + skipped + res.stats["dropped"] == len(res.arrivals)
    assert (res.settings["r"], res.settings["tau"], res.settings["batch"]) == (fixed["r"], fixed["tau"], 2)
    last = max(i for i, h in enumerate(res.history) if h.event == "update")
    assert res.history[last].update == res.updates  # the run returns its last iterate
    assert res.stabilizing == chain3.is_stabilizing(res.K)


def test_plain_calibrates_once_and_freezes(chain3):
    res = azopg.train(chain3, plain=True, workers=2, backend="simulated", batch=3, max_updates=200, target_gap=None)
    cal = [h for h in res.history if h.event == "calibrate"]
    assert len(cal) == 1 and cal[0].update == 0  # the line search's trial step is not applied
    assert {h.step for h in res.history} == {res.settings["step"]}
    assert res.updates == 200 and res.stats["rollbacks"] == 0


def test_plain_settings_are_checked():
    assert Settings(plain=True).method == "two-point"
    assert Settings(plain=True, method="one-point").method == "one-point"
    for bad in ({"method": "natural"}, {"method": "policy-iteration"}, {"staleness": "inverse"}, {"plain": 1}):
        with pytest.raises(SettingsError):
            Settings(**{"plain": True, **bad})


def test_cli_plain_with_another_method_is_one_line_and_exit_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "azopg", "train", "--plain", "--method", "natural", "--quiet",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--plain" in res.stderr
    assert not (tmp_path / "run").exists()


def test_report_kinds_in_plain_are_estimates_only(chain3, fixed):
    rule = make_rule(np.array(chain3.K0), Settings(plain=True, workers=1, batch=1, check_every=1, **fixed))
    plant = azopg.LinearPlant(chain3)
    for _ in range(5):
        task = rule.ask(0)
        assert task.kind == "estimate"  # check_every=1 would make every other task a check
        rule.tell(run_task(plant, task))
    assert rule.stats.updates == 5


def test_plain_run_with_blow_ups_replays_bit_for_bit(chain3, fixed, tmp_path):
    from azopg.run.output import write_run
    from azopg.run.replay import replay_run

    res = azopg.train(chain3, plain=True, backend="simulated", workers=3, seed=2, batch=2, max_rollouts=3000,
                      target_gap=None, latency_model="exponential", **{**fixed, "step": 30 * fixed["step"]})
    assert res.stats["blown_estimates"] > 0 and res.stats["max_delay_seen"] > 0
    write_run(tmp_path, res, plot=False)
    K, K_recorded, events = replay_run(tmp_path)
    assert events == len(res.arrivals)
    assert np.array_equal(K_recorded, res.K) and np.array_equal(K, K_recorded)


def test_a_plain_run_whose_gain_destabilized_stops_as_blown_up(chain3, fixed):
    res = azopg.train(chain3, plain=True, backend="simulated", workers=3, seed=1, batch=2, target_gap=None,
                      max_rollouts=10**6, **{**fixed, "step": 100 * fixed["step"]})
    assert res.status == "blown_up" and not chain3.is_stabilizing(res.K)
    tail = res.history[-STUCK_SKIPS * 3:]
    assert all(h.event == SKIP_EVENT and h.update == res.updates for h in tail)
    assert res.stats["blown_estimates"] >= STUCK_SKIPS * 3
