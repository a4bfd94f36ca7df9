"""The exact oracle of a linear plant with process and measurement noise.

The noise model (continuous time only)::

    dx = (A x + B u) dt + dw,      E[dw dw'] = W dt          (process noise, intensity W)
    u(t) = -K (x(t) + v_j),        t in [j delta, (j+1) delta)  (measurement noise)

``v_j ~ N(0, V)`` independent, each held over one sampling interval of length ``delta``
(``measurement_dt``): a sensor sampled every ``delta`` seconds whose reading carries noise of
covariance ``V`` -- what :class:`~azopg.plants.envs.LinearEnv` does with ``obs_noise_std`` under
its zero-order hold, except that here the state itself is fed back continuously. (White
measurement noise in continuous time would put white noise into ``u`` and make ``E[u'Ru]``
infinite; held samples keep every cost finite.) ``x0 ~ N(0, Omega)``, ``w``, ``v`` independent.

Over one interval the augmented state ``z = [x; v]`` (``v`` held) obeys ``dz = F z dt + [dw; 0]``
with ``F = [[A - BK, -BK], [0, 0]]``, and the stage cost is ``z'Cz`` with
``C = [[Q + K'RK, K'RK], [K'RK, K'RK]]``. Everything below comes from four quantities of a
segment of length ``h`` (:class:`Segment`)::

    Phi = exp(F h),  Qd = int_0^h exp(F s) Wz exp(F's) ds,  M = int_0^h exp(F's) C exp(F s) ds,
    c = E[int_0^h z'Cz dt | z(0) = 0] = int_0^h tr(M(h - s) Wz) ds

(``Wz = diag(W, 0)``), computed by Van Loan block exponentials on a short step
(``||F h|| <= 1/2``) and composed exactly (:meth:`Segment.then`)::

    Phi = Phi2 Phi1,  Qd = Phi2 Qd1 Phi2' + Qd2,  M = M1 + Phi1' M2 Phi1,  c = c1 + c2 + tr(M2 Qd1).

Without measurement noise ``z = x`` (``d = n``). The functions are written for real or complex
gains alike, so :func:`average_cost_gradient` is the complex-step derivative of the exact cost:
exact to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.optimize as sopt

from ..errors import NotStabilizingError, ProblemError
from .problem import LQRProblem

__all__ = ["Segment", "augmented", "average_cost", "average_cost_gradient", "complex_gradient", "expected_cost",
           "expected_cost_gradient", "gramian", "minimize_gain", "noise_optimal_gain", "sampled", "segment"]

_THETA = 0.5  # bound on ||F h|| (inf-norm) of a short step
_STEP = 1e-30  # complex step


def augmented(problem: LQRProblem, K: np.ndarray, with_v: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``F`` (b, d, d), ``C`` (b, d, d) and ``Wz`` (d, d) of the augmented state ``z = [x; v]`` for
    gains ``K`` (b, m, n) (module docstring); ``z = x`` without ``with_v``."""
    A, B, Q, R = (np.asarray(M) for M in (problem.A, problem.B, problem.Q, problem.R))
    n = problem.n
    W = np.zeros((n, n)) if problem.process_noise is None else np.asarray(problem.process_noise)
    BK = B @ K
    KRK = K.swapaxes(1, 2) @ R @ K
    if not with_v:
        return A - BK, Q + KRK, W
    b = K.shape[0]
    F = np.zeros((b, 2 * n, 2 * n), dtype=K.dtype)
    F[:, :n, :n] = A - BK
    F[:, :n, n:] = -BK
    C = np.empty((b, 2 * n, 2 * n), dtype=K.dtype)
    C[:, :n, :n] = Q + KRK
    C[:, :n, n:] = KRK
    C[:, n:, :n] = KRK
    C[:, n:, n:] = KRK
    Wz = np.zeros((2 * n, 2 * n))
    Wz[:n, :n] = W
    return F, C, Wz


