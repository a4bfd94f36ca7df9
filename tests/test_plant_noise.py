"""Process and measurement noise: the exact oracle against the second-moment ODE, the noisy plant
against the oracle (Monte Carlo), the measurement-noise optimum, validation and the CLI flags."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import minimize, minimize_scalar

from azopg.errors import ProblemError
from azopg.method.tasks import Task, run_task
from azopg.model import noise
from azopg.model.problem import LQRProblem
from azopg.plants.discrete import plant_for
from azopg.plants.noisy import NoisyLinearPlant

#: |Monte Carlo mean - oracle| / standard error above this fails (two-sided false alarm 6e-5 per check).
Z_MAX = 4.0


def base() -> LQRProblem:
    return LQRProblem([[-1.0, 2.0], [0.0, -0.5]], [[0.0], [1.0]], np.eye(2), [[1.0]],
                      x0_cov=[[1.0, 0.2], [0.2, 0.5]], name="two")


W = np.array([[0.3, 0.1], [0.1, 0.2]])
V = np.array([[0.2, -0.05], [-0.05, 0.1]])
K = np.array([[0.4, 1.1]])


def moment_ode(problem: LQRProblem, K: np.ndarray, tau: float, x0_cov: np.ndarray) -> tuple[float, np.ndarray]:
    """``E[cost]`` and ``E[S]`` by integrating the second-moment ODE of ``z = [x; v]``, ``v`` reset to
    ``N(0, V)`` (uncorrelated with ``x``) at each sampling instant -- independent of Van Loan."""
    n = problem.n
    Vm = problem.measurement_noise
    Wm = np.zeros((n, n)) if problem.process_noise is None else problem.process_noise
    Acl = problem.A - problem.B @ K
    BK, KRK = problem.B @ K, K.T @ problem.R @ K
    F = np.block([[Acl, -BK], [np.zeros((n, 2 * n))]])
    C = np.block([[problem.Q + KRK, KRK], [KRK, KRK]])
    Wz = np.zeros((2 * n, 2 * n))
    Wz[:n, :n] = Wm

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        Sig = y[:4 * n * n].reshape(2 * n, 2 * n)
        return np.concatenate([(F @ Sig + Sig @ F.T + Wz).ravel(), Sig[:n, :n].ravel(), [np.trace(C @ Sig)]])

    edges = [0.0, tau] if Vm is None else sorted({*np.arange(0.0, tau, problem.measurement_dt), tau})
    Sig = np.zeros((2 * n, 2 * n))
    Sig[:n, :n] = x0_cov
    S, cost = np.zeros((n, n)), 0.0
    for a, b in itertools.pairwise(edges):
        if Vm is not None:
            Sig[:n, n:] = Sig[n:, :n] = 0.0
            Sig[n:, n:] = Vm
        y0 = np.concatenate([Sig.ravel(), S.ravel(), [cost]])
        y = solve_ivp(rhs, (a, b), y0, rtol=1e-11, atol=1e-13, method="DOP853").y[:, -1]
        Sig, S, cost = y[:4 * n * n].reshape(2 * n, 2 * n), y[4 * n * n:-1].reshape(n, n), float(y[-1])
    return cost, S


# ------------------------------------------------------------------ the oracle


@pytest.mark.parametrize("with_v", [False, True])
@pytest.mark.parametrize("tau", [0.37, 2.0, 3.05])
def test_expected_cost_matches_the_second_moment_ode(with_v: bool, tau: float) -> None:
    p = base().with_noise(W=W, V=V if with_v else None, dt=0.1 if with_v else None)
    Om = np.array(p.x0_cov)
    ode, _ = moment_ode(p, K, tau, Om)
    assert noise.expected_cost(p, K, tau) == pytest.approx(ode, rel=1e-8)


def test_segment_matches_the_ode_and_composes() -> None:
    p = base().with_noise(W=W)
    F, C, Wz = noise.augmented(p, K[None], False)
    h = 0.8
    seg = noise.segment(F, C, Wz, h)  # cut into short steps and composed
    one = noise.short_step(F, C, Wz, h)[0]  # a single (not short) step, for comparison
    for a, b in ((seg.Phi, one.Phi), (seg.Qd, one.Qd), (seg.M, one.M)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    assert seg.c[0] == pytest.approx(one.c[0], rel=1e-10)
    Qd_ode = solve_ivp(lambda t, y: (F[0] @ y.reshape(2, 2) + y.reshape(2, 2) @ F[0].T + W).ravel(), (0, h),
                       np.zeros(4), rtol=1e-12, atol=1e-14).y[:, -1].reshape(2, 2)
    np.testing.assert_allclose(seg.Qd[0], Qd_ode, rtol=1e-8)


def test_average_cost_is_the_growth_rate_of_the_expected_cost() -> None:
    p = base().with_noise(W=W)
    P = p.value_matrix(K)
    assert noise.average_cost(p, K) == pytest.approx(np.trace(P @ W), rel=1e-12)
    d1 = noise.expected_cost(p, K, 60.0) - noise.expected_cost(p, K, 40.0)
    assert d1 / 20.0 == pytest.approx(np.trace(P @ W), rel=1e-9)
    q = base().with_noise(W=W, V=V, dt=0.1)
    d2 = noise.expected_cost(q, K, 60.0) - noise.expected_cost(q, K, 40.0)
    assert d2 / 20.0 == pytest.approx(noise.average_cost(q, K), rel=1e-9)


def test_complex_step_gradient_matches_central_differences() -> None:
    q = base().with_noise(W=W, V=V, dt=0.1)
    G = noise.average_cost_gradient(q, K)
    eps = 1e-5
    for j in range(2):
        E = np.zeros_like(K)
        E[0, j] = eps
        fd = (noise.average_cost(q, K + E) - noise.average_cost(q, K - E)) / (2 * eps)
        assert G[0, j] == pytest.approx(fd, rel=1e-6)


def test_process_noise_optimum_is_the_care_gain() -> None:
    p = base().with_noise(W=W)
    Ks = p.optimal_gain
    np.testing.assert_array_equal(noise.noise_optimal_gain(p), Ks)
    G = noise.average_cost_gradient(p, Ks)  # tr(P(K) W) is stationary at K*
    assert np.max(np.abs(G * Ks)) <= 1e-9 * noise.average_cost(p, Ks)


def test_measurement_noise_optimum_is_stationary_and_beats_the_care_gain() -> None:
    q = base().with_noise(W=W, V=V, dt=0.1)
    Ks = q.optimal_gain
    Kv = noise.noise_optimal_gain(q)
    Jv, Js = noise.average_cost(q, Kv), noise.average_cost(q, Ks)
    assert np.max(np.abs(noise.average_cost_gradient(q, Kv) * Kv)) <= 1e-7 * Jv
    assert np.max(np.abs(noise.average_cost_gradient(q, Ks) * Ks)) > 1e-3 * Js  # K* is not stationary here
    assert Jv < Js * (1 - 1e-3)
    for E in np.random.default_rng(0).standard_normal((4, *Kv.shape)):  # a local minimum: every direction costs
        assert noise.average_cost(q, Kv + 1e-2 * E * np.abs(Kv)) > Jv


@pytest.mark.parametrize("tau", [None, 3.0])
def test_noisy_optimum_agrees_with_other_starts_and_a_derivative_free_search(tau: float | None) -> None:
    """The optimum (of the average cost, or of the expected cost at a horizon) from K* and from three
    other starts agrees to 1e-5 relative; Nelder-Mead, which never sees the gradient, finds no cheaper
    gain near it (1e-11 relative: a gain error of the tolerance's order moves the cost by its square);
    the Hessian there is positive definite and the exact gradient vanishes to rounding."""
    q = base().with_noise(W=W, V=V, dt=0.1)
    J = (lambda Kx: noise.average_cost(q, Kx)) if tau is None else (lambda Kx: noise.expected_cost(q, Kx, tau))
    Kv = noise.noise_optimal_gain(q, tau=tau)
    for K1 in (K, 0.5 * q.optimal_gain, q.optimal_gain * [[1.3, 0.8]]):
        np.testing.assert_allclose(noise.noise_optimal_gain(q, K=K1, tau=tau), Kv, rtol=1e-5)
    Jv = J(Kv)
    nm = minimize(lambda y: J(y.reshape(Kv.shape)), Kv.ravel() * 1.01, method="Nelder-Mead",
                  options={"xatol": 1e-10, "fatol": 1e-15, "maxfev": 4000})
    assert nm.fun >= Jv * (1 - 1e-11)
    np.testing.assert_allclose(nm.x, Kv.ravel(), rtol=1e-4)
    G = noise.average_cost_gradient(q, Kv) if tau is None else noise.expected_cost_gradient(q, Kv, tau)
    assert np.max(np.abs(G * Kv)) <= 1e-8 * Jv


def test_scalar_noisy_optimum_matches_a_bracketing_search() -> None:
    """An independent optimum: on a scalar unstable plant, Brent's bracketing search on the average cost."""
    q = LQRProblem([[0.5]], [[1.0]], [[1.0]], [[0.1]], K0=[[2.0]]).with_noise(W=[[0.2]], V=[[0.3]], dt=0.2)
    kv = float(noise.noise_optimal_gain(q)[0, 0])
    br = minimize_scalar(lambda k: noise.average_cost(q, [[k]]), bracket=(0.6, 2.0, 8.0), tol=1e-12)
    assert kv == pytest.approx(br.x, rel=1e-6)
    assert kv != pytest.approx(float(q.optimal_gain[0, 0]), rel=1e-2)


def test_measurement_noise_alone_on_a_stable_plant_is_cheapest_without_feedback() -> None:
    """With V alone and A stable the average cost is >= 0 and 0 at K = 0 (no feedback feeds no noise in):
    that is the optimum returned; the expected cost at a horizon keeps the transient and its optimum."""
    q = base().with_noise(V=V, dt=0.1)
    np.testing.assert_array_equal(noise.noise_optimal_gain(q), np.zeros((1, 2)))
    assert noise.average_cost(q, np.zeros((1, 2))) == 0.0
    assert noise.average_cost(q, K) > 0.0
    Kt = noise.noise_optimal_gain(q, tau=5.0)
    assert noise.expected_cost(q, Kt, 5.0) < min(noise.expected_cost(q, K0, 5.0) for K0 in (K, np.zeros((1, 2))))


# ------------------------------------------------------------------ the plant against the oracle


@pytest.mark.parametrize("with_v", [False, True])
def test_monte_carlo_cost_and_moments_match_the_oracle(with_v: bool) -> None:
    """Rollouts from one fixed state, so every fluctuation is the noise's. With 10000 rollouts the
    standard error is below 1 % of the noise's share of the cost: a bias of 5 % of that share is
    more than 5 standard errors and fails the test with probability above 0.84."""
    p = base().with_noise(W=W, V=V if with_v else None, dt=0.1 if with_v else None)
    x0 = np.array([1.0, -0.5])
    tau, N = 1.55, 10000  # the horizon ends inside a measurement interval
    plant = NoisyLinearPlant(p, np.random.default_rng(7))
    res = plant.rollout(K, np.tile(x0, (N, 1)), tau, moments=True)
    assert not res.blown_up.any()
    exact = noise.expected_cost(p, K, tau, np.outer(x0, x0))
    free = LQRProblem(p.A, p.B, p.Q, p.R)
    noise_share = exact - noise.expected_cost(free, K, tau, np.outer(x0, x0))
    se = res.cost.std(ddof=1) / np.sqrt(N)
    assert se < 0.01 * noise_share
    assert abs(res.cost.mean() - exact) <= Z_MAX * se
    cost_ode, S_ode = moment_ode(p, K, tau, np.outer(x0, x0))
    assert cost_ode == pytest.approx(exact, rel=1e-8)
    assert res.S is not None and res.x_end is not None
    z = (res.S.mean(axis=0) - S_ode) / (res.S.std(axis=0, ddof=1) / np.sqrt(N))
    assert np.max(np.abs(z)) <= Z_MAX
    assert np.allclose(res.cost, np.einsum("ij,bji->b", p.Q + K.T @ p.R @ K, res.S)) == (not with_v)


def test_grid_states_are_exact_in_distribution() -> None:
    """``x(tau)`` is Gaussian with the covariance of the moment ODE: each entry's sample covariance
    within Z_MAX standard errors (delta method, 4th moments of a Gaussian)."""
    p = base().with_noise(W=W)
    N = 4000
    res = NoisyLinearPlant(p, np.random.default_rng(3)).rollout(K, np.zeros((N, 2)), 0.9, moments=True)
    assert res.x_end is not None
    Acl = p.A - p.B @ K
    Sig = solve_ivp(lambda t, y: (Acl @ y.reshape(2, 2) + y.reshape(2, 2) @ Acl.T + W).ravel(), (0, 0.9),
                    np.zeros(4), rtol=1e-12, atol=1e-14).y[:, -1].reshape(2, 2)
    X = res.x_end
    emp = X.T @ X / N
    se = np.sqrt((np.outer(np.diag(Sig), np.diag(Sig)) + Sig**2) / N)
    assert np.max(np.abs(emp - Sig) / se) <= Z_MAX


def test_a_task_draws_its_noise_from_its_own_stream() -> None:
    p = base().with_noise(W=W, V=V, dt=0.1)
    plant = plant_for(p)
    assert isinstance(plant, NoisyLinearPlant)
    task = Task(task_id=3, worker=1, kind="moments", K=K, version=0, tau=1.0, r=0.05, N=6, method="two-point",
                seed=11)
    a, b = run_task(plant, task), run_task(plant_for(p), task)
    other = run_task(plant, Task(**{**task.__dict__, "task_id": 4}))
    assert a.data is not None and b.data is not None and other.data is not None
    np.testing.assert_array_equal(a.data.S, b.data.S)  # the same task replays bit for bit
    assert not np.allclose(a.data.cost, other.data.cost)


# ------------------------------------------------------------------ problem data and CLI


@pytest.mark.parametrize("data, words", [
    ({"process_noise": [[1, 0.5], [0, 1]]}, "not symmetric"),
    ({"process_noise": [[1, 0], [0, -1]]}, "not positive semi-definite"),
    ({"process_noise": [[1, 0, 0]]}, "must be 2x2"),
    ({"measurement_noise": [[1, 0], [0, 1]]}, "needs measurement_dt"),
    ({"measurement_noise": [[1, 0], [0, 1]], "measurement_dt": -0.1}, "measurement_dt must be"),
    ({"measurement_dt": 0.1}, "without measurement_noise"),
    ({"process_noise": [[1, 0], [0, 1]], "discrete_time": True, "A": [[0.5, 0], [0, 0.5]]}, "continuous-time"),
])
def test_bad_noise_is_refused(data: dict, words: str) -> None:
    full = {**base().to_dict(), **data}
    with pytest.raises(ProblemError, match=words):
        LQRProblem.from_dict(full)


def test_noise_round_trips_through_the_problem_file() -> None:
    p = base().with_noise(W=W, V=V, dt=0.1)
    q = LQRProblem.from_dict(json.loads(json.dumps(p.to_dict())))
    np.testing.assert_array_equal(q.process_noise, W)
    np.testing.assert_array_equal(q.measurement_noise, V)
    assert q.measurement_dt == 0.1 and q.noisy and not base().noisy


def test_cli_noise_flags_refuse_bad_input(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args, words in ((["--process-noise", "-0.1"], "--process-noise must be"),
                        (["--measurement-noise", "0.1", "--measurement-dt", "nan"], "measurement_dt must be"),
                        (["--problem", "dean3", "--process-noise", "0.1"], "continuous-time")):
        out = subprocess.run([sys.executable, "-m", "azopg", "train", "--quiet", "--out", str(tmp_path / "x"), *args],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and words in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


def test_auto_does_not_choose_policy_iteration_on_a_noisy_plant() -> None:
    from azopg.method.auto import exact_moments

    assert exact_moments(plant_for(base())) and not exact_moments(plant_for(base().with_noise(W=W)))


def test_the_oracle_is_invariant_to_state_and_input_units() -> None:
    """``x -> T x``, ``u -> s u`` (every matrix transformed covariantly) leaves every cost unchanged and maps
    the optimum ``K -> s K T^-1``."""
    p = base().with_noise(W=W, V=V, dt=0.1)
    T, s = np.diag([1e3, 1e-2]), 1e2
    Ti = np.linalg.inv(T)
    q = LQRProblem(T @ p.A @ Ti, T @ p.B / s, Ti.T @ p.Q @ Ti, p.R / s**2, x0_cov=T @ p.x0_cov @ T.T, name="units")
    q = q.with_noise(W=T @ W @ T.T, V=T @ V @ T.T, dt=0.1)
    Kq = s * K @ Ti
    assert noise.expected_cost(q, Kq, 1.55) == pytest.approx(noise.expected_cost(p, K, 1.55), rel=1e-10)
    assert noise.average_cost(q, Kq) == pytest.approx(noise.average_cost(p, K), rel=1e-10)
    np.testing.assert_allclose(noise.noise_optimal_gain(q) / s @ T, noise.noise_optimal_gain(p), rtol=1e-6)


def test_wild_gains_count_as_blown_up_without_simulating() -> None:
    p = base().with_noise(W=W, V=V, dt=0.1)
    Ks = np.array([K[0], [1e12, 0.0], [np.nan, 0.0], [0.0, -50.0]])[:, None, :]  # the last: unstable
    res = NoisyLinearPlant(p, np.random.default_rng(0)).rollout(Ks, np.tile([1.0, 0.5], (4, 1)), 5.0, moments=True)
    assert res.blown_up.tolist() == [False, True, True, True]
    assert np.isfinite(res.cost).all() and np.isnan(res.S[1:]).all()


def test_monte_carlo_matches_the_oracle_on_he1() -> None:
    """A published 4-state, 2-input problem (two inputs: ``B K`` couples the noises), both noises, a horizon
    ending inside a sampling interval; 3000 rollouts from one state. Coarser than the two-state test: the
    standard error is 6 % of the noise's share of the cost, so it catches a bias of about 30 % of that share."""
    from azopg.model.library import get_problem

    p = get_problem("he1")
    Om = np.array(p.x0_cov)
    q = p.with_noise(W=0.05 * Om, V=0.01 * Om, dt=0.05)
    x0 = np.array([1.0, -1.0, 0.5, 0.2])
    N = 3000
    res = NoisyLinearPlant(q, np.random.default_rng(2)).rollout(p.K0, np.tile(x0, (N, 1)), 0.53)
    se = res.cost.std(ddof=1) / np.sqrt(N)
    assert abs(res.cost.mean() - noise.expected_cost(q, p.K0, 0.53, np.outer(x0, x0))) <= Z_MAX * se


def test_common_noise_is_continuous_in_the_gain() -> None:
    """Rows on the same noise path under two nearby gains see nearly the same disturbances (common random
    numbers): the state at the end moves continuously with the gain along a segment of gains. An eigenvector
    factor of the step's disturbance covariance flips an eigenvector's sign or order between nearby gains and
    decorrelated that component (he1: paired checks of near-optimal gains with 20 times the standard error)."""
    import azopg
    he1 = azopg.get_problem("he1")
    q = he1.with_noise(W=0.01 * np.asarray(he1.x0_cov))
    Ks, K0 = np.asarray(q.optimal_gain), np.asarray(q.K0)
    t = np.linspace(0.0, 0.3, 61)
    K = Ks + t[:, None, None] * (K0 - Ks)
    x0 = np.tile(np.linalg.cholesky(np.asarray(q.x0_cov))[:, 0], (len(t), 1))
    plant = NoisyLinearPlant(q, np.random.default_rng(0))
    x = plant.rollout(K, x0, 8.0, moments=True, noise_rows=np.zeros(len(t), dtype=int)).x_end
    jumps = np.linalg.norm(np.diff(x, axis=0), axis=1)
    # a smooth path: no step along the segment jumps by more than 5 times the median step
    assert jumps.max() <= 5.0 * np.median(jumps)


def test_the_disturbance_factor_is_the_symmetric_square_root() -> None:
    from azopg.plants.noisy import _sqrt_psd
    d = 1e-9
    M1, M2 = np.diag([1.0, 1.0 + d]), np.diag([1.0 + d, 1.0])  # eigenvalues in the other order
    L1, L2 = _sqrt_psd(M1), _sqrt_psd(M2)
    assert np.allclose(L1 @ L1.T, M1) and np.allclose(L1, L1.T)
    assert np.abs(L1 - L2).max() <= d
