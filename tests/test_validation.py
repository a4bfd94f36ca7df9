"""Input validation: scale-free tolerances, clear one-line refusals, plant protocol checks."""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest
import scipy.linalg as sla

import azopg
from azopg.cli import main
from azopg.engine.inflight import TaskFailed, run_or_fail
from azopg.errors import PlantProtocolError, ProblemError, SettingsError
from azopg.method.estimators import estimate_gradient
from azopg.method.tasks import Task
from azopg.model import validation
from azopg.model.problem import LQRProblem
from azopg.plants.base import RolloutResult


def scalar_care(a: float, b: float, q: float, r: float) -> float:
    """Stabilizing solution of 2 a p - p^2 b^2 / r + q = 0, written without cancellation."""
    return q / (-a + math.sqrt(a * a + b * b * q / r))


def cli_error(capsys, args: list[str], words: str) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("azopg: error:"), err
    assert words in lines[0], lines[0]
    return lines[0]


def write(tmp_path, name: str, data: dict | str) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# ------------------------------------------------------------- matrix entries

@pytest.mark.parametrize(("value", "words"), [
    ([[-1 + 1j]], "complex"),
    (np.array([[-1 + 1j]]), "complex"),
    ([[True]], "booleans"),
    ([[1.0, False]], "booleans"),
    (np.array([[True]]), "booleans"),
    ([["-1"]], "strings"),
    ("-1", "numeric"),
    (None, "missing"),
])
def test_non_real_entries_are_refused(value, words):
    with pytest.raises(ProblemError, match=words):
        LQRProblem(value, [[1.0]], 1, 1)


def test_complex_with_zero_imaginary_part_is_the_real_problem():
    p = LQRProblem(np.array([[-1 + 0j]]), [[1.0]], 1, 1)
    assert p.optimal_cost == pytest.approx(scalar_care(-1, 1, 1, 1) * 1.0)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("A", [[True]], "A must hold numbers only, got booleans"),
    ("Q", [["1"]], "Q must hold numbers only, got strings"),
    ("B", None, "B is missing"),
])
def test_problem_file_entries_name_the_field(tmp_path, capsys, field, value, words):
    data = {"A": [[-1.0]], "B": [[1.0]], "Q": 1, "R": 1, field: value}
    cli_error(capsys, ["train", "--problem", write(tmp_path, "p.json", data), "--out", str(tmp_path / "o")], words)


# ------------------------------------------------------------ scale-free tolerances

def test_cheap_control_weight_is_accepted():
    p = LQRProblem([[-1.0]], [[1.0]], 1, 1e-13)
    assert p.optimal_cost == pytest.approx(scalar_care(-1, 1, 1, 1e-13), rel=1e-9)


def test_problem_at_scale_1e_minus_300_is_the_unit_problem():
    """(cA, cB, cQ, cR) is the unit problem in rescaled time: same P*, same f(K0)."""
    tiny = LQRProblem([[-1e-300]], [[1e-300]], 1e-300, 1e-300)
    assert tiny.optimal_cost == pytest.approx(math.sqrt(2) - 1, rel=1e-12)
    assert tiny.cost(tiny.K0) == pytest.approx(0.5, rel=1e-12)


def test_fast_plant_keeps_its_tiny_optimal_cost():
    p = LQRProblem([[-1e200]], [[1.0]], 1, 1)
    assert p.optimal_cost == pytest.approx(scalar_care(-1e200, 1, 1, 1), rel=1e-12)  # 5e-201, not 0


def test_time_scales_too_far_apart_are_named():
    p = LQRProblem(np.diag([-1e308, -1.0]), [[1.0], [1.0]])
    with pytest.raises(ProblemError, match="badly scaled"):
        _ = p.optimal_cost


@pytest.mark.parametrize("args", [["train"], ["problems", "--show"]])
def test_overflowing_closed_loop_is_one_line(tmp_path, capsys, args):
    path = write(tmp_path, "big.json", '{"A": [[1e308]], "B": [[1e308]], "Q": 1, "R": 1, "K0": [[1e308]]}')
    cli_error(capsys, [*args, path] if args[0] == "problems" else [*args, "--problem", path, "--out",
                                                                  str(tmp_path / "o")], "overflows")


