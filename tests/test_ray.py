"""The ``ray`` backend, for real: a private local instance, a worker actor killed mid-run, and
a head started here with ``ray start --head`` joined through ``--ray-address``.

Everything stays on 127.0.0.1 (checked with ``ss -ltn`` while a run is going). The tests
stop only the Ray processes they started: the local instance is shut down by the run
itself, the head by killing the process group of the ``ray start --block`` they launched
(never ``ray stop``, which would stop every Ray instance on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import azopg
from azopg.engine import ray_actors as rayexec
from azopg.engine.executor import WorkerError
from azopg.engine.ray_actors import AUTH_MODE_ENV, LOOPBACK_ENV
from azopg.run.output import write_run
from azopg.run.replay import replay_run
from test_cli import assert_one_line_error, run_cli

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'azopg[ray]')")

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    """Process ids of every descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _listeners(pids: set[int]) -> list[tuple[str, int]]:
    """Listening TCP sockets of the processes ``pids``, as (address, pid), from ``ss -ltnp``."""
    if shutil.which("ss") is None:
        pytest.skip("ss is not available")
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        for pid in pids:
            if f"pid={pid}," in line:
                found.append((line.split()[3], pid))
    return found


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "::ffff:127.0.0.1", "::1") or host.startswith("127.")


@pytest.fixture(scope="module")
def problem():
    return azopg.get_problem("chain3")


def test_local_instance_reaches_the_target_on_loopback_and_shuts_down(problem, fixed, tmp_path, monkeypatch):
    seen: dict[str, list] = {}
    calls: list[int] = []  # tasks per Ray call
    send = rayexec.RayExecutor._send_held

    def counted(self):
        calls.extend(len(tasks) for tasks in self._held.values())
        send(self)

    def look(master):
        if "listeners" not in seen and master.updates >= 20:
            seen["listeners"] = _listeners(_descendants(os.getpid()))

    monkeypatch.setattr(rayexec.RayExecutor, "_send_held", counted)
    res = azopg.train(problem, backend="ray", method="two-point", workers=3, seed=0, target_gap=1e-2, max_time=120,
                      progress=look, **fixed)
    assert res.status == "converged", res.status
    assert res.relative_gap <= 1e-2
    assert not ray.is_initialized()  # the private instance is shut down
    # the same history and delay log as the process backend
    updates = [h for h in res.history if h.event == "update"]
    assert {h.worker for h in updates} == {0, 1, 2}
    assert max(h.delay for h in updates) >= 1  # really asynchronous
    assert res.stats["workers_replaced"] == 0
    # every Ray listener of the instance (GCS, raylet, object manager, workers) is on 127.0.0.1
    listeners = seen["listeners"]
    assert len(listeners) >= 3, listeners
    assert all(_is_loopback(addr) for addr, _ in listeners), listeners
    files = {p.name for p in write_run(tmp_path, res)}
    assert {"result.json", "history.csv", "arrivals.csv"} <= files
    # each worker holds RAY_DEPTH tasks, sent together: one Ray call per RAY_DEPTH reports (the
    # calibration's and the blocking checks' single tasks aside); the run still replays bit for bit
    assert max(calls) == rayexec.RAY_DEPTH == 2
    assert len(calls) < 0.6 * res.stats["tasks"], (len(calls), res.stats["tasks"])
    K_replayed, K_recorded, _ = replay_run(tmp_path)
    assert np.array_equal(K_replayed, K_recorded)


def test_backends_agree_simulated_ray_async(problem, fixed, tmp_path):
    """Same problem, same seed: all three reach the target and write the same files."""
    heads = {}
    for backend in ("simulated", "ray", "async"):
        res = azopg.train(problem, backend=backend, workers=2, seed=3, target_gap=1e-2, max_time=120, **fixed)
        assert res.status == "converged", (backend, res.status)
        assert azopg.get_problem("chain3").cost(res.K) <= problem.optimal_cost * (1 + 1e-2)
        out = tmp_path / backend
        out.mkdir()
        files = sorted(p.name for p in write_run(out, res))
        doc = json.loads((out / "result.json").read_text())
        heads[backend] = (files, sorted(doc), (out / "history.csv").read_text().splitlines()[0],
                          (out / "arrivals.csv").read_text().splitlines()[0])
    assert heads["ray"] == heads["async"] == heads["simulated"]


