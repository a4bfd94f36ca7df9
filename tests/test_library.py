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
    for expected in ("ac1", "ac17", "he1", "he3", "rea1", "cola5", "tg1", "dis4", *LARGE, "cartpole"):
        assert expected in names


@pytest.mark.parametrize("name", azopg.problem_names())
def test_every_builtin_problem_is_valid(name):
    p = azopg.get_problem(name)
    assert p.name == name
    assert 1 <= p.n <= 60 and 1 <= p.m <= p.n
    assert p.is_stabilizing(p.K0)
    assert np.isfinite(p.cost(p.K0))
    Ks = p.optimal_gain
    assert p.is_stabilizing(Ks)
    # the Riccati residual at P* = value_matrix(K*) vanishes
    P = p.value_matrix(Ks)
    if p.discrete_time:  # P = A'PA - A'PB (R + B'PB)^-1 B'PA + Q
        BPA = p.B.T @ P @ p.A
        res = p.A.T @ P @ p.A - BPA.T @ np.linalg.solve(p.R + p.B.T @ P @ p.B, BPA) + p.Q - P
    else:
        res = p.A.T @ P + P @ p.A - P @ p.B @ np.linalg.solve(p.R, p.B.T @ P) + p.Q
    assert np.abs(res).max() <= 1e-8 * max(1.0, np.abs(P).max() * np.abs(p.A).max())
    assert 0 < p.optimal_cost <= p.cost(p.K0)
    if name != DEFAULT_PROBLEM:
        assert p.source  # published systems carry a citation
        # the documented K0 rule: stabilizing and 1.5x ... 1e4x the optimal cost
        assert 1.5 <= p.cost(p.K0) / p.optimal_cost <= 1e4


@pytest.mark.parametrize(("name", "fstar"), sorted(published_notes().items()))
def test_published_optimal_costs_match_their_notes(name, fstar):
    assert azopg.get_problem(name).optimal_cost == pytest.approx(fstar, rel=1e-4)


#: the published systems with n = 20 ... 60 and their (n, m)
LARGE = {"cse1": (20, 2), "cse2": (60, 2), "eb4": (20, 1), "eb5": (40, 1)}


@pytest.mark.parametrize(("name", "shape"), sorted(LARGE.items()))
def test_large_systems_have_their_published_sizes_and_citations(name, shape):
    p = azopg.get_problem(name)
    assert (p.n, p.m) == shape and p.K0.shape == (p.m, p.n)
    assert "COMPleib " + name.upper() in p.source and "Leibfritz" in p.source
    assert ("CAREX" if name.startswith("cse") else "Geromel") in p.source  # the original
    np.testing.assert_array_equal(p.Q, np.eye(p.n))
    np.testing.assert_array_equal(p.R, np.eye(p.m))


def matched_distance(got: np.ndarray, want: np.ndarray) -> float:
    """Largest distance between two multisets of eigenvalues under the best matching."""
    from scipy.optimize import linear_sum_assignment

    dist = np.abs(np.asarray(got)[:, None] - np.asarray(want)[None, :])
    rows, cols = linear_sum_assignment(dist)
    return float(dist[rows, cols].max())


@pytest.mark.parametrize("name", ["cse1", "cse2"])
def test_coupled_springs_spectrum_is_the_chain_closed_form(name):
    # 4 q'' + 4 q' + T q = D u, T the free-free chain: eig(T) = 2 - 2 cos(i pi / l), i = 0..l-1
    p = azopg.get_problem(name)
    l = p.n // 2
    k = 2 - 2 * np.cos(np.arange(l) * np.pi / l)
    want = np.concatenate([np.roots([4.0, 4.0, ki]) for ki in k])
    assert matched_distance(np.linalg.eigvals(p.A), want) < 1e-6
    B = np.zeros((p.n, 2))
    B[l, 0], B[-1, 1] = 0.25, -0.25  # force on the first mass, minus a force on the last
    np.testing.assert_array_equal(p.B, B)


@pytest.mark.parametrize("name", ["eb4", "eb5"])
def test_beam_spectrum_is_the_modal_closed_form(name):
    # modes r = 1..s: q'' + 2 xi r^2 q' + r^4 q = sin(1.7279 r) u, xi = 1e-7
    p = azopg.get_problem(name)
    r = np.arange(1, p.n // 2 + 1, dtype=float)
    w, xi = r**2, 1e-7
    want = np.concatenate([-xi * w + 1j * w * np.sqrt(1 - xi**2), -xi * w - 1j * w * np.sqrt(1 - xi**2)])
    assert matched_distance(np.linalg.eigvals(p.A), want) < 1e-9
    np.testing.assert_allclose(p.B[1::2, 0], np.sin(1.7279 * r), rtol=1e-15)
    np.testing.assert_array_equal(p.B[0::2, 0], 0.0)


def test_cartpole_matches_the_ctms_tutorial():
    p = azopg.get_problem("cartpole")
    assert (p.n, p.m) == (4, 1) and "Control Tutorials for MATLAB" in p.source
    # positive semi-definite Q, accepted: (A, Q^1/2) observable through x and phi
    np.testing.assert_array_equal(p.Q, np.diag([5000.0, 0.0, 100.0, 0.0]))
    np.testing.assert_array_equal(p.R, [[1.0]])
    # the open-loop poles and the lqr(A, B, Q, R) gain the tutorial prints (4 decimals)
    assert matched_distance(np.linalg.eigvals(p.A), [0.0, -0.1428, 5.5651, -5.6041]) < 1e-4
    np.testing.assert_allclose(p.optimal_gain, [[-70.7107, -37.8345, 105.5298, 20.9238]], atol=1e-4)
    # A has a zero first column, so the (1,1) entry of the CARE is Q_xx - K_x R K_x = 0
    assert p.optimal_gain[0, 0] == pytest.approx(-np.sqrt(5000.0), rel=1e-9)


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
