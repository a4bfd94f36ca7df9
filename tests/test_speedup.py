"""``azopg speedup``: paired per-repeat figures, the rule's options, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import csv
import math
import os
import signal

import pytest

from azopg.run.speedup import SpeedupRun, summarize
from test_lifecycle import grandchildren, living, proc_table, session_processes, still_alive
from test_reliability import finish, run_cli, start_cli, wait_for


def _run(W: int, repeat: int, T: float, U: int) -> SpeedupRun:
    return SpeedupRun(W, "simulated", repeat, T, U, 2 * U, W - 1, W - 1.0, blown_estimates=repeat)


def test_paired_speedups_and_updates_ratios_are_within_each_repeat():
    runs = [_run(1, 0, 10.0, 100), _run(2, 0, 4.0, 90), _run(1, 1, 20.0, 200), _run(2, 1, 12.0, 240),
            _run(1, 2, 30.0, 300), _run(2, 2, math.inf, 900)]
    rows = summarize(runs)
    assert [r.speedup for r in runs[:4]] == [1.0, 2.5, 1.0, 20.0 / 12.0]
    assert runs[3].efficiency == pytest.approx(10.0 / 12.0, rel=1e-15)
    assert [r.updates_ratio for r in runs[:4]] == [1.0, 0.9, 1.0, 1.2]
    assert math.isnan(runs[5].updates_ratio) and runs[5].speedup == 0.0  # never reached: no ratio
    one, two = rows
    assert (one["time_to_target_s"], two["time_to_target_s"]) == (20.0, 12.0)  # medians over repeats
    assert (one["updates"], two["updates"]) == (200, 165)  # over the runs that reached the target
    assert two["speedup"] == pytest.approx(20.0 / 12.0, rel=1e-15)  # the speedup of the medians
    assert two["paired_speedup_min"] == 0.0 and two["paired_speedup_max"] == 2.5
    assert two["paired_speedup"] == pytest.approx(20.0 / 12.0, rel=1e-15)
    assert (two["updates_ratio"], two["updates_ratio_min"], two["updates_ratio_max"]) == (
        pytest.approx(1.05, rel=1e-15), 0.9, 1.2)
    assert (two["reached"], two["runs"], two["blown_estimates"]) == (2, 3, 3)


def test_cli_speedup_plain_shares_one_calibration_per_repeat(tmp_path, fixed):
    out = tmp_path / "sp"
    res = run_cli(["speedup", "--problem", "chain3", "--backend", "simulated", "-W", "1,3", "--repeats", "2",
                   "--plain", "--batch", "3", "--tau", repr(fixed["tau"]), "--step", repr(fixed["step"]),
                   "--target-gap", "0.1", "--max-updates", "3000", "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "paired speedup" in res.stdout and "updates / U(W0)" in res.stdout
    rows = list(csv.DictReader(open(out / "speedup.csv")))
    assert [(r["workers"], r["repeat"]) for r in rows] == [("1", "0"), ("3", "0"), ("1", "1"), ("3", "1")]
    for k in (0, 2):  # within a repeat every W runs with the radius calibrated once
        assert rows[k]["r"] == rows[k + 1]["r"]
    assert {r["step"] for r in rows} == {repr(fixed["step"])} and {r["batch"] for r in rows} == {"3"}
    assert {r["status"] for r in rows} == {"converged"}
    for k in (0, 2):
        t1, t3 = float(rows[k]["time_to_target_s"]), float(rows[k + 1]["time_to_target_s"])
        assert float(rows[k + 1]["speedup"]) == pytest.approx(t1 / t3, rel=1e-12)
        assert float(rows[k + 1]["updates_ratio"]) == pytest.approx(
            int(rows[k + 1]["updates"]) / int(rows[k]["updates"]), rel=1e-12)
    summary = list(csv.DictReader(open(out / "speedup_summary.csv")))
    assert [r["workers"] for r in summary] == ["1", "3"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_speedup_study_and_its_workers(tmp_path, fixed, sig, code):
    out = tmp_path / "sp"
    proc = start_cli(["speedup", "--problem", "chain3", "--backend", "async", "-W", "1,2", "--repeats", "20",
                      "--rollout-latency", "0.01", "--target-gap", "5e-2", "--max-time", "60", "--tau",
                      repr(fixed["tau"]), "--r", repr(fixed["r"]), "--step", repr(fixed["step"]), "--out", str(out)],
                     tmp_path)
    wait_for(proc, lambda: (out / "speedup.csv").exists(), "a first complete run", timeout=120)
    workers = wait_for(proc, lambda: grandchildren(proc.pid, living(proc_table())), "the workers of a later run")
    proc.send_signal(sig)
    stdout, stderr = finish(proc, timeout=30)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "interrupted after" in stdout
    rows = list(csv.DictReader(open(out / "speedup.csv")))
    assert 1 <= len(rows) < 40 and all(r["status"] == "converged" for r in rows)
    assert not still_alive(workers)
    assert not session_processes(proc.pid)
