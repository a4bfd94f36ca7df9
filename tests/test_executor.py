"""The executor contract: the backend table, the one backend rule, the clock, and a worker
process lost under :meth:`run` (the in-flight bookkeeping shared with the Ray executor)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import azopg
from _faulty import FaultyFactory, ensure_importable
from azopg.engine.backends import (
    BACKENDS,
    SerialExecutor,
    SimulatedExecutor,
    check_backend,
    executor_kind,
    loop_policy,
    make_executor,
)
from azopg.engine.executor import ExecutorOptions, WorkerLoss
from azopg.engine.processes import ProcessExecutor
from azopg.method.azopg import AZOPG
from azopg.method.tasks import run_task
from azopg.settings import Settings


def test_backend_names_map_to_an_executor_and_a_loop():
    assert {name for name in BACKENDS if loop_policy(name) == "sync"} == {"sync", "simulated-sync"}
    assert executor_kind("sync") == executor_kind("async") == "processes"
    assert executor_kind("simulated-sync") == executor_kind("simulated") == "simulated"
    assert isinstance(make_executor("simulated-sync", lambda: None, 3), SimulatedExecutor)
    assert isinstance(make_executor("sync", lambda: None, 3), ProcessExecutor)  # not started: no process
    assert isinstance(make_executor("serial", lambda: None, 1), SerialExecutor)


@pytest.mark.parametrize(("name", "workers", "address", "message"), [
    ("threads", 2, None, "backend 'threads': unknown backend (choose from serial, async, sync, simulated, "
                         "simulated-sync, ray)"),
    ("serial", 2, None, "workers 2: the serial backend has exactly one worker"),
    ("async", 2, "127.0.0.1:6379", "ray_address '127.0.0.1:6379': only with the ray backend"),
])
def test_check_backend_is_the_one_backend_rule(chain3, name, workers, address, message):
    with pytest.raises(azopg.SettingsError) as err:
        check_backend(name, workers, address)
    assert str(err.value) == message
    with pytest.raises(azopg.SettingsError) as err:  # train refuses with the same words
        azopg.train(chain3, backend=name, workers=workers, ray_address=address, max_updates=1)
    assert str(err.value) == message
    for ask in (executor_kind, loop_policy):
        if name not in BACKENDS:
            with pytest.raises(azopg.SettingsError):
                ask(name)


def test_options_reach_the_simulated_executor(chain3):
    s = Settings(seed=7, rollout_latency=0.25, latency_model="pareto", task_timeout=3.0)
    opts = ExecutorOptions.of(s)
    sim = make_executor("simulated", lambda: None, 2, opts)
    assert (sim.per_rollout, sim.model, sim.seed) == (0.25, "pareto", 7)
    assert ExecutorOptions.of(Settings()).per_rollout == 0.01  # no latency given: 10 ms per virtual rollout


def test_clock_origin_and_defaults(chain3):
    master = AZOPG(np.array(chain3.K0), Settings(method="two-point", tau=1.0, r=1e-3, step=1e-3, batch=2))
    sim = SimulatedExecutor(lambda: azopg.LinearPlant(chain3), 2, per_rollout=0.5)
    sim.set_clock(12.5)  # a resumed run's virtual clock continues where it stopped
    assert sim.clock() == 12.5
    sim.start()
    rep = sim.run(master.ask(0))
    assert sim.clock() == pytest.approx(12.5 + 0.5 * rep.rollouts)  # constant latency model: factor 1
    serial = SerialExecutor(lambda: azopg.LinearPlant(chain3))
    serial.set_clock(100.0)
    assert serial.clock() >= 100.0  # wall clock, started at 100 s
    for ex in (sim, serial):
        assert ex.on_lost is None and ex.idle_workers() == []


def test_worker_lost_under_run_is_replaced_and_the_task_sent_again(chain3, tmp_path):
    """Worker 0 kills itself on its first rollout: run() gets the report from its replacement
    (the same report as in this process), on_lost hears of the loss with no task abandoned."""
    ensure_importable()
    master = AZOPG(np.array(chain3.K0), Settings(method="two-point", tau=1.0, r=1e-3, step=1e-3, batch=2, seed=4))
    ex = ProcessExecutor(FaultyFactory(chain3, "die", 1, str(tmp_path / "died")), 2)
    losses: list[WorkerLoss] = []
    ex.on_lost = losses.append
    try:
        ex.start()
        task = master.ask(0)
        rep = ex.run(task)
        (loss,) = losses
        assert loss.worker == 0 and loss.tasks == [] and "died" in loss.reason
        assert loss.new_pid is not None and loss.new_pid != loss.pid
        assert np.array_equal(rep.grad, run_task(azopg.LinearPlant(chain3), task).grad)
        assert ex.idle_workers() == [0, 1]
        other = master.ask(1)
        ex.submit(other)
        assert ex.idle_workers() == [0]
        got = ex.next_report(timeout=60)
        assert got is not None and got.task_id == other.task_id
        assert ex.idle_workers() == [0, 1]
    finally:
        ex.close()


def test_a_serial_run_builds_its_plant_once() -> None:
    # the master's questions to the plant (auto, deterministic, moments) and the serial worker share one plant
    problem = azopg.get_problem("he1")
    built = []

    def factory() -> azopg.LinearPlant:
        built.append(1)
        return azopg.LinearPlant(problem)

    azopg.train(factory(), K0=problem.K0, plant_factory=factory, max_rollouts=300)
    assert len(built) == 2  # the one passed in, and the run's own


def test_serial_executor_does_not_start_a_task_predicted_to_end_past_the_budget(monkeypatch) -> None:
    # a fake clock and sleep: the verdict depends on the recorded pace and the budget only, never on the machine
    from azopg.engine import backends
    from azopg.method.kinds import TaskKind
    from azopg.method.lifecycle import OVERRUN, PACE_MARGIN

    problem = azopg.get_problem("he1")
    ex = SerialExecutor(lambda: azopg.LinearPlant(problem))
    ex.start()
    now, slept = [0.0], []
    monkeypatch.setattr(ex, "clock", lambda: now[0])
    monkeypatch.setattr(backends.time, "sleep", slept.append)
    ex.budget = 10.0
    rule = AZOPG(np.asarray(problem.K0), Settings(seed=0, tau=2.0))
    task = rule.issue(0, TaskKind.EVALUATE)
    late = 10.0 + OVERRUN - PACE_MARGIN * task.tau  # the latest start whose predicted end is within the budget
    # a check of twice the pairs (the batch doubled under noise) is predicted to take twice as long
    bigger = dataclasses.replace(task, pairs=2 * task.size)
    for reserve, start, runs, t in [(0.0, late + 0.01, False, task), (0.0, late - 0.01, True, task),
                                    (1.0, late - 0.01, False, task), (0.0, late - 0.01, False, bigger),
                                    (0.0, late - PACE_MARGIN * task.tau - 0.01, True, bigger)]:
        # one second per unit of horizon for `task` (the fake clock records 0 after a run)
        ex.pace[TaskKind.EVALUATE] = 1.0 / task.size
        ex.reserve = lambda reserve=reserve: reserve  # seconds kept for a closing measurement
        ex.submit(t)
        now[0] = start
        rep = ex.next_report()
        assert (rep is not None) == runs
        if not runs:  # the executor waits out what is left of the budget (less the reserve), then reports nothing
            assert slept.pop() == pytest.approx(10.0 - reserve - start)
            ex.close()
    assert not slept


def test_a_signal_during_a_worker_start_waits_for_it_and_workers_stay_terminable(chain3):
    """SIGTERM handled while a worker was being started (between the fork server's connect and the
    write of the process's data) left the child reading end of file: a traceback on the user's
    terminal. Signals are now held during the start and delivered right after it; the workers do not
    inherit the held mask (SIGTERM is not blocked in them, so ``terminate`` still stops them)."""
    import os
    import signal

    from azopg.engine.processes import _signals_held

    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: seen.append(sig))
    try:
        with _signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []  # held
        assert seen == [signal.SIGTERM]  # delivered at once after
    finally:
        signal.signal(signal.SIGTERM, previous)
    from functools import partial

    ex = ProcessExecutor(partial(azopg.LinearPlant, chain3), 1)
    try:
        ex.start()
        pid = ex._procs[0].pid
        with open(f"/proc/{pid}/status") as f:
            blocked = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
        assert not blocked & (1 << (signal.SIGTERM - 1))
    finally:
        ex.close()


def test_worker_processes_account_for_what_travels_and_their_cpu(chain3):
    """``result.json`` stats of worker processes: every rollout the run counts was received (a report that
    arrived as the run stopped may not have been told), a report's pickled bytes at least its numerical
    payload, an idle fraction in [0, 1]; the simulated backend has none."""
    res = azopg.train(chain3, method="policy-iteration", backend="async", workers=2, seed=1, target_gap=1e-6,
                      rollout_latency=0.0005, max_time=120)
    st = res.stats
    assert st["worker_rollouts"] >= res.rollouts > 0
    assert st["bytes_per_report"] * st["worker_reports"] >= st["bytes_received"] > 0
    assert st["bytes_per_task"] > 0 and st["worker_cpu_s_per_rollout"] > 0
    assert 0.0 <= st["worker_idle_fraction"] <= 1.0 and st["worker_start_s"] > 0 and st["worker_stop_s"] > 0
    assert st["worker_all_busy_s"] >= 0
    sim = azopg.train(chain3, method="policy-iteration", backend="simulated", workers=2, seed=1, target_gap=1e-6)
    assert "worker_rollouts" not in sim.stats
