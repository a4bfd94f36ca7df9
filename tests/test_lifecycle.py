"""Worker processes never outlive a run: normal end, an exception, SIGINT, SIGKILL.

Processes are found in ``/proc`` (Linux), by parentage for runs inside this test
process and by session id for the command line, which is started in a session of its
own. A process counts as alive unless it is gone or a zombie (already dead, waiting
for a parent to reap it).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import azopg
from azopg.run.output import write_run
from azopg.run.replay import replay_run

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")


def proc_table() -> dict[int, tuple[int, int, str, int]]:
    """pid -> (parent pid, session id, state, start time) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                data = fh.read()
        except OSError:
            continue  # exited meanwhile
        fields = data[data.rindex(")") + 2:].split()  # fields 3.. of proc(5); comm may hold spaces
        table[int(entry)] = (int(fields[1]), int(fields[3]), fields[0], int(fields[19]))
    return table


def living(table):
    return {pid: v for pid, v in table.items() if v[2] not in ("Z", "X")}


def grandchildren(pid: int, table) -> set[tuple[int, int]]:
    """(pid, start time) of the children of the children of ``pid`` (the fork server's workers)."""
    children = {p for p, v in table.items() if v[0] == pid}
    return {(p, v[3]) for p, v in table.items() if v[0] in children}


def still_alive(procs: set[tuple[int, int]], timeout: float = 5.0) -> set[tuple[int, int]]:
    """Those of ``procs`` (pid, start time) still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        table = living(proc_table())
        alive = {(p, st) for p, st in procs if p in table and table[p][3] == st}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def session_processes(sid: int, timeout: float = 5.0) -> dict[int, tuple[int, int, str, int]]:
    """Processes of session ``sid`` still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p: v for p, v in living(proc_table()).items() if v[1] == sid}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def worker_children() -> set[int]:
    return {p.pid for p in mp.active_children() if p.name.startswith("azopg-worker-")}


class Spy:
    """A progress callback that records the worker processes it sees, and can raise."""

    def __init__(self, raise_after: int | None = None) -> None:
        self.calls = 0
        self.raise_after = raise_after
        self.seen: set[tuple[int, int]] = set()
        self.mp_pids: set[int] = set()

    def __call__(self, master) -> None:
        self.calls += 1
        if self.calls == 1:
            self.seen = grandchildren(os.getpid(), living(proc_table()))
            self.mp_pids = worker_children()
        if self.raise_after is not None and self.calls >= self.raise_after:
            raise RuntimeError("boom from the progress callback")


# -------------------------------------------------------------- in process

def test_no_worker_survives_a_normal_run(chain3):
    spy = Spy()
    res = azopg.train(chain3, backend="async", workers=4, seed=0, target_gap=None, max_updates=40,
                      rollout_latency=0.001, progress=spy)
    assert res.status == "max_updates"
    assert spy.calls >= 1
    assert len(spy.seen) == 4, spy.seen  # the fork server's children: the 4 workers
    assert spy.mp_pids == {p for p, _ in spy.seen}
    assert not worker_children()
    assert not still_alive(spy.seen)
    assert not grandchildren(os.getpid(), living(proc_table()))


def test_no_worker_survives_an_exception(chain3, fixed):
    spy = Spy(raise_after=3)
    with pytest.raises(RuntimeError, match="boom from the progress callback"):
        azopg.train(chain3, backend="async", workers=4, seed=0, target_gap=None, max_time=60,
                    rollout_latency=0.005, progress=spy, **fixed)
    assert spy.calls == 3
    assert len(spy.seen) == 4
    assert not worker_children()
    assert not still_alive(spy.seen)
    assert not grandchildren(os.getpid(), living(proc_table()))


# ------------------------------------------------------------ command line

#: Targets no run meets (a gain error of 1e-300 is K = K* to the last bit): a run stops only when the
#: test stops it, however fast the machine learns; else one could converge before the signal lands.
ENDLESS = ["--target-gap", "1e-300", "--target-gain-error", "1e-300"]


