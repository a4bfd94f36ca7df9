"""The LQR problem (continuous or discrete time) and its exact (model-based) oracle.

The oracle -- cost, gradient, optimum -- is for *monitoring and testing only*: the
learners in :mod:`azopg.method` never call it to make a decision.

Conventions follow python-control: ``dx/dt = A x + B u`` (``x_{t+1} = A x_t + B u_t``) with ``u = -K x``.
"""

from __future__ import annotations

import logging
import re
from functools import cached_property
from typing import Any

import numpy as np
import scipy.linalg as sla

from ..errors import AzopgError, NotStabilizingError, ProblemError
from . import discrete as dlqr
from . import riccati
from .validation import as_matrix, parse_noise, parse_problem

__all__ = ["LQRProblem", "as_matrix", "kleinman_gain"]

log = logging.getLogger("azopg")

#: Largest relative residual of the Riccati solution accepted as a solution.

def require_control() -> Any:
    """Import and return python-control (the ``control`` module).

    Raises
    ------
    AzopgError
        If python-control is not installed.
    """
    try:
        import control
    except ImportError:
        raise AzopgError("python-control is not installed: pip install azopg[control]") from None
    return control


def kleinman_gain(K: Any, E: Any, R: Any) -> np.ndarray:
    """The policy-iteration (Kleinman, Gauss--Newton) step ``K - R^-1 E`` from the gain
    ``K`` (m, n), its factor ``E = R K - B'P(K)`` (m, n) and the input weight ``R`` (m, m)."""
    K = np.asarray(K, dtype=float)
    return K - np.linalg.solve(np.asarray(R, dtype=float), np.asarray(E, dtype=float))


