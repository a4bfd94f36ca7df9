"""The continuous-time LQR problem and its exact (model-based) oracle.

The oracle -- cost, gradient, optimum -- is for *monitoring and testing only*: the
learners in :mod:`azopg.run.train` never call it to make a decision.

Conventions follow python-control: ``dx/dt = A x + B u`` with ``u = -K x``.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

import numpy as np
import scipy.linalg as sla

from ..errors import AzopgError, NotStabilizingError, ProblemError

__all__ = ["LQRProblem", "as_matrix", "kleinman_gain"]

_SYM_RTOL = 1e-8


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


def as_matrix(value: Any, name: str, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    """Convert ``value`` to a finite 2-D float array, checking its shape.

    Parameters
    ----------
    value : array_like
        Nested lists, an array, or a scalar (taken as 1 x 1).
    name : str
        Name used in error messages (``"A"``, ``"K0"`` ...).
    rows, cols : int, optional
        Required shape.

    Raises
    ------
    ProblemError
        If the value is not numeric, not 2-D, has the wrong shape or holds NaN/inf.
    """
    try:
        arr = np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise ProblemError(f"{name} must be a numeric matrix") from None
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    elif arr.ndim == 1 and arr.size == 1:
        arr = arr.reshape(1, 1)
    if arr.ndim != 2:
        raise ProblemError(f"{name} must be a 2-D matrix, got an array of {arr.ndim} dimension(s)")
    if arr.size == 0:
        raise ProblemError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ProblemError(f"{name} contains NaN or inf")
    if (rows is not None and arr.shape[0] != rows) or (cols is not None and arr.shape[1] != cols):
        want = f"{rows if rows is not None else '?'}x{cols if cols is not None else '?'}"
        raise ProblemError(f"{name} must be {want}, got {arr.shape[0]}x{arr.shape[1]}")
    arr.setflags(write=False)
    return arr


def kleinman_gain(K: Any, E: Any, R: Any) -> np.ndarray:
    """The policy-iteration (Kleinman, Gauss--Newton) step ``K - R^-1 E`` from the gain
    ``K`` (m, n), its factor ``E = R K - B'P(K)`` (m, n) and the input weight ``R`` (m, m)."""
    K = np.asarray(K, dtype=float)
    return K - np.linalg.solve(np.asarray(R, dtype=float), np.asarray(E, dtype=float))


def _check_symmetric(M: np.ndarray, name: str) -> np.ndarray:
    scale = max(1.0, float(np.max(np.abs(M))))
    if np.max(np.abs(M - M.T)) > _SYM_RTOL * scale:
        raise ProblemError(f"{name} is not symmetric")
    S = 0.5 * (M + M.T)
    S.setflags(write=False)
    return S


