"""The rounding committed by re-centring the interval equations far from their rollouts, against exact
arithmetic: the same factor shifted with rational numbers (``fractions``, machine-free), rounded once to
floating point and solved alike. ``StepError.rounding`` must cover the step's change, and stay sharp.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import azopg
from azopg.method.equations import IntervalEquations
from azopg.method.policy_iteration import PolicyIteration
from azopg.method.regression import _scales
from test_step_judgement import rollouts


def exact_shift(eq: IntervalEquations, T: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``T`` (rows about ``C``) about ``C + delta`` in exact rational arithmetic, rounded once: ``E`` columns
    ``2 (D_c - delta) S``, ``y`` column ``y + 2 <D_c S, R delta> - <delta S delta', R>`` (``R`` known)."""
    m, n = eq.m, eq.n
    i, j = np.triu_indices(n)
    F = np.vectorize(Fraction, otypes=[object])
    d, R = F(delta), F(eq.R)
    Rd = R.dot(d)
    out = T.copy()
    for r in range(T.shape[0]):
        row = F(T[r])
        S = np.full((n, n), Fraction(0), dtype=object)
        w = row[eq._W]
        for c, (a, b) in enumerate(zip(i, j, strict=True)):
            S[a, b] = S[b, a] = w[c] if a == b else w[c] / 2
        DS = row[eq._E].reshape(m, n) / 2
        dS = d.dot(S)
        out[r, eq._E] = [float(v) for v in (2 * (DS - dS)).ravel()]
        y = row[-1] + 2 * np.sum(DS * Rd) - np.sum(dS.dot(d.T) * R)
        out[r, -1] = float(y)
    return out


def step_change(name: str, frac: float, b: int, tau: float, k: int, isotropic: bool = False):
    """Equations from rollouts at ``K0``, re-centred at ``K0 + frac * step`` (the fit's Kleinman step) in
    floating point and exactly: the judgement of the first, and the scaled change of its step."""
    p = azopg.get_problem(name)
    K0 = np.asarray(p.K0)
    eq = IntervalEquations(K0, p.R).add(*rollouts(p, K0, b, 1e-2, tau, k, isotropic=isotropic))
    fit, _ = eq.evaluate()
    C = K0 + frac * -np.linalg.solve(fit.R, fit.E)
    T = eq.T.copy()
    eq.recenter(C)
    far, precision = eq.evaluate()
    exact = IntervalEquations(C, p.R)
    exact.T, exact.rows = exact_shift(eq, T, C - K0), eq.rows
    truth, _ = exact.evaluate()
    q = eq._W.start
    dE = _scales(np.sum(eq._factor()[:, :eq.p] ** 2, axis=0))[q:q + eq.m * eq.n].reshape(eq.m, eq.n)
    return precision, float(np.linalg.norm((far.E - truth.E) * dE))


CASES = [("he1", 4, 10.0, 64, False), ("carex2.7", 8, 200.0, 64, False), ("carex1.3", 4, 50.0, 32, False),
         ("carex2.2", 4, 400.0, 16, True), ("cola5", 6, 20.0, 32, False)]


@pytest.mark.parametrize("frac", [1.0, 3.0, -2.0])
@pytest.mark.parametrize(("name", "b", "tau", "k", "isotropic"), CASES)
def test_the_rounding_of_a_far_recentring_covers_the_exact_one(name, b, tau, k, isotropic, frac):
    """The step's change from rounding is within its standard error always, and within the rounding part
    alone wherever it is above the floor of any fit (``1e-13`` of the step: ``eps`` times its conditioning,
    counted by the residual part)."""
    precision, change = step_change(name, frac, b, tau, k, isotropic)
    assert change <= precision.error
    if change > 1e-13 * precision.step:
        assert change <= precision.rounding


def test_the_bound_is_sharp_where_it_decides():
    """CAREX 2.2 (``R`` nearly singular, ``K0 = 0``): re-centred at its first Kleinman step (``|K| ~ 1e5``)
    the step's rounding is as large as the step; the judgement refuses it, with a bound within 10 times the
    exact change (spreading the error over every row of the factor put it 440 times above)."""
    precision, change = step_change("carex2.2", 1.0, 4, 400.0, 16, isotropic=True)
    assert change > 0.1 * precision.step
    assert change <= precision.rounding <= 10 * change
    assert PolicyIteration._refusal(precision) is not None
