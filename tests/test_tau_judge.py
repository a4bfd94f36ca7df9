"""Runs under measurement noise are judged against K_tau, the optimum of the expected cost at their horizon
(azopg.run.judge), checked against the exact oracle (azopg.model.noise)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import azopg
from azopg.model.noise import expected_cost, noise_optimal_gain
from azopg.run.judge import TauJudge

TAU = 2.0  # short: he1's K_tau at 2 is 0.12 (noise-free gap) from K*, K* 5 % (gap_tau) from K_tau


@pytest.fixture(scope="module")
def noisy() -> azopg.LQRProblem:
    p = azopg.get_problem("he1")
    return p.with_noise(V=0.05**2 * np.asarray(p.x0_cov), dt=0.01)


@pytest.fixture(scope="module")
def judge(noisy: azopg.LQRProblem) -> TauJudge:
    j = TauJudge.of(noisy)
    assert j is not None
    return j


def test_only_measurement_noise_gets_a_tau_judge(noisy: azopg.LQRProblem) -> None:
    p = azopg.get_problem("he1")
    assert TauJudge.of(None) is None and TauJudge.of(p) is None
    assert TauJudge.of(p.with_noise(W=0.01 * np.asarray(p.x0_cov))) is None  # K* is the optimum there
    assert TauJudge.of(noisy) is not None


def test_the_gap_is_to_the_exact_optimum_and_never_negative(noisy: azopg.LQRProblem, judge: TauJudge) -> None:
    K_tau, f_tau = judge.optimum(TAU)
    assert np.allclose(K_tau, noise_optimal_gain(noisy, tau=TAU), rtol=1e-6, atol=1e-9)
    assert f_tau == pytest.approx(expected_cost(noisy, K_tau, TAU), rel=1e-12)
    f, gap, err = judge.judge(K_tau, TAU)
    assert f == f_tau and abs(gap) <= 1e-12 and err == 0.0
    _, gap_star, _ = judge.judge(noisy.optimal_gain, TAU)  # K* is not the optimum under measurement noise
    assert gap_star > 1e-2
    rng = np.random.default_rng([0, 0, 23])
    for scale in (1e-3, 1e-2, 1e-1):  # a minimum: every gain around it is costlier, to the oracle's ftol 1e-13
        for _ in range(8):
            K = K_tau * (1 + scale * rng.standard_normal(K_tau.shape))
            f, gap, _ = judge.judge(K, TAU)
            assert gap >= -1e-12 and f == pytest.approx(expected_cost(noisy, K, TAU), rel=1e-12)


def test_nothing_is_judged_before_the_horizon_is_settled(judge: TauJudge, noisy: azopg.LQRProblem) -> None:
    fresh = TauJudge(noisy)
    assert all(math.isnan(v) for v in fresh.monitor(noisy.optimal_gain))
    fresh.horizon = lambda: TAU
    assert fresh.monitor(noisy.optimal_gain)[1] == pytest.approx(judge.judge(noisy.optimal_gain, TAU)[1])


def test_a_run_started_at_K_tau_stops_at_once(noisy: azopg.LQRProblem, judge: TauJudge) -> None:
    K_tau = judge.optimum(TAU)[0]
    assert noisy.relative_gap(K_tau) > 0.1  # judged against K*, the run would go on (default target 1e-3)
    r = azopg.train(noisy, K0=K_tau, seed=0, tau=TAU, target_gap=1e-3, max_rollouts=50_000)
    assert r.status == "converged" and r.updates <= 2
    assert r.judge is not None and r.judge["tau"] == TAU and r.judge["optimum"] == "K_tau"
    cost, gap, err = judge.judge(r.K, TAU)
    assert 0 <= r.relative_gap == pytest.approx(gap, rel=1e-9) and r.relative_gap <= 1e-3
    assert r.gain_error == pytest.approx(err, rel=1e-9) and r.cost == pytest.approx(cost, rel=1e-12)
    assert r.judge["noise_free_gap"] == pytest.approx(noisy.relative_gap(r.K), rel=1e-9)
    d = r.to_dict()
    assert d["judge"]["K_tau"] == K_tau.tolist() and d["relative_gap"] == r.relative_gap


def test_a_run_at_K_star_does_not_claim_zero(noisy: azopg.LQRProblem, judge: TauJudge) -> None:
    r = azopg.train(noisy, K0=noisy.optimal_gain, seed=0, tau=TAU, target_gap=1e-3, max_updates=1)
    assert r.status == "max_updates"
    _, gap, _ = judge.judge(r.K, TAU)
    assert r.relative_gap == pytest.approx(gap, rel=1e-9) and r.relative_gap > 1e-2  # K*'s gap_tau is 5 %
    ci = r.cost_interval
    assert ci is not None and ci["reference"] == "K_tau" and ci["tau"] == TAU
    assert ci["optimal_expected_cost"] == pytest.approx(judge.optimum(TAU)[1], rel=1e-12)
    assert ci["gap_high"] > 0  # the interval of a gap to the optimum (seed 0: it covers the exact gap)
    assert ci["gap_low"] * ci["optimal_expected_cost"] == pytest.approx(ci["diff_low"], rel=1e-12)


def test_process_noise_is_still_judged_against_K_star() -> None:
    p = azopg.get_problem("he1")
    q = p.with_noise(W=0.01 * np.asarray(p.x0_cov))
    r = azopg.train(q, seed=0, tau=TAU, max_updates=1)
    assert r.judge is None
    assert r.relative_gap == pytest.approx(q.relative_gap(r.K), rel=1e-9)
    assert r.cost_interval is None or r.cost_interval["reference"] == "K*"


def test_an_unaffordable_K_tau_is_said_and_no_difference_to_K_star_is_called_a_gap(
        noisy: azopg.LQRProblem, monkeypatch: pytest.MonkeyPatch) -> None:
    from azopg.run import judge as judge_module

    assert judge_module.oracle_work(noisy) <= judge_module.MAX_ORACLE_WORK  # he1 is judged against K_tau ...
    assert TauJudge.of(azopg.get_problem("he3").with_noise(V=0.01 * np.eye(8), dt=0.01)) is None  # he3 is not
    monkeypatch.setattr(judge_module, "MAX_ORACLE_WORK", 0)  # ... and here as he3 would be
    r = azopg.train(noisy, K0=noisy.optimal_gain, seed=0, tau=TAU, max_updates=1)
    assert r.judge is not None and r.judge["optimum"] == "K*" and "not computed" in r.judge["reason"]
    assert r.relative_gap == pytest.approx(noisy.relative_gap(r.K), rel=1e-9) and r.relative_gap >= -1e-12
    ci = r.cost_interval
    assert ci is not None and ci["reference"] == "K*" and "gap_low" not in ci
    assert ci["relative_diff_low"] * ci["optimal_expected_cost"] == pytest.approx(ci["diff_low"], rel=1e-12)


def test_the_cli_says_what_the_gap_is_judged_against(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "azopg", "train", "--problem", "he1", "--measurement-noise", "0.05",
                           "--tau", str(TAU), "--max-updates", "1", "--quiet", "--out", str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"of the expected cost at tau = {TAU:g} to its optimum K_tau's" in proc.stdout
    assert "relative gap of the expected cost to K_tau's" in proc.stdout and "K*'s" not in proc.stdout
    doc = json.loads((tmp_path / "run" / "result.json").read_text())
    assert doc["judge"]["optimum"] == "K_tau" and doc["judge"]["tau"] == TAU
    assert doc["cost_interval"]["reference"] == "K_tau" and doc["relative_gap"] >= 0
