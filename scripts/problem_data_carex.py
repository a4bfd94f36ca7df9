#!/usr/bin/env python
"""Generate the CAREX collection in ``src/azopg/data/problems/carex/``.

CAREX (J. Abels and P. Benner, SLICOT Working Note 1999-14; generator routine
BB01AD of the SLICOT library) defines each example by ``A``, ``G = B R^-1 B^T``
(given as ``B``, ``R``) and ``Q = C^T W C`` (given as ``C``, ``W``), for the CARE
``0 = Q + A^T X + X A - X G X``.  Here every example is mapped to the LQR problem
``(A, B, Q, R)`` with ``Q = C^T W C`` formed explicitly (``C = I`` or ``W = I`` where
CAREX says so) and ``B``, ``R`` kept as CAREX gives them (never re-factored), so the
optimal value matrix ``P*`` is CAREX's ``X``.  The definitions were read from
BB01AD.f of the SLICOT reference library (GitHub SLICOT/SLICOT-Reference, commit
a6abd01f0a72f888e482ee6c1da208838d42b0dc); the numeric data of Examples 1.3 - 1.6 and
2.9 are the files ``BB01103.dat`` ... ``BB012091.dat`` of its ``benchmark_data``
folder (BSD-3-Clause), read from a checkout of that repository (not shipped here).  The files
are read as Fortran list-directed input: each READ statement starts a new line and reads
as many lines as it needs.

Parameters are CAREX's defaults; the scalable examples are also written at a few
other sizes.  ``x0_cov = I``.  ``K0`` follows ``make_problem_data.py`` (a Bass gain,
or the LQR gain for a heavier input weight when no Bass gain passes).

Not included: Example 2.5 (its default ``Q`` is indefinite: an H-infinity-type CARE,
not an LQR problem) and Example 4.4 (default n = 421, m = 211: the large-scale case).

Run with ``python scripts/problem_data_carex.py PATH/SLICOT-Reference/benchmark_data``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import scipy.linalg as la
from make_problem_data import OUT_DIR, choose_k0, heavy_input_gain, lqr_cost, round_sig, spectral_abscissa, write_json

from azopg.model.carex import CAREX, ex_3_1, ex_4_1, ex_4_2, ex_4_3

#: The ``benchmark_data`` folder of a SLICOT-Reference checkout (the first command-line argument).
DATA = Path(".")
CAREX_DIR = OUT_DIR / "carex"


class FortranRecords:
    """List-directed reads from a CAREX data file: ``read(k)`` starts at a new line and
    returns the next ``k`` values, dropping the rest of its last line."""

    def __init__(self, name: str) -> None:
        self.lines = (DATA / name).read_text().splitlines()
        self.pos = 0

    def read(self, k: int) -> np.ndarray:
        vals: list[float] = []
        while len(vals) < k:
            vals += [fortran_float(t) for t in self.lines[self.pos].split()]
            self.pos += 1
        return np.array(vals[:k])


def fortran_float(token: str) -> float:
    """A Fortran real: ``1.5D+02``, or ``0.12317-02`` (an exponent without its letter)."""
    token = token.upper().replace("D", "E")
    return float(re.sub(r"(?<=[0-9.])([+-]\d+)$", r"E\1", token) if "E" not in token else token)


def ex_1_file(nr: int, n: int, m: int, p: int) -> dict:
    """Examples 1.3 - 1.6: A, B from the file; Q from it (1.3, 1.4), Q = I (1.5), or C with W = I (1.6)."""
    f = FortranRecords(f"BB0110{nr}.dat")
    A = np.array([f.read(n) for _ in range(n)])
    B = np.array([f.read(m) for _ in range(n)])
    if nr <= 4:
        Q = np.array([f.read(n) for _ in range(n)])
        Q = np.tril(Q) + np.tril(Q, -1).T  # BB01AD packs the lower triangle
        fact = "Q read in full (lower triangle used), R = I"
        if nr == 4:
            fact += (f"; Q as published is indefinite, smallest eigenvalue {np.linalg.eigvalsh(Q).min():.3g}, "
                     "but the CARE has a stabilizing solution")
        if nr == 3:
            fact += (f"; Q as published (3 digits) is slightly indefinite, smallest eigenvalue "
                     f"{np.linalg.eigvalsh(Q).min():.3g}, but the CARE has a stabilizing solution")
    elif nr == 5:
        Q = np.eye(n)
        fact = "Q = I, R = I"
    else:
        C = np.array([f.read(n) for _ in range(p)])
        Q = C.T @ C
        fact = f"Q = C^T C with the {p} x {n} output matrix C of the file (W = I), R = I"
    return dict(A=A, B=B, Q=Q, R=np.eye(m), fact=fact)


def ex_2_9() -> dict:
    """Example 2.9 (LQR CARE, the default): A from 2x2 blocks + columns 46..55, C rows 1..6."""
    n, m, p = 55, 2, 10
    f = FortranRecords("BB012091.dat")
    A = np.zeros((n, n))
    for i in [*range(0, 27, 2), *range(29, 44, 2)]:
        A[i : i + 2, i : i + 2] = f.read(4).reshape(2, 2)
    for i in range(n):
        A[i, 45:] = f.read(10)
    A[28, 28] = -5.301
    B = np.zeros((n, m))
    B[47, 0] = B[50, 1] = 0.8e6
    R = np.diag([364.7, 14.59])
    C = np.zeros((p, n))
    for i in range(6):
        C[i, :45] = f.read(45)
    C[6, 46] = C[7, 45] = C[8, 49] = C[9, 48] = 1.0
    W = np.zeros((p, p))
    W[1, 1], W[2, 2], W[5, 5] = 0.376e-13, 0.120e-12, 0.245e-11
    return dict(A=A, B=B, Q=C.T @ W @ C, R=R,
                fact="Q = C^T W C with the 10 x 55 output matrix C and W = diag(0, 3.76e-14, 1.2e-13, 0, 0, "
                "2.45e-12, 0, 0, 0, 0) (rank 3); R = diag(364.7, 14.59)")


def ex_3_2(n: int) -> dict:
    """Circulant: A = -2 I + cyclic neighbours, B = Q = R = I; X circulant in closed form."""
    A = -2 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)
    A[0, -1] = A[-1, 0] = 1.0
    return dict(A=A, B=np.eye(n), Q=np.eye(n), R=np.eye(n), fact="B = Q = R = I", X=circulant_solution(n))


def circulant_solution(n: int) -> np.ndarray:
    theta = 2 * np.pi / n
    c = np.cos(theta * np.arange(n))
    d = -2 + 2 * c + np.sqrt(5 + 4 * c * (c - 2))
    x = np.array([d @ np.cos(theta * np.arange(n) * j) / n for j in range(n)])
    return np.array([[x[(i - j) % n] for j in range(n)] for i in range(n)])


def scaled_optimal_gain(A: np.ndarray, B: np.ndarray, Ks: np.ndarray, J_opt: float, Q: np.ndarray,
                        R: np.ndarray) -> tuple[np.ndarray, float, float]:
    """K0 = c K*, rounded, c = 2^j with the smallest j >= 1 passing rules (ii), (iii) of make_problem_data.py:
    the last resort when the LQR cost hardly depends on the input weight (a nearly uncontrollable unstable mode
    whose minimum-energy gain dominates, Examples 1.2, 2.1)."""
    for j in range(1, 40):
        K = round_sig(2.0**j * Ks)
        if spectral_abscissa(A - B @ K) < 0 and 1.5 * J_opt <= (J0 := lqr_cost(A, B, K, Q, R)) <= 1e4 * J_opt:
            return K, 2.0**j, J0
    raise RuntimeError("no acceptable multiple of K* found")


def analytic(nr: str) -> np.ndarray | None:
    """CAREX's closed-form solutions X at the default parameters."""
    s2 = math.sqrt(2.0)
    if nr == "1.1":
        return np.array([[2.0, 1.0], [1.0, 2.0]])
    if nr == "1.2":
        return (1 + s2) * np.array([[9.0, 6.0], [6.0, 4.0]])
    if nr == "2.1":
        e = 1e-6
        t = math.hypot(1.0, e)
        x12 = 1 / (2 + t)
        return np.array([[(1 + t) / e**2, x12], [x12, (1 - e * x12) * (1 + e * x12) / 4]])
    if nr == "2.3":
        e = 1e6
        t = math.sqrt(1 + 2 * e)
        return np.array([[t / e, 1.0], [1.0, t]])
    if nr == "2.4":
        e = 1e-7
        t = e + 1
        x11 = (2 * t + s2 * (math.sqrt(t**2 + 1) + e)) / 2
        x12 = x11 / (x11 - t)
        return np.array([[x11, x12], [x12, x11]])
    if nr == "2.6":
        e = 1e6
        V = np.eye(3) - 2 / 3 * np.ones((3, 3))
        d = [e**2 + math.sqrt(e**4 + 1), 2 * e**2 + math.sqrt(4 * e**4 + e), 3 * e**2 + e * math.sqrt(9 * e**2 + 1)]
        return V @ np.diag(d) @ V
    return None


