"""python-control interop: ``LQRProblem.from_statespace``, ``azopg.model.compare`` and ``azopg compare``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import azopg
from _support import random_spd
from azopg import AzopgError, LQRProblem, ProblemError, SettingsError
from azopg.model.compare import Comparison, compare, compare_run

control = pytest.importorskip("control")


def run_cli(args: list[str], cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "azopg", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def random_stable_ss(seed: int, n: int, m: int, p: int = 2):
    """A random Hurwitz state-space system with a non-trivial output (ignored by the LQR)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n)) / np.sqrt(n)
    A -= (np.max(np.linalg.eigvals(A).real) + 0.5) * np.eye(n)
    return control.ss(A, rng.standard_normal((n, m)), rng.standard_normal((p, n)), rng.standard_normal((p, m)))


# ------------------------------------------------------------------ from_statespace / to_statespace

def test_from_statespace_defaults_and_round_trip():
    sys_ = random_stable_ss(1, 4, 2)
    p = LQRProblem.from_statespace(sys_)
    np.testing.assert_array_equal(p.A, sys_.A)
    np.testing.assert_array_equal(p.B, sys_.B)
    np.testing.assert_array_equal(p.Q, np.eye(4))
    np.testing.assert_array_equal(p.R, np.eye(2))
    np.testing.assert_array_equal(p.x0_cov, np.eye(4))
    np.testing.assert_array_equal(p.K0, np.zeros((2, 4)))
    assert p.name == "statespace"

    back = p.to_statespace()
    assert isinstance(back, control.StateSpace) and control.isctime(back, strict=True)
    np.testing.assert_array_equal(back.A, p.A)
    np.testing.assert_array_equal(back.B, p.B)
    np.testing.assert_array_equal(back.C, np.eye(4))
    np.testing.assert_array_equal(back.D, np.zeros((4, 2)))

    again = LQRProblem.from_statespace(back)
    np.testing.assert_array_equal(again.A, p.A)
    np.testing.assert_array_equal(again.B, p.B)
    assert again.name == p.name


def test_from_statespace_weights_gain_and_name():
    rng = np.random.default_rng(7)
    he1 = azopg.get_problem("he1")  # open-loop unstable: needs its K0
    Q, R, W = random_spd(rng, 4, 0.1), random_spd(rng, 2, 0.5), random_spd(rng, 4, 0.5)
    sys_ = control.ss(he1.A, he1.B, np.eye(4), 0, name="helicopter")
    p = LQRProblem.from_statespace(sys_, Q, R, x0_cov=W, K0=he1.K0)
    assert p.name == "helicopter"
    np.testing.assert_allclose(p.Q, Q)
    np.testing.assert_allclose(p.R, R)
    np.testing.assert_allclose(p.x0_cov, W)
    np.testing.assert_array_equal(p.K0, he1.K0)
    assert LQRProblem.from_statespace(sys_, K0=he1.K0, name="mine").name == "mine"
    with pytest.raises(azopg.NotStabilizingError, match="K0"):
        LQRProblem.from_statespace(sys_)


def test_unspecified_timebase_is_accepted():
    sys_ = control.ss([[-1.0]], [[1.0]], [[1.0]], 0, dt=None)
    assert LQRProblem.from_statespace(sys_).n == 1


@pytest.mark.parametrize("dt", [0.1, True])
def test_discrete_time_system_gives_a_discrete_problem(dt):
    sys_ = control.ss([[0.5]], [[1.0]], [[1.0]], 0, dt=dt)
    p = LQRProblem.from_statespace(sys_)
    assert p.discrete_time and p.dt == (None if dt is True else dt)
    assert p.optimal_gain[0, 0] == pytest.approx(control.dlqr([[0.5]], [[1.0]], [[1.0]], [[1.0]])[0][0, 0])


def test_non_statespace_rejected():
    with pytest.raises(ProblemError, match="StateSpace") as info:
        LQRProblem.from_statespace(control.tf([1], [1, 1]))
    assert "\n" not in str(info.value)
    with pytest.raises(ProblemError, match="StateSpace"):
        LQRProblem.from_statespace(np.eye(2))