def test_killed_worker_actor_is_restarted_and_the_run_reaches_the_target(problem, fixed):
    killed: list[str] = []

    def kill_one(master):
        if not killed and master.updates >= 10:
            names = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] == "azopg-worker-1"]
            assert len(names) == 1, names
            actor = ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])
            old_pid = ray.get(actor.pid.remote())
            ray.kill(actor, no_restart=False)  # Ray restarts it; its call in flight fails
            killed.append(names[0]["namespace"])
            # hold the master until a new process answers (a restart takes seconds here), so that
            # the failed call is seen well before the run ends
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    if ray.get(actor.pid.remote(), timeout=10) != old_pid:
                        break
                time.sleep(0.2)

    res = azopg.train(problem, backend="ray", method="two-point", workers=3, seed=1, target_gap=1e-2, max_time=120,
                      progress=kill_one, **fixed)
    assert killed
    assert res.status == "converged", res.status
    assert res.stats["workers_replaced"] == 1
    lost = [h for h in res.history if h.event == "worker-lost"]
    assert len(lost) == 1 and lost[0].worker == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _without_ray_auth(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in (AUTH_MODE_ENV, "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head started here (``ray start --head --block``) on a free port of 127.0.0.1, with
    token authentication (Ray's default once a token exists); stopped by killing its own
    process group. Yields its address and the environment a driver needs to join it."""
    port = _free_port()
    auth = {AUTH_MODE_ENV: "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**_without_ray_auth(os.environ), **auth, LOOPBACK_ENV: "0", "OMP_NUM_THREADS": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = Path(sys.executable).with_name("ray")
    log = open(tmp_path / "ray-head.log", "w")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert head.poll() is None, (tmp_path / "ray-head.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not come up: " + (tmp_path / "ray-head.log").read_text())
        yield address, head, auth
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` then drains for up to 30 s
        time.sleep(3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)
        log.close()


def _cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**_without_ray_auth(os.environ), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **env}
    return subprocess.run([sys.executable, "-m", "azopg", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_joins_a_head_started_with_ray_start_and_leaves_it_running(ray_head, tmp_path, fixed):
    address, head, auth = ray_head
    args = ["train", "--backend", "ray", "--ray-address", address, "--workers", "2", "--target-gap", "1e-2",
            "--max-time", "120", "--quiet", *[f"--{k}={v}" for k, v in fixed.items()], "--out"]
    # without the token the head refuses the driver: one line, with the way out
    proc = _cli([*args, "refused"], tmp_path, {})
    assert_one_line_error(proc, f"{AUTH_MODE_ENV}=token")
    proc = _cli([*args, "run"], tmp_path, auth)
    assert proc.returncode == 0, proc.stderr
    assert "(raylet)" not in proc.stdout + proc.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "converged"
    assert result["settings"]["backend"] == "ray"
    assert result["relative_gap"] <= 1e-2
    # the head keeps running after the run, and its listeners are on 127.0.0.1
    assert head.poll() is None
    with socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=5):
        pass
    listeners = _listeners(_descendants(head.pid) | {head.pid})
    assert listeners and all(_is_loopback(addr) for addr, _ in listeners), listeners
    # a second run on the same head works too (the first one left no actors or names behind)
    proc = _cli([*args, "run2"], tmp_path, auth)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run2" / "result.json").read_text())["status"] == "converged"


def test_cli_ray_errors_are_one_line(tmp_path):
    proc = run_cli(["train", "--workers", "2", "--ray-address", "127.0.0.1:6379"], tmp_path)
    assert_one_line_error(proc, "--ray-address")
    port = _free_port()  # nothing listens there
    proc = run_cli(["train", "--backend", "ray", "--workers", "2", "--ray-address", f"127.0.0.1:{port}",
                    "--quiet"], tmp_path, timeout=180)
    assert_one_line_error(proc, "Ray cluster")


def test_cli_without_ray_installed_says_how_to_get_it(tmp_path):
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env_path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": env_path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "azopg", "train", "--backend", "ray", "--workers", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, "pip install 'azopg[ray]'")


def test_ray_speedup_study_shares_one_instance(problem):
    from azopg.run.speedup import run_speedup
    from azopg.settings import Settings

    runs = run_speedup(problem, [1, 2], backend="ray", repeats=1,
                       base=Settings(target_gap=0.2, batch=1, max_time=120))
    assert [r.workers for r in runs] == [1, 2]
    assert all(np.isfinite(r.time_to_target_s) for r in runs)
    assert not ray.is_initialized()


@pytest.fixture
def faulty():
    """The misbehaving plants of the reliability tests, shipped to Ray's workers by value
    (they cannot import the tests directory)."""
    import _faulty

    ray.cloudpickle.register_pickle_by_value(_faulty)
    try:
        yield _faulty
    finally:
        ray.cloudpickle.unregister_pickle_by_value(_faulty)


def test_hung_task_times_out_and_its_actor_is_restarted(problem, fixed, faulty, tmp_path):
    marker = tmp_path / "hung"
    # the two other workers need ~3700 rollouts to 1e-2: at 3 ms, ~5.6 s of sleeping alone, on any machine,
    # so the run cannot end before the 2 s timeout abandons the hung call (at 1 ms: ~1.9 s, it could)
    res = azopg.train(problem, backend="ray", method="two-point", workers=3, seed=0, target_gap=1e-2, max_time=120,
                      task_timeout=2.0, rollout_latency=0.003,
                      plant_factory=faulty.FaultyFactory(problem, "hang", 3, str(marker)),
                      **fixed)
    assert marker.exists()  # a call did hang (for an hour)
    assert res.status == "converged", res.status
    assert res.stats["workers_replaced"] >= 1
    assert any(h.event == "worker-lost" for h in res.history)


def test_actor_that_keeps_dying_is_dropped_and_the_others_finish_the_run(problem, fixed, faulty, caplog,
                                                                        monkeypatch):
    monkeypatch.setattr(rayexec, "MAX_RESTARTS", 0)  # not restarted: dropped at its first death
    res = azopg.train(problem, backend="ray", method="two-point", workers=3, seed=0, target_gap=1e-2, max_time=120,
                      plant_factory=faulty.FaultyFactory(problem, "die-ray", 1), **fixed)
    assert res.status == "converged", res.status
    lost = [h for h in res.history if h.event == "worker-lost"]
    assert [h.worker for h in lost] == [1]
    assert any("dropped" in r.getMessage() for r in caplog.records), caplog.text
    # worker 1's tasks (its seeds) ran on the other actors and were applied
    assert any(h.worker == 1 and h.event == "update" for h in res.history)


def test_plant_that_raises_stops_the_run_with_its_error(problem, fixed, faulty):
    with pytest.raises(WorkerError, match="actuator driver crashed"):
        azopg.train(problem, backend="ray", method="two-point", workers=2, seed=0, target_gap=1e-2, max_time=60,
                    plant_factory=faulty.FaultyFactory(problem, "raise", 40), **fixed)
    assert not ray.is_initialized()
