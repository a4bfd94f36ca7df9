"""Compare a learned gain with python-control's ``lqr`` solution (``dlqr`` in discrete time).

An independent check of a run: the reference gain ``K*`` and value matrix ``S`` come
from :func:`control.lqr`, not from azopg's own Riccati oracle. Needs the ``control``
extra (``pip install azopg[control]``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProblemError, SettingsError
from .problem import LQRProblem, as_matrix, require_control

__all__ = ["Comparison", "compare", "compare_run"]


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _eig_pairs(eigs: np.ndarray) -> list[list[float]]:
    return [[float(z.real), float(z.imag)] for z in eigs]


def _fmt_eig(z: complex) -> str:
    return f"{z.real:.6g}{z.imag:+.6g}j" if z.imag else f"{z.real:.6g}"


@dataclass(frozen=True)
class Comparison:
    """A learned gain against the ``control.lqr`` optimum.

    Attributes
    ----------
    problem : str
        Problem name.
    K : ndarray, shape (m, n)
        Learned gain (``u = -K x``).
    K_opt : ndarray, shape (m, n)
        ``K*`` from ``control.lqr(A, B, Q, R)``.
    cost : float
        Exact cost ``f(K) = tr(P(K) Omega)`` (``inf`` if ``K`` is not stabilizing).
    optimal_cost : float
        ``f* = tr(S Omega)`` with ``S`` the Riccati solution returned by ``control.lqr``.
    relative_gap : float
        ``(f(K) - f*) / f*``.
    gain_error : float
        ``||K - K*||_F / ||K*||_F`` (``inf`` if ``K* = 0`` and ``K != 0``).
    eigenvalues, optimal_eigenvalues : ndarray of complex, shape (n,)
        Sorted closed-loop eigenvalues of ``A - B K`` and ``A - B K*``.
    stabilizing : bool
        Whether ``A - B K`` is Hurwitz (Schur, for a discrete-time problem).
    reference : str
        The python-control solver: ``"control.lqr"``, or ``"control.dlqr"`` for a discrete-time problem.
    """

    problem: str
    K: np.ndarray
    K_opt: np.ndarray
    cost: float
    optimal_cost: float
    relative_gap: float
    gain_error: float
    eigenvalues: np.ndarray
    optimal_eigenvalues: np.ndarray
    stabilizing: bool
    reference: str = "control.lqr"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready document (``compare.json``): non-finite numbers become ``null`` and
        complex eigenvalues ``[re, im]`` pairs."""
        return {
            "problem": self.problem,
            "reference": self.reference,
            "K": self.K.tolist(),
            "K_opt": self.K_opt.tolist(),
            "cost": _num(self.cost),
            "optimal_cost": _num(self.optimal_cost),
            "relative_gap": _num(self.relative_gap),
            "gain_error": _num(self.gain_error),
            "stabilizing": bool(self.stabilizing),
            "eigenvalues": _eig_pairs(self.eigenvalues),
            "optimal_eigenvalues": _eig_pairs(self.optimal_eigenvalues),
        }

    def format(self) -> str:
        """A human-readable table."""
        m, n = self.K.shape
        w = 26
        lines = [
            f"{self.problem} (n = {n}, m = {m}): learned K against {self.reference}",
            f"  {'cost f(K)':<{w}}{self.cost:.8g}",
            f"  {f'optimal cost f* ({self.reference[8:]})':<{w}}{self.optimal_cost:.8g}",
            f"  {'relative gap':<{w}}{self.relative_gap:.3e}",
            f"  {'||K - K*||_F / ||K*||_F':<{w}}{self.gain_error:.3e}",
            f"  {'A - B K stable':<{w}}{'yes' if self.stabilizing else 'NO'}",
            f"  {'closed-loop eigenvalues':<{w}}{'A - B K':<26}A - B K*",
        ]
        for i, (z, z_opt) in enumerate(zip(self.eigenvalues, self.optimal_eigenvalues, strict=True), 1):
            lines.append(f"  {i:>{w - 2}}  {_fmt_eig(z):<26}{_fmt_eig(z_opt)}")
        return "\n".join(lines)


