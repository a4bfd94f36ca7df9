"""CAREX's scalable examples at any size.

CAREX (J. Abels and P. Benner, SLICOT Working Note 1999-14; generator routine BB01AD of the
SLICOT library) defines four families whose size is a parameter. The library ships them at a
few sizes as files (collection ``carex``); :func:`carex_scalable` builds them at any size from
BB01AD's formulas, so the names ``carex3.1-lL``, ``carex4.1-nN``, ``carex4.2-nN`` and
``carex4.3-lL`` work for every ``L``, ``N`` (:func:`azopg.get_problem`):

- 3.1, string of ``l`` high-speed vehicles (Laub 1979, Ex. 4): ``n = 2l - 1``, ``m = l``;
- 4.1, chain of ``n`` integrators (Laub 1979, Ex. 6), an ill-conditioned CARE: ``m = 1``;
- 4.2, 1-D heat flow, linear finite elements on ``n`` nodes (Rosen and Wang 1992): ``m = 1``,
  ``A = M^-1 K`` dense; open-loop stable (``K0 = 0``);
- 4.3, ``l`` masses in a free-free chain of springs and dashpots, forces on the first and last
  (Hench et al. 1995): ``n = 2l``, ``m = 2``, ``A`` sparse (about ``4n`` entries).

Parameters are CAREX's defaults; ``x0_cov = I``. The optimal solution is scipy's Riccati
solution (the library's oracle). ``K0``: ``0`` where ``A`` is Hurwitz (4.2), else the LQR gain
for the input weight ``rho R``, ``rho`` the smallest of ``10, 100, ...`` whose gain costs at
least 1.5 times the optimum (the rule of the shipped files, unrounded; at the shipped sizes
4.3 gets ``rho = 1000`` like its file).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ProblemError
from . import riccati
from .problem import LQRProblem
from .validation import oracle_bytes, require_memory

__all__ = ["CAREX", "SCALABLE", "carex_scalable", "ex_3_1", "is_scalable", "ex_4_1", "ex_4_2", "ex_4_3"]

#: The citation of the collection.
CAREX = (
    "J. Abels and P. Benner, 'CAREX - A collection of benchmark examples for continuous-time "
    "algebraic Riccati equations (Version 2.0)', SLICOT Working Note 1999-14, 1999 "
    "(SLICOT routine BB01AD)"
)
#: The scalable examples: number -> (size letter of the name, title, parameters).
SCALABLE = {
    "3.1": ("l", "Laub 1979, Ex. 4: string of {s} high-speed vehicles", "l = {s}"),
    "4.1": ("n", "Laub 1979, Ex. 6: ill-conditioned CARE, chain of {s} integrators", "n = {s}, q = r = 1"),
    "4.2": ("n", "Rosen/Wang 1992: LQ control of 1-D heat flow, n = {s}",
            "n = {s}, a = 0.01, b = c = 1, beta = gamma = [0.2, 0.3]"),
    "4.3": ("l", "Hench et al. 1995: coupled springs, dashpots and masses, l = {s}",
            "l = {s}, mu = delta = 4, kappa = 1"),
}
_NAME = re.compile(r"carex(\d\.\d)-([ln])(\d+)")
#: Smallest size of each example (BB01AD's bounds).
_MIN_SIZE = {"3.1": 2, "4.1": 2, "4.2": 2, "4.3": 2}


def ex_3_1(l: int) -> dict[str, Any]:
    """String of l high-speed vehicles: n = 2l - 1, m = l, Q = 10 C^T C (C picks the l - 1 distances)."""
    n = 2 * l - 1
    A, B, C = np.zeros((n, n)), np.zeros((n, l)), np.zeros((l - 1, n))
    for i in range(1, n + 1):  # 1-based as in CAREX
        if i % 2 == 1:
            A[i - 1, i - 1] = -1.0
            B[i - 1, (i + 1) // 2 - 1] = 1.0
        else:
            A[i - 1, i - 2], A[i - 1, i] = 1.0, -1.0
            C[i // 2 - 1, i - 1] = 1.0
    return dict(A=A, B=B, Q=10.0 * C.T @ C, R=np.eye(l),
                fact="Q = C^T W C, W = 10 I, C picks the distance states; R = I")


def ex_4_1(n: int, q: float = 1.0, r: float = 1.0) -> dict[str, Any]:
    """Laub Ex. 6: an n-integrator chain, u drives the last, Q = q e1 e1^T, R = r."""
    A = np.eye(n, k=1)
    B = np.zeros((n, 1))
    B[-1, 0] = 1.0
    Q = np.zeros((n, n))
    Q[0, 0] = q
    return dict(A=A, B=B, Q=Q, R=np.array([[r]]), fact=f"Q = q C^T C, C = e1^T, q = {q:g}; R = r = {r:g}")


def ex_4_2(n: int, a: float = 0.01, b: float = 1.0, c: float = 1.0,
           beta: tuple[float, float] = (0.2, 0.3), gamma: tuple[float, float] = (0.2, 0.3)) -> dict[str, Any]:
    """Rosen/Wang heat flow, linear finite elements on n interior nodes (h = 1/(n+1))."""
    N1 = float(n + 1)
    K = -a * N1 * (2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1))
    M = (4 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)) / (6 * N1)

    def hat_integral(i: int, lo: float, hi: float) -> float:  # BB01AD's formula, 1-based node i
        x1, x2 = max((i - 1) / N1, lo), min((i + 1) / N1, hi)
        if x1 >= x2:
            return 0.0
        v = x2 - x1
        t = min(x2, i / N1)
        if x1 < t:
            v += N1 * (t**2 - x1**2) / 2 + i * (x1 - t)
        t = max(x1, i / N1)
        if t < x2:
            v -= N1 * (x2**2 - t**2) / 2 + i * (t - x2)
        return v

    Bv = b * np.array([hat_integral(i, *beta) for i in range(1, n + 1)])
    Cv = c * np.array([hat_integral(i, *gamma) for i in range(1, n + 1)])
    A = np.linalg.solve(M, K)
    B = np.linalg.solve(M, Bv)[:, None]
    return dict(A=A, B=B, Q=np.outer(Cv, Cv), R=np.eye(1),
                fact="A = M^-1 K, B = M^-1 b (M the mass matrix, K the stiffness matrix); Q = C^T C (W = 1), R = 1")


def ex_4_3(l: int, mu: float = 4.0, delta: float = 4.0, kappa: float = 1.0) -> dict[str, Any]:
    """Hench et al.: l masses in a free-free chain of springs, forces on the first and last."""
    n = 2 * l
    A = np.zeros((n, n))
    A[:l, l:] = np.eye(l)
    t = kappa / mu
    A[l, 0], A[l, 1] = -t, t
    A[n - 1, l - 2], A[n - 1, l - 1] = t, -t
    for i in range(2, l):  # 1-based i = 2 .. l-1
        A[l + i - 1, i - 1], A[l + i - 1, i], A[l + i - 1, i - 2] = -2 * t, t, t
    A[l:, l:] = -delta / mu * np.eye(l)
    B = np.zeros((n, 2))
    B[l, 0], B[n - 1, 1] = 1 / mu, -1 / mu
    return dict(A=A, B=B, Q=np.eye(n), R=np.eye(2), fact="Q = I, R = I")


_BUILD: dict[str, Callable[[int], dict[str, Any]]] = {"3.1": ex_3_1, "4.1": ex_4_1, "4.2": ex_4_2, "4.3": ex_4_3}


def _states(nr: str, size: int) -> tuple[int, int]:
    """``(n, m)`` of example ``nr`` at ``size``."""
    return {"3.1": (2 * size - 1, size), "4.1": (size, 1), "4.2": (size, 1), "4.3": (2 * size, 2)}[nr]


def is_scalable(name: str) -> bool:
    """Whether ``name`` has the form of a scalable example (:func:`carex_scalable`)."""
    match = _NAME.fullmatch(name)
    return match is not None and match.group(1) in SCALABLE and SCALABLE[match.group(1)][0] == match.group(2)


def carex_scalable(name: str) -> LQRProblem:
    """A scalable CAREX example at any size, by name (module docstring).

    Parameters
    ----------
    name : str
        ``carex3.1-lL``, ``carex4.1-nN``, ``carex4.2-nN`` or ``carex4.3-lL``.

    Returns
    -------
    LQRProblem
        Named ``name``, with CAREX's citation, ``x0_cov = I`` and ``K0`` as in the module docstring.

    Raises
    ------
    ProblemError
        If the name is not of that form, the size is below the example's smallest, or its oracle
        would not fit in this machine's memory.

    Examples
    --------
    >>> from azopg.model.carex import carex_scalable
    >>> p = carex_scalable("carex4.3-l12")
    >>> p.n, p.m, bool(p.K0.any())
    (24, 2, True)
    >>> bool(p.cost(p.K0) >= 1.5 * p.optimal_cost)
    True
    """
    match = _NAME.fullmatch(name)
    if match is None or not is_scalable(name):
        raise ProblemError(f"not a scalable CAREX example: {name!r} (carex3.1-lL, carex4.1-nN, carex4.2-nN, "
                           "carex4.3-lL)")
    nr, size = match.group(1), int(match.group(3))
    if size < _MIN_SIZE[nr]:
        raise ProblemError(f"{name}: the size must be at least {_MIN_SIZE[nr]}")
    n, m = _states(nr, size)
    require_memory(oracle_bytes(n, m), f"CAREX {nr} at n = {n} states")
    d = _BUILD[nr](size)
    _, title, params = SCALABLE[nr]
    return LQRProblem(d["A"], d["B"], d["Q"], d["R"], K0=np.zeros((m, n)) if nr == "4.2" else _heavy_gain(d),
                      name=name, title=f"CAREX {nr}: {title.format(s=size)}",
                      source=f"{CAREX}, Example {nr} ({params.format(s=size)}); {d['fact']}")


def _heavy_gain(d: dict[str, Any]) -> np.ndarray:
    """The LQR gain for the input weight ``rho R``, ``rho`` the smallest power of 10 from 10 whose gain
    costs at least 1.5 times the optimum (at most ``1e12``)."""
    A, B, Q, R = d["A"], d["B"], d["Q"], d["R"]

    def cost(K: np.ndarray) -> float:
        return float(np.trace(riccati.lyapunov((A - B @ K).T, Q + K.T @ R @ K)))

    optimum = cost(np.linalg.solve(R, B.T @ riccati.solve(A, B, Q, R)))
    for j in range(1, 13):
        K = np.linalg.solve(10.0**j * R, B.T @ riccati.solve(A, B, Q, 10.0**j * R))
        if cost(K) >= 1.5 * optimum:
            return K
    raise ProblemError("no LQR gain for a heavier input weight costs 1.5 times the optimum")
