"""The asynchronous engine: the AZOPG update, delays and drops, the backends, replay.

Every check is about correctness: no verdict rests on how long anything took (that workers overlap
is read from the instants they were busy, never from a speed-up).
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import azopg
from _faulty import BusyLog, BusyPlant, ensure_importable
from _support import random_problem
from azopg.method.azopg import AZOPG
from azopg.method.stats import MEASURED_STATS
from azopg.method.tasks import Report, Task, run_task
from azopg.run.history import RunLog
from azopg.run.output import write_run
from azopg.run.replay import replay_run
from azopg.settings import Settings

ensure_importable()  # the worker processes build BusyLog's plants

ROLLBACK_EVENTS = ("check-reject", "rollback-blowup")


def rows(res, event):
    return [h for h in res.history if h.event == event]


def check_history(res, max_delay):
    """Replays the history's bookkeeping: versions, delays, drops and rollbacks.

    Every event that makes a new gain (an update, a rollback) advances the version by
    one; each row's delay must be the version at that moment minus the version its
    report read; an update must be at most ``max_delay`` stale and read on the current
    branch (after the last rollback); a drop must be too stale or pre-rollback.
    """
    hist = res.history
    assert hist[0].event == "calibrate"
    version = hist[0].update  # calibration applies at most one update (its line search)
    branch_start = drops = updates = rollbacks = 0
    for row in hist[1:]:
        if row.event == "update":
            assert 0 <= row.delay <= max_delay, row
            assert row.version_read + row.delay == version, row
            assert row.version_read >= branch_start, row
            version += 1
            updates += 1
        elif row.event == "drop":
            assert row.version_read + row.delay == version, row
            assert row.delay > max_delay or row.version_read < branch_start, row
            drops += 1
        elif row.event in ROLLBACK_EVENTS:
            version += 1
            assert row.version_read + row.delay == version, row
            branch_start = version
            rollbacks += 1
        else:
            assert row.event in ("check-accept", "check-stale", "shrink-r"), row
            assert row.version_read + row.delay == version, row
    assert drops == res.stats["dropped"]
    assert rollbacks == res.stats["rollbacks"]
    assert updates + hist[0].update == res.updates
    estimates = [h for h in hist if h.event in ("update", "drop")]
    assert res.stats["max_delay_seen"] == max(h.delay for h in estimates)
    return drops


# ------------------------------------------------------------- delay bound

def test_simulated_delay_bound_drops_stale_estimates(chain3):
    res = azopg.train(chain3, backend="simulated", workers=8, max_delay=2, seed=0, target_gap=1e-2,
                      max_updates=300, method="two-point")
    assert res.settings["max_delay"] == 2
    assert all(h.delay <= 2 for h in rows(res, "update"))
    drops = check_history(res, 2)
    assert drops > 0 and res.stats["dropped"] > 0
    assert res.stats["max_delay_seen"] > 2
    # with 8 equally fast workers several of them contribute
    assert len({h.worker for h in rows(res, "update")}) >= 4


def test_async_delay_bound(chain3):
    res = azopg.train(chain3, backend="async", workers=4, max_delay=2, seed=0, target_gap=None, max_updates=60,
                      rollout_latency=0.001, method="two-point")
    assert res.status == "max_updates"
    assert res.settings["max_delay"] == 2
    assert all(h.delay <= 2 for h in rows(res, "update"))
    check_history(res, 2)
    assert chain3.cost(res.K) <= chain3.cost(chain3.K0)


# --------------------------------------------------------- reproducibility

def same_history(a, b):
    assert len(a.history) == len(b.history)
    for x, y in zip(a.history, b.history, strict=True):
        assert dataclasses.astuple(x) == dataclasses.astuple(y)


@pytest.mark.parametrize("model", ["constant", "pareto"])
def test_simulated_is_bit_for_bit_reproducible(chain3, model):
    kw = {"backend": "simulated", "workers": 4, "target_gap": None, "max_updates": 80, "latency_model": model}
    a = azopg.train(chain3, seed=5, **kw)
    b = azopg.train(chain3, seed=5, **kw)
    assert np.array_equal(a.K, b.K)
    same_history(a, b)
    assert [(h.event, h.delay, h.worker, h.time_s) for h in a.history] == \
           [(h.event, h.delay, h.worker, h.time_s) for h in b.history]
    assert a.arrivals == b.arrivals
    assert {k: v for k, v in a.stats.items() if k not in MEASURED_STATS} == \
           {k: v for k, v in b.stats.items() if k not in MEASURED_STATS}
    times = [h.time_s for h in a.history]
    assert times == sorted(times) and times[-1] > 0  # a virtual clock that only moves forward
    c = azopg.train(chain3, seed=6, **kw)
    assert not np.array_equal(a.K, c.K)


def test_latency_model_changes_the_schedule(chain3):
    kw = {"backend": "simulated", "workers": 4, "target_gap": None, "max_updates": 40, "seed": 1}
    const = azopg.train(chain3, latency_model="constant", **kw)
    pareto = azopg.train(chain3, latency_model="pareto", **kw)
    assert [h.time_s for h in const.history] != [h.time_s for h in pareto.history]
    assert const.arrivals != pareto.arrivals


# -------------------------------------------------------------------- replay

@pytest.mark.parametrize("light", [False, True], ids=["full", "light"])
@pytest.mark.parametrize("budget", [{"target_gap": 1e-2}, {"target_gap": None, "max_updates": 60}],
                         ids=["converged", "max_updates"])
def test_replay_reproduces_async_run(chain3, tmp_path, budget, light):
    # the paper's rule (light mode is its estimates'): hundreds of updates, so every worker reports
    res = azopg.train(chain3, backend="async", workers=3, seed=1, light=light, rollout_latency=0.0005,
                      method="two-point", **budget)
    assert res.status == ("converged" if budget["target_gap"] else "max_updates")
    assert len({a[1] for a in res.arrivals}) == 3  # all three workers reported
    write_run(tmp_path, res, plot=False)
    K, K_recorded, events = replay_run(tmp_path)
    assert events == len(res.arrivals)
    assert np.array_equal(K_recorded, res.K)
    assert np.array_equal(K, K_recorded)


def test_replay_refuses_sync_runs(chain3, tmp_path):
    res = azopg.train(chain3, backend="simulated-sync", workers=2, seed=0, target_gap=None, max_updates=5)
    write_run(tmp_path, res, plot=False)
    with pytest.raises(azopg.SettingsError, match="sync"):
        replay_run(tmp_path)


def run_cli(args, cwd, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "azopg", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_replay_identical(tmp_path):
    proc = run_cli(["train", "-W", "3", "--out", "run", "--quiet", "--rollout-latency", "0.001",
                    "--max-updates", "100"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(["replay", "run"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "identical" in proc.stdout
    assert "DIFFERS" not in proc.stdout


@pytest.mark.parametrize("target", ["empty", "missing"])
def test_cli_replay_of_non_run_directory(tmp_path, target):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "result.json").write_text("{}")
    proc = run_cli(["replay", target], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("azopg: error:"), proc.stderr


# -------------------------------------------------------- light communication

@pytest.mark.parametrize("method", ["two-point", "one-point"])
@pytest.mark.parametrize("which", ["chain3", "random"])
def test_light_report_rebuilds_the_full_gradient(chain3, which, method):
    if which == "chain3":
        p, tau, r = chain3, 50.0, 1e-3
    else:
        p, tau, r = random_problem(np.random.default_rng(11), 3, 2), 10.0, 1e-2
    s = Settings(seed=7, tau=tau, r=r, step=1e-3, batch=4, method=method, workers=3, check_every=10**6)
    master = AZOPG(np.array(p.K0, dtype=float), s)
    plant = azopg.LinearPlant(p)
    for w in (0, 1, 2, 1):
        task = master.ask(w)
        assert task.kind == "estimate" and not task.light
        full = run_task(plant, task)
        light = run_task(plant, dataclasses.replace(task, light=True))
        assert full.grad is not None and full.weights is None
        assert light.grad is None and light.weights.shape == (4,)
        g = master.gradient(light)
        np.testing.assert_allclose(g, full.grad, rtol=1e-12, atol=1e-12 * np.abs(full.grad).max())
        assert np.array_equal(g, full.grad)
        assert np.array_equal(master.gradient(full), full.grad)
        assert light.payload_bytes() < full.payload_bytes()


def test_light_run_sends_fewer_bytes_and_learns_the_same(chain3):
    kw = {"backend": "simulated", "workers": 3, "seed": 2, "target_gap": None, "max_updates": 40,
          "method": "two-point"}
    full = azopg.train(chain3, light=False, **kw)
    light = azopg.train(chain3, light=True, **kw)
    assert light.stats["bytes_per_update"] < full.stats["bytes_per_update"]
    assert light.stats["bytes_received"] < full.stats["bytes_received"]
    # the rebuilt estimates are the same numbers, so the runs are the same run
    assert np.array_equal(light.K, full.K)
    assert light.arrivals == full.arrivals


# --------------------------------------------------------------- concurrency

def test_async_workers_run_concurrently(chain3, fixed, tmp_path):
    """Each rollout call sleeps 50 ms and logs when it ran: four workers are busy at the same instants,
    one worker never is with itself. Which instants is up to the machine; that sleeping workers overlap
    is not (a run that served its workers one at a time would never show two busy at once)."""
    kw = {"backend": "async", "seed": 0, "target_gap": None, "max_updates": 30,
          "method": "two-point", **fixed}  # the paper's rule: one update per report, so stale ones show

    def run(W):
        log_dir = tmp_path / f"W{W}"
        log_dir.mkdir()
        res = azopg.train(chain3, workers=W, plant_factory=BusyLog(chain3, 0.05, str(log_dir)), **kw)
        assert res.status == "max_updates" and res.updates == 30
        return res, str(log_dir)

    (one, one_log), (four, four_log) = run(1), run(4)
    assert len(os.listdir(four_log)) == 4  # every worker process ran rollouts
    assert BusyPlant.most_at_once(four_log) >= 3
    assert BusyPlant.most_at_once(one_log) == 1
    contributors = {h.worker for h in rows(four, "update")}
    assert len(contributors) >= 3
    assert any(h.delay > 0 for h in rows(four, "update"))
    assert {h.delay for h in rows(one, "update")} == {0}


# ------------------------------------------------------------- sync baseline

def per_update(res):
    cal = rows(res, "calibrate")[0].rollouts
    estimates = sum(1 for a in res.arrivals if a[2] == "estimate")
    return (res.rollouts - cal) / res.updates, estimates / res.updates


@pytest.fixture(scope="module")
def async_reference(chain3):
    return azopg.train(chain3, backend="simulated", workers=3, seed=0, target_gap=1e-2, method="two-point")


@pytest.mark.parametrize("backend", ["sync", "simulated-sync"])
def test_sync_baseline(chain3, async_reference, backend):
    W = 3
    res = azopg.train(chain3, backend=backend, workers=W, seed=0, target_gap=1e-2, max_time=60, method="two-point")
    assert res.status == "converged"
    assert chain3.relative_gap(res.K) <= 1e-2
    updates = rows(res, "update")
    assert updates and all(h.delay == 0 for h in updates)
    assert all(h.worker == -1 for h in updates)  # one averaged update per round
    assert res.stats["dropped"] == 0 and res.stats["max_delay_seen"] == 0
    check_history(res, 0)
    roll_sync, est_sync = per_update(res)
    roll_async, est_async = per_update(async_reference)
    assert 0.75 * W <= est_sync <= W  # W estimates per round, one of them sometimes a check
    assert 0.95 <= est_async <= 1.2  # the calibration's line-search step is an update without an estimate
    assert 0.6 * W <= roll_sync / roll_async <= 1.2 * W


# ---------------------------------------------------- the AZOPG update by hand

def hand_master(K0, *, W=4, max_delay=3, staleness="constant", step=0.1):
    s = Settings(step=step, r=1e-3, tau=1.0, check_every=10**6, workers=W, max_delay=max_delay,
                 staleness=staleness, target_gap=None, method="two-point")
    return AZOPG(np.array(K0, dtype=float), s, observer=RunLog(None, lambda: 0.0, W))


def estimate(task: Task, g: np.ndarray, center_cost: float = 1.0) -> Report:
    return Report(task.task_id, task.worker, "estimate", task.version, 2 * task.N, 0, grad=g,
                  center_cost=center_cost)


def evaluation(task: Task, cost: float) -> Report:
    return Report(task.task_id, task.worker, "evaluate", task.version, 12, 0, cost=cost, cost2=cost)


def test_master_update_delay_and_drop():
    rng = np.random.default_rng(0)
    K0 = rng.standard_normal((2, 3))
    m = hand_master(K0, W=4, max_delay=3)
    tasks = [m.ask(w) for w in range(4)] + [m.ask(1)]
    assert [t.task_id for t in tasks] == [1, 2, 3, 4, 5]
    assert all(t.kind == "estimate" and t.version == 0 and np.array_equal(t.K, K0) for t in tasks)
    # arrivals out of order: worker 2, 0, 1, 3 (delays 0, 1, 2, 3 = max_delay: all applied)
    for expected_delay, t in enumerate([tasks[2], tasks[0], tasks[1], tasks[3]]):
        g = rng.standard_normal((2, 3))
        K = m.K.copy()
        m.tell(estimate(t, g))
        assert np.array_equal(m.K, K - 0.1 * g)
        assert m.version == m.stats.updates == expected_delay + 1
        assert np.array_equal(m.gain_at(m.version), m.K)
        row = m.observer.history[-1]
        assert (row.event, row.delay, row.worker, row.version_read, row.step, row.update) == \
               ("update", expected_delay, t.worker, 0, 0.1, m.stats.updates)
    assert np.array_equal(m.gain_at(0), K0)
    # a new task reads the latest gain and version
    fresh = m.ask(2)
    assert fresh.version == 4 and np.array_equal(fresh.K, m.K)
    # worker 1's second task read version 0: delay 4 > 3, dropped
    K = m.K.copy()
    m.tell(estimate(tasks[4], rng.standard_normal((2, 3))))
    assert np.array_equal(m.K, K) and m.version == 4 and m.stats.updates == 4
    assert m.stats.dropped == 1 and m.stats.max_seen_delay == 4
    row = m.observer.history[-1]
    assert (row.event, row.delay, row.worker, row.version_read) == ("drop", 4, 1, 0)
    # the fresh one is not stale
    g = rng.standard_normal((2, 3))
    m.tell(estimate(fresh, g))
    assert np.array_equal(m.K, K - 0.1 * g) and m.version == 5
    assert m.stats.delay_sum == 0 + 1 + 2 + 3 + 4 + 0 and m.stats.delay_count == 6
    assert [a[0] for a in m.observer.arrivals] == [3, 1, 2, 4, 5, 6]


@pytest.mark.parametrize("staleness", ["constant", "inverse"])
@pytest.mark.parametrize("W", [1, 3, 6])
def test_master_matches_reference_on_random_schedule(staleness, W):
    """Random arrival orders against a few lines of reference arithmetic."""
    rng = np.random.default_rng(W)
    K0 = rng.standard_normal((2, 2))
    alpha, D = 0.05, 2 * W
    m = hand_master(K0, W=W, max_delay=D, staleness=staleness, step=alpha)
    gains = [K0.copy()]  # reference: the gain of every version
    pending = [m.ask(w) for w in range(W)]
    dropped = 0
    for _ in range(200):
        t = pending.pop(int(rng.integers(len(pending))))
        g = rng.standard_normal((2, 2))
        assert np.array_equal(t.K, gains[t.version])
        m.tell(estimate(t, g))
        d = len(gains) - 1 - t.version
        assert m.observer.history[-1].delay == d
        if d > D:
            dropped += 1
            assert m.observer.history[-1].event == "drop"
        else:
            step = alpha / (1.0 + d / W) if staleness == "inverse" else alpha
            gains.append(gains[-1] - step * g)
            assert m.observer.history[-1].event == "update"
        assert m.version == len(gains) - 1
        assert np.array_equal(m.K, gains[-1])
        # usually the worker gets a new task at once; sometimes it lingers (creates stale tasks)
        pending.append(m.ask(t.worker))
        if rng.random() < 0.2:
            pending.append(m.ask(int(rng.integers(W))))
    assert m.stats.dropped == dropped
    assert m.tuning.alpha == alpha  # no checks happened
    if W > 1:
        assert any(h.delay > 0 for h in m.observer.history if h.event == "update")


def test_inverse_staleness_step():
    rng = np.random.default_rng(1)
    K0 = rng.standard_normal((1, 3))
    W, alpha = 4, 0.2
    m = hand_master(K0, W=W, max_delay=10, staleness="inverse", step=alpha)
    old = m.ask(0)  # reads version 0
    for w in (1, 2, 3):
        m.tell(estimate(m.ask(w), rng.standard_normal((1, 3))))
    K = m.K.copy()
    g = rng.standard_normal((1, 3))
    m.tell(estimate(old, g))  # delay 3
    assert m.observer.history[-1].delay == 3
    np.testing.assert_array_equal(m.K, K - alpha / (1 + 3 / W) * g)
    np.testing.assert_allclose(m.K, K - (alpha * 4 / 7) * g, rtol=1e-15, atol=1e-15)
    assert m.tuning.alpha == alpha  # the logged step is the base step


def test_master_rollback_drops_pre_rollback_estimates():
    rng = np.random.default_rng(2)
    K0 = rng.standard_normal((2, 3))
    m = hand_master(K0, W=2, max_delay=10, step=0.1)
    m.tell(estimate(m.ask(0), rng.standard_normal((2, 3))))  # version 1
    chk = m.issue(1, "evaluate")
    assert chk.kind == "evaluate" and chk.version == 1 and np.array_equal(chk.K, m.K)
    m.tell(evaluation(chk, cost=5.0))
    assert m.observer.history[-1].event == "check-accept"
    K_anchor, alpha1 = m.K.copy(), m.tuning.alpha
    g = m.safeguards
    assert np.array_equal(g.anchor_K, K_anchor) and g.anchor_version == 1 and g.anchor_cost == 5.0
    assert 0.1 <= alpha1 <= 0.1 * 1.2  # grown (a little: one update of a 10**6 interval)
    c = m.ask(1)  # reads version 1
    m.tell(estimate(m.ask(0), rng.standard_normal((2, 3))))  # version 2
    chk2 = m.issue(0, "evaluate")
    stale = m.ask(1)  # reads version 2, the branch about to be rolled back
    m.tell(evaluation(chk2, cost=6.0))  # worse than the anchor: roll back
    row = m.observer.history[-1]
    assert (row.event, row.delay, row.version_read) == ("check-reject", 1, 2)
    assert m.version == 3 and np.array_equal(m.K, K_anchor)
    assert m.tuning.alpha == alpha1 * 0.5 and m.stats.rollbacks == m.stats.rejected == 1
    for t in (stale, c):  # delays 1 and 2 are allowed, but both read a discarded branch
        m.tell(estimate(t, rng.standard_normal((2, 3))))
        assert m.observer.history[-1].event == "drop"
        assert np.array_equal(m.K, K_anchor) and m.version == 3
    assert m.stats.dropped == 2
    g = rng.standard_normal((2, 3))
    m.tell(estimate(m.ask(0), g))
    assert m.observer.history[-1].event == "update"
    assert np.array_equal(m.K, K_anchor - (alpha1 * 0.5) * g)


def test_master_blown_up_estimates():
    rng = np.random.default_rng(3)
    K0 = rng.standard_normal((2, 3))
    m = hand_master(K0, W=2, max_delay=10, step=0.1)
    r0 = m.tuning.r
    # at the anchor (version 0): the perturbations were too big
    m.tell(estimate(m.ask(0), np.zeros((2, 3)), center_cost=float("inf")))
    assert m.observer.history[-1].event == "shrink-r" and m.tuning.r == 0.5 * r0
    assert m.version == 0 and np.array_equal(m.K, K0)
    m.tell(estimate(m.ask(0), rng.standard_normal((2, 3))))  # version 1
    m.tell(estimate(m.ask(0), np.zeros((2, 3)), center_cost=float("inf")))
    assert m.observer.history[-1].event == "rollback-blowup"
    assert m.version == 2 and np.array_equal(m.K, K0) and m.tuning.alpha == 0.05 and m.stats.rollbacks == 1


@pytest.mark.parametrize("W", [1, 3, 32])
def test_oracle_samples_every_wth_update_then_a_bounded_fraction_of_a_long_run(W, monkeypatch):
    from azopg.method.kinds import Event, EventRecord
    from azopg.run import history

    monkeypatch.setattr(history, "MONITOR_SPAN", 16)
    seen: list[int] = []

    def monitor(K):
        seen.append(log.updates)
        return 1.0, 1.0, 1.0

    log = RunLog(monitor, lambda: 0.0, W)
    K, last = np.zeros((1, 1)), 40 * 16 * W
    for u in range(1, last + 1):  # two rollouts per update (a two-point estimate of one direction)
        log.event(EventRecord(Event.UPDATE, K, u, u, 2 * u, 0.1, 0, 0, u - 1))
    log.event(EventRecord(Event.DROP, K, last, last, 2 * last, 0.1, 50, 0, last - 50))  # any other event: always
    assert seen[-2:] == [last, last]
    updates = seen[:-1]
    stride = [history.monitor_stride(u, W) for u in range(1, last + 1)]
    # every stride-th update, and every update while its 2 rollouts are at least a quarter stride (rare updates)
    assert updates == [u for u, s in enumerate(stride, 1) if u % s == 0 or 4 * 2 >= s]
    assert all(s % W == 0 for s in stride) and stride[: 16 * W] == [W] * (16 * W)
    # a target is seen at most 1 / MONITOR_SPAN of the run late, and never coarser than every W-th update
    assert all(g <= max(W, u / 16) for g, u in zip(np.diff([0, *updates]), updates, strict=True))
    if W == 32:  # never rare: 15 calls below MONITOR_SPAN W, 16 per doubling up to 32 MONITOR_SPAN W, then 5
        assert len(updates) == 15 + 5 * 16 + 5 <= 16 * (1 + math.log2(40)) + 1  # where every W-th would be 640
    assert len(updates) <= sum(s <= 8 for s in stride) + 16 * (1 + math.log2(40)) + 1