def lyapunov(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``X`` with ``A X + X A' + C = 0``, solved on ``A`` and ``C`` scaled to unit size (so
    matrices of any magnitude, e.g. ``1e-300``, keep their precision)."""
    alpha = float(np.max(np.abs(A)))
    beta = float(np.max(np.abs(C)))
    if beta == 0:
        return np.zeros_like(C)
    return (beta / alpha) * sla.solve_continuous_lyapunov(A / alpha, -(C / beta))


class LQRProblem:
    """An LQR problem ``min_K E int (x'Qx + u'Ru) dt``, ``u = -K x`` -- or, with
    ``discrete_time=True``, ``min_K E sum_t (x_t'Q x_t + u_t'R u_t)`` for
    ``x_{t+1} = A x_t + B u_t`` (the oracle of :mod:`azopg.model.discrete`).

    Parameters
    ----------
    A : array_like, shape (n, n)
        State matrix.
    B : array_like, shape (n, m)
        Input matrix.
    Q : array_like, shape (n, n)
        State weight, symmetric positive semi-definite.
    R : array_like, shape (m, m)
        Input weight, symmetric positive definite.
    x0_cov : array_like, shape (n, n), optional
        Covariance ``Omega = E[x0 x0']`` of the initial state (default identity),
        symmetric positive definite.
    K0 : array_like, shape (m, n), optional
        Initial stabilizing gain. Defaults to zero when ``A`` is Hurwitz.
    name : str, optional
        Short identifier.
    source : str, optional
        Citation or provenance.
    discrete_time : bool, optional
        A discrete-time plant ``x_{t+1} = A x_t + B u_t`` (stabilizing: spectral radius of
        ``A - B K`` below 1; optimum from the discrete Riccati equation).
    dt : float, optional
        Sampling period of a discrete-time plant (> 0; information only: the cost is a sum
        over steps). ``None``: unspecified.
    process_noise : array_like, shape (n, n), optional
        Intensity ``W`` of the process noise: ``dx = (Ax + Bu) dt + dw``, ``E[dw dw'] = W dt``
        (symmetric positive semi-definite; continuous time only). See :mod:`azopg.model.noise`.
    measurement_noise : array_like, shape (n, n), optional
        Covariance ``V`` of the measurement noise: ``u = -K (x + v_j)`` with ``v_j ~ N(0, V)`` held
        over the ``j``-th sampling interval of length ``measurement_dt``.
    measurement_dt : float, optional
        The sampling interval of the measurement noise (> 0; required with ``measurement_noise``).

    Raises
    ------
    ProblemError
        On any malformed matrix, or a ``dt`` that is not a finite number > 0.
    NotStabilizingError
        If ``K0`` does not stabilize ``A - B K0``, or ``K0`` is omitted and ``A``
        is not Hurwitz (Schur in discrete time).

    Examples
    --------
    The double integrator with ``Q = I``, ``R = 1``: its Riccati gain is ``[[1, sqrt(3)]]``, its
    optimal cost ``2 sqrt(3)``; the exact oracle gives cost and gradient of any gain.

    >>> import azopg
    >>> p = azopg.LQRProblem([[0, 1], [0, 0]], [[0], [1]], K0=[[1, 1]])
    >>> p.n, p.m
    (2, 1)
    >>> round(p.cost(p.K0), 9), round(p.optimal_cost, 9)
    (4.0, 3.464101615)
    >>> p.optimal_gain.round(6)
    array([[1.      , 1.732051]])
    >>> p.gradient(p.K0).round(9)
    array([[ 1., -2.]])
    >>> p.is_stabilizing([[1, 0]]), p.cost([[1, 0]])   # not stabilizing: infinite cost
    (False, inf)
    """

    def __init__(
        self,
        A: Any,
        B: Any,
        Q: Any = None,
        R: Any = None,
        x0_cov: Any = None,
        K0: Any = None,
        *,
        name: str = "custom",
        source: str = "",
        title: str = "",
        discrete_time: bool = False,
        dt: float | None = None,
        process_noise: Any = None,
        measurement_noise: Any = None,
        measurement_dt: float | None = None,
    ) -> None:
        self.discrete_time, self.dt = _time_domain(discrete_time, dt)
        data = parse_problem(A, B, Q, R, x0_cov, K0)
        self.A, self.B, self.Q, self.R, self.x0_cov = (data[k] for k in ("A", "B", "Q", "R", "x0_cov"))
        self.process_noise, self.measurement_noise, self.measurement_dt = parse_noise(
            self.n, process_noise, measurement_noise, measurement_dt)
        if self.discrete_time and self.noisy:
            raise ProblemError("process_noise and measurement_noise are supported for continuous-time problems only")
        m, n = self.m, self.n
        self.name = str(name)
        self.source = str(source)
        self.title = str(title)
        if data["K0"] is None:
            if not self.is_stabilizing(np.zeros((m, n))):
                raise NotStabilizingError(f"A is not {self._stable_word} (open loop unstable): "
                                          "give a stabilizing initial gain K0")
            self.K0 = as_matrix(np.zeros((m, n)), "K0")
        else:
            self.K0 = data["K0"]
            if not self.is_stabilizing(self.K0):
                raise NotStabilizingError(f"K0 does not stabilize A - B K0 ({self._instability(self.K0)})")
        if data["q_min"] is not None:  # indefinite Q: well posed only with a stabilizing Riccati solution
            indefinite = f"Q is not positive semi-definite (smallest eigenvalue {data['q_min']:.3g})"
            if not self.discrete_time and riccati.hamiltonian_axis_gap(self.A, self.B, self.Q, self.R) <= 1e-9:
                raise ProblemError(f"{indefinite} and the Riccati equation has no stabilizing solution "
                                   "(its Hamiltonian matrix has eigenvalues on the imaginary axis)")
            try:
                _ = self.optimal_gain
            except ProblemError as exc:
                raise ProblemError(f"{indefinite} and {exc}") from None
            log.warning("azopg: warning: problem %s: %s; the Riccati equation has a stabilizing solution, "
                        "so the problem is well posed, but costs can be negative", self.name, indefinite)

    # ------------------------------------------------------------------ sizes
    @property
    def n(self) -> int:
        """Number of states."""
        return self.A.shape[0]

    @property
    def m(self) -> int:
        """Number of inputs."""
        return self.B.shape[1]

    def __repr__(self) -> str:
        kind = ", discrete_time=True" if self.discrete_time else ""
        return f"LQRProblem(name={self.name!r}, n={self.n}, m={self.m}{kind})"

    @property
    def noisy(self) -> bool:
        """Whether the plant has process or measurement noise (:mod:`azopg.model.noise`)."""
        return self.process_noise is not None or self.measurement_noise is not None

    def with_noise(self, W: Any = None, V: Any = None, dt: float | None = None) -> LQRProblem:
        """This problem with process-noise intensity ``W`` and measurement-noise covariance ``V``
        sampled every ``dt`` seconds (see :mod:`azopg.model.noise`); ``None``: no such noise."""
        data = self.to_dict()
        data.update(process_noise=W, measurement_noise=V, measurement_dt=dt)
        return LQRProblem.from_dict(data)

    @property
    def time_domain(self) -> str:
        """``"continuous"``, or ``"discrete"`` with the sampling period if known (``"discrete, dt=0.1"``)."""
        if not self.discrete_time:
            return "continuous"
        return "discrete" if self.dt is None else f"discrete, dt={self.dt:g}"

    @property
    def _stable_word(self) -> str:
        return "Schur" if self.discrete_time else "Hurwitz"

    def _instability(self, K: Any) -> str:
        if self.discrete_time:
            return f"spectral radius {self.spectral_radius(K):.3g} >= 1"
        return f"spectral abscissa {self.spectral_abscissa(K):.3g} >= 0"

    # ------------------------------------------------------------ the oracle
    def closed_loop(self, K: Any) -> np.ndarray:
        """Return ``A - B K``."""
        K = np.asarray(K, dtype=float).reshape(self.m, self.n)
        return self.A - self.B @ K

    def spectral_abscissa(self, K: Any) -> float:
        """Largest real part of the eigenvalues of ``A - B K``."""
        return float(np.max(np.linalg.eigvals(self.closed_loop(K)).real))

    def spectral_radius(self, K: Any) -> float:
        """Largest modulus of the eigenvalues of ``A - B K``."""
        return dlqr.spectral_radius(self.closed_loop(K))

    def is_stabilizing(self, K: Any) -> bool:
        """Whether ``A - B K`` is Hurwitz (Schur: spectral radius below 1, in discrete time)."""
        if self.discrete_time:
            return self.spectral_radius(K) < 1
        return self.spectral_abscissa(K) < 0

    def _require_stabilizing(self, K: np.ndarray) -> None:
        if not self.is_stabilizing(K):
            raise NotStabilizingError("K does not stabilize A - B K")

    def value_matrix(self, K: Any) -> np.ndarray:
        """``P(K)``: solution of ``(A-BK)'P + P(A-BK) + Q + K'RK = 0``.

        Raises
        ------
        NotStabilizingError
            If ``K`` does not stabilize the plant.
        """
        K = np.asarray(K, dtype=float).reshape(self.m, self.n)
        self._require_stabilizing(K)
        if self.discrete_time:
            return dlqr.value_matrix(self.A, self.B, self.Q, self.R, K)
        Acl = self.closed_loop(K)
        P = lyapunov(Acl.T, self.Q + K.T @ self.R @ K)
        return 0.5 * P + 0.5 * P.T

    def state_covariance(self, K: Any) -> np.ndarray:
        """``X(K) = int exp((A-BK)t) Omega exp((A-BK)'t) dt`` (``sum_t (A-BK)^t Omega (A-BK)'^t``
        in discrete time)."""
        K = np.asarray(K, dtype=float).reshape(self.m, self.n)
        self._require_stabilizing(K)
        if self.discrete_time:
            return dlqr.state_covariance(self.A, self.B, K, self.x0_cov)
        Acl = self.closed_loop(K)
        X = lyapunov(Acl, self.x0_cov)
        return 0.5 * X + 0.5 * X.T

    def cost(self, K: Any) -> float:
        """Infinite-horizon cost ``f(K) = tr(P(K) Omega)``; ``inf`` if not stabilizing."""
        try:
            return float(np.trace(self.value_matrix(K) @ self.x0_cov))
        except NotStabilizingError:
            return float("inf")

    def E(self, K: Any) -> np.ndarray:
        """``E(K) = R K - B'P(K)`` (m, n): the gradient is ``2 E X`` and ``E(K*) = 0``; in discrete
        time ``E(K) = (R + B'P(K)B) K - B'P(K)A``.

        Raises
        ------
        NotStabilizingError
            If ``K`` does not stabilize the plant.
        """
        K = np.asarray(K, dtype=float).reshape(self.m, self.n)
        if self.discrete_time:
            return dlqr.gradient_factor(self.A, self.B, self.R, K, self.value_matrix(K))
        return self.R @ K - self.B.T @ self.value_matrix(K)

    def input_hessian(self, K: Any) -> np.ndarray:
        """The weight of the Gauss--Newton step: ``R`` in continuous time, ``R + B'P(K)B`` (the
        Q-function's input block) in discrete time."""
        if not self.discrete_time:
            return np.array(self.R)
        return dlqr.input_hessian(self.B, self.R, self.value_matrix(K))

    def gradient(self, K: Any) -> np.ndarray:
        """Exact gradient ``2 E(K) X(K)`` of :meth:`cost`."""
        return 2.0 * self.E(K) @ self.state_covariance(K)

    def kleinman_step(self, K: Any) -> np.ndarray:
        """One policy-iteration (Kleinman) step ``K - R^-1 E(K) = R^-1 B'P(K)`` (Hewer's
        ``K - (R + B'PB)^-1 E(K)`` in discrete time): from a stabilizing ``K`` it converges to
        :attr:`optimal_gain` quadratically."""
        K = np.asarray(K, dtype=float).reshape(self.m, self.n)
        return kleinman_gain(K, self.E(K), self.input_hessian(K))

    @cached_property
    def _care(self) -> np.ndarray:
        """The stabilizing solution of the (continuous or discrete) algebraic Riccati equation."""
        return riccati.solve(self.A, self.B, self.Q, self.R, discrete_time=self.discrete_time)

    @cached_property
    def optimal_gain(self) -> np.ndarray:
        """``K* = R^-1 B' P*`` from the continuous algebraic Riccati equation (``(R + B'P*B)^-1
        B'P*A`` from the discrete one)."""
        if self.discrete_time:
            K = dlqr.dare_gain(self.A, self.B, self.R, self._care)
        else:
            K = np.linalg.solve(self.R, self.B.T @ self._care)
        if not self.is_stabilizing(K):
            raise ProblemError("the Riccati equation has no stabilizing solution "
                               "(the solver's solution leaves A - B K* unstable)")
        K.setflags(write=False)
        return K

    @cached_property
    def optimal_cost(self) -> float:
        """``f(K*) = tr(P* Omega)``."""
        _ = self.optimal_gain  # validates
        return float(np.trace(self._care @ self.x0_cov))

    def relative_gap(self, K: Any) -> float:
        """``(f(K) - f*) / f*`` (``inf`` when ``K`` is not stabilizing)."""
        f = self.cost(K)
        return (f - self.optimal_cost) / self.optimal_cost

    # ---------------------------------------------------------- conversions
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (the problem-file format)."""
        return {
            "name": self.name,
            "title": self.title,
            "source": self.source,
            "A": self.A.tolist(),
            "B": self.B.tolist(),
            "Q": self.Q.tolist(),
            "R": self.R.tolist(),
            "x0_cov": self.x0_cov.tolist(),
            "K0": self.K0.tolist(),
            **({"discrete_time": True, "dt": self.dt} if self.discrete_time else {}),
            **({"process_noise": self.process_noise.tolist()} if self.process_noise is not None else {}),
            **({"measurement_noise": self.measurement_noise.tolist(), "measurement_dt": self.measurement_dt}
               if self.measurement_noise is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, name: str | None = None) -> LQRProblem:
        """Build a problem from a mapping with keys ``A, B, Q, R`` (+ optional ``K0``,
        ``x0_cov``, ``name``, ``title``, ``source``, ``discrete_time``, ``dt``, ``process_noise``,
        ``measurement_noise``, ``measurement_dt``); unknown keys are ignored."""
        if not isinstance(data, dict):
            raise ProblemError("a problem must be a JSON object with keys A, B, Q, R")
        missing = [k for k in ("A", "B", "Q", "R") if k not in data]
        if missing:
            raise ProblemError(f"missing key(s): {', '.join(missing)}")
        return cls(
            data["A"],
            data["B"],
            data["Q"],
            data["R"],
            x0_cov=data.get("x0_cov"),
            K0=data.get("K0"),
            name=str(data.get("name", name or "custom")),
            source=str(data.get("source", "")),
            title=str(data.get("title", "")),
            discrete_time=data.get("discrete_time", False),
            dt=data.get("dt"),
            process_noise=data.get("process_noise"),
            measurement_noise=data.get("measurement_noise"),
            measurement_dt=data.get("measurement_dt"),
        )

    @classmethod
    def from_statespace(
        cls,
        sys: Any,
        Q: Any = None,
        R: Any = None,
        *,
        x0_cov: Any = None,
        K0: Any = None,
        name: str | None = None,
        title: str = "",
        source: str = "python-control StateSpace",
    ) -> LQRProblem:
        """Build a problem from a python-control state-space system: continuous-time
        (``sys.dt`` 0 or ``None``) or discrete-time (``sys.dt > 0``, or ``True`` for an
        unspecified sampling period; then ``discrete_time`` and ``dt`` are set).

        Only ``sys.A`` and ``sys.B`` are used: the regulator weighs the state through
        ``Q``, so the output matrices ``C`` and ``D`` play no part.

        Parameters
        ----------
        sys : control.StateSpace
            The system.
        Q : array_like, shape (n, n), optional
            State weight (default identity).
        R : array_like, shape (m, m), optional
            Input weight (default identity).
        x0_cov : array_like, shape (n, n), optional
            Covariance of the initial state (default identity).
        K0 : array_like, shape (m, n), optional
            Initial stabilizing gain (default zero, which needs a Hurwitz ``A``).
        name : str, optional
            Short identifier; default the system's own name when it was given one,
            else ``"statespace"``.
        title, source : str, optional
            Description and provenance.

        Returns
        -------
        LQRProblem

        Raises
        ------
        AzopgError
            If python-control is not installed.
        ProblemError
            If ``sys`` is not a ``StateSpace`` system, its ``dt`` is not 0, ``None``, ``True`` or
            a finite number > 0, or any matrix is malformed.
        NotStabilizingError
            As for the constructor.
        """
        control = require_control()
        if not isinstance(sys, control.StateSpace):
            raise ProblemError(f"expected a control.StateSpace system, got {type(sys).__name__} "
                               "(convert it with control.ss)")
        dt = sys.dt
        if dt is None or (dt is not True and isinstance(dt, (int, float)) and dt == 0):
            discrete, period = False, None
        elif dt is True:
            discrete, period = True, None
        elif isinstance(dt, (int, float)) and not isinstance(dt, bool) and np.isfinite(dt) and dt > 0:
            discrete, period = True, float(dt)
        else:
            raise ProblemError(f"the system's sampling time dt = {dt!r} is invalid: give dt = 0 (continuous time) "
                               "or a number > 0 (discrete time)")
        if sys.nstates == 0:
            raise ProblemError("system has no states")
        if sys.ninputs == 0:
            raise ProblemError("system has no inputs")
        if name is None:
            sys_name = str(getattr(sys, "name", "") or "")
            name = "statespace" if not sys_name or re.fullmatch(r"sys\[\d+\]", sys_name) else sys_name
        return cls(np.asarray(sys.A, dtype=float), np.asarray(sys.B, dtype=float), Q, R, x0_cov=x0_cov,
                   K0=K0, name=name, title=title, source=source, discrete_time=discrete, dt=period)

    def to_statespace(self) -> Any:
        """The plant as a python-control system ``ss(A, B, I, 0)`` (full state output; with
        ``dt`` = the sampling period, ``True`` if unspecified, for a discrete-time problem).

        Returns
        -------
        control.StateSpace

        Raises
        ------
        AzopgError
            If python-control is not installed.
        """
        control = require_control()
        dt: float | bool = 0 if not self.discrete_time else (True if self.dt is None else self.dt)
        return control.ss(np.array(self.A), np.array(self.B), np.eye(self.n), np.zeros((self.n, self.m)),
                          dt, name=self.name)


def _time_domain(discrete_time: Any, dt: Any) -> tuple[bool, float | None]:
    """Checked ``(discrete_time, dt)``: a boolean, and ``None`` or a finite period > 0 (discrete time only)."""
    if not isinstance(discrete_time, (bool, np.bool_)):
        raise ProblemError(f"discrete_time must be true or false, got {discrete_time!r}")
    if dt is None:
        return bool(discrete_time), None
    if not discrete_time:
        raise ProblemError("dt (a sampling period) is given for a continuous-time problem: "
                           "set discrete_time to true, or drop dt")
    if isinstance(dt, (bool, np.bool_)) or not isinstance(dt, (int, float, np.number)) \
            or not (np.isfinite(dt) and dt > 0):
        raise ProblemError(f"dt must be a finite number > 0 (the sampling period), got {dt!r}")
    return True, float(dt)
