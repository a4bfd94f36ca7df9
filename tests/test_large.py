"""Ten times larger: CAREX's scalable examples at any size, and the blocked fold of large factors."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

import azopg
from azopg.method import equations
from azopg.method.equations import IntervalEquations, _fold_blocked, _fold_rows
from azopg.model.carex import carex_scalable
from azopg.plants.discrete import plant_for


def shipped(name: str) -> dict:
    return json.loads(resources.files("azopg.data.problems").joinpath("carex", f"{name}.json").read_text())


@pytest.mark.parametrize("name", ["carex3.1-l10", "carex4.1-n10", "carex4.2-n20", "carex4.3-l10"])
def test_the_generator_builds_the_shipped_sizes(name):
    """The shipped files come from the same formulas (and CAREX's own data were checked there)."""
    data, p = shipped(name), carex_scalable(name)
    for key in "ABQR":
        M = getattr(p, key)
        np.testing.assert_array_equal(M, np.asarray(data[key], dtype=float).reshape(M.shape))
    assert "Abels and P. Benner" in p.source and p.name == name


def test_a_generated_k0_follows_the_files_rule():
    """4.3: the LQR gain for 1000 R as in the shipped file (there rounded to a few digits); 4.2: K0 = 0."""
    p = carex_scalable("carex4.3-l10")
    K0 = np.asarray(shipped("carex4.3-l10")["K0"], dtype=float)
    np.testing.assert_allclose(p.K0, K0, rtol=1e-3, atol=1e-3 * np.abs(K0).max())
    assert 1.5 * p.optimal_cost <= p.cost(p.K0) <= 1e4 * p.optimal_cost
    assert not carex_scalable("carex4.2-n30").K0.any()


def test_any_size_by_name_and_bad_names():
    p = azopg.get_problem("carex4.3-l13")
    assert (p.n, p.m) == (26, 2) and p.is_stabilizing(p.K0)
    assert azopg.get_problem("carex4.2-n20").K0.shape == (1, 20)  # the shipped file wins
    for bad in ("carex4.3-n13", "carex4.2-l7", "carex9.9-n5", "carex4.2-n1"):
        with pytest.raises(azopg.ProblemError):
            azopg.get_problem(bad)


@pytest.mark.parametrize("rows", [1, 5, 64, 200])
def test_the_blocked_fold_equals_the_row_by_row_fold(rows):
    """Panels of 64 columns (the last one narrower) applied as block reflectors: the factor of the
    unblocked Householder fold, to rounding, and a factor of ``[T; rows]`` (same Gram matrix)."""
    rng = np.random.default_rng([7, rows])
    p = 150
    T = np.triu(rng.standard_normal((p, p)))
    new = rng.standard_normal((rows, p))
    a, b = _fold_rows(T, new), _fold_blocked(T, new)
    assert np.abs(a - b).max() <= 1e-10 * np.abs(a).max()
    assert np.allclose(np.tril(b, -1), 0.0)
    gram = T.T @ T + new.T @ new
    np.testing.assert_allclose(b.T @ b, gram, atol=1e-10 * np.abs(gram).max())


def test_interval_equations_with_the_blocked_fold_give_the_exact_value_and_gradient(monkeypatch):
    """The fit of noiseless snapshots through the blocked fold (forced at this small size) against the
    exact oracle, and against the same equations folded row by row."""
    p = azopg.get_problem("he1")
    K = np.asarray(p.K0)
    rng = np.random.default_rng(11)
    plant = plant_for(p)
    Ki = K + 0.05 * rng.standard_normal((12, p.m, p.n))
    tr = plant.rollout_snapshots(Ki, plant.initial_states(rng, 12), 20.0, 16)
    unblocked = IntervalEquations(K, p.R).add(Ki, tr.x, tr.S, tr.cost).solve()
    monkeypatch.setattr(equations, "UNBLOCKED_COLUMNS", 0)
    monkeypatch.setattr(equations, "BLOCK", 8)
    blocked = IntervalEquations(K, p.R).add(Ki, tr.x, tr.S, tr.cost).solve()
    np.testing.assert_allclose(blocked.P, unblocked.P, rtol=1e-10, atol=1e-12 * np.abs(unblocked.P).max())
    np.testing.assert_allclose(blocked.E, unblocked.E, rtol=1e-10, atol=1e-12 * np.abs(unblocked.E).max())
    np.testing.assert_allclose(blocked.P, p.value_matrix(K), rtol=1e-7)
    np.testing.assert_allclose(blocked.E, p.E(K), rtol=1e-6, atol=1e-8 * np.abs(p.E(K)).max())
