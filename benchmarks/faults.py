"""Inject each fault of the README's reliability table through the command line and watch.

Every case runs ``python -m azopg train ...`` in a temporary directory (chain3, small
budgets, a few seconds each), injects its fault for real -- SIGKILL or SIGSTOP of a worker
found in ``/proc`` (the workers are the children of the master's fork server), a plant that
raises or dies (a gymnasium factory given with ``--env MODULE:FACTORY``, the way a black-box
plant reaches the command line), SIGINT / SIGTERM / SIGKILL of the master, a second run into
a run directory, two runs at once, a budget shorter than one rollout, a run directory made
read-only mid-run (``chmod 555``; as root, who writes into such a directory anyway,
``chattr +i``) -- and prints one table: exit code, the number of stderr lines,
what was observed (rows of ``history.csv``, ``result.json``'s status, wall seconds) and
whether that is what the README documents.

    python benchmarks/faults.py

Wall seconds depend on the machine's load; exit codes, line counts and rows do not.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SRC = str(Path(__file__).resolve().parents[1] / "src")
BASE = ["--quiet", "--method", "two-point", "--seed", "0"]

#: a chain3 plant as a gymnasium factory that misbehaves in worker processes (``mode``)
FAULTY_ENV = '''
import math, multiprocessing as mp, os, signal
import azopg
from azopg.plants.envs import LinearEnv


class FaultyEnv(LinearEnv):
    """raise: the ``at``-th reset in a worker raises; die: a worker SIGKILLs itself at each
    reset; nan: every ``at``-th episode's rewards are NaN."""

    def __init__(self, mode, at, **kwargs):
        super().__init__(**kwargs)
        self.mode, self.at, self.resets, self.nan = mode, at, 0, False

    def reset(self, *, seed=None, options=None):
        self.resets += 1
        if mp.current_process().name.startswith("azopg-worker"):
            if self.mode == "raise" and self.resets == self.at:
                raise RuntimeError("the plant's actuator driver crashed")
            if self.mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)
        self.nan = self.mode == "nan" and self.resets % self.at == 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, math.nan if self.nan else reward, terminated, truncated, info


def make(mode="none", at=1):
    p = azopg.get_problem("chain3")
    return FaultyEnv(mode, at, A=p.A, B=p.B, Q=p.Q, R=p.R, dt=0.05)
