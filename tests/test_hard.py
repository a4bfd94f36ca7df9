"""The generator of hard cases: its prescribed properties, checked against the CARE/Lyapunov oracle."""

from __future__ import annotations

import numpy as np
import pytest

from azopg.errors import ProblemError
from azopg.model.hard import hard_system


def balanced(p):
    """P* and X* in balanced coordinates (D P* D, D^-1 X* D^-1), D = x0_cov^1/2, and D's entries."""
    d = np.sqrt(np.diag(p.x0_cov))
    K = p.optimal_gain
    return d[:, None] * p.value_matrix(K) * d[None, :], p.state_covariance(K) / np.outer(d, d), d


@pytest.mark.parametrize(("n", "m", "seed"), [(6, 1, 0), (10, 5, 1), (16, 8, 2)])
def test_prescribed_conditions_scales_and_slow_modes(n, m, seed):
    p = hard_system(n, m, seed, cond_P=1e4, cond_X=1e3, state_scales=1e8, slow_modes=2, damping=0.02)
    assert (p.n, p.m) == (n, m)
    P, X, d = balanced(p)
    assert np.linalg.cond(P) == pytest.approx(1e4, rel=1e-3)
    assert np.linalg.cond(X) == pytest.approx(1e3, rel=1e-3)
    assert d.max() / d.min() == pytest.approx(1e8, rel=1e-12)
    # states spread over the decades: the diagonal of P* spans many orders of magnitude
    assert np.ptp(np.log10(np.diag(p.value_matrix(p.optimal_gain)))) > 6
    # two lightly damped pairs at the slowest rate 1/cond_X, damping ratio 0.02
    lam = np.linalg.eigvals(p.A - p.B @ p.optimal_gain)
    slow = lam[np.abs(lam.imag) > 0]
    assert len(slow) == 4
    np.testing.assert_allclose(slow.real, -1e-3, rtol=1e-6)
    np.testing.assert_allclose(-slow.real / np.abs(slow), 0.02, rtol=1e-6)
    assert lam.real.max() < 0 and lam.real.min() == pytest.approx(-1.0, rel=1e-6)
    # Q >= 0 in balanced coordinates, K0 stabilizing
    assert np.linalg.eigvalsh(p.Q * np.outer(d, d)).min() > 0
    assert p.is_stabilizing(p.K0) and p.cost(p.K0) >= p.optimal_cost


def test_same_seed_same_system_other_seed_other_system():
    a, b, c = (hard_system(8, 4, s, cond_P=1e3, cond_X=1e2, state_scales=1e4) for s in (3, 3, 4))
    for key in ("A", "B", "Q", "x0_cov"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.A, c.A)


def test_unscaled_defaults_are_well_conditioned_and_valid():
    p = hard_system(5, 2)
    np.testing.assert_array_equal(p.x0_cov, np.eye(5))
    assert np.sum(np.linalg.eigvals(p.A).real > 0) == 2  # m unstable open-loop modes (module docstring)
    P, X, _ = balanced(p)
    assert np.linalg.cond(P) == pytest.approx(1e3, rel=1e-6)
    assert np.linalg.cond(X) == pytest.approx(1e3, rel=1e-6)


@pytest.mark.parametrize("kw", [dict(n=4, m=5), dict(n=4, m=2, cond_P=0.5), dict(n=4, m=2, slow_modes=2),
                                dict(n=4, m=2, damping=0.0)])
def test_bad_arguments_are_refused(kw):
    with pytest.raises(ProblemError):
        hard_system(**kw)
