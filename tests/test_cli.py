"""The command line, run as a subprocess."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import azopg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(args: list[str], cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "azopg", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------------------ bad input

VALID = '"B": [[1], [0.5]], "Q": [[1, 0], [0, 1]], "R": 1'
BAD_FILES = {
    # label: (file text, words expected in the message)
    "malformed-json": ('{"A": [[-1, 0], [0, -1]], ' + VALID, "not valid JSON"),
    "not-an-object": ("[1, 2, 3]", "JSON object"),
    "missing-key": ('{"A": [[-1, 0], [0, -1]], "B": [[1], [0.5]], "Q": [[1, 0], [0, 1]]}', "R"),
    "A-not-square": ('{"A": [[-1, 0, 0], [0, -1, 0]], ' + VALID + "}", "square"),
    "B-wrong-rows": ('{"A": [[-1, 0], [0, -1]], "B": [[1], [0.5], [2]], "Q": [[1, 0], [0, 1]], "R": 1}', "B"),
    "Q-not-symmetric": ('{"A": [[-1, 0], [0, -1]], "B": [[1], [0.5]], "Q": [[1, 0.5], [0, 1]], "R": 1}',
                        "symmetric"),
    "Q-indefinite-no-stabilizing-solution": (
        '{"A": [[-1, 0], [0, -1]], "B": [[1], [0.5]], "Q": [[-3, 0], [0, 1]], "R": 1}', "no stabilizing solution"),
    "R-not-pd": ('{"A": [[-1, 0], [0, -1]], "B": [[1], [0.5]], "Q": [[1, 0], [0, 1]], "R": 0}',
                 "positive definite"),
    "NaN-in-A": ('{"A": [[NaN, 0], [0, -1]], ' + VALID + "}", "NaN"),
    "NaN-in-K0": ('{"A": [[-1, 0], [0, -1]], ' + VALID + ', "K0": [[1, NaN]]}', "NaN"),
    "inf-in-B": ('{"A": [[-1, 0], [0, -1]], "B": [[Infinity], [0.5]], "Q": [[1, 0], [0, 1]], "R": 1}', "inf"),
    "inf-in-Q": ('{"A": [[-1, 0], [0, -1]], "B": [[1], [0.5]], "Q": [[1, 0], [0, -Infinity]], "R": 1}', "inf"),
    "K0-not-stabilizing": ('{"A": [[-1, 0], [0, -1]], ' + VALID + ', "K0": [[-10, 0]]}', "stabilize"),
    "K0-wrong-shape": ('{"A": [[-1, 0], [0, -1]], ' + VALID + ', "K0": [[1, 0, 0]]}', "K0"),
    "A-not-Hurwitz-no-K0": ('{"A": [[1, 0], [0, -1]], ' + VALID + "}", "K0"),
    "A-not-numeric": ('{"A": "abc", ' + VALID + "}", "numeric"),
}


def assert_one_line_error(proc: subprocess.CompletedProcess, words: str = "") -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("azopg: error:")
    assert lines[0][len("azopg: error:"):].strip()
    assert words in lines[0], lines[0]


@pytest.mark.parametrize(("text", "words"), list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_bad_problem_file(tmp_path, text, words):
    (tmp_path / "problem.json").write_text(text)
    proc = run_cli(["train", "--problem", "problem.json"], tmp_path)
    assert_one_line_error(proc, words)
    assert not (tmp_path / "azopg-run").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["train", "--problem", "missing.json"], "not found"),
        (["train", "--problem", "no-such-problem"], "unknown problem"),
        (["problems", "--show", "no-such-problem"], "unknown problem"),
        (["train", "--max-time", "-1"], "--max-time"),
        (["train", "--max-time", "nan"], "--max-time"),
        (["train", "--max-time", "inf"], "--max-time"),
        (["train", "--max-time", "soon"], "--max-time"),
        (["train", "--batch", "0"], "--batch"),
        (["train", "--tau", "0"], "--tau"),
        (["train", "--r", "-1"], "--r"),
        (["train", "--step", "0"], "--step"),
        (["train", "--target-gap", "-1e-3"], "--target-gap"),
        (["train", "--max-updates", "0"], "--max-updates"),
        (["train", "--seed", "-1"], "--seed"),
        (["train", "--method", "three-point"], "--method"),
        (["train", "--no-such-option"], "no-such-option"),
        (["no-such-command"], "no-such-command"),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, list) else None,
)
def test_bad_arguments(tmp_path, args, words):
    proc = run_cli(args, tmp_path)
    assert_one_line_error(proc, words)
    assert not (tmp_path / "azopg-run").exists()


@pytest.mark.parametrize("out", ["a_file/sub", "a_file"])
def test_unwritable_out_dir(tmp_path, out):
    (tmp_path / "a_file").write_text("I am a regular file\n")
    proc = run_cli(["train", "--out", out, "--quiet"], tmp_path)
    assert_one_line_error(proc, "--out")
    assert (tmp_path / "a_file").read_text() == "I am a regular file\n"


def test_non_utf8_problem_file(tmp_path):
    (tmp_path / "problem.json").write_bytes(b"\xff\xfe{}")
    assert_one_line_error(run_cli(["train", "--problem", "problem.json"], tmp_path))


# ----------------------------------------------------------------- happy paths

def test_train_default_problem_writes_run_directory(tmp_path):
    proc = run_cli(["train", "--out", "run", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = tmp_path / "run"
    res = json.loads((out / "result.json").read_text())
    for key in ("problem", "K", "cost", "optimal_cost", "relative_gap", "stabilizing", "updates", "rollouts",
                "wall_time_s", "seed", "settings", "status"):
        assert key in res, key
    p = azopg.get_problem(azopg.model.library.DEFAULT_PROBLEM)
    assert res["problem"] == p.name
    K = np.array(res["K"])
    assert K.shape == (p.m, p.n)
    assert res["status"] == "converged"
    assert res["stabilizing"] is True
    assert res["relative_gap"] <= 1e-3
    assert res["seed"] == 0
    assert res["updates"] > 0 and res["rollouts"] > 0 and res["wall_time_s"] > 0
    # the file's numbers are the oracle's at the file's gain
    assert res["cost"] == pytest.approx(p.cost(K), rel=1e-12)
    assert res["optimal_cost"] == pytest.approx(p.optimal_cost, rel=1e-12)
    assert p.relative_gap(K) <= 1e-3
    for key in ("tau", "r", "step", "batch", "target_gap"):
        assert isinstance(res["settings"][key], (int, float)) and res["settings"][key] > 0

    with open(out / "history.csv", newline="") as fh:
        header = fh.readline().strip()
        assert header.startswith("update,time_s,rollouts,cost,relative_gap")
        fh.seek(0)
        rows = list(csv.DictReader(fh))
    assert rows
    gaps = [float(r["relative_gap"]) for r in rows if r["relative_gap"]]
    assert gaps and gaps[-1] <= 1e-3
    assert all(math.isfinite(g) for g in gaps)
    assert int(rows[-1]["update"]) == res["updates"]

    png = (out / "convergence.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000


def test_train_scalar_problem_file(tmp_path):
    (tmp_path / "scalar.json").write_text('{"A": -1, "B": 1, "Q": 1, "R": 1}')
    proc = run_cli(["train", "--problem", "scalar.json", "--out", "run", "--quiet", "--max-time", "60"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["status"] == "converged" and res["relative_gap"] <= 1e-3
    # closed form: f(k) = (1 + k^2) / (2 (1 + k)), k* = p* = sqrt(2) - 1
    (k,), = res["K"]
    assert res["cost"] == pytest.approx((1 + k * k) / (2 * (1 + k)), rel=1e-12)
    assert res["optimal_cost"] == pytest.approx(math.sqrt(2) - 1, rel=1e-12)
    # f - f* = (k - k*)^2 X(k), X(k) = 1 / (2 (1 + k))
    assert (k - (math.sqrt(2) - 1)) ** 2 / (2 * (1 + k)) == pytest.approx(res["cost"] - res["optimal_cost"],
                                                                          rel=1e-6, abs=1e-14)


def test_problems_lists_every_builtin(tmp_path):
    proc = run_cli(["problems"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    first_words = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    for name in azopg.problem_names():
        assert name in first_words


def test_problems_show_he1(tmp_path):
    proc = run_cli(["problems", "--show", "he1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "source" in out and "Narendra" in out
    # parse the printed K* matrix and compare with the Riccati solution
    block = out.split("K* (CARE) =", 1)[1]
    text = block[: block.index("]]") + 2]
    Kstar = np.array([[float(v) for v in row.split()]
                      for row in re.findall(r"\[([^\[\]]+)\]", text)])
    p = azopg.get_problem("he1")
    np.testing.assert_allclose(Kstar, p.optimal_gain, rtol=1e-5, atol=1e-6)
    assert re.search(r"f\*\s*=\s*4\.56326", out)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["problems", "--help"], ["--version"]])
def test_help(tmp_path, args):
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert proc.stderr == ""
