"""The re-centring of the interval equations and the first fold, computed as matrix products over all rows
at once, against their definitions row by row: equal to rounding (1e-10 relative) on exact data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

import azopg
from azopg.method.equations import IntervalEquations
from azopg.method.folds import _reflector_factor, factor_rows, fold_rows
from azopg.method.regression import _unvech, _vech_coefficients
from test_step_judgement import rollouts


def shift_by_row(eq: IntervalEquations, X: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``X`` about ``C + delta`` and the squared term sizes of the rows after the ``P`` block, one row at
    a time from the definitions (module docstring of :mod:`azopg.method.equations`)."""
    m, n, q = eq.m, eq.n, eq._W.start
    out, sizes = X.copy(), []
    ad = np.abs(delta)
    for r, row in enumerate(X):
        S = _unvech(row[eq._W] * np.where(np.equal(*np.triu_indices(n)), 1.0, 0.5), n)
        DS = row[eq._E].reshape(m, n) / 2
        out[r, eq._E] = (2.0 * (DS - delta @ S)).ravel()
        size_E = (2.0 * (np.abs(DS) + ad @ np.abs(S))) ** 2
        if eq.R is None:
            i = np.equal(*np.triu_indices(m))
            H = _unvech(row[eq._H] * np.where(i, 1.0, 0.5), m)
            out[r, eq._H] = _vech_coefficients((H - delta @ DS.T - DS @ delta.T + delta @ S @ delta.T)[None])[0]
            terms = np.abs(H) + 2.0 * ad @ np.abs(DS).T + ad @ np.abs(S) @ ad.T
            size = np.r_[size_E.ravel(), _vech_coefficients(terms[None])[0] ** 2, 0.0]
        else:
            R = eq.R
            out[r, -1] = row[-1] + 2.0 * np.sum(DS * (R @ delta)) - np.sum((delta @ S @ delta.T) * R)
            term = (abs(row[-1]) + 2.0 * np.sum(np.abs(DS) * np.abs(R @ delta))
                    + np.sum(ad @ np.abs(S) @ ad.T * np.abs(R)))
            size = np.r_[size_E.ravel(), term**2]
        if r >= q:
            sizes.append(size)
    return out, np.array(sizes)


@pytest.mark.parametrize("name", ["he1", "cse1", "eb4"])
@pytest.mark.parametrize("estimate_R", [False, True])
def test_recentring_equals_its_definition_row_by_row(name, estimate_R):
    p = azopg.get_problem(name)
    K0 = np.asarray(p.K0)
    eq = IntervalEquations(K0, None if estimate_R else p.R).add(*rollouts(p, K0, 8, 1e-2, 20.0, 16))
    eq.solve()
    delta = np.random.default_rng(1).normal(size=K0.shape) * (1.0 + np.abs(K0))
    rows = np.random.default_rng(2).normal(size=eq.T.shape)  # every row with an S, unlike the factor's
    for X in (eq.T, rows):
        want, want_size = shift_by_row(eq, X, delta)
        got, size = eq._shift(X, delta)
        e = eq._E.start
        assert np.allclose(got, want[:, e:], rtol=0, atol=1e-10 * np.abs(want).max())
        assert np.allclose(eq.shift_rows(X, delta), want, rtol=0, atol=1e-10 * np.abs(want).max())
        assert np.allclose(size, want_size, rtol=1e-10, atol=0)
    T = eq.T.copy()
    eq.recenter(K0 + delta)
    assert np.allclose(eq.T, shift_by_row(eq, T, delta)[0], rtol=0, atol=1e-10 * np.abs(T).max())


@pytest.mark.parametrize(("rows", "columns"), [(30, 111), (111, 111), (150, 111), (20, 40), (50, 40)])
def test_the_first_fold_equals_a_fold_into_zeros(rows, columns):
    """:func:`factor_rows` (``dgeqrf``) against :func:`fold_rows` into a zero factor (``dtpqrt``): the same
    triangular factor, row signs included, on columns of scales over six decades."""
    rng = np.random.default_rng([rows, columns])
    X = rng.normal(size=(rows, columns)) * 10.0 ** rng.uniform(-3, 3, size=columns)
    want, got = fold_rows(np.zeros((columns, columns)), X), factor_rows(X)
    scale = np.abs(want).max(axis=0)
    assert np.all(np.abs(got - want) <= 1e-10 * scale)
    assert np.allclose(got.T @ got, X.T @ X, rtol=0, atol=1e-10 * np.abs(X.T @ X).max())


@pytest.mark.parametrize("zero_column", [False, True])
def test_the_block_reflector_factor_equals_lapacks(zero_column):
    """:func:`~azopg.method.folds._reflector_factor` (the UT transform, or the recurrence when a column is zero
    and its reflector the identity) against the factor LAPACK's ``dtpqrt`` returns for one block."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(120, 48)) * 10.0 ** rng.uniform(-3, 3, size=48)
    if zero_column:
        X[:, 5] = 0.0
    _, V, F, info = sla.lapack.dtpqrt(0, 48, np.zeros((48, 48)), X)
    assert info == 0 and (np.diag(F) == 0).any() == zero_column
    want = np.triu(F)
    assert np.all(np.abs(_reflector_factor(V, np.diag(F).copy()) - want) <= 1e-10 * np.abs(want).max())


@pytest.mark.parametrize(("dense", "columns"), [(30, 40), (210, 201), (5, 150)])
def test_a_fold_that_skips_a_trapezoids_zeros_equals_the_full_fold(dense, columns):
    """Rows ending in an upper triangle (the fit's rows after the ``W`` block) folded into a factor with
    ``trapezoid`` (unblocked below 64 columns, by panels above) and as dense rows: the same factor."""
    rng = np.random.default_rng([dense, columns])
    X = np.concatenate([rng.normal(size=(dense, columns)), np.triu(rng.normal(size=(columns, columns)))])
    X *= 10.0 ** rng.uniform(-3, 3, size=columns)
    T = np.triu(rng.normal(size=(columns, columns)))
    want, got = fold_rows(T, X), fold_rows(T, X, trapezoid=columns)
    assert np.all(np.abs(got - want) <= 1e-10 * np.abs(want).max(axis=0))
