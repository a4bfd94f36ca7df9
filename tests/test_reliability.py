"""Faults a long run meets: workers killed or hung, signals, a killed master, a faulty plant, bad input.

Each test injects the fault for real (SIGKILL, a plant that sleeps forever, SIGTERM to the
command line ...) and checks that the run still reaches its target -- or ends cleanly
with a clear status or message -- and that no process outlives it. The /proc helpers
come from ``test_lifecycle``; misbehaving plants from ``_faulty`` (imported by name in
the fork server's workers).
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
from dataclasses import astuple

import numpy as np
import pytest

import azopg
from _faulty import FaultyFactory, ensure_importable
from _support import Interrupter
from azopg.engine.executor import WorkerError
from azopg.engine.inflight import DEADLINE_SCAN, MIN_TIMEOUT, TaskTimer
from azopg.method.azopg import AZOPG
from azopg.method.tasks import Report, run_task
from azopg.run.history import RunLog
from azopg.run.output import write_run
from azopg.run.replay import replay_run
from azopg.settings import Settings
from test_lifecycle import (
    ENDLESS,
    checkpoint_updates,
    grandchildren,
    living,
    proc_table,
    session_processes,
    still_alive,
    wait_for,
)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
ensure_importable()


def worker_procs() -> dict[str, int]:
    """Worker name -> pid, for the workers of runs inside this process."""
    return {p.name: p.pid for p in mp.active_children() if p.name.startswith("azopg-worker-")}


def assert_no_workers_left(seen: set[tuple[int, int]]) -> None:
    assert not still_alive(seen)
    assert not {p for p in mp.active_children() if p.name.startswith("azopg-worker-")}
    assert not grandchildren(os.getpid(), living(proc_table()))


def lost_events(res):
    return [h for h in res.history if h.event == "worker-lost"]


def lost_task_ids(caplog) -> set[int]:
    ids = set()
    for rec in caplog.records:
        if rec.name != "azopg":
            continue
        ids |= {int(t) for t in re.findall(r"task (\d+)", rec.getMessage().split(";")[1])}
    return ids


class Killer:
    """Progress callback: on its ``at``-th call SIGKILLs worker ``worker``; records every worker process seen."""

    def __init__(self, at: int = 3, worker: int = 1) -> None:
        self.calls, self.at, self.name = 0, at, f"azopg-worker-{worker}"
        self.killed: int | None = None
        self.seen: set[tuple[int, int]] = set()
        self.names: dict[int, str] = {}

    def __call__(self, master) -> None:
        self.calls += 1
        self.seen |= grandchildren(os.getpid(), living(proc_table()))
        self.names.update({pid: name for name, pid in worker_procs().items()})
        if self.calls == self.at:
            self.killed = worker_procs()[self.name]
            os.kill(self.killed, signal.SIGKILL)


# ---------------------------------------------------------------- worker crash

def test_sigkilled_worker_is_replaced_and_the_run_reaches_its_target(chain3, fixed, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="azopg")
    killer = Killer(at=3, worker=1)  # at the 3rd report (progress after every report)
    # ~2500 rollouts to 1e-2: at 2 ms, > 2 s of the other workers' sleeping after the kill, on any machine,
    # for the replacement to start and contribute
    res = azopg.train(chain3, backend="async", workers=3, seed=1, target_gap=1e-2, max_time=60,
                      rollout_latency=0.002, progress=killer, **fixed)
    assert res.status == "converged" and chain3.relative_gap(res.K) <= 1e-2
    assert killer.killed is not None
    # noticed and logged: which worker, when
    assert res.stats["workers_replaced"] == 1
    (row,) = lost_events(res)
    assert row.worker == 1 and 0 < row.time_s < res.wall_time_s
    (rec,) = [r for r in caplog.records if "worker 1" in r.getMessage()]
    assert rec.levelno == logging.WARNING
    assert f"pid {killer.killed}" in rec.getMessage() and "died (exit code -9)" in rec.getMessage()
    # replaced by a fresh process with the same worker id, which then contributed
    replacements = [pid for pid, name in killer.names.items() if name == "azopg-worker-1" and pid != killer.killed]
    assert len(replacements) == 1
    assert any(h.worker == 1 and h.time_s > row.time_s for h in res.history if h.event == "update")
    # the lost task never arrives and nothing is applied twice
    lost = lost_task_ids(caplog)
    assert len(lost) == res.stats["tasks_lost"] <= 1
    ids = [a[0] for a in res.arrivals]
    assert len(ids) == len(set(ids)) and not lost & set(ids)
    assert sum(h.event == "update" for h in res.history) == res.updates - res.history[0].update
    assert_no_workers_left(killer.seen)
    # the arrival log still replays the run exactly
    write_run(tmp_path, res, plot=False)
    K, K_recorded, _ = replay_run(tmp_path)
    assert np.array_equal(K, K_recorded)


def test_worker_killed_during_calibration_redoes_its_task(chain3, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="azopg")
    # the reference on the same plant wrapper, which never fails: it is not the exact linear plant (no interval
    # snapshots), so the default rule and its calibration differ from those of the linear plant
    reference = azopg.train(chain3, backend="serial", seed=2, target_gap=None, max_updates=1, snapshots=1,
                            plant_factory=FaultyFactory(chain3, "die", 10**9))
    res = azopg.train(chain3, backend="async", workers=2, seed=2, target_gap=1e-2, max_time=60, snapshots=1,
                      plant_factory=FaultyFactory(chain3, "die", 7, str(tmp_path / "died")))
    assert res.status == "converged"
    assert res.stats["workers_replaced"] == 1 and res.stats["tasks_lost"] == 0  # re-sent, not lost
    assert "worker 0" in caplog.text and "no task lost" in caplog.text
    # the calibration task was re-sent as is: the calibration is the one of an undisturbed run
    assert res.settings["r"] == reference.settings["r"] and res.settings["tau"] == reference.settings["tau"]
    assert not grandchildren(os.getpid(), living(proc_table()))


# ----------------------------------------------------------------- worker hang

@pytest.mark.parametrize("backend", ["async", "sync"])
def test_hung_worker_is_abandoned_killed_and_replaced(chain3, fixed, tmp_path, caplog, backend):
    caplog.set_level(logging.WARNING, logger="azopg")
    spy = Killer(at=10**9)
    # 1 ms per rollout: the run sleeps seconds in rollouts alone, the hang (on worker 1's third rollout) is
    # abandoned after 0.5 s; converged within max_time = 60 s, the run cannot have waited for the hour's hang
    res = azopg.train(chain3, backend=backend, workers=2, seed=1, target_gap=5e-2, max_time=60,
                      task_timeout=0.5, progress=spy, rollout_latency=0.001,
                      plant_factory=FaultyFactory(chain3, "hang", 3, str(tmp_path / "hung")), **fixed)
    assert (tmp_path / "hung").exists()  # a worker did hang (for an hour)
    assert res.status == "converged" and res.wall_time_s < 60
    assert res.stats["workers_replaced"] == 1
    (row,) = lost_events(res)
    assert row.worker != 0
    msg = next(r.getMessage() for r in caplog.records if "timed out" in r.getMessage())
    assert "timeout 0.5 s" in msg
    hung_pid = int(re.search(r"\(pid (\d+)\)", msg).group(1))
    assert hung_pid not in living(proc_table())  # killed, not left sleeping
    assert_no_workers_left(spy.seen)


def test_default_task_timeout_follows_the_median_task_time(chain3):
    timer = TaskTimer()
    m = AZOPG(np.array(chain3.K0), Settings(method="two-point", tau=1.0, r=1e-3, step=1e-3, batch=3))
    task = m.ask(0)  # an estimate: 2N = 6 rollouts
    assert timer.timeout_for(task) is None  # nothing observed yet: no timeout
    for seconds in (0.01, 0.01):
        timer.observe(seconds)
    assert timer.timeout_for(task) is None
    timer.observe(0.5)  # median of three per-rollout times: 0.01 s
    assert timer.timeout_for(task) == MIN_TIMEOUT  # 10 x 0.01 s x 6 rollouts < 5 s
    for seconds in (1.0, 1.0, 1.0):  # median 0.75 s per rollout
        timer.observe(seconds)
    assert timer.timeout_for(task) == pytest.approx(10 * 0.75 * 6)
    assert timer.timeout_for(task, m.ask(0)) == pytest.approx(10 * 0.75 * 12)  # a call of two tasks: both run
    assert TaskTimer(task_timeout=2.5).timeout_for(task) == 2.5
    assert TaskTimer(task_timeout=2.5).timeout_for(task, task) == 2.5  # a given timeout bounds the whole call
    assert TaskTimer(task_timeout=0.5).scan_period == pytest.approx(0.05) and timer.scan_period == DEADLINE_SCAN


def test_report_of_an_abandoned_task_is_ignored(chain3):
    m = AZOPG(np.array(chain3.K0), Settings(method="two-point", tau=1.0, r=1e-3, step=1e-3, check_every=10**6,
                                            workers=2), observer=RunLog(None, lambda: 0.0, 2))
    slow, fast = m.ask(0), m.ask(1)
    m.worker_lost(0, [slow])
    assert m.observer.history[-1].event == "worker-lost" and m.observer.history[-1].worker == 0
    K = m.K.copy()
    m.tell(Report(slow.task_id, 0, "estimate", slow.version, 6, 0, grad=np.ones_like(K), center_cost=1.0))
    assert np.array_equal(m.K, K) and m.stats.updates == 0 and m.observer.arrivals == []
    assert m.stats.ignored_reports == 1
    m.tell(Report(fast.task_id, 1, "estimate", fast.version, 6, 0, grad=np.ones_like(K), center_cost=1.0))
    assert m.stats.updates == 1 and [a[0] for a in m.observer.arrivals] == [fast.task_id]
    m.tell(Report(fast.task_id, 1, "estimate", fast.version, 6, 0, grad=np.ones_like(K), center_cost=1.0))
    assert m.stats.updates == 1 and m.stats.ignored_reports == 2  # never applied twice


# ------------------------------------------------------------- faulty plants

def test_plant_that_raises_in_a_worker_stops_the_run_with_its_error(chain3, tmp_path):
    spy = Killer(at=10**9)
    with pytest.raises(WorkerError, match="actuator driver crashed"):
        azopg.train(chain3, backend="async", workers=2, seed=0, target_gap=1e-3, max_time=60, progress=spy,
                    plant_factory=FaultyFactory(chain3, "raise", 30, str(tmp_path / "raised")))
    assert_no_workers_left(spy.seen)


def test_rare_non_finite_costs_are_survived(chain3, fixed):
    # every 50th rollout batch returns NaN costs, not flagged: treated as blown up
    res = azopg.train(chain3, backend="serial", seed=1, target_gap=1e-2, max_time=60,
                      plant_factory=FaultyFactory(chain3, "nan", 50), **fixed)
    assert res.status == "converged" and np.all(np.isfinite(res.K))
    assert res.stats["rollbacks"] > 0


@pytest.mark.parametrize("backend", ["serial", "async"])
def test_plant_whose_rollouts_all_blow_up_ends_with_a_gain_no_worse_than_K0(chain3, backend):
    spy = Killer(at=10**9)
    # a budget of rollouts, not of 2 s: how far 2 s get (through the calibration?) depends on the machine
    res = azopg.train(chain3, backend=backend, workers=1, seed=1, target_gap=1e-3, max_time=60, max_rollouts=1000,
                      progress=spy, plant_factory=FaultyFactory(chain3, "blowup", 60))
    assert res.status == "max_rollouts"
    assert np.all(np.isfinite(res.K)) and chain3.cost(res.K) <= chain3.cost(chain3.K0)
    assert res.stats["rollbacks"] + sum(h.event == "shrink-r" for h in res.history) > 0
    assert_no_workers_left(spy.seen)


def test_rollouts_of_K0_blowing_up_is_a_clear_error(chain3):
    with pytest.raises(azopg.NotStabilizingError, match="K0"):
        azopg.train(chain3, backend="serial", seed=1, max_time=5, plant_factory=FaultyFactory(chain3, "blowup", 1))


# --------------------------------------------------------------- noisy plant

def test_noisy_plant_reaches_a_neighbourhood_of_the_optimum(chain3):
    kw = {"backend": "simulated", "workers": 2, "target_gap": 2e-2, "max_updates": 3000, "cost_noise": 1e-3}
    res = azopg.train(chain3, seed=0, **kw)
    assert res.status == "converged" and chain3.relative_gap(res.K) <= 2e-2
    # under noise policy iteration fits whole rollouts: its radius against the noise-free one of the same fit
    # (perturbations whose second-order cost is NOISE_SMOOTHING * 1e-3 = 3 % of the cost, not 1 %: sqrt(3) larger)
    exact = azopg.train(chain3, seed=0, **{**kw, "cost_noise": 0.0, "snapshots": 1})
    assert res.settings["r"] > 1.5 * exact.settings["r"]
    again = azopg.train(chain3, seed=0, **kw)  # the noise comes from each task's own stream
    assert np.array_equal(res.K, again.K)


def test_noisy_run_replays_exactly(chain3, tmp_path):
    res = azopg.train(chain3, backend="async", workers=2, seed=1, target_gap=None, max_updates=40, cost_noise=1e-3)
    write_run(tmp_path, res, plot=False)
    K, K_recorded, _ = replay_run(tmp_path)
    assert np.array_equal(K, K_recorded)


def test_noisy_measurements_are_unbiased_and_of_the_given_size(chain3):
    from azopg.method.tasks import NoisyCosts

    plant = azopg.LinearPlant(chain3)
    x0 = plant.initial_states(np.random.default_rng(0), 4000)
    exact = plant.rollout(chain3.K0, x0, 20.0).cost
    noisy = NoisyCosts(plant, 0.01, np.random.default_rng(1)).rollout(chain3.K0, x0, 20.0).cost
    ratio = noisy / exact - 1.0
    assert abs(ratio.mean()) < 4 * 0.01 / np.sqrt(4000)
    assert 0.009 < ratio.std() < 0.011


# --------------------------------------------------- checkpoints, Python API

def test_checkpoint_and_resume_in_python(chain3, tmp_path):
    out = tmp_path / "run"
    first = azopg.train(chain3, method="two-point", seed=3, target_gap=1e-3, max_time=60, out_dir=out,
                        progress=Interrupter(3))
    assert first.status == "interrupted" and first.updates > 0
    ckpt = json.loads((out / "checkpoint.json").read_text())
    assert ckpt["status"] == "interrupted" and ckpt["master"]["updates"] == first.updates
    assert ckpt["history_rows"] == len(first.history)
    with open(out / "history.csv", newline="") as fh:  # appended during the run
        assert len(list(csv.reader(fh))) == 1 + len(first.history)
    res = azopg.resume(out)
    assert res.status == "converged" and chain3.relative_gap(res.K) <= 1e-3
    assert res.updates > first.updates and res.stats["resumes"] == 1
    assert [repr(astuple(h)) for h in res.history[: len(first.history)]] == \
           [repr(astuple(h)) for h in first.history]  # the whole run's history
    events = [h.event for h in res.history]
    assert events.count("calibrate") == 1 and events.count("resume") == 1
    updates = [h.update for h in res.history]
    assert updates == sorted(updates) and [h.time_s for h in res.history] == sorted(h.time_s for h in res.history)
    assert res.settings["tau"] == first.settings["tau"] and res.settings["r"] == first.settings["r"]
    write_run(out, res, plot=False)
    with pytest.raises(azopg.SettingsError, match="resumed"):
        replay_run(out)
    with pytest.raises(azopg.RunFinished, match="converged"):
        azopg.resume(out)


def test_master_state_round_trip(chain3):
    s = Settings(seed=0, method="two-point")
    a = AZOPG(np.array(chain3.K0), s)
    plant = azopg.LinearPlant(chain3)
    a.calibrate(lambda task: run_task(plant, task))
    state = json.loads(json.dumps(a.state_dict(), allow_nan=False))
    b = AZOPG(np.array(chain3.K0), s)
    b.load_state(state)
    assert b.state_dict() == a.state_dict()
    assert (a.tuning, a.stats) == (b.tuning, b.stats)
    assert np.array_equal(a.K, b.K) and np.array_equal(a.safeguards.anchor_K, b.safeguards.anchor_K)
    assert b.ask(0).task_id == a.stats.tasks + 1


# ------------------------------------------------------------- command line

def cli_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def start_cli(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "azopg", *args], cwd=cwd, env=cli_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "azopg", *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


#: A run to 1e-2 of chain3 with the fixed settings and 3 workers takes ~2500 rollouts: at 5 ms each, more
#: than 4 s of the workers' sleeping alone, on any machine however fast, while its first checkpoint with
#: updates comes ~1 s in (checkpoint.INTERVAL). A test that acts on the running CLI after that checkpoint
#: acts seconds before the run can end (at 2 ms, 1.7 s: a fast machine's run could end first).
REACHABLE = ("--target-gap", "1e-2")


def train_args(out, fixed, workers=3, latency="0.005", target=("--target-gap", "1e-3")):
    return ["train", "-W", str(workers), "--rollout-latency", latency, "--max-time", "60", *target,
            "--out", str(out), "--quiet", "--tau", repr(fixed["tau"]), "--r", repr(fixed["r"]),
            "--step", repr(fixed["step"]), "--method", "two-point"]  # the rule the fixed settings were calibrated for


def finish(proc, timeout=60):
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_cli_cleanly(tmp_path, fixed, sig, code):
    out = tmp_path / "run"
    proc = start_cli(train_args(out, fixed, latency="0.01", target=ENDLESS), tmp_path)  # only the signal stops it
    workers = wait_for(proc, lambda: len(grandchildren(proc.pid, living(proc_table()))) >= 3
                       and grandchildren(proc.pid, living(proc_table())), "3 workers")
    wait_for(proc, lambda: checkpoint_updates(out) > 0, "a first checkpoint")
    proc.send_signal(sig)
    stdout, stderr = finish(proc)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "interrupted" in stdout
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "interrupted" and res["updates"] > 0
    assert json.loads((out / "checkpoint.json").read_text())["status"] == "interrupted"
    assert not still_alive(workers)
    assert not session_processes(proc.pid)


def test_sigkilled_master_resumes_to_its_target(tmp_path, fixed):
    out = tmp_path / "run"
    proc = start_cli(train_args(out, fixed, target=REACHABLE), tmp_path)
    workers = wait_for(proc, lambda: checkpoint_updates(out) >= 30 and grandchildren(proc.pid, living(proc_table())),
                       "a checkpoint with 30 updates")
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not still_alive(workers, timeout=10.0)
    assert not session_processes(proc.pid, timeout=10.0)
    assert not (out / "result.json").exists()
    before = json.loads((out / "checkpoint.json").read_text())
    assert before["status"] == "running"
    # the usable directory a killed master leaves: logs at least as long as the checkpoint says
    with open(out / "history.csv", newline="") as fh:
        assert len(list(csv.reader(fh))) >= 1 + before["history_rows"]

    resumed = start_cli(["train", "--resume", str(out), "--quiet"], tmp_path)
    stdout, stderr = finish(resumed, timeout=90)
    assert resumed.returncode == 0, stderr
    assert "converged" in stdout
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "converged" and res["relative_gap"] <= 1e-2
    assert res["updates"] > before["master"]["updates"] and res["stats"]["resumes"] == 1
    assert res["settings"]["tau"] == fixed["tau"]
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["event"] for r in rows].count("resume") == 1
    numbers = [int(r["update"]) for r in rows]
    assert numbers == sorted(numbers) and numbers[-1] == res["updates"]
    with open(out / "arrivals.csv", newline="") as fh:
        ids = [int(r["task_id"]) for r in csv.DictReader(fh)]
    assert len(ids) == len(set(ids))
    assert not session_processes(resumed.pid)

    again = run_cli(["train", "--resume", str(out)], tmp_path)
    assert again.returncode == 0 and "already finished" in again.stdout, again.stderr
    replay = run_cli(["replay", str(out)], tmp_path)
    assert replay.returncode == 2 and "resumed" in replay.stderr and len(replay.stderr.splitlines()) == 1


def test_cli_survives_a_sigkilled_worker(tmp_path, fixed):
    out = tmp_path / "run"
    proc = start_cli(train_args(out, fixed, target=REACHABLE), tmp_path)
    workers = wait_for(proc, lambda: checkpoint_updates(out) > 0 and grandchildren(proc.pid, living(proc_table())),
                       "the first updates")
    victim = sorted(workers)[1]
    os.kill(victim[0], signal.SIGKILL)
    stdout, stderr = finish(proc)
    assert proc.returncode == 0, stderr
    assert "converged" in stdout
    (line,) = [ln for ln in stderr.splitlines() if "worker" in ln]
    assert f"(pid {victim[0]}) died" in line and "restarted as pid" in line
    res = json.loads((out / "result.json").read_text())
    assert res["stats"]["workers_replaced"] == 1
    assert not session_processes(proc.pid)


def assert_one_line_error(proc, words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("azopg: error:"), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


BAD_INPUT = [
    (["--workers", "0"], ["--workers", "0"]),
    (["--workers", "-2", "--backend", "async"], ["--workers", "-2"]),
    (["--r", "0"], ["--r", "0"]),
    (["--tau", "-1"], ["--tau", "-1"]),
    (["--tau", "nan"], ["--tau", "nan"]),
    (["--rollout-latency", "-0.1"], ["--rollout-latency", "-0.1"]),
    (["--rollout-latency", "nan"], ["--rollout-latency", "nan"]),
    (["--task-timeout", "0"], ["--task-timeout", "0"]),
    (["--task-timeout", "-5"], ["--task-timeout", "-5"]),
    (["--backend", "threads"], ["--backend", "threads"]),
    (["--problem", "chain0x"], ["--problem", "chain0x"]),
    (["--resume", "nowhere"], ["--resume", "nowhere"]),
    (["--resume", "not-a-run"], ["--resume", "not-a-run"]),
    (["--resume", "a_file"], ["--resume", "a_file"]),
    (["--out", "a_file"], ["--out", "a_file"]),
    (["--cost-noise", "-0.1"], ["--cost-noise", "-0.1"]),
    (["--max-time", "-3"], ["--max-time", "-3"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_INPUT, ids=[" ".join(args) for args, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "not-a-run" / "history.csv").write_text("hello\n")
    (tmp_path / "a_file").write_text("I am a file\n")
    proc = run_cli(["train", "--quiet", *args], tmp_path)
    assert_one_line_error(proc, words)
    assert not (tmp_path / "azopg-run").exists()
