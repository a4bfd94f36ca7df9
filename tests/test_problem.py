"""LQRProblem: the exact oracle against closed forms, and input validation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg as sla

import azopg
from _support import kron_cost, kron_value_matrix, random_problem, random_spd
from azopg import LQRProblem, NotStabilizingError, ProblemError, Settings, SettingsError

# ----------------------------------------------------------------------------- helpers


def central_difference_gradient(f, K: np.ndarray, h: float) -> np.ndarray:
    G = np.zeros_like(K)
    for idx in np.ndindex(K.shape):
        E = np.zeros_like(K)
        E[idx] = h
        G[idx] = (f(K + E) - f(K - E)) / (2 * h)
    return G


def oracle_cases() -> list[tuple[str, LQRProblem, np.ndarray]]:
    cases = []
    rng = np.random.default_rng(20240611)
    for i, (n, m) in enumerate([(2, 1), (3, 2), (4, 2), (5, 3)]):
        p = random_problem(rng, n, m)
        K = 0.1 * rng.standard_normal((m, n))
        assert p.is_stabilizing(K)
        cases.append((f"random-{n}x{m}-{i}", p, K))
    he1 = azopg.get_problem("he1")
    cases.append(("he1-K0", he1, np.array(he1.K0)))
    cases.append(("he1-mid", he1, 0.5 * (np.array(he1.K0) + he1.optimal_gain)))
    return cases


CASES = oracle_cases()


# ------------------------------------------------------------ 1. cost and gradient

@pytest.mark.parametrize(("label", "p", "K"), CASES, ids=[c[0] for c in CASES])
def test_cost_matches_independent_lyapunov_solve(label, p, K):
    assert p.cost(K) == pytest.approx(kron_cost(p, K), rel=1e-10)
    # tr(P Omega) = tr((Q + K'RK) X): the two Lyapunov forms agree
    X = p.state_covariance(K)
    assert np.trace((p.Q + K.T @ p.R @ K) @ X) == pytest.approx(p.cost(K), rel=1e-10)


@pytest.mark.parametrize(("label", "p", "K"), CASES, ids=[c[0] for c in CASES])
def test_gradient_matches_central_differences(label, p, K):
    h = 1e-5 * max(1.0, float(np.max(np.abs(K))))
    fd = central_difference_gradient(lambda Z: kron_cost(p, Z), K, h)
    G = p.gradient(K)
    assert G.shape == (p.m, p.n)
    assert np.linalg.norm(G - fd) <= 1e-6 * np.linalg.norm(G)
    # and the cost method itself differentiates to the same thing
    fd2 = central_difference_gradient(p.cost, K, h)
    assert np.linalg.norm(G - fd2) <= 1e-6 * np.linalg.norm(G)


def test_gradient_fd_detects_a_wrong_gradient():
    # sanity of the check above: a 1e-4 relative error in one entry is visible
    _label, p, K = CASES[1]
    h = 1e-5
    fd = central_difference_gradient(lambda Z: kron_cost(p, Z), K, h)
    G = p.gradient(K).copy()
    G[0, 0] *= 1 + 1e-4
    assert np.linalg.norm(G - fd) > 1e-6 * np.linalg.norm(G)


def test_non_stabilizing_gain_has_infinite_cost_and_no_gradient():
    p = azopg.get_problem("he1")  # open-loop unstable
    K = np.zeros((p.m, p.n))
    assert not p.is_stabilizing(K)
    assert p.cost(K) == math.inf
    assert p.relative_gap(K) == math.inf
    with pytest.raises(NotStabilizingError):
        p.gradient(K)
    with pytest.raises(NotStabilizingError):
        p.value_matrix(K)


# -------------------------------------------------------------- 2. the optimum

SCALARS = [  # a, b, q, r, omega
    (-1.0, 1.0, 1.0, 1.0, 1.0),
    (0.5, 2.0, 3.0, 0.25, 1.0),
    (2.0, -0.5, 0.1, 4.0, 2.5),
    (-3.0, 0.2, 10.0, 0.01, 0.3),
]


@pytest.mark.parametrize(("a", "b", "q", "r", "omega"), SCALARS)
def test_scalar_optimum_closed_form(a, b, q, r, omega):
    # CARE: 2 a p - b^2 p^2 / r + q = 0, stabilizing (positive) root
    p_star = (a * r + math.sqrt(a * a * r * r + b * b * q * r)) / (b * b)
    k_star = b * p_star / r
    assert 2 * a * p_star - b * b * p_star**2 / r + q == pytest.approx(0.0, abs=1e-12 * (1 + q))
    K0 = (a + 1.0) / b  # a - b K0 = -1
    prob = LQRProblem(a, b, q, r, x0_cov=omega, K0=K0)
    assert prob.optimal_gain.shape == (1, 1)
    assert prob.optimal_gain[0, 0] == pytest.approx(k_star, rel=1e-10)
    assert prob.optimal_cost == pytest.approx(p_star * omega, rel=1e-10)
    # scalar cost f(k) = omega (q + r k^2) / (2 (b k - a)) and its derivative
    for k in (K0, k_star, 0.5 * (K0 + k_star) + 0.1 / b):
        f = omega * (q + r * k * k) / (2 * (b * k - a))
        df = omega * (2 * r * k * (b * k - a) - b * (q + r * k * k)) / (2 * (b * k - a) ** 2)
        assert prob.cost([[k]]) == pytest.approx(f, rel=1e-10)
        assert prob.gradient([[k]])[0, 0] == pytest.approx(df, rel=1e-8, abs=1e-10 * abs(f))


def optimum_cases() -> list[LQRProblem]:
    rng = np.random.default_rng(7)
    out = [random_problem(rng, n, m) for n, m in [(2, 1), (3, 2), (4, 3), (6, 2)]]
    out.append(azopg.random_system(5, 2, seed=1, stable=False))
    out.append(azopg.get_problem("he1"))
    return out


@pytest.mark.parametrize("p", optimum_cases(), ids=lambda p: f"{p.name}-{p.n}x{p.m}")
def test_optimum_matches_scipy_care(p):
    P = sla.solve_continuous_are(np.asarray(p.A), np.asarray(p.B), np.asarray(p.Q), np.asarray(p.R))
    K_ref = np.linalg.solve(p.R, p.B.T @ P)
    np.testing.assert_allclose(p.optimal_gain, K_ref, rtol=1e-9, atol=1e-12 * np.abs(K_ref).max())
    assert p.optimal_cost == pytest.approx(np.trace(P @ p.x0_cov), rel=1e-10)
    assert p.is_stabilizing(p.optimal_gain)
    assert p.cost(p.optimal_gain) == pytest.approx(p.optimal_cost, rel=1e-9)
    assert p.relative_gap(p.optimal_gain) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("p", optimum_cases(), ids=lambda p: f"{p.name}-{p.n}x{p.m}")
def test_optimum_is_a_minimum(p):
    Ks = p.optimal_gain
    fstar = p.optimal_cost
    # stationarity, on the scale of the gradient at the initial gain
    scale = max(np.linalg.norm(p.gradient(p.K0)), fstar / max(1.0, np.linalg.norm(Ks)))
    assert np.linalg.norm(p.gradient(Ks)) <= 1e-8 * scale
    rng = np.random.default_rng(11)
    checked = 0
    for eps in (1e-3, 1e-2, 1e-1, 0.5):
        for _ in range(5):
            D = rng.standard_normal(Ks.shape)
            K = Ks + eps * np.linalg.norm(Ks) * D / np.linalg.norm(D)
            if not p.is_stabilizing(K):
                continue
            checked += 1
            f = p.cost(K)
            assert f >= fstar
            # exact identity: f(K) - f* = tr((K - K*)' R (K - K*) X(K))
            dK = K - Ks
            gap = float(np.trace(dK.T @ p.R @ dK @ p.state_covariance(K)))
            assert f - fstar == pytest.approx(gap, rel=1e-6, abs=1e-12 * fstar)
    assert checked >= 10


# ------------------------------------------------------------- 10. validation

GOOD = {
    "A": [[-1.0, 0.5], [0.0, -2.0]],
    "B": [[1.0], [0.5]],
    "Q": [[2.0, 0.1], [0.1, 1.0]],
    "R": [[1.0]],
}


def make(**changes):
    kw = {**GOOD, **changes}
    return LQRProblem(kw.pop("A"), kw.pop("B"), kw.pop("Q"), kw.pop("R"), **kw)


@pytest.mark.parametrize(
    ("changes", "exc", "words"),
    [
        ({"A": [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]}, ProblemError, "square"),
        ({"B": [[1.0], [0.5], [0.2]]}, ProblemError, "rows"),
        ({"Q": [[2.0, 0.5], [0.1, 1.0]]}, ProblemError, "symmetric"),
        ({"Q": [[-3.0, 0.0], [0.0, 1.0]]}, ProblemError, "semi-definite.*no stabilizing solution"),
        ({"Q": [[-1.0, 0.0], [0.0, -1.0]]}, ProblemError, "semi-definite.*no stabilizing solution"),
        ({"Q": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}, ProblemError, "Q"),
        ({"R": [[0.0]]}, ProblemError, "positive definite"),
        ({"R": [[-1.0]]}, ProblemError, "positive definite"),
        ({"R": [[1.0, 0.0], [0.0, 1.0]]}, ProblemError, "R"),
        ({"x0_cov": [[1.0, 0.0], [0.0, 0.0]]}, ProblemError, "x0_cov"),
        ({"K0": [[-10.0, 0.0]]}, NotStabilizingError, "K0"),
        ({"K0": [[1.0, 0.0, 0.0]]}, ProblemError, "K0"),
        ({"K0": [[1.0], [0.0]]}, ProblemError, "K0"),
        ({"A": [[1.0, 0.0], [0.0, -1.0]]}, NotStabilizingError, "Hurwitz"),
        ({"A": [[0.0, 1.0], [0.0, 0.0]]}, NotStabilizingError, "Hurwitz"),  # marginal: not Hurwitz
        ({"A": "abc"}, ProblemError, "numeric"),
        ({"A": [[-1.0, 0.0], [0.0]]}, ProblemError, "A"),
        ({"A": []}, ProblemError, "A"),
        ({"A": np.ones((2, 2, 2))}, ProblemError, "2-D"),
    ],
)
def test_invalid_problem_raises_typed_error(changes, exc, words):
    with pytest.raises(exc, match=words):
        make(**changes)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", ["A", "B", "Q", "R", "x0_cov", "K0"])
def test_non_finite_entries_rejected(key, bad):
    base = {**GOOD, "x0_cov": [[1.0, 0.0], [0.0, 1.0]], "K0": [[0.1, 0.1]]}
    M = np.array(base[key], dtype=float)
    M[-1, -1] = bad
    base[key] = M
    with pytest.raises(ProblemError, match="NaN or inf"):
        make(**base)


def test_non_stabilizing_error_is_a_problem_error_and_value_error():
    assert issubclass(NotStabilizingError, ProblemError)
    assert issubclass(ProblemError, ValueError)
    assert issubclass(ProblemError, azopg.AzopgError)
    assert issubclass(SettingsError, azopg.AzopgError)


def test_unstable_open_loop_with_stabilizing_K0_accepted():
    p = make(A=[[1.0, 0.0], [0.0, -1.0]], K0=[[3.0, 0.0]])
    assert p.is_stabilizing(p.K0)
    assert np.array_equal(p.K0, [[3.0, 0.0]])


def test_scalar_system_allowed_in_every_spelling():
    for spelling in [(-1, 1, 1, 1), ([[-1]], [[1]], [[1]], [[1]]), ([-1], [1], [1], [1]), (-1.0, 1.0, None, None)]:
        p = LQRProblem(*spelling)
        assert (p.n, p.m) == (1, 1)
        assert np.array_equal(p.K0, [[0.0]])
        # f(0) = q / (2 |a|) = 1/2, f* = sqrt(2) - 1
        assert p.cost(p.K0) == pytest.approx(0.5, rel=1e-12)
        assert p.optimal_cost == pytest.approx(math.sqrt(2) - 1, rel=1e-10)


def test_defaults_and_symmetrization():
    p = LQRProblem([[-1.0, 0.0], [0.0, -2.0]], [1.0, 1.0])  # flat single input column
    assert p.B.shape == (2, 1)
    assert np.array_equal(p.Q, np.eye(2)) and np.array_equal(p.R, np.eye(1))
    assert np.array_equal(p.x0_cov, np.eye(2)) and np.array_equal(p.K0, np.zeros((1, 2)))
    q = np.array([[1.0, 0.3], [0.3 + 1e-12, 1.0]])  # asymmetric only at rounding level
    p2 = LQRProblem([[-1.0, 0.0], [0.0, -2.0]], [[1.0], [1.0]], q)
    assert np.array_equal(p2.Q, p2.Q.T)


def test_from_dict_ignores_unknown_keys_and_round_trips():
    data = {**GOOD, "K0": [[0.2, 0.1]], "name": "mine", "source": "here", "title": "T",
            "comment": "ignored", "K0_method": "hand", "extra": [1, 2, 3]}
    p = LQRProblem.from_dict(data)
    assert p.name == "mine" and p.source == "here" and p.title == "T"
    q = LQRProblem.from_dict(p.to_dict())
    for attr in ("A", "B", "Q", "R", "x0_cov", "K0"):
        assert np.array_equal(getattr(p, attr), getattr(q, attr))
    assert q.cost(q.K0) == p.cost(p.K0)
    assert LQRProblem.from_dict(GOOD, name="fallback").name == "fallback"


@pytest.mark.parametrize("data", [{"A": -1, "B": 1, "Q": 1}, {"B": 1, "Q": 1, "R": 1}, [1, 2], "A"])
def test_from_dict_rejects_missing_keys_and_non_objects(data):
    with pytest.raises(ProblemError):
        LQRProblem.from_dict(data)


def test_problem_matrices_are_read_only():
    p = make()
    with pytest.raises(ValueError):
        p.A[0, 0] = 5.0
    with pytest.raises(ValueError):
        p.optimal_gain[0, 0] = 5.0


# --------------------------------------------------------------- settings

@pytest.mark.parametrize(
    "kw",
    [
        {"seed": -1}, {"seed": 1.5}, {"seed": True}, {"seed": "0"},
        {"batch": 0}, {"batch": -3}, {"batch": 2.5}, {"batch": math.inf}, {"batch": True},
        {"r": 0.0}, {"r": -1e-3}, {"r": math.nan}, {"r": math.inf}, {"r": "0.1"},
        {"tau": 0}, {"tau": -1.0}, {"tau": math.nan},
        {"step": 0.0}, {"step": -0.1}, {"step": math.inf},
        {"max_time": -1.0}, {"max_time": 0.0}, {"max_time": math.nan},
        {"max_updates": 0}, {"max_updates": 1.5}, {"max_rollouts": -10},
        {"target_gap": 0.0}, {"target_gap": -1e-3}, {"target_gap": math.nan},
        {"smoothing": None}, {"smoothing": 0.0}, {"tail_tol": -1.0},
        {"check_every": 0}, {"max_delay": 0}, {"workers": 0}, {"workers": 1.5}, {"depth": 0}, {"depth": 1.5},
        {"rollout_latency": -0.1}, {"rollout_latency": math.nan},
        {"method": "three-point"}, {"staleness": "sometimes"},
    ],
    ids=lambda kw: "-".join(f"{k}={v!r}" for k, v in kw.items()),
)
def test_settings_reject_bad_values(kw):
    with pytest.raises(SettingsError):
        Settings(**kw)


def test_settings_accept_good_values_and_round_trip():
    s = Settings(seed=3, batch=4, r=1e-3, tau=10.0, step=0.1, max_time=5, max_updates=10,
                 max_rollouts=100, target_gap=None, method="one-point")
    assert Settings.from_dict({**s.to_dict(), "unknown": 1}) == s
    assert Settings().target_gap == pytest.approx(1e-3)


def test_random_spd_helper_is_spd():
    # guards the helpers the tests rely on
    M = random_spd(np.random.default_rng(0), 4)
    assert np.allclose(M, M.T) and np.linalg.eigvalsh(M).min() > 0


# ------------------------------------------------------ E(K) and Kleinman steps
@pytest.mark.parametrize("name", ["he1", "ac1", "dis4", "rea1"])
def test_kleinman_steps_converge_quadratically_to_the_care_gain(name):
    p = azopg.get_problem(name)
    Ks = np.asarray(p.optimal_gain)
    K = np.asarray(p.K0)
    errs, costs = [], []
    for _ in range(12):
        assert p.is_stabilizing(K)
        errs.append(np.linalg.norm(K - Ks) / np.linalg.norm(Ks))
        costs.append(p.cost(K))
        K = p.kleinman_step(K)
    assert all(c2 <= c1 * (1 + 1e-12) for c1, c2 in itertools.pairwise(costs))  # policy iteration is monotone
    assert errs[-1] < 1e-12
    orders = [np.log(e2) / np.log(e1) for e1, e2 in itertools.pairwise(errs) if e1 < 0.05 and e2 > 1e-11]
    assert orders and min(orders) > 1.6  # e_{k+1} ~ c e_k^2


def test_E_vanishes_at_the_optimum_and_gives_the_cost_gap():
    """E(K*) = 0 and f(K) - f(K*) = tr(X_K (K - K*)'R(K - K*))."""
    p = random_problem(np.random.default_rng(11), 4, 2)
    Ks = np.asarray(p.optimal_gain)
    assert np.abs(p.E(Ks)).max() <= 1e-10 * np.abs(np.asarray(p.B).T @ p.value_matrix(Ks)).max()
    rng = np.random.default_rng(12)
    for _ in range(3):
        K = Ks + 0.2 * rng.standard_normal(Ks.shape)
        D = K - Ks
        gap = float(np.trace(p.state_covariance(K) @ D.T @ np.asarray(p.R) @ D))
        assert p.cost(K) - p.optimal_cost == pytest.approx(gap, rel=1e-8)
        ref = np.linalg.solve(p.R, np.asarray(p.B).T @ kron_value_matrix(p, K))  # R^-1 B'P(K)
        np.testing.assert_allclose(p.kleinman_step(K), ref, rtol=1e-9, atol=1e-12)
