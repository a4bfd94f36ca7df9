"""Built-in problems and generators."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pytest

import azopg
from azopg.model.library import DEFAULT_PROBLEM


def published_notes() -> dict[str, float]:
    """Optimal costs quoted in the data files' ``notes`` (computed when the files were made)."""
    out = {}
    for entry in resources.files("azopg.data.problems").iterdir():
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text())
            found = re.search(r"optimal cost tr\(P\*\) = ([0-9.eE+-]+)", data.get("notes", ""))
            if found:
                out[data["name"]] = float(found.group(1))
    return out


def test_problem_names():
    names = azopg.problem_names()
    assert names[0] == DEFAULT_PROBLEM == "chain3"
    assert len(names) == len(set(names))
    for expected in ("ac1", "ac17", "he1", "he3", "rea1", "cola5", "tg1", "dis4"):
        assert expected in names


@pytest.mark.parametrize("name", azopg.problem_names())
def test_every_builtin_problem_is_valid(name):
    p = azopg.get_problem(name)
    assert p.name == name
    assert 1 <= p.n <= 10 and 1 <= p.m <= p.n
    assert p.is_stabilizing(p.K0)
    assert np.isfinite(p.cost(p.K0))
    Ks = p.optimal_gain
    assert p.is_stabilizing(Ks)
    # the Riccati residual at P* = value_matrix(K*) vanishes
    P = p.value_matrix(Ks)
    res = p.A.T @ P + P @ p.A - P @ p.B @ np.linalg.solve(p.R, p.B.T @ P) + p.Q
    assert np.abs(res).max() <= 1e-8 * max(1.0, np.abs(P).max() * np.abs(p.A).max())
    assert 0 < p.optimal_cost <= p.cost(p.K0)
    if name != DEFAULT_PROBLEM:
        assert p.source  # published systems carry a citation


@pytest.mark.parametrize(("name", "fstar"), sorted(published_notes().items()))
def test_published_optimal_costs_match_their_notes(name, fstar):
    assert azopg.get_problem(name).optimal_cost == pytest.approx(fstar, rel=1e-4)


def test_he1_optimum():
    assert azopg.get_problem("he1").optimal_cost == pytest.approx(4.56326, rel=1e-5)


def test_chain5_generator():
    p = azopg.get_problem("chain5")
    assert (p.n, p.m) == (10, 5) and p.name == "chain5"
    assert p.spectral_abscissa(np.zeros((5, 10))) < 0 and np.array_equal(p.K0, np.zeros((5, 10)))
    # positions/velocities: A = [[0, I], [-T, -0.1 T]] with T the chain's stiffness matrix
    T = 2 * np.eye(5) - np.eye(5, k=1) - np.eye(5, k=-1)
    np.testing.assert_array_equal(p.A[:5, 5:], np.eye(5))
    np.testing.assert_allclose(p.A[5:, :5], -T)
    np.testing.assert_allclose(p.A[5:, 5:], -0.1 * T)
    np.testing.assert_array_equal(p.B, np.vstack([np.zeros((5, 5)), np.eye(5)]))
    assert np.isfinite(p.optimal_cost)
    c = azopg.mass_spring_chain(3)
    assert np.array_equal(c.A, azopg.get_problem("chain3").A)


def test_random_generators():
    p = azopg.get_problem("random-unstable-n5-m2-s1")
    assert (p.n, p.m) == (5, 2) and p.name == "random-unstable-n5-m2-s1"
    assert p.spectral_abscissa(np.zeros((2, 5))) == pytest.approx(0.5, abs=1e-9)
    assert p.is_stabilizing(p.K0) and np.isfinite(p.optimal_cost)
    q = azopg.get_problem("random-stable-n4-m3-s2")
    assert (q.n, q.m) == (4, 3)
    assert q.spectral_abscissa(np.zeros((3, 4))) == pytest.approx(-0.5, abs=1e-9)
    # deterministic in the seed, different across seeds
    assert np.array_equal(azopg.get_problem("random-unstable-n5-m2-s1").A, p.A)
    assert not np.array_equal(azopg.get_problem("random-unstable-n5-m2-s2").A, p.A)
    assert np.array_equal(azopg.random_system(5, 2, 1, stable=False).K0, p.K0)


@pytest.mark.parametrize("name", ["nosuch", "", "chain", "chainX", "chain0", "random-stable-nX-m2-s1",
                                  "random-weird-n2-m1-s0", "random-stable-n2-m1", "HE1"])
def test_unknown_problem_raises(name):
    with pytest.raises(azopg.ProblemError):
        azopg.get_problem(name)


def test_load_problem_from_file_and_name(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"A": -2, "B": 1, "Q": 1, "R": 1, "note": "unknown key"}))
    p = azopg.load_problem(str(f))
    assert p.name == "mine" and (p.n, p.m) == (1, 1)
    assert azopg.load_problem("he1").name == "he1"
    with pytest.raises(azopg.ProblemFileError):
        azopg.load_problem(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(azopg.ProblemFileError):
        azopg.load_problem(str(bad))
