"""Parsing and validation of LQR problem data, with scale-free tolerances.

Every matrix of a problem passes through :func:`as_matrix` (real, finite, 2-D, of the
right shape; booleans, strings and complex numbers are refused, not converted) and
:func:`parse_problem` (symmetry, definiteness, a closed loop that does not overflow).
Tolerances are relative to each matrix's own scale, so a problem and the same problem
with every weight multiplied by ``1e-300`` are treated alike.

:func:`require_memory` refuses, up front and with the figures, work that does not fit in
this machine's memory.
"""

from __future__ import annotations

import os
from numbers import Number
from typing import Any

import numpy as np

from ..errors import AzopgError, ProblemError

__all__ = ["as_matrix", "symmetric_part", "parse_problem", "parse_noise", "machine_memory", "require_memory",
           "oracle_bytes", "SYM_RTOL", "psd_tolerance"]

#: Relative asymmetry ``max|M - M'| / max|M|`` tolerated in a symmetric matrix.
SYM_RTOL = 1e-8
_EPS = float(np.finfo(float).eps)
_GIB = 2.0**30


def psd_tolerance(M: np.ndarray) -> float:
    """Eigenvalues of a symmetric ``M`` within this of zero are zero to working precision:
    ``100 k eps max|M|`` for ``k x k`` -- relative to ``M``'s own scale."""
    return 100.0 * M.shape[0] * _EPS * float(np.max(np.abs(M)))