def compare(problem: LQRProblem, K: Any) -> Comparison:
    """Compare the gain ``K`` with ``control.lqr(A, B, Q, R)`` on ``problem`` (``control.dlqr`` for a
    discrete-time problem).

    Parameters
    ----------
    problem : LQRProblem
        The problem ``K`` was learned for.
    K : array_like, shape (m, n)
        The gain to assess (``u = -K x``).

    Returns
    -------
    Comparison

    Raises
    ------
    AzopgError
        If python-control is not installed.
    ProblemError
        If ``K`` has the wrong shape or ``control.lqr`` finds no stabilizing solution.
    """
    control = require_control()
    K = np.array(as_matrix(K, "K", problem.m, problem.n))
    A, B, Q, R = (np.array(M) for M in (problem.A, problem.B, problem.Q, problem.R))
    reference = "control.dlqr" if problem.discrete_time else "control.lqr"
    try:
        K_opt, S, _ = (control.dlqr if problem.discrete_time else control.lqr)(A, B, Q, R)
    except Exception as exc:  # python-control raises several types (ControlArgument, LinAlgError, ValueError)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProblemError(f"{reference} failed: {first}") from None
    K_opt = np.asarray(K_opt, dtype=float).reshape(problem.m, problem.n)
    S = np.asarray(S, dtype=float)
    fstar = float(np.trace(S @ problem.x0_cov))
    if not fstar > 0:
        raise ProblemError(f"the optimal cost is {fstar:.3g} (is Q zero?): the relative gap is undefined")
    cost = problem.cost(K)
    gain_error = relative_gain_error(K, K_opt)
    return Comparison(
        problem=problem.name,
        K=K,
        K_opt=K_opt,
        cost=cost,
        optimal_cost=fstar,
        relative_gap=(cost - fstar) / fstar,
        gain_error=gain_error,
        eigenvalues=np.sort_complex(np.linalg.eigvals(A - B @ K)),
        optimal_eigenvalues=np.sort_complex(np.linalg.eigvals(A - B @ K_opt)),
        stabilizing=problem.is_stabilizing(K),
        reference=reference,
    )


def relative_gain_error(K: Any, K_opt: Any) -> float:
    """``||K - K*||_F / ||K*||_F`` (if ``K* = 0``: 0 for ``K = 0``, else ``inf``)."""
    K_opt = np.asarray(K_opt, dtype=float)
    norm_opt = float(np.linalg.norm(K_opt))
    diff = float(np.linalg.norm(np.asarray(K, dtype=float) - K_opt))
    return diff / norm_opt if norm_opt > 0 else (0.0 if diff == 0 else math.inf)


def _read_json(path: Path, run_dir: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
        raise SettingsError(f"{run_dir!r}: cannot read {path.name} ({reason})") from None


def compare_run(run_dir: str | Path) -> Comparison:
    """Compare the gain of the run in ``run_dir`` with ``control.lqr``.

    Reads ``result.json`` (the learned ``K``) and ``problem.json`` (the problem), as
    written by :func:`azopg.run.output.write_run`.

    Parameters
    ----------
    run_dir : str or Path
        A run directory (``azopg train --out DIR``).

    Returns
    -------
    Comparison

    Raises
    ------
    SettingsError
        If ``run_dir`` is not a run directory or its files are missing or unreadable.
    AzopgError
        If python-control is not installed.
    """
    require_control()
    d = Path(run_dir)
    label = str(run_dir)
    missing = [name for name in ("result.json", "problem.json") if not (d / name).is_file()]
    if missing:
        raise SettingsError(f"{label!r} is not an azopg run directory (missing {', '.join(missing)})")
    result = _read_json(d / "result.json", label)
    data = _read_json(d / "problem.json", label)
    try:
        problem = LQRProblem.from_dict(data)
    except ProblemError as exc:
        raise SettingsError(f"{label!r}: invalid problem.json ({exc})") from None
    if not isinstance(result, dict) or "K" not in result:
        raise SettingsError(f"{label!r}: result.json has no gain K")
    try:
        K = as_matrix(result["K"], "K", problem.m, problem.n)
    except ProblemError as exc:
        raise SettingsError(f"{label!r}: invalid result.json ({exc})") from None
    return compare(problem, K)