def test_missing_python_control_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "control", None)  # makes `import control` raise ImportError
    with pytest.raises(AzopgError, match=r"pip install azopg\[control\]"):
        LQRProblem.from_statespace(object())
    with pytest.raises(AzopgError, match=r"pip install azopg\[control\]"):
        azopg.get_problem("he1").to_statespace()
    with pytest.raises(AzopgError, match=r"pip install azopg\[control\]"):
        compare(azopg.get_problem("he1"), azopg.get_problem("he1").K0)


# ------------------------------------------------------------------ against control.lqr

def lqr_cases() -> list[tuple[str, LQRProblem]]:
    cases = []
    for name in ("he1", "ac1", "cola5", "rea1"):
        p = azopg.get_problem(name)
        sys_ = control.ss(p.A, p.B, np.eye(p.n), 0)
        cases.append((name, LQRProblem.from_statespace(sys_, p.Q, p.R, K0=p.K0, name=name)))
    rng = np.random.default_rng(2024)
    Q, R, W = random_spd(rng, 5, 0.1), random_spd(rng, 3, 0.5), random_spd(rng, 5, 0.5)
    cases.append(("random-weighted", LQRProblem.from_statespace(random_stable_ss(3, 5, 3), Q, R, x0_cov=W,
                                                                   name="random-weighted")))
    return cases


LQR_CASES = lqr_cases()