def start_cli(out, cwd, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    args = [sys.executable, "-m", "azopg", "train", "-W", "4", "--rollout-latency", "0.01", "--max-time", "60",
            "--out", str(out), "--quiet", *ENDLESS, *extra]
    return subprocess.Popen(args, cwd=cwd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_workers(proc, out, timeout=30.0) -> set[tuple[int, int]]:
    """Wait until DIR exists and the CLI's 4 workers run; their (pid, start time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        workers = grandchildren(proc.pid, living(proc_table()))
        if out.is_dir() and len(workers) >= 4:
            return workers
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"workers did not start: {proc.communicate()}")


def wait_for(proc, predicate, what, timeout=45.0):
    """Poll ``predicate`` until it returns something true (returned), while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}: {proc.communicate()}")


def checkpoint_updates(out) -> int:
    try:
        return json.loads((out / "checkpoint.json").read_text())["master"]["updates"]
    except (OSError, ValueError):
        return 0


def fixed_args(fixed):
    return ["--tau", repr(fixed["tau"]), "--r", repr(fixed["r"]), "--step", repr(fixed["step"])]


def test_sigint_stops_the_cli_cleanly(tmp_path, fixed):
    out = tmp_path / "run"
    proc = start_cli(out, tmp_path, fixed_args(fixed))  # calibration is a single check: learning at once
    try:
        workers = wait_for_workers(proc, out)
        assert len(workers) == 4
        wait_for(proc, lambda: checkpoint_updates(out) > 0, "a checkpoint with updates")  # not a guess of when
        proc.send_signal(signal.SIGINT)  # the master only, as a terminal's ^C would not
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stdout
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "interrupted"
    assert res["updates"] > 0
    assert not still_alive(workers)
    assert not session_processes(proc.pid)


def test_sigint_during_calibration_leaves_no_process(tmp_path):
    out = tmp_path / "run"
    # the two-point rule calibrates its radius and step with hundreds of rollouts in a row: at 10 ms, seconds
    # of sleeping on any machine, 0.3 s of which pass before the signal (and under ENDLESS targets the CLI
    # cannot have finished either way); policy iteration calibrates with a handful of rollouts
    proc = start_cli(out, tmp_path, ("--method", "two-point"))
    try:
        workers = wait_for_workers(proc, out)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert not (out / "checkpoint.json").exists()  # the first checkpoint follows the calibration: cut short
    assert not still_alive(workers)
    assert not session_processes(proc.pid)


def test_sigkill_of_the_master_takes_the_workers_down(tmp_path, fixed):
    out = tmp_path / "run"
    proc = start_cli(out, tmp_path, fixed_args(fixed))
    try:
        workers = wait_for_workers(proc, out)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not still_alive(workers, timeout=10.0)
    assert not session_processes(proc.pid, timeout=10.0), "processes of the killed CLI's session remain"


# --------------------------------------------------------- bugs found here

class InterruptingPlant:
    """A LinearPlant whose rollout call number ``after + 1`` raises KeyboardInterrupt (a ^C)."""

    returns_moments = False  # its rollout takes no ``moments`` (not delegated to the LinearPlant)

    def __init__(self, problem, after: int) -> None:
        self.inner = azopg.LinearPlant(problem)
        self.n, self.m = problem.n, problem.m
        self.calls = 0
        self.after = after

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def initial_states(self, rng, size):
        return self.inner.initial_states(rng, size)

    def rollout(self, K, x0, tau):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.inner.rollout(K, x0, tau)


def test_interrupt_during_calibration_still_writes_the_run(chain3, tmp_path):
    res = azopg.train(chain3, seed=0, target_gap=None, max_updates=100,
                      plant_factory=lambda: InterruptingPlant(chain3, 3))
    assert res.status == "interrupted"
    assert np.array_equal(res.K, chain3.K0)
    assert res.stats["calibration_s"] is None
    write_run(tmp_path, res, plot=False)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "interrupted"


def test_replay_of_an_interrupted_run(chain3, tmp_path):
    res = azopg.train(chain3, seed=0, target_gap=None, max_updates=1000,
                      plant_factory=lambda: InterruptingPlant(chain3, 100))
    assert res.status == "interrupted" and res.updates > 0
    write_run(tmp_path, res, plot=False)
    K, K_recorded, _ = replay_run(tmp_path)
    assert np.array_equal(K_recorded, res.K)
    assert np.array_equal(K, K_recorded)
