"""python-control interop of :class:`~azopg.model.problem.LQRProblem`: reading a ``StateSpace``
system's matrices and time domain, and building one from a problem."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import ProblemError
from .validation import require_control

__all__ = ["make_statespace", "read_statespace"]


def read_statespace(sys: Any, name: str | None) -> tuple[np.ndarray, np.ndarray, bool, float | None, str]:
    """``(A, B, discrete_time, dt, name)`` of a python-control ``StateSpace`` system (see
    :meth:`LQRProblem.from_statespace <azopg.model.problem.LQRProblem.from_statespace>`); ``name``
    defaults to the system's own, else ``"statespace"``."""
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
    return np.asarray(sys.A, dtype=float), np.asarray(sys.B, dtype=float), discrete, period, name


def make_statespace(A: np.ndarray, B: np.ndarray, discrete_time: bool, dt: float | None, name: str) -> Any:
    """The python-control system ``ss(A, B, I, 0)`` (``dt`` the sampling period, ``True`` if
    unspecified, for a discrete-time plant; 0 in continuous time)."""
    control = require_control()
    n, m = B.shape
    period: float | bool = 0 if not discrete_time else (True if dt is None else dt)
    return control.ss(np.array(A), np.array(B), np.eye(n), np.zeros((n, m)), period, name=name)