def _bad_entry(value: Any) -> str | None:
    """The kind of the first entry of nested lists that is not a real number, else ``None``."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, (bool, np.bool_)):
            return "booleans"
        elif isinstance(v, str):
            return "strings"
        elif v is None:
            return "nulls"
        elif isinstance(v, (complex, np.complexfloating)) and v.imag != 0:
            return "complex numbers"
        elif not isinstance(v, (Number, np.number, np.ndarray)):
            return f"{type(v).__name__} values"
    return None


def as_matrix(value: Any, name: str, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    """Convert ``value`` to a finite, read-only 2-D float array, checking its shape.

    Parameters
    ----------
    value : array_like
        Nested lists of numbers, a real array, or a scalar (taken as 1 x 1).
    name : str
        Name used in error messages (``"A"``, ``"K0"`` ...).
    rows, cols : int, optional
        Required shape.

    Raises
    ------
    ProblemError
        If the value is missing, holds booleans, strings or complex numbers, is not
        2-D, has the wrong shape or holds NaN/inf.
    """
    if value is None:
        raise ProblemError(f"{name} is missing (null): give a numeric matrix")
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ProblemError(f"{name} must be a numeric matrix, got {type(value).__name__} {value!r}")
    if isinstance(value, (list, tuple)):
        bad = _bad_entry(value)
        if bad is not None:
            raise ProblemError(f"{name} must hold numbers only, got {bad}")
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError):  # ragged nested lists
        raise ProblemError(f"{name} must be a numeric matrix (rows of equal length)") from None
    if raw.dtype.kind == "c":
        if np.any(raw.imag != 0):
            raise ProblemError(f"{name} has complex entries: an LQR problem has real matrices")
        raw = raw.real
    elif raw.dtype.kind == "b":
        raise ProblemError(f"{name} must hold numbers only, got booleans")
    elif raw.dtype.kind not in "iuf":
        raise ProblemError(f"{name} must be a numeric matrix")
    try:
        arr = np.array(raw, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise ProblemError(f"{name} must be a numeric matrix") from None
    if arr.ndim == 0 or (arr.ndim == 1 and arr.size == 1):
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


def symmetric_part(M: np.ndarray, name: str) -> np.ndarray:
    """``(M + M')/2`` (computed without overflow), after checking ``M`` is symmetric to
    :data:`SYM_RTOL` relative to its largest entry."""
    half = 0.5 * M
    S = half + half.T
    if np.max(np.abs(half - half.T)) > 0.5 * SYM_RTOL * float(np.max(np.abs(M))):
        raise ProblemError(f"{name} is not symmetric")
    S.setflags(write=False)
    return S


def parse_problem(A: Any, B: Any, Q: Any, R: Any, x0_cov: Any, K0: Any) -> dict[str, Any]:
    """Check and convert the data of an LQR problem.

    Returns
    -------
    dict
        ``A, B, Q, R, x0_cov`` (read-only arrays), ``K0`` (array or ``None``) and
        ``q_min``: the smallest eigenvalue of ``Q`` when ``Q`` is indefinite beyond
        rounding, else ``None`` (the caller decides whether the problem is still well posed).

    Raises
    ------
    ProblemError
        On malformed data.
    """
    A = as_matrix(A, "A")
    n = A.shape[0]
    if A.shape[1] != n:
        raise ProblemError(f"A must be square, got {A.shape[0]}x{A.shape[1]}")
    if isinstance(B, (list, tuple, np.ndarray)) and n > 1 and np.ndim(B) == 1 and np.size(B) == n:
        B = [[b] for b in B] if not isinstance(B, np.ndarray) else B.reshape(n, 1)  # one input given flat
    B = as_matrix(B, "B")
    if B.shape[0] != n:
        raise ProblemError(f"B must have {n} rows (as many as A), got {B.shape[0]}")
    m = B.shape[1]
    require_memory(oracle_bytes(n, m), f"a problem with n = {n} states (its exact Riccati/Lyapunov oracle)")
    Q = symmetric_part(as_matrix(np.eye(n) if Q is None else Q, "Q", n, n), "Q")
    R = symmetric_part(as_matrix(np.eye(m) if R is None else R, "R", m, m), "R")
    qmin = float(np.min(np.linalg.eigvalsh(Q)))
    rmin = float(np.min(np.linalg.eigvalsh(R)))
    if rmin <= psd_tolerance(R):
        raise ProblemError(f"R is not positive definite (smallest eigenvalue {rmin:.3g}, "
                           f"largest entry {float(np.max(np.abs(R))):.3g})")
    cov = symmetric_part(as_matrix(np.eye(n) if x0_cov is None else x0_cov, "x0_cov", n, n), "x0_cov")
    cmin = float(np.min(np.linalg.eigvalsh(cov)))
    if cmin <= psd_tolerance(cov):
        raise ProblemError(f"x0_cov is not positive definite (smallest eigenvalue {cmin:.3g})")
    if K0 is not None:
        K0 = as_matrix(K0, "K0", m, n)
    K = np.zeros((m, n)) if K0 is None else K0
    with np.errstate(all="ignore"):
        finite = np.all(np.isfinite(A - B @ K)) and np.all(np.isfinite(Q + K.T @ R @ K))
    if not finite:
        raise ProblemError("the problem overflows floating point: A - B K0 or Q + K0'R K0 has entries "
                           "beyond 1.8e308 (rescale the states, inputs or weights)")
    return {"A": A, "B": B, "Q": Q, "R": R, "x0_cov": cov, "K0": K0,
            "q_min": qmin if qmin < -psd_tolerance(Q) else None}


def parse_noise(n: int, process_noise: Any, measurement_noise: Any,
                measurement_dt: Any) -> tuple[np.ndarray | None, np.ndarray | None, float | None]:
    """Check the noise of a problem (see :mod:`azopg.model.noise`): the process-noise intensity ``W``
    and the measurement-noise covariance ``V`` (each ``None`` or a symmetric positive semi-definite
    ``n x n`` matrix; an all-zero matrix is taken as ``None``) and the sampling interval ``delta`` of the
    measurement noise (a finite number > 0, required with ``V`` and only with it).

    Raises
    ------
    ProblemError
        On malformed noise data.
    """
    out: list[np.ndarray | None] = []
    for value, name in ((process_noise, "process_noise"), (measurement_noise, "measurement_noise")):
        if value is None:
            out.append(None)
            continue
        M = symmetric_part(as_matrix(value, name, n, n), name)
        if not np.any(M):
            out.append(None)
            continue
        low = float(np.min(np.linalg.eigvalsh(M)))
        if low < -psd_tolerance(M):
            raise ProblemError(f"{name} is not positive semi-definite (smallest eigenvalue {low:.3g})")
        out.append(M)
    W, V = out
    if V is None:
        if measurement_dt is not None and measurement_noise is None:
            raise ProblemError("measurement_dt is given without measurement_noise")
        return W, None, None
    if measurement_dt is None:
        raise ProblemError("measurement_noise needs measurement_dt, the sampling interval of the noisy "
                           "measurement (seconds > 0)")
    if isinstance(measurement_dt, (bool, np.bool_)) or not isinstance(measurement_dt, (int, float, np.number)) \
            or not (np.isfinite(measurement_dt) and measurement_dt > 0):
        raise ProblemError(f"measurement_dt must be a finite number > 0, got {measurement_dt!r}")
    return W, V, float(measurement_dt)


def machine_memory() -> int:
    """Bytes of physical memory of this machine (``0`` if unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def require_memory(nbytes: float, what: str, error: type[AzopgError] = ProblemError) -> None:
    """Raise ``error`` if ``what`` needs more than this machine's memory.

    The message is one line: ``"{what} needs about X GiB, this machine has Y GiB"``.
    """
    total = machine_memory()
    if total and nbytes > total:
        raise error(f"{what} needs about {nbytes / _GIB:.3g} GiB, this machine has {total / _GIB:.3g} GiB")


def oracle_bytes(n: int, m: int) -> float:
    """Bytes the exact oracle of an ``n``-state, ``m``-input problem works on: the Riccati
    solver's ``2n x 2n`` Hamiltonian, its Schur form and vectors (about 6 such arrays)."""
    return 8.0 * (6 * (2 * n + m) ** 2 + 4 * n * m)