def examples() -> list[dict]:
    """(name, title, definition) of every example written."""
    out: list[dict] = []

    def add(nr: str, title: str, params: str, d: dict, size: str = "") -> None:
        name = f"carex{nr}" + (f"-{size}" if size else "")
        X = d.pop("X", None)
        if X is None and not size:
            X = analytic(nr)
        out.append(dict(name=name, nr=nr, title=f"CAREX {nr}: {title}", params=params, X=X, **d))

    add("1.1", "Laub 1979, Ex. 1 (double integrator)", "parameter-free",
        dict(A=np.array([[0.0, 1.0], [0.0, 0.0]]), B=np.array([[0.0], [1.0]]), Q=np.diag([1.0, 2.0]),
             R=np.eye(1), fact="Q = diag(1, 2), R = 1"))
    add("1.2", "Laub 1979, Ex. 2 (uncontrollable-unobservable data)", "parameter-free",
        dict(A=np.array([[4.0, 3.0], [-4.5, -3.5]]), B=np.array([[1.0], [-1.0]]),
             Q=np.array([[9.0, 6.0], [6.0, 4.0]]), R=np.eye(1), fact="Q = [[9, 6], [6, 4]] (rank 1), R = 1"))
    add("1.3", "Beale/Shafai 1989, model of the L-1011 aircraft", "parameter-free", ex_1_file(3, 4, 2, 4))
    add("1.4", "Bhattacharyya et al. 1983, binary distillation column", "parameter-free", ex_1_file(4, 8, 2, 8))
    add("1.5", "Patnaik et al. 1980, tubular ammonia reactor", "parameter-free", ex_1_file(5, 9, 3, 9))
    add("1.6", "Davison/Gesing 1978, J-100 jet engine", "parameter-free", ex_1_file(6, 30, 3, 5))
    e = 1e-6
    add("2.1", "Arnold/Laub 1984, Ex. 1 ((A, B) unstabilizable as eps -> 0)", "eps = 1e-6",
        dict(A=np.diag([1.0, -2.0]), B=np.array([[e], [0.0]]), Q=np.ones((2, 2)), R=np.eye(1),
             fact="Q = C^T C, C = [1, 1]; R = 1"))
    e = 1e-8
    add("2.2", "Arnold/Laub 1984, Ex. 3 (control weighting nearly singular as eps -> 0)", "eps = 1e-8",
        dict(A=np.diag([-0.1, -0.02]), B=np.array([[0.1, 0.0], [0.001, 0.01]]),
             Q=np.array([[100.0, 1000.0], [1000.0, 10000.0]]), R=np.array([[1.0 + e, 1.0], [1.0, 1.0]]),
             fact="Q = C^T C, C = [10, 100]; R = [[1 + eps, 1], [1, 1]]"))
    e = 1e6
    add("2.3", "Kenney/Laub/Wette 1989, Ex. 2 (ill-conditioned as eps -> oo)", "eps = 1e6",
        dict(A=np.array([[0.0, e], [0.0, 0.0]]), B=np.array([[0.0], [1.0]]), Q=np.eye(2), R=np.eye(1),
             fact="Q = I, R = 1"))
    e = 1e-7
    add("2.4", "Bai/Qian 1994 (ill-conditioned Hamiltonian as eps -> 0)", "eps = 1e-7",
        dict(A=np.array([[1 + e, 1.0], [1.0, 1 + e]]), B=np.eye(2), Q=e**2 * np.eye(2), R=np.eye(2),
             fact="B = I, Q = eps^2 I, R = I"))
    e = 1e6
    V = np.eye(3) - 2 / 3 * np.ones((3, 3))
    add("2.6", "Petkov et al. 1987 (badly scaled Hamiltonian as eps -> oo)", "eps = 1e6",
        dict(A=V @ np.diag([e, 2 * e, 3 * e]) @ V, B=np.eye(3), Q=V @ np.diag([1 / e, 1.0, e]) @ V,
             R=e * np.eye(3), fact="V = I - (2/3) 1 1^T; A = V diag(eps, 2 eps, 3 eps) V; B = I, "
             "R = eps I (so G = I / eps); Q = C^T W C with C = V, W = diag(1/eps, 1, eps)"))
    e = 1e-6
    A = np.zeros((4, 4))
    A[0, 1], A[1, 2] = 0.4, 0.345
    A[2, 1], A[2, 2], A[2, 3], A[3, 3] = -0.524 / e, -0.465 / e, 0.262 / e, -1 / e
    Q = np.zeros((4, 4))
    Q[0, 0] = Q[2, 2] = 1.0
    add("2.7", "Chow/Kokotovic 1976, magnetic tape control", "eps = 1e-6",
        dict(A=A, B=np.array([[0.0], [0.0], [0.0], [1 / e]]), Q=Q, R=np.eye(1),
             fact="Q = C^T C, C picks states 1 and 3; R = 1"))
    A = np.array([[-e, 1.0, 0, 0], [-1.0, -e, 0, 0], [0, 0, e, 1.0], [0, 0, -1.0, e]])
    add("2.8", "Arnold/Laub 1984, Ex. 2 (poor separation of the closed-loop spectrum)", "eps = 1e-6",
        dict(A=A, B=np.ones((4, 1)), Q=np.ones((4, 4)), R=np.eye(1), fact="Q = C^T C, C = [1, 1, 1, 1]; R = 1"))
    add("2.9", "IFAC benchmark 90-06, LQG design for a modified Boeing B-767 at flutter condition",
        "LQR CARE (IPAR(1) = 1)", ex_2_9())
    for l in (5, 10, 20, 30):
        add("3.1", f"Laub 1979, Ex. 4: string of {l} high-speed vehicles", f"l = {l}", ex_3_1(l),
            "" if l == 20 else f"l{l}")
    for n in (8, 16, 32, 64):
        add("3.2", f"Laub 1979, Ex. 5: circulant matrices, n = {n}", f"n = {n}", ex_3_2(n), "" if n == 64 else f"n{n}")
    for n in (5, 10, 15, 21):
        add("4.1", f"Laub 1979, Ex. 6: ill-conditioned CARE, chain of {n} integrators", f"n = {n}, q = r = 1",
            ex_4_1(n), "" if n == 21 else f"n{n}")
    for n in (20, 50, 100):
        add("4.2", f"Rosen/Wang 1992: LQ control of 1-D heat flow, n = {n}",
            f"n = {n}, a = 0.01, b = c = 1, beta = gamma = [0.2, 0.3]", ex_4_2(n), "" if n == 100 else f"n{n}")
    for l in (5, 10, 30):
        add("4.3", f"Hench et al. 1995: coupled springs, dashpots and masses, l = {l}",
            f"l = {l}, mu = delta = 4, kappa = 1", ex_4_3(l), "" if l == 30 else f"l{l}")
    return out