def test_huge_x0_cov_is_symmetrised_without_overflow_and_refused_by_the_plant(tmp_path, capsys):
    path = write(tmp_path, "cov.json", '{"A": [[-1]], "B": [[1]], "Q": 1, "R": 1, "x0_cov": 1e308}')
    p = azopg.load_problem(path)
    assert json.loads(json.dumps(p.to_dict(), allow_nan=False))["x0_cov"] == [[1e308]]
    cli_error(capsys, ["train", "--problem", path, "--out", str(tmp_path / "o"), "--quiet"], "range of rollout costs")


def test_directory_as_problem_says_so(tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    cli_error(capsys, ["train", "--problem", str(tmp_path / "adir")], "is a directory")


# ------------------------------------------------------------------- indefinite Q

def test_indefinite_q_with_stabilizing_solution_is_accepted(caplog):
    A, B, Q = np.array([[-1.0, 0.5], [0.0, -2.0]]), np.array([[1.0], [0.5]]), np.array([[1.0, 0.0], [0.0, -0.5]])
    with caplog.at_level(logging.WARNING, logger="azopg"):
        p = LQRProblem(A, B, Q, 1)
    assert [r.getMessage() for r in caplog.records if "-0.5" in r.getMessage()]
    P = p._care
    res = A.T @ P + P @ A - P @ B @ B.T @ P + Q
    assert np.max(np.abs(res)) < 1e-10
    assert p.is_stabilizing(p.optimal_gain)
    assert p.cost(p.optimal_gain) == pytest.approx(p.optimal_cost, rel=1e-9)


def test_indefinite_q_without_stabilizing_solution_is_refused():
    with pytest.raises(ProblemError, match="no stabilizing solution"):
        LQRProblem([[-1.0, 0.5], [0.0, -2.0]], [[1.0], [0.5]], [[-3.0, 0.0], [0.0, 1.0]], 1)


def test_indefinite_q_warning_is_one_line_on_the_cli(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, "q.json", {"A": [[-1.0, 0.5], [0.0, -2.0]], "B": [[1.0], [0.5]],
                                      "Q": [[1.0, 0.0], [0.0, -0.5]], "R": 1})
    proc = subprocess.run([sys.executable, "-m", "azopg", "problems", "--show", path], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("azopg: warning:") and "-0.5" in err[0], err


def test_oscillator_unseen_by_q_has_no_stabilizing_solution():
    p = LQRProblem([[0.0, 1.0], [-1.0, 0.0]], [[0.0], [1.0]], np.zeros((2, 2)), 1, K0=[[1.0, 1.0]])
    with pytest.raises(ProblemError, match="no stabilizing solution"):
        _ = p.optimal_gain


# ------------------------------------------------------------------------- memory

@pytest.mark.parametrize("args", [["--batch", "100000000000"], ["--problem", "chain100000"],
                                  ["--problem", "random-stable-n100000-m1-s0"]])
def test_runs_beyond_memory_are_refused_with_the_figure(tmp_path, capsys, args):
    line = cli_error(capsys, ["train", *args, "--out", str(tmp_path / "o"), "--quiet"], "needs about")
    assert "GiB, this machine has" in line
    assert not (tmp_path / "o" / "checkpoint.json").exists()


def test_too_many_workers_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(validation, "machine_memory", lambda: 2**30)
    cli_error(capsys, ["train", "-W", "1000", "--out", str(tmp_path / "o"), "--quiet"], "--workers 1000")


def test_task_timeout_too_short_is_one_line(capsys):
    cli_error(capsys, ["train", "-W", "2", "--task-timeout", "0.001"], "--task-timeout")


def test_linear_plant_batch_of_any_size_matches_one_by_one():
    p = azopg.get_problem("chain3")
    from azopg.plants import linear

    plant = linear.LinearPlant(p)
    rng = np.random.default_rng(0)
    K = rng.standard_normal((5, p.m, p.n)) * 0.1
    x0 = rng.standard_normal((5, p.n))
    whole = plant.rollout(K, x0, 2.0).cost
    old = linear._CHUNK_BYTES
    try:
        linear._CHUNK_BYTES = 1  # one rollout per chunk
        chunked = plant.rollout(K, x0, 2.0).cost
    finally:
        linear._CHUNK_BYTES = old
    np.testing.assert_allclose(chunked, whole, rtol=1e-13)


# --------------------------------------------------------------- plant protocol

class ExamplePlant:
    """A plant that breaks the protocol as told by ``fault``."""

    n, m = 2, 1

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def initial_states(self, rng, size):
        return rng.standard_normal((size, 3 if self.fault == "width" else 2))

    def rollout(self, K, x0, tau):
        b = np.shape(x0)[0]
        cost = np.sum(np.asarray(x0) ** 2, axis=1) + 1.0
        blown = np.zeros(b, dtype=bool)
        return {
            "shape1": RolloutResult(cost[:1], blown[:1]),
            "column": RolloutResult(cost[:, None], blown),
            "float": 1.0,
            "list": [cost, blown],
            "strings": RolloutResult(np.array(["1.0"] * b), blown),
            "negative": RolloutResult(-cost, blown),
        }.get(self.fault, RolloutResult(cost, blown))


@pytest.mark.parametrize(("fault", "words"), [
    ("shape1", "ExamplePlant.rollout returned cost of shape (1,); the protocol wants shape ("),
    ("column", "returned cost of shape (8, 1); the protocol wants shape (8,)"),
    ("float", "ExamplePlant.rollout returned float; the protocol wants a RolloutResult"),
    ("list", "ExamplePlant.rollout returned list"),
    ("strings", "ExamplePlant.rollout returned cost of dtype <U3"),
    ("width", "ExamplePlant.initial_states returned states of shape (8, 3); the protocol wants shape (8, 2)"),
])
def test_protocol_breach_names_plant_and_rule(fault, words):
    with pytest.raises(PlantProtocolError) as info:
        azopg.train(ExamplePlant(fault), K0=np.zeros((1, 2)), max_updates=3, seed=0)
    assert words in str(info.value)


def test_protocol_breach_in_a_worker_is_one_line():
    task = Task(0, 0, "evaluate", np.zeros((1, 2)), 0, 1.0, 0.1, 1, "two-point", 0)
    msg = run_or_fail(ExamplePlant("float"), task)
    assert isinstance(msg, TaskFailed)
    assert msg.error.startswith("PlantProtocolError: ExamplePlant.rollout returned float") and "\n" not in msg.error


def test_negative_plant_costs_are_named():
    with pytest.raises(ProblemError, match="negative mean cost"):
        azopg.train(ExamplePlant("negative"), K0=np.zeros((1, 2)), max_updates=3, seed=0)


def test_unpicklable_plant_factory_is_refused_before_workers_start():
    with pytest.raises(SettingsError, match="plant_factory"):
        azopg.train(ExamplePlant("none"), K0=np.zeros((1, 2)), max_updates=3, backend="async", workers=2)


# ------------------------------------------------------------------- warnings

def test_estimator_with_failed_samples_warns_nothing():
    class InfPlant(ExamplePlant):
        def rollout(self, K, x0, tau):
            b = np.shape(x0)[0]
            return RolloutResult(np.full(b, np.inf), np.ones(b, dtype=bool))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = estimate_gradient(InfPlant("none"), np.zeros((1, 2)), r=0.1, N=4, tau=1.0,
                                rng=np.random.default_rng(0))
    assert est.blown_up == 4 and np.all(est.grad == 0)


def test_lyapunov_helper_is_scale_free():
    from azopg.model.problem import lyapunov

    A = np.array([[-1.0, 0.3], [0.0, -2.0]])
    C = np.eye(2)
    X = lyapunov(A * 1e-300, C * 1e-300)
    np.testing.assert_allclose(X, sla.solve_continuous_lyapunov(A, -C), rtol=1e-12)