class LQRProblem:
    """A continuous-time LQR problem ``min_K E int (x'Qx + u'Ru) dt``, ``u = -K x``.

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

    Raises
    ------
    ProblemError
        On any malformed matrix.
    NotStabilizingError
        If ``K0`` does not stabilize ``A - B K0``, or ``K0`` is omitted and ``A``
        is not Hurwitz.
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
    ) -> None:
        self.A = as_matrix(A, "A")
        n = self.A.shape[0]
        if self.A.shape[1] != n:
            raise ProblemError(f"A must be square, got {self.A.shape[0]}x{self.A.shape[1]}")
        B_arr = np.array(B, dtype=float) if B is not None else None
        if B_arr is not None and B_arr.ndim == 1 and n > 1 and B_arr.size == n:
            B = B_arr.reshape(n, 1)  # a single input column given flat
        self.B = as_matrix(B, "B")
        if self.B.shape[0] != n:
            raise ProblemError(f"B must have {n} rows (as many as A), got {self.B.shape[0]}")
        m = self.B.shape[1]
        self.Q = _check_symmetric(as_matrix(np.eye(n) if Q is None else Q, "Q", n, n), "Q")
        self.R = _check_symmetric(as_matrix(np.eye(m) if R is None else R, "R", m, m), "R")
        qmin = float(np.min(np.linalg.eigvalsh(self.Q)))
        if qmin < -1e-10 * max(1.0, float(np.max(np.abs(self.Q)))):
            raise ProblemError(f"Q is not positive semi-definite (smallest eigenvalue {qmin:.3g})")
        rmin = float(np.min(np.linalg.eigvalsh(self.R)))
        if rmin <= 1e-12 * max(1.0, float(np.max(np.abs(self.R)))):
            raise ProblemError(f"R is not positive definite (smallest eigenvalue {rmin:.3g})")
        cov = np.eye(n) if x0_cov is None else x0_cov
        self.x0_cov = _check_symmetric(as_matrix(cov, "x0_cov", n, n), "x0_cov")
        cmin = float(np.min(np.linalg.eigvalsh(self.x0_cov)))
        if cmin <= 0:
            raise ProblemError(f"x0_cov is not positive definite (smallest eigenvalue {cmin:.3g})")
        self.name = str(name)
        self.source = str(source)
        self.title = str(title)
        if K0 is None:
            if self.spectral_abscissa(np.zeros((m, n))) >= 0:
                raise NotStabilizingError(
                    "A is not Hurwitz (open loop unstable): give a stabilizing initial gain K0"
                )
            self.K0 = as_matrix(np.zeros((m, n)), "K0")
        else:
            self.K0 = as_matrix(K0, "K0", m, n)
            a = self.spectral_abscissa(self.K0)
            if a >= 0:
                raise NotStabilizingError(
                    f"K0 does not stabilize A - B K0 (spectral abscissa {a:.3g} >= 0)"
                )

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
        return f"LQRProblem(name={self.name!r}, n={self.n}, m={self.m})"

    # ------------------------------------------------------------ the oracle
    def closed_loop(self, K: Any) -> np.ndarray:
        """Return ``A - B K``."""
        K = np.asarray(K, dtype=float).reshape(self.m, self.n)
        return self.A - self.B @ K

    def spectral_abscissa(self, K: Any) -> float:
        """Largest real part of the eigenvalues of ``A - B K``."""
        return float(np.max(np.linalg.eigvals(self.closed_loop(K)).real))

    def is_stabilizing(self, K: Any) -> bool:
        """Whether ``A - B K`` is Hurwitz."""
        return self.spectral_abscissa(K) < 0

    def value_matrix(self, K: Any) -> np.ndarray:
        """``P(K)``: solution of ``(A-BK)'P + P(A-BK) + Q + K'RK = 0``.

        Raises
        ------
        NotStabilizingError
            If ``K`` does not stabilize the plant.
        """
        K = np.asarray(K, dtype=float).reshape(self.m, self.n)
        Acl = self.closed_loop(K)
        if np.max(np.linalg.eigvals(Acl).real) >= 0:
            raise NotStabilizingError("K does not stabilize A - B K")
        P = sla.solve_continuous_lyapunov(Acl.T, -(self.Q + K.T @ self.R @ K))
        return 0.5 * (P + P.T)

    def state_covariance(self, K: Any) -> np.ndarray:
        """``X(K) = int exp((A-BK)t) Omega exp((A-BK)'t) dt``."""
        Acl = self.closed_loop(K)
        if np.max(np.linalg.eigvals(Acl).real) >= 0:
            raise NotStabilizingError("K does not stabilize A - B K")
        X = sla.solve_continuous_lyapunov(Acl, -self.x0_cov)
        return 0.5 * (X + X.T)

    def cost(self, K: Any) -> float:
        """Infinite-horizon cost ``f(K) = tr(P(K) Omega)``; ``inf`` if not stabilizing."""
        try:
            return float(np.trace(self.value_matrix(K) @ self.x0_cov))
        except NotStabilizingError:
            return float("inf")

    def E(self, K: Any) -> np.ndarray:
        """``E(K) = R K - B'P(K)`` (m, n): the gradient is ``2 E X`` and ``E(K*) = 0``.

        Raises
        ------
        NotStabilizingError
            If ``K`` does not stabilize the plant.
        """
        K = np.asarray(K, dtype=float).reshape(self.m, self.n)
        return self.R @ K - self.B.T @ self.value_matrix(K)

    def gradient(self, K: Any) -> np.ndarray:
        """Exact gradient ``2 E(K) X(K)`` of :meth:`cost`."""
        return 2.0 * self.E(K) @ self.state_covariance(K)

    def kleinman_step(self, K: Any) -> np.ndarray:
        """One policy-iteration (Kleinman) step ``K - R^-1 E(K) = R^-1 B'P(K)``: from a
        stabilizing ``K`` it converges to :attr:`optimal_gain` quadratically."""
        K = np.asarray(K, dtype=float).reshape(self.m, self.n)
        return kleinman_gain(K, self.E(K), self.R)

    @cached_property
    def _care(self) -> np.ndarray:
        try:
            P = sla.solve_continuous_are(self.A, self.B, self.Q, self.R)
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise ProblemError(f"the Riccati equation has no stabilizing solution: {exc}") from None
        return 0.5 * (P + P.T)

    @cached_property
    def optimal_gain(self) -> np.ndarray:
        """``K* = R^-1 B' P*`` from the continuous algebraic Riccati equation."""
        K = np.linalg.solve(self.R, self.B.T @ self._care)
        if not self.is_stabilizing(K):
            raise ProblemError("the Riccati solution does not stabilize the plant")
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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, name: str | None = None) -> LQRProblem:
        """Build a problem from a mapping with keys ``A, B, Q, R`` (+ optional ``K0``,
        ``x0_cov``, ``name``, ``title``, ``source``); unknown keys are ignored."""
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
        """Build a problem from a continuous-time python-control state-space system.

        Only ``sys.A`` and ``sys.B`` are used: the regulator weighs the state through
        ``Q``, so the output matrices ``C`` and ``D`` play no part.

        Parameters
        ----------
        sys : control.StateSpace
            Continuous-time system (``sys.dt`` 0, or ``None`` for an unspecified timebase).
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
            If ``sys`` is not a continuous-time ``StateSpace`` system or any matrix is malformed.
        NotStabilizingError
            As for the constructor.
        """
        control = require_control()
        if not isinstance(sys, control.StateSpace):
            raise ProblemError(f"expected a control.StateSpace system, got {type(sys).__name__} "
                               "(convert it with control.ss)")
        if not control.isctime(sys):
            raise ProblemError(f"system is discrete-time (dt = {sys.dt}); azopg needs a continuous-time system")
        if sys.nstates == 0:
            raise ProblemError("system has no states")
        if sys.ninputs == 0:
            raise ProblemError("system has no inputs")
        if name is None:
            sys_name = str(getattr(sys, "name", "") or "")
            name = "statespace" if not sys_name or re.fullmatch(r"sys\[\d+\]", sys_name) else sys_name
        return cls(np.asarray(sys.A, dtype=float), np.asarray(sys.B, dtype=float), Q, R, x0_cov=x0_cov,
                   K0=K0, name=name, title=title, source=source)

    def to_statespace(self) -> Any:
        """The plant as a python-control system ``ss(A, B, I, 0)`` (full state output).

        Returns
        -------
        control.StateSpace

        Raises
        ------
        AzopgError
            If python-control is not installed.
        """
        control = require_control()
        return control.ss(np.array(self.A), np.array(self.B), np.eye(self.n), np.zeros((self.n, self.m)),
                          name=self.name)