@pytest.mark.parametrize(("label", "p"), LQR_CASES, ids=[c[0] for c in LQR_CASES])
def test_care_gain_and_cost_match_control_lqr(label, p):
    K_ref, S_ref, E_ref = control.lqr(p.A, p.B, p.Q, p.R)
    K_ref = np.asarray(K_ref)
    np.testing.assert_allclose(p.optimal_gain, K_ref, rtol=1e-8, atol=1e-8 * np.max(np.abs(K_ref)))
    fstar_ref = float(np.trace(np.asarray(S_ref) @ p.x0_cov))
    assert p.optimal_cost == pytest.approx(fstar_ref, rel=1e-8)

    c = compare(p, p.optimal_gain)
    assert isinstance(c, Comparison)
    assert c.problem == label
    assert c.optimal_cost == pytest.approx(fstar_ref, rel=1e-12)
    assert abs(c.relative_gap) <= 1e-8
    assert c.gain_error <= 1e-8
    assert c.stabilizing
    np.testing.assert_allclose(c.K_opt, K_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c.optimal_eigenvalues, np.sort_complex(np.asarray(E_ref)), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(c.eigenvalues, c.optimal_eigenvalues, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(("label", "p"), LQR_CASES, ids=[c[0] for c in LQR_CASES])
def test_compare_at_initial_gain(label, p):
    c = compare(p, p.K0)
    assert c.cost == pytest.approx(p.cost(p.K0), rel=1e-12)
    assert c.relative_gap == pytest.approx(p.relative_gap(p.K0), rel=1e-8)
    K_ref = np.asarray(control.lqr(p.A, p.B, p.Q, p.R)[0])
    assert c.gain_error == pytest.approx(np.linalg.norm(p.K0 - K_ref) / np.linalg.norm(K_ref), rel=1e-12)
    eigs = np.linalg.eigvals(p.A - p.B @ p.K0)
    np.testing.assert_allclose(c.eigenvalues, np.sort_complex(eigs), rtol=1e-10, atol=1e-12)
    assert list(c.eigenvalues) == sorted(c.eigenvalues, key=lambda z: (z.real, z.imag))


def test_compare_non_stabilizing_gain_and_json():
    p = LQRProblem.from_statespace(random_stable_ss(5, 3, 1))
    K = np.array([[-50.0, -50.0, -50.0]])
    assert not p.is_stabilizing(K)
    c = compare(p, K)
    assert not c.stabilizing and c.cost == np.inf and c.relative_gap == np.inf
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert d["cost"] is None and d["relative_gap"] is None and d["stabilizing"] is False
    assert "NO" in c.format()


def test_compare_wrong_shape_gain():
    p = azopg.get_problem("he1")
    with pytest.raises(ProblemError, match="K must be 2x4"):
        compare(p, np.zeros((4, 2)))


# ------------------------------------------------------------------ a learned gain

def test_train_from_statespace_then_compare():
    sys_ = random_stable_ss(11, 4, 2)
    p = LQRProblem.from_statespace(sys_, name="ss-random")
    result = azopg.train(p, target_gap=1e-2, seed=0, max_time=120)
    assert result.status == "converged"
    assert result.problem == "ss-random"
    c = compare(p, result.K)
    assert c.relative_gap <= 1e-2
    assert c.relative_gap == pytest.approx(p.relative_gap(result.K), rel=1e-8, abs=1e-12)
    assert c.relative_gap == pytest.approx(result.relative_gap, rel=1e-8, abs=1e-12)
    assert c.cost == pytest.approx(result.cost, rel=1e-12)
    assert c.stabilizing
    assert np.all(c.eigenvalues.real < 0) and np.all(c.optimal_eigenvalues.real < 0)
    assert 0 < c.gain_error < 1

    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert d["relative_gap"] == pytest.approx(c.relative_gap, rel=1e-15)
    assert np.array(d["K"]).shape == (2, 4) and np.array(d["K_opt"]).shape == (2, 4)
    for key, eigs in (("eigenvalues", c.eigenvalues), ("optimal_eigenvalues", c.optimal_eigenvalues)):
        pairs = np.array(d[key])
        assert pairs.shape == (4, 2)
        np.testing.assert_array_equal(pairs[:, 0] + 1j * pairs[:, 1], eigs)

    text = c.format()
    assert "ss-random" in text and f"{c.relative_gap:.3e}" in text and "control.lqr" in text


# ------------------------------------------------------------------ compare_run and the command line

def test_compare_run_errors(tmp_path):
    with pytest.raises(SettingsError, match="not an azopg run directory"):
        compare_run(tmp_path)
    (tmp_path / "result.json").write_text('{"K": [[0, 0]]}')
    (tmp_path / "problem.json").write_text("{not json")
    with pytest.raises(SettingsError, match=r"problem\.json"):
        compare_run(tmp_path)
    (tmp_path / "problem.json").write_text(json.dumps(azopg.get_problem("he1").to_dict()))
    with pytest.raises(SettingsError, match="K must be 2x4"):
        compare_run(tmp_path)
    (tmp_path / "result.json").write_text("[]")
    with pytest.raises(SettingsError, match="no gain K"):
        compare_run(tmp_path)


def test_cli_compare_after_train(tmp_path):
    proc = run_cli(["train", "--out", "run", "--quiet", "--target-gap", "1e-2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(["compare", "run"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    doc = json.loads((tmp_path / "run" / "compare.json").read_text())
    assert f"{doc['relative_gap']:.3e}" in proc.stdout  # the gap against control.lqr's optimum, as printed
    assert "relative gap" in proc.stdout and "compare.json" in proc.stdout
    assert doc["reference"] == "control.lqr" and doc["problem"] == res["problem"]
    assert doc["K"] == res["K"]
    # the same gap to rounding (a converged gain's gap is itself at the rounding level, ~1e-15)
    assert doc["relative_gap"] == pytest.approx(res["relative_gap"], rel=1e-8, abs=1e-12)
    assert doc["optimal_cost"] == pytest.approx(res["optimal_cost"], rel=1e-8)
    assert doc["relative_gap"] <= 1e-2 and doc["stabilizing"] is True
    assert all(re < 0 for re, _ in doc["eigenvalues"])


@pytest.mark.parametrize("setup", ["empty", "missing", "bad-json"])
def test_cli_compare_bad_directory(tmp_path, setup):
    target = tmp_path / "notarun"
    if setup != "missing":
        target.mkdir()
    if setup == "bad-json":
        (target / "result.json").write_text("{")
        (target / "problem.json").write_text("{")
    proc = run_cli(["compare", "notarun"], tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("azopg: error:")
    assert "notarun" in lines[0]
    assert not (target / "compare.json").exists()