def gramian(F: np.ndarray, X: np.ndarray, h: float) -> np.ndarray:
    """``int_0^h exp(F s) X exp(F's) ds`` (b, d, d) for ``F`` (b, d, d), ``X`` (d, d) or (b, d, d),
    by Van Loan: ``expm([[-F, X], [0, F']] h) = [[., exp(-F h) G], [0, .]]``."""
    b, d = F.shape[0], F.shape[1]
    Z = np.zeros((b, 2 * d, 2 * d), dtype=np.result_type(F, X))
    Z[:, :d, :d] = -F
    Z[:, :d, d:] = X
    Z[:, d:, d:] = F.swapaxes(1, 2)
    E = sla.expm(Z * h)
    G = _expm(F * h) @ E[:, :d, d:]
    return 0.5 * (G + G.swapaxes(1, 2))


def _expm(Z: np.ndarray) -> np.ndarray:
    return np.asarray(sla.expm(Z))


@dataclass
class Segment:
    """The exact map of a stretch of time of length ``h`` (module docstring): ``Phi``, ``Qd``, ``M``
    (b, d, d) and ``c`` (b,)."""

    Phi: np.ndarray
    Qd: np.ndarray
    M: np.ndarray
    c: np.ndarray
    h: float

    def then(self, other: Segment) -> Segment:
        """This segment followed by ``other``."""
        P2t = other.Phi.swapaxes(1, 2)
        return Segment(other.Phi @ self.Phi, other.Phi @ self.Qd @ P2t + other.Qd,
                       self.M + self.Phi.swapaxes(1, 2) @ other.M @ self.Phi,
                       self.c + other.c + np.einsum("bij,bji->b", other.M, self.Qd), self.h + other.h)

    def times(self, k: int) -> Segment:
        """``k >= 1`` copies in a row (binary powering: ``log2 k`` compositions)."""
        out: Segment | None = None
        base = self
        while k:
            if k & 1:
                out = base if out is None else out.then(base)
            k >>= 1
            if k:
                base = base.then(base)
        assert out is not None
        return out


def short_step(F: np.ndarray, C: np.ndarray, Wz: np.ndarray, h: float) -> tuple[Segment, np.ndarray]:
    """The :class:`Segment` of a short step ``h`` (``||F h||`` small) and ``Gamma = int_0^h Qd(s) ds``
    (b, d, d), the noise's share of ``E[int z z' dt]``; by block exponentials of Van Loan's form."""
    b, d = F.shape[0], F.shape[1]
    dtype = np.result_type(F, C)
    Phi = _expm(F * h)
    Z = np.zeros((b, 2 * d, 2 * d), dtype=dtype)
    Z[:, :d, :d] = -F.swapaxes(1, 2)
    Z[:, :d, d:] = C
    Z[:, d:, d:] = F
    M = Phi.swapaxes(1, 2) @ _expm(Z * h)[:, :d, d:]
    # expm([[-F, I, 0], [0, -F, Wz], [0, 0, F']] h) = [[., ., exp(-F h) Gamma], [0, ., exp(-F h) Qd], ...]
    Y = np.zeros((b, 3 * d, 3 * d), dtype=dtype)
    Y[:, :d, :d] = -F
    Y[:, :d, d:2 * d] = np.eye(d)
    Y[:, d:2 * d, d:2 * d] = -F
    Y[:, d:2 * d, 2 * d:] = Wz
    Y[:, 2 * d:, 2 * d:] = F.swapaxes(1, 2)
    E = _expm(Y * h)
    Qd = Phi @ E[:, d:2 * d, 2 * d:]
    Gamma = Phi @ E[:, :d, 2 * d:]
    M, Qd, Gamma = (0.5 * (X + X.swapaxes(1, 2)) for X in (M, Qd, Gamma))
    return Segment(Phi, Qd, M, np.einsum("bij,bji->b", C, Gamma), h), Gamma


