"""The CAREX collection: data against CAREX's definitions and closed-form solutions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import azopg
from azopg.errors import ProblemError

CAREX = azopg.problem_names("carex")


def test_collection_is_listed_apart_from_the_core_library():
    assert "carex1.1" in CAREX and "carex4.1" in CAREX and "carex2.9" in CAREX
    assert not set(CAREX) & set(azopg.problem_names())
    assert "carex2.5" not in CAREX  # indefinite Q: not an LQR problem
    with pytest.raises(ProblemError, match="collection"):
        azopg.problem_names("nope")


@pytest.mark.parametrize("name", CAREX)
def test_every_carex_problem_is_valid(name):
    p = azopg.get_problem(name)
    assert p.name == name and "CAREX" in p.source and "Example" in p.source
    qmin = np.linalg.eigvalsh(p.Q).min() / np.abs(p.Q).max()
    # CAREX 1.3's and 1.4's Q are indefinite as published (1.3 by its 3-digit rounding); the CARE has a
    # stabilizing solution all the same
    assert qmin >= {"carex1.3": -2e-4, "carex1.4": -0.14}.get(name, -1e-12)
    assert np.all(np.linalg.eigvalsh(p.R) > 0)
    assert p.is_stabilizing(p.K0) and p.is_stabilizing(p.optimal_gain)
    assert p.optimal_cost <= p.cost(p.K0) <= 1e4 * p.optimal_cost


def care_x(name: str) -> np.ndarray:
    p = azopg.get_problem(name)
    return p.value_matrix(p.optimal_gain)


#: CAREX's closed-form solutions at the default parameters (Abels & Benner 1999)
def closed_form(nr: str) -> np.ndarray:
    s2 = math.sqrt(2)
    if nr == "1.1":
        return np.array([[2.0, 1.0], [1.0, 2.0]])
    if nr == "1.2":
        return (1 + s2) * np.array([[9.0, 6.0], [6.0, 4.0]])
    if nr == "2.1":  # eps = 1e-6
        e = 1e-6
        x12 = 1 / (2 + math.sqrt(1 + e**2))
        return np.array([[(1 + math.sqrt(1 + e**2)) / e**2, x12], [x12, (1 - (e * x12) ** 2) / 4]])
    if nr == "2.3":  # eps = 1e6
        t = math.sqrt(1 + 2e6)
        return np.array([[t / 1e6, 1.0], [1.0, t]])
    assert nr == "2.4"  # eps = 1e-7
    e = 1e-7
    x11 = (2 * (1 + e) + s2 * (math.sqrt((1 + e) ** 2 + 1) + e)) / 2
    x12 = x11 / (x11 - 1 - e)
    return np.array([[x11, x12], [x12, x11]])


@pytest.mark.parametrize("nr", ["1.1", "1.2", "2.1", "2.3", "2.4"])
def test_solution_matches_carex_closed_form(nr):
    X = closed_form(nr)
    np.testing.assert_allclose(care_x(f"carex{nr}"), X, rtol=1e-6, atol=1e-9 * np.abs(X).max())


@pytest.mark.parametrize("n", [8, 16, 32, 64])
def test_circulant_example_solution_is_circulant_closed_form(n):
    # A = -2I + cyclic shifts: Fourier modes decouple into scalar CAREs 2 c x - x^2 + 1 = 0, c = -2 + 2 cos(2 pi k/n)
    name = "carex3.2" if n == 64 else f"carex3.2-n{n}"
    c = -2 + 2 * np.cos(2 * np.pi * np.arange(n) / n)
    x = c + np.sqrt(c**2 + 1)
    F = np.exp(2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n) / math.sqrt(n)
    X = (F @ np.diag(x) @ F.conj().T).real
    np.testing.assert_allclose(care_x(name), X, atol=1e-10)


def test_integrator_chain_example_4_1():
    p = azopg.get_problem("carex4.1")
    n = 21
    np.testing.assert_array_equal(p.A, np.eye(n, k=1))
    np.testing.assert_array_equal(p.B[:, 0], np.eye(n)[-1])
    np.testing.assert_array_equal(p.Q, np.diag(np.eye(n)[0]))
    assert p.R[0, 0] == 1.0
    X = care_x("carex4.1")
    assert np.abs(X).max() > 1e8  # the ill-conditioned CARE CAREX describes
    # 1/s^n weighted by Q = e1 e1', R = 1: by the symmetric root locus the optimal closed-loop poles are the
    # left-half roots of s^2n = (-1)^(n+1), the Butterworth poles on the unit circle
    poles = np.linalg.eigvals(p.A - p.B @ p.optimal_gain)
    want = np.exp(1j * np.pi * (2 * np.arange(1, n + 1) + n - 1) / (2 * n))  # left half of the unit circle
    dist = np.abs(poles[:, None] - want[None, :])
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(dist)
    assert dist[rows, cols].max() < 1e-3


def test_coupled_springs_example_4_3_is_compleib_cse2():
    a, b = azopg.get_problem("carex4.3"), azopg.get_problem("cse2")
    np.testing.assert_array_equal(a.A, b.A)
    np.testing.assert_array_equal(a.B, b.B)


def test_vehicle_string_example_3_1():
    p = azopg.get_problem("carex3.1")
    assert (p.n, p.m) == (39, 20)
    # Q weighs the 19 distances (even states) by 10, nothing else
    np.testing.assert_array_equal(np.diag(p.Q), np.where(np.arange(39) % 2 == 1, 10.0, 0.0))
    np.testing.assert_array_equal(p.B.sum(axis=1), np.where(np.arange(39) % 2 == 0, 1.0, 0.0))


def test_boeing_example_2_9_sizes_and_weights():
    p = azopg.get_problem("carex2.9")
    assert (p.n, p.m) == (55, 2)
    np.testing.assert_array_equal(p.R, np.diag([364.7, 14.59]))
    assert np.linalg.matrix_rank(p.Q) == 3  # C^T W C, W with three nonzero entries
    assert p.B[47, 0] == p.B[50, 1] == 8e5