'''


class Case:
    """One fault: a name, the command, what was seen and whether the README says so."""

    def __init__(self, fault: str, args: list[str]) -> None:
        self.fault, self.args = fault, args
        self.code: int | None = None
        self.stderr = ""
        self.observed = ""
        self.documented = False

    @property
    def command(self) -> str:
        """The command line as shown: run directories as ``DIR``, chain3's ``K0`` as ``K0``."""
        shown = ["DIR" if a.startswith(tempfile.gettempdir()) else "K0" if a.startswith("[[") else
                 f"'{a}'" if a.startswith("{") else a for a in self.args if a not in BASE]
        return "azopg " + " ".join(shown)


class Bench:
    """Runs the command line in ``root``; finds workers in ``/proc``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "faultyenv.py").write_text(textwrap.dedent(FAULTY_ENV))
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(root)]), "OMP_NUM_THREADS": "1"}

    def start(self, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "azopg", *args], cwd=self.root, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def finish(self, proc: subprocess.Popen[str], case: Case, timeout: float = 60.0) -> tuple[str, float]:
        t0 = time.monotonic()
        try:
            stdout, case.stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, case.stderr = proc.communicate()
        case.code = proc.returncode
        return stdout, time.monotonic() - t0

    def run(self, case: Case, timeout: float = 60.0) -> tuple[str, float]:
        t0 = time.monotonic()
        stdout, _ = self.finish(self.start(case.args), case, timeout)
        return stdout, time.monotonic() - t0


def proc_parents() -> dict[int, int]:
    """pid -> parent pid of every living process (zombies left out)."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        if fields[0] not in ("Z", "X"):
            table[int(entry)] = int(fields[1])
    return table


def workers(pid: int) -> list[int]:
    """The worker processes of the run ``pid``: the children of its children (the fork server's)."""
    table = proc_parents()
    children = {p for p, parent in table.items() if parent == pid}
    return sorted(p for p, parent in table.items() if parent in children)


def wait(proc: subprocess.Popen[str], predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    """The first true value of ``predicate`` while ``proc`` runs (None if it ends or times out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return None


def checkpoint_updates(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoint.json").read_text())["master"]["updates"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def events(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        with open(out / "history.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                counts[row["event"]] = counts.get(row["event"], 0) + 1
    except OSError:
        pass
    return counts


def result(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((out / "result.json").read_text()))
    except (OSError, ValueError):
        return {}


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def train(out: Path, *extra: str) -> list[str]:
    return ["train", "--out", str(out), *BASE, *extra]


def gym(mode: str, at: int = 1) -> list[str]:
    import azopg

    K0 = json.dumps(azopg.get_problem("chain3").K0.tolist())
    return ["--env", "faultyenv:make", "--env-kwargs", json.dumps({"mode": mode, "at": at}), "--K0", K0,
            "--episode-steps", "20", "--tau", "1.0"]


# ------------------------------------------------------------------ the faults

def worker_sigkill(b: Bench) -> Case:
    out = b.root / "kill"
    c = Case("worker SIGKILL", train(out, "-W", "3", "--rollout-latency", "0.005", "--max-updates", "400"))
    proc = b.start(c.args)
    pids = wait(proc, lambda: checkpoint_updates(out) > 0 and workers(proc.pid))
    if pids:
        os.kill(pids[1], signal.SIGKILL)
    b.finish(proc, c)
    r, ev = result(out), events(out)
    replaced = r.get("stats", {}).get("workers_replaced")
    c.observed = f"{ev.get('worker-lost', 0)} worker-lost row, workers_replaced {replaced}, {r.get('status')}"
    c.documented = (c.code == 0 and len(lines(c.stderr)) == 1 and "died" in c.stderr and replaced == 1
                    and ev.get("worker-lost") == 1)
    return c


def worker_sigstop(b: Bench) -> Case:
    out = b.root / "hang"
    c = Case("worker hangs (SIGSTOP)", train(out, "-W", "3", "--rollout-latency", "0.005", "--max-updates", "400",
                                             "--task-timeout", "1"))
    proc = b.start(c.args)
    pids = wait(proc, lambda: checkpoint_updates(out) > 0 and workers(proc.pid))
    t0 = time.monotonic()
    if pids:
        os.kill(pids[1], signal.SIGSTOP)
    wait(proc, lambda: events(out).get("worker-lost"))
    noticed = time.monotonic() - t0
    b.finish(proc, c)
    r, ev = result(out), events(out)
    replaced = r.get("stats", {}).get("workers_replaced")
    c.observed = (f"noticed after {noticed:.1f} s, {ev.get('worker-lost', 0)} worker-lost row, "
                  f"workers_replaced {replaced}, {r.get('status')}")
    c.documented = c.code == 0 and len(lines(c.stderr)) == 1 and replaced == 1 and ev.get("worker-lost") == 1
    return c


def plant_fault(b: Bench, mode: str) -> Case:
    out = b.root / f"plant-{mode}"
    fault = {"die": "workers keep dying", "raise": "the plant raises in a worker"}[mode]
    c = Case(fault, train(out, "-W", "2", "--backend", "async", *gym(mode), "--max-updates", "50"))
    _, seconds = b.run(c)
    err = lines(c.stderr)
    c.observed = f"{seconds:.1f} s: {err[-1][:110] if err else '(nothing on stderr)'}"
    if mode == "raise":  # one line naming worker, task and exception
        c.documented = c.code == 2 and len(err) == 1 and "crashed" in err[0]
    else:  # a warning per death, then one error line (the calibration's task is retried 3 times)
        c.observed = f"{len(err) - 1} worker-died warnings, then " + c.observed
        c.documented = (c.code == 2 and err[-1].startswith("azopg: error:") and "lost" in err[-1]
                        and all("died" in ln for ln in err[:-1]))
    c.documented = c.documented and not (out / "result.json").exists()
    return c


def nan_costs(b: Bench) -> Case:
    out = b.root / "nan"
    c = Case("NaN costs (1 episode in 50)", train(out, *gym("nan", 50), "--max-updates", "40"))
    _, seconds = b.run(c)
    r, ev = result(out), events(out)
    rollbacks = sum(n for name, n in ev.items() if name.startswith("rollback"))
    c.observed = (f"{seconds:.1f} s, {r.get('updates')} updates, {rollbacks} rollback rows, "
                  f"stats.rollbacks {r.get('stats', {}).get('rollbacks')}, {r.get('status')}")
    c.documented = c.code == 0 and not lines(c.stderr) and r.get("status") == "max_updates"
    return c


def second_run(b: Bench, out: Path, fault: str, word: str) -> Case:
    """A run into ``out``, which holds a run: refused in one line naming ``word``, nothing touched."""
    c = Case(fault, train(out, "--max-updates", "3"))
    before = (out / "result.json").read_bytes()
    b.run(c)
    err = lines(c.stderr)
    c.observed = err[0][:110] if err else "(nothing on stderr)"
    c.documented = (c.code == 2 and len(err) == 1 and word in err[0]
                    and (out / "result.json").read_bytes() == before)
    return c


def master_signal(b: Bench, sig: signal.Signals, code: int) -> list[Case]:
    """SIGINT / SIGTERM to the master; while it runs, a second run into its directory."""
    out = b.root / sig.name
    c = Case(f"{sig.name} to the master", train(out, "-W", "2", "--rollout-latency", "0.01", "--max-time", "60"))
    proc = b.start(c.args)
    wait(proc, lambda: checkpoint_updates(out) > 0)
    cases = [c]
    if sig == signal.SIGINT:
        two = Case("two runs at once", train(out, "--problem", "he1", "--max-updates", "3"))
        b.run(two)
        err = lines(two.stderr)
        two.observed = err[0][:110] if err else "(nothing on stderr)"
        two.documented = two.code == 2 and len(err) == 1 and f"pid {proc.pid}" in err[0]
        cases.append(two)
    t0 = time.monotonic()
    proc.send_signal(sig)
    b.finish(proc, c)
    stop = time.monotonic() - t0
    r = result(out)
    ckpt = json.loads((out / "checkpoint.json").read_text()) if (out / "checkpoint.json").exists() else {}
    c.observed = (f"stopped in {stop:.1f} s, result.json {r.get('status')} after {r.get('updates')} updates, "
                  f"checkpoint {ckpt.get('status')}")
    c.documented = (c.code == code and not lines(c.stderr) and r.get("status") == "interrupted"
                    and ckpt.get("status") == "interrupted")
    if sig == signal.SIGINT:
        cases.append(second_run(b, out, "a second run into an interrupted run", "--resume"))
    return cases


def master_sigkill(b: Bench) -> list[Case]:
    out = b.root / "master"
    c = Case("master SIGKILL, then --resume", train(out, "-W", "2", "--rollout-latency", "0.002",
                                                    "--max-updates", "300"))
    proc = b.start(c.args)
    pids = wait(proc, lambda: checkpoint_updates(out) >= 30 and workers(proc.pid)) or []
    os.kill(proc.pid, signal.SIGKILL)
    b.finish(proc, c)
    deadline = time.monotonic() + 10.0
    while (left := set(pids) & set(proc_parents())) and time.monotonic() < deadline:
        time.sleep(0.05)
    at = checkpoint_updates(out)
    resumed = Case("", ["train", "--resume", str(out), "--quiet"])
    _, seconds = b.run(resumed)
    r, ev = result(out), events(out)
    c.observed = (f"exit {c.code}, {len(left)} workers left; checkpoint at update {at}; --resume: exit "
                  f"{resumed.code} in {seconds:.1f} s, {r.get('status')} at {r.get('updates')}, "
                  f"{ev.get('resume', 0)} resume row")
    c.documented = (c.code == -signal.SIGKILL and not left and resumed.code == 0 and r.get("status") == "max_updates"
                    and r.get("stats", {}).get("resumes") == 1 and ev.get("resume") == 1)
    c.code, c.stderr = resumed.code, resumed.stderr
    return [c, second_run(b, out, "a second run into a finished run", "--overwrite")]


def max_time(b: Bench, backend: str) -> Case:
    out = b.root / f"time-{backend}"
    workers_ = ["-W", "2"] if backend == "async" else []
    c = Case(f"--max-time 2, rollouts of 1000 s ({backend})",
             train(out, *workers_, "--backend", backend, "--rollout-latency", "1000", "--max-time", "2"))
    _, seconds = b.run(c)
    r, ev = result(out), events(out)
    c.observed = (f"{seconds:.1f} s wall, run time {r.get('wall_time_s', float('nan')):.2f} s, {r.get('status')}, "
                  f"{ev.get('calibration-cut-short', 0)} calibration-cut-short row")
    late = r.get("wall_time_s", float("inf")) - 2.0  # the README: 2.0 s serial, up to 3.6 s async (loaded)
    c.documented = (c.code == 0 and not lines(c.stderr) and r.get("status") == "max_time"
                    and ev.get("calibration-cut-short") == 1 and late <= (0.1 if backend == "serial" else 1.6))
    return c


def read_only(b: Bench) -> Case:
    """``chmod 555`` of the run directory; as root (who writes into it anyway) ``chattr +i``."""
    out = b.root / "readonly"
    root = os.getuid() == 0
    c = Case("run directory read-only mid-run", train(out, "--rollout-latency", "0.002", "--max-updates", "300"))
    proc = b.start(c.args)
    wait(proc, lambda: checkpoint_updates(out) > 0)
    lock: Callable[[bool], Any] = ((lambda on: subprocess.run(["chattr", "+i" if on else "-i", str(out)], check=True))
                                   if root else (lambda on: os.chmod(out, 0o555 if on else 0o755)))
    try:
        lock(True)
    except (OSError, subprocess.CalledProcessError) as exc:  # no chattr, or no CAP_LINUX_IMMUTABLE
        b.finish(proc, c)
        c.observed = f"not measurable here: root ignores chmod, and chattr +i failed ({exc})"
        return c
    try:
        stdout, _ = b.finish(proc, c)
    finally:
        lock(False)
    err = lines(c.stderr)
    k_line = any(ln.startswith("K = ") for ln in stdout.splitlines())
    result_line = any("max_updates" in ln or "converged" in ln for ln in stdout.splitlines())
    c.observed = (f"{len(err)} warnings ({err[0][:70] if err else ''}...), result line {'yes' if result_line else 'no'}"
                  f", K printed {'yes' if k_line else 'no'}" + (" (chattr +i: root ignores chmod)" if root else ""))
    c.documented = (c.code == 0 and len(err) == 2 and "cannot write to" in err[0] and "without checkpoints" in err[0]
                    and result_line and k_line)
    return c


def main() -> None:
    if not os.path.isdir("/proc/self"):
        sys.exit("needs Linux /proc")
    root = Path(tempfile.mkdtemp(prefix="azopg-faults-"))
    t0 = time.monotonic()
    try:
        b = Bench(root)
        cases = [worker_sigkill(b), worker_sigstop(b), plant_fault(b, "die"), plant_fault(b, "raise"), nan_costs(b),
                 *master_signal(b, signal.SIGINT, 130), *master_signal(b, signal.SIGTERM, 143), *master_sigkill(b),
                 max_time(b, "serial"), max_time(b, "async"), read_only(b)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| fault | command | exit code | stderr lines | observed | as documented |")
    print("|---|---|---|---|---|---|")
    for c in cases:
        print(f"| {c.fault} | `{c.command}` | {c.code} | {len(lines(c.stderr))} | {c.observed} | "
              f"{'yes' if c.documented else 'NO'} |")
    print(f"\n{len(cases)} cases in {time.monotonic() - t0:.0f} s wall (python {sys.version.split()[0]})")
    for c in cases:
        if not c.documented:
            print(f"\n{c.fault}: exit {c.code}, stderr:\n{c.stderr.rstrip()}")


if __name__ == "__main__":
    main()