def steps_for(F: np.ndarray, h: float) -> int:
    """Number of equal short steps into which a stretch ``h`` is cut (``||F h / k|| <= THETA``)."""
    norm = float(np.max(np.abs(np.real(F)).sum(axis=2))) if F.size else 0.0
    return max(1, math.ceil(norm * h / _THETA))


def segment(F: np.ndarray, C: np.ndarray, Wz: np.ndarray, h: float) -> Segment:
    """The exact :class:`Segment` of length ``h`` (cut into short steps, composed)."""
    k = steps_for(F, h)
    return short_step(F, C, Wz, h / k)[0].times(k)


def _noise(problem: LQRProblem) -> tuple[np.ndarray | None, float | None]:
    V = problem.measurement_noise
    return (None, None) if V is None else (np.asarray(V), problem.measurement_dt)


def _gain(problem: LQRProblem, K: Any) -> np.ndarray:
    if problem.discrete_time:
        raise ProblemError("the noise oracle is for continuous-time problems")
    K = np.asarray(K)
    K = K.astype(complex) if np.iscomplexobj(K) else K.astype(float)
    return K.reshape(1, problem.m, problem.n)


def expected_cost(problem: LQRProblem, K: Any, tau: float, x0_cov: Any = None) -> float:
    """``E[int_0^tau (x'Qx + u'Ru) dt]`` from ``x0 ~ N(0, x0_cov)`` (default the problem's ``Omega``)
    under the problem's process and measurement noise, exactly (module docstring); any ``K``,
    stabilizing or not. Measurement samples are taken at ``0, delta, 2 delta, ...``."""
    Kb = _gain(problem, K)
    Om = np.asarray(problem.x0_cov if x0_cov is None else x0_cov)
    V, dt = _noise(problem)
    F, C, Wz = augmented(problem, Kb, V is not None)
    if V is None:
        seg = segment(F, C, Wz, tau)
        return _real(np.trace(seg.M[0] @ Om) + seg.c[0])
    assert dt is not None
    n = problem.n
    full, rest = divmod(tau, dt)
    full = int(full)
    if rest <= 1e-12 * tau and full > 0:
        rest = 0.0
    total: Any = 0.0
    Sx = Om.astype(Kb.dtype)
    if full:  # the sampling intervals, each a Segment of x alone (v drawn afresh), composed in log2 steps
        seg = sampled(segment(F, C, Wz, dt), V).times(full)
        total = np.trace(seg.M[0] @ Sx) + seg.c[0]
        Sx = seg.Phi[0] @ Sx @ seg.Phi[0].T + seg.Qd[0]
    if rest > 0:
        seg = segment(F, C, Wz, rest)
        total += np.trace(seg.M[0, :n, :n] @ Sx) + np.trace(seg.M[0, n:, n:] @ V) + seg.c[0]
    return _real(total)


def sampled(seg: Segment, V: np.ndarray) -> Segment:
    """The segment of one sampling interval as a map of ``x`` alone: ``v ~ N(0, V)`` drawn at its start,
    independent of ``x``, enters the drive (``Phi_xv V Phi_xv' + Qd_xx``) and the constant
    (``tr(M_vv V) + c``); with it the intervals compose like any segments."""
    n = V.shape[0]
    Pxv = seg.Phi[:, :n, n:]
    return Segment(seg.Phi[:, :n, :n], Pxv @ V @ Pxv.swapaxes(1, 2) + seg.Qd[:, :n, :n], seg.M[:, :n, :n],
                   np.einsum("bij,ji->b", seg.M[:, n:, n:], V) + seg.c, seg.h)


def _real(x: Any) -> Any:
    return x if np.iscomplexobj(x) else float(x)


