"""The gain error ||K - K*||_F / ||K*||_F: reported in the result and the CLI, and a stopping target."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import azopg
from _support import BlackBoxPlant
from azopg.model.compare import relative_gain_error
from azopg.run import train as train_module
from azopg.run.history import RunLog
from azopg.run.records import HISTORY_FIELDS
from test_cli import run_cli


def error_against_care(p: azopg.LQRProblem, K: np.ndarray) -> float:
    Ks = np.asarray(p.optimal_gain)
    return float(np.linalg.norm(K - Ks) / np.linalg.norm(Ks))


def test_gain_error_closed_form():
    Ks = np.array([[3.0, 4.0]])  # ||K*||_F = 5
    assert relative_gain_error(Ks, Ks) == 0.0
    assert relative_gain_error(np.array([[3.0, 7.0]]), Ks) == pytest.approx(3 / 5, rel=1e-15)
    assert relative_gain_error(np.zeros((1, 2)), np.zeros((1, 2))) == 0.0  # K* = 0
    assert relative_gain_error(np.array([[1.0, 0.0]]), np.zeros((1, 2))) == math.inf


@pytest.mark.parametrize(("gap", "err", "target_gap", "target_err", "met"), [
    (1e-4, 1e-1, 1e-3, None, True),     # the gap target alone, as before
    (1e-2, 1e-9, 1e-3, None, False),
    (1e-2, 1e-3, None, 1e-2, True),     # the gain-error target alone
    (1e-9, 2e-2, None, 1e-2, False),
    (1e-4, 1e-3, 1e-3, 1e-2, True),     # both given: both must be met
    (1e-4, 2e-2, 1e-3, 1e-2, False),
    (1e-2, 1e-3, 1e-3, 1e-2, False),
    (0.0, 0.0, None, None, False),      # no target: never converges
])
def test_converged_means_every_given_target_met(gap, err, target_gap, target_err, met):
    log = RunLog(None, lambda: 0.0, 1)
    log.last_gap, log.last_gain_error = gap, err
    assert log.targets_met(target_gap, target_err) is met


def test_run_stops_at_the_first_gain_error_below_the_target(monkeypatch):
    p = azopg.get_problem("chain3")
    seen: list[float] = []
    plain = train_module.Job.monitor

    def recording(self):
        inner = plain(self)

        def monitor(K):
            out = inner(K)
            seen.append(out[2])
            return out

        return monitor

    monkeypatch.setattr(train_module.Job, "monitor", recording)
    res = azopg.train(p, seed=0, target_gap=None, target_gain_error=1e-2, max_time=60)
    assert res.status == "converged"
    assert res.gain_error <= 1e-2
    assert res.gain_error == pytest.approx(error_against_care(p, res.K), rel=1e-12)
    # the monitor saw the gain error fall below the target exactly once, at its last call
    below = [i for i, e in enumerate(seen) if e <= 1e-2]
    assert below == [len(seen) - 1]
    assert res.to_dict()["gain_error"] == res.gain_error


def test_a_gain_error_target_always_met_leaves_the_gap_run_unchanged():
    # the gap target alone decides exactly as before: a second target that always holds changes nothing
    p = azopg.get_problem("chain3")
    a = azopg.train(p)
    b = azopg.train(p, target_gain_error=1e9)
    assert a.status == b.status == "converged"
    assert (a.updates, a.rollouts) == (b.updates, b.rollouts)
    np.testing.assert_array_equal(a.K, b.K)
    assert a.relative_gap <= 1e-3 and a.gain_error == pytest.approx(error_against_care(p, a.K), rel=1e-12)


def test_black_box_result_has_no_gain_error_and_rejects_the_target():
    p = azopg.get_problem("chain3")
    res = azopg.train(BlackBoxPlant(p), K0=p.K0, max_updates=3, seed=0)
    assert math.isnan(res.gain_error) and res.to_dict()["gain_error"] is None
    with pytest.raises(azopg.SettingsError, match="target_gain_error"):
        azopg.train(BlackBoxPlant(p), K0=p.K0, max_updates=3, target_gain_error=1e-2)


@pytest.mark.parametrize("value", [0.0, -1e-2, math.nan])
def test_bad_target_gain_error_is_a_settings_error(value):
    with pytest.raises(azopg.SettingsError, match="target_gain_error"):
        azopg.Settings(target_gain_error=value)


def test_cli_target_gain_error(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["train", "--quiet", "--target-gain-error", "1e-2", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    p = azopg.get_problem("chain3")
    assert result["status"] == "converged"
    assert result["gain_error"] <= 1e-2 and result["relative_gap"] <= 1e-3  # both targets met
    assert result["gain_error"] == pytest.approx(error_against_care(p, np.array(result["K"])), rel=1e-12)
    assert result["settings"]["target_gain_error"] == 1e-2
    assert f"gain error {result['gain_error']:.3e}" in proc.stdout
    with open(out / "history.csv", newline="") as fh:
        assert tuple(next(csv.reader(fh))) == HISTORY_FIELDS  # the history's columns did not change
    assert "gain_error" not in HISTORY_FIELDS


def test_cli_rejects_a_bad_target_gain_error(tmp_path):
    proc = run_cli(["train", "--quiet", "--target-gain-error", "0", "--out", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("azopg: error: --target-gain-error")