def main() -> None:
    CAREX_DIR.mkdir(parents=True, exist_ok=True)
    print(f"{'name':14s} {'n':>3s} {'m':>3s} {'absc(A)':>10s} {'tr X':>11s} {'max|X|':>9s} {'cond X':>9s} "
          f"{'res':>8s} {'vs CAREX X':>10s} {'J0/J*':>8s}  K0")
    for ex in examples():
        A, B, Q, R = (np.asarray(ex[k], dtype=float) for k in ("A", "B", "Q", "R"))
        n, m = B.shape
        X = la.solve_continuous_are(A, B, Q, R)
        X = (X + X.T) / 2
        Ks = np.linalg.solve(R, B.T @ X)
        assert spectral_abscissa(A - B @ Ks) < 0, ex["name"]
        terms = (A.T @ X, X @ B @ Ks, Q)  # relative residual as azopg's oracle measures it (accepts <= 1e-6)
        res = np.abs(terms[0] + terms[0].T - terms[1] + terms[2]).max() / sum(np.abs(t).max() for t in terms)
        assert res < 1e-6 or ex["X"] is not None, (ex["name"], res)  # else judged against CAREX's X below
        err = "-"
        if ex["X"] is not None:
            rel = float(np.abs(X - ex["X"]).max() / np.abs(ex["X"]).max())
            err = f"{rel:.1e}"
            if rel > 1e-6:  # the floating-point CARE solution is not the problem's: no oracle, no library entry
                print(f"{ex['name']:14s} {n:3d} {m:3d} not written: scipy's CARE solution is {err} (relative) "
                      f"from CAREX's closed-form X, relative residual {res:.1e}")
                continue
        J_opt = float(np.trace(X))
        a_ol = spectral_abscissa(A)
        hurwitz = a_ol < -1e-13 * max(1.0, float(np.max(np.abs(A))))
        rec: dict = {"name": ex["name"], "title": ex["title"],
                     "source": f"{CAREX}, Example {ex['nr']} ({ex['params']})", "A": A, "B": B, "Q": Q, "R": R}
        J_zero = lqr_cost(A, B, np.zeros((m, n)), Q, R) if hurwitz else math.inf
        if hurwitz and J_zero <= 1e4 * J_opt:
            J0, k0 = J_zero, "-"
            stab = f"open-loop stable (spectral abscissa {a_ol:.4g})"
        else:
            try:
                K0, beta, J0, _ = choose_k0(A, B, J_opt, Q, R)
                rec["K0"], rec["K0_method"] = K0, f"Bass (beta={beta:.6g})"
            except (RuntimeError, np.linalg.LinAlgError):  # no Bass gain passes, or X singular (uncontrollable)
                try:
                    K0, rho, J0 = heavy_input_gain(A, B, Q, R, J_opt)
                    rec["K0"], rec["K0_method"] = K0, f"LQR gain for input weight {rho:g} R"
                except RuntimeError:  # J(K) saturates below 1.5 J* for every rho: an uncontrollable mode
                    K0, c, J0 = scaled_optimal_gain(A, B, Ks, J_opt, Q, R)
                    rec["K0"], rec["K0_method"] = K0, f"{c:g} K* (no Bass or scaled-weight LQR gain passes)"
            k0 = rec["K0_method"]
            stab = (f"open loop {'unstable' if a_ol > 0 else 'not Hurwitz'} (spectral abscissa {a_ol:.4g})"
                    if not hurwitz else f"open-loop stable but J(0)/J* = {J_zero / J_opt:.3g} > 1e4")
            stab += (f"; K0 = {k0} as in make_problem_data.py; A - B K0 spectral abscissa "
                     f"{spectral_abscissa(A - B @ rec['K0']):.4g}, J(K0)/J* = {J0 / J_opt:.3g}")
        rec["notes"] = (f"n={n}, m={m}; {ex['fact']}; {stab}; optimal cost tr(P*) = {J_opt:.6g} "
                        f"(x0 covariance I); max |P*| = {np.abs(X).max():.3g}, cond(P*) = {np.linalg.cond(X):.3g}"
                        + ("; P* agrees with CAREX's closed-form X" if ex["X"] is not None else ""))
        write_json(CAREX_DIR / f"{ex['name']}.json", rec)
        print(f"{ex['name']:14s} {n:3d} {m:3d} {a_ol:10.3g} {J_opt:11.4g} {np.abs(X).max():9.2e} "
              f"{np.linalg.cond(X):9.2e} {res:8.1e} {err:>10s} {J0 / J_opt:8.3g}  {k0}")


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "BB01103.dat").is_file():
        sys.exit("usage: python scripts/problem_data_carex.py PATH/SLICOT-Reference/benchmark_data")
    DATA = Path(sys.argv[1])
    main()