def _dlyap(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``X = A X A' + C`` by a Kronecker solve (plain transposes: analytic, so complex steps pass)."""
    d = A.shape[0]
    X = np.linalg.solve(np.eye(d * d) - np.kron(A, A), C.reshape(-1)).reshape(d, d)
    return 0.5 * (X + X.T)


def average_cost(problem: LQRProblem, K: Any) -> Any:
    """``lim (1/tau) E[int_0^tau (x'Qx + u'Ru) dt]`` under the problem's noise, for a stabilizing ``K``.

    Without measurement noise this is ``tr(P(K) W)``. With it, the closed loop is periodic
    (period ``delta``): with ``Sigma = E[x x']`` at the sampling instants, the fixed point of
    ``Sigma = Phi_xx Sigma Phi_xx' + Phi_xv V Phi_xv' + Qd_xx``, the cost is
    ``(tr(M diag(Sigma, V)) + c) / delta`` for the segment of one interval.

    Raises
    ------
    NotStabilizingError
        If ``K`` does not stabilize ``A - B K``.
    """
    Kb = _gain(problem, K)
    if not problem.is_stabilizing(np.real(Kb[0])):
        raise NotStabilizingError("K does not stabilize A - B K")
    V, dt = _noise(problem)
    W = np.zeros((problem.n, problem.n)) if problem.process_noise is None else np.asarray(problem.process_noise)
    if V is None:
        Acl = problem.A - problem.B @ Kb[0]
        Qk = problem.Q + Kb[0].T @ problem.R @ Kb[0]
        P = _lyap(Acl.T, Qk)
        return _real(np.trace(P @ W))
    assert dt is not None
    F, C, Wz = augmented(problem, Kb, True)
    seg = sampled(segment(F, C, Wz, dt), V)
    Sx = _dlyap(seg.Phi[0], seg.Qd[0])
    return _real((np.trace(seg.M[0] @ Sx) + seg.c[0]) / dt)


def _lyap(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``X`` with ``A X + X A' + C = 0`` by a Kronecker solve (analytic in complex steps)."""
    d = A.shape[0]
    eye = np.eye(d)
    X = np.linalg.solve(np.kron(eye, A) + np.kron(A, eye), -C.reshape(-1)).reshape(d, d)
    return 0.5 * (X + X.T)


def average_cost_gradient(problem: LQRProblem, K: Any) -> np.ndarray:
    """The gradient (m, n) of :func:`average_cost` in ``K``: complex-step derivatives
    ``Im J(K + i h E_ij) / h`` with ``h = 1e-30`` -- exact to rounding (no subtraction)."""
    return complex_gradient(lambda Kc: average_cost(problem, Kc), np.reshape(K, (problem.m, problem.n)))


def expected_cost_gradient(problem: LQRProblem, K: Any, tau: float) -> np.ndarray:
    """The gradient (m, n) of :func:`expected_cost` at horizon ``tau`` in ``K`` (complex steps, as
    :func:`average_cost_gradient`)."""
    return complex_gradient(lambda Kc: expected_cost(problem, Kc, tau), np.reshape(K, (problem.m, problem.n)))


def complex_gradient(J: Any, K: Any) -> np.ndarray:
    """The gradient of a real function ``J`` of a gain ``K`` (m, n), written for complex gains alike,
    by complex steps ``Im J(K + i h E_ij) / h``, ``h = 1e-30``: exact to rounding."""
    K = np.asarray(K, dtype=float)
    G = np.empty_like(K)
    for i in range(K.shape[0]):
        for j in range(K.shape[1]):
            Kc = K.astype(complex)
            Kc[i, j] += 1j * _STEP
            G[i, j] = np.imag(J(Kc)) / _STEP
    return G


def noise_optimal_gain(problem: LQRProblem, K: Any = None, gtol: float = 1e-9, tau: float | None = None,
                       ftol: float = 1e-13) -> np.ndarray:
    """The static gain of least noisy cost: :func:`average_cost` (default), or with ``tau`` the
    :func:`expected_cost` at that horizon from ``x0 ~ N(0, Omega)`` -- what a learner on the noisy
    plant minimizes at its horizon.

    Under process noise alone the average cost's optimum is the CARE gain ``K*`` (``tr(P(K) W)`` is
    least where ``P(K)`` is, and ``P(K*) <= P(K)``), returned as is. Under measurement noise it is not:
    found by BFGS on the exact cost and gradient from ``K`` (default ``K*``), in units where each
    entry of the start and the cost at the start are 1 (stopping at relative gradient ``gtol``), then
    polished by Newton steps on a Hessian from central differences of the exact gradient. Converged
    when the Hessian is positive definite (a strict local minimum) and the Newton decrement
    ``g' H^-1 g / 2`` (relative to the cost) is at most ``ftol``: the cost of the gain returned is then
    within ``ftol`` (relative) of the minimum's, to the quadratic model. (A test on the step instead
    could not pass in poorly curved directions: the gradient's rounding moves the step there, not the
    cost -- rea1 under measurement noise at ``tau`` = 2: a relative step of 4e-6 after 4 Newton steps.)
    Under measurement noise alone (no process noise) and a stable ``A``,
    the average cost's infimum is 0, at ``K = 0`` (no feedback feeds no noise in), returned as is:
    the average cost is no yardstick there, the expected cost at a horizon is.

    Raises
    ------
    ProblemError
        If the minimization does not converge.
    """
    Kstar = np.array(problem.optimal_gain)
    if tau is None and problem.measurement_noise is None:
        return Kstar
    if tau is None and (problem.process_noise is None or not np.any(problem.process_noise)) \
            and problem.is_stabilizing(np.zeros_like(Kstar)):
        return np.zeros_like(Kstar)
    K0 = Kstar if K is None else np.asarray(K, dtype=float).reshape(problem.m, problem.n)
    t = None if tau is None else float(tau)
    return minimize_gain((lambda Kx: average_cost(problem, Kx)) if t is None else
                         (lambda Kx: expected_cost(problem, Kx, t)), K0, problem.is_stabilizing, gtol, ftol)


def minimize_gain(J: Any, K0: np.ndarray, stabilizing: Any, gtol: float = 1e-9, ftol: float = 1e-13) -> np.ndarray:
    """A local minimizer of a cost ``J(K)`` (real, written for complex gains alike: its gradient is taken
    by :func:`complex_gradient`) over the gains ``stabilizing(K)`` accepts, from ``K0``: BFGS and Newton
    steps, converged by the Newton decrement (:func:`noise_optimal_gain`, which uses it).

    Raises
    ------
    ProblemError
        If the minimization does not converge.
    """
    scale = np.where(K0 == 0, max(float(np.max(np.abs(K0))), 1.0), np.abs(K0))  # unit-free variables
    J0 = float(J(K0))

    def fun(y: np.ndarray) -> tuple[float, np.ndarray]:
        Kx = y.reshape(K0.shape) * scale
        if not stabilizing(Kx):
            return 1e3, np.zeros_like(y)
        return float(J(Kx)) / J0, (complex_gradient(J, Kx) * scale).ravel() / J0

    res = sopt.minimize(fun, (K0 / scale).ravel(), jac=True, method="BFGS", options={"gtol": gtol, "maxiter": 500})
    y, decrement = res.x, math.inf
    for _ in range(4):  # Newton: quadratic convergence from BFGS's end, and the Hessian that certifies it
        H = _hessian(lambda z: fun(z)[1], y)
        if not np.all(np.linalg.eigvalsh(H) > 0):
            break
        Jy, g = fun(y)
        dy = np.linalg.solve(H, g)
        decrement = 0.5 * float(g @ dy) / Jy
        if decrement <= ftol:
            return y.reshape(K0.shape) * scale
        if fun(y - dy)[0] < Jy:
            y = y - dy
    raise ProblemError(f"the noisy cost's optimum did not converge (Newton decrement {decrement:.3g} relative)")


def _hessian(grad: Any, y: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central differences of an exact gradient, symmetrized."""
    H = np.empty((y.size, y.size))
    for i in range(y.size):
        e = np.zeros(y.size)
        e[i] = eps
        H[:, i] = (grad(y + e) - grad(y - e)) / (2 * eps)
    return 0.5 * (H + H.T)
