"""The buffered method (one equation per rollout: the factor is large) on a slow, lightly damped loop from
``K0 = 0``: the first Kleinman step overshoots ``K*`` by orders of magnitude, the rollbacks search its length,
and the next steps are full again."""

from __future__ import annotations

import math

import numpy as np
import pytest

import azopg
from azopg.method import pi_defaults
from azopg.method.pi_buffered import EXACT_OVERDETERMINED, OVERDETERMINED, BufferedFits


def lightly_damped_chain(masses: int, damping: float, scale: float) -> azopg.LQRProblem:
    """Unit masses and springs, fixed at one end, one force on the free end's mass, ``damping`` times the
    stiffness plus the identity; states ``x -> T x``, ``T = diag(logspace(-scale, scale, n))``."""
    s = masses
    stiffness = 2.0 * np.eye(s) - np.eye(s, k=1) - np.eye(s, k=-1)
    stiffness[-1, -1] = 1.0
    A = np.block([[np.zeros((s, s)), np.eye(s)], [-stiffness, -damping * (stiffness + np.eye(s))]])
    B = np.zeros((2 * s, 1))
    B[s] = 1.0
    T = np.diag(np.logspace(-scale, scale, 2 * s))
    Ti = np.linalg.inv(T)
    return azopg.LQRProblem(T @ A @ Ti, T @ B, Ti.T @ Ti, np.eye(1), T @ T.T, np.zeros((1, 2 * s)), name="chain")


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_the_buffered_method_converges_from_zero_on_a_lightly_damped_chain(scale):
    """n = 40, m = 1 (the factor's 1,680 columns: the buffered method), open-loop abscissa -5e-6: the exact
    Kleinman sequence from K0 = 0 starts with a gain 1e4 times K*'s. Converged to gap 1e-6 by the oracle,
    the gain within 1e-2 of K*, in any state units."""
    p = lightly_damped_chain(20, 1e-5, scale)
    assert pi_defaults.factor_columns(p.n, p.m) > pi_defaults.MAX_FACTOR_COLUMNS
    K1 = np.linalg.solve(p.R, p.B.T @ p.value_matrix(p.K0))
    assert np.linalg.norm(K1) > 1e3 * np.linalg.norm(p.optimal_gain)
    r = azopg.train(p, seed=0, max_rollouts=40_000, target_gap=1e-6)
    assert r.status == "converged" and p.relative_gap(r.K) <= 1e-6
    assert np.linalg.norm(r.K - p.optimal_gain) <= 1e-2 * np.linalg.norm(p.optimal_gain)


def test_exact_data_need_fewer_rows_for_the_first_fit_but_pairs_do_not_change():
    fits = BufferedFits(100, 860, 1, 40)
    assert fits.needed == math.ceil(OVERDETERMINED * 860)
    fits.exact()
    assert fits.needed == math.ceil(EXACT_OVERDETERMINED * 860) < math.ceil(OVERDETERMINED * 860)
    pairs = BufferedFits.of_pairs(100, 1, 40)
    pairs.exact()
    assert pairs.needed == 100
