#!/usr/bin/env python
"""Generate the built-in benchmark problem files in ``src/azopg/data/problems/``.

Every system below is a continuous-time linear plant ``dx/dt = A x + B u`` taken
from the control literature (mostly via COMPleib).  The A and B matrices are typed
in exactly as they appear in the source named in the comment above each entry
(``B`` is always the control-input matrix, never COMPleib's disturbance
matrix ``B1``).  The LQR weights are ``Q = I_n`` and ``R = I_m`` unless an entry
gives its own (the CTMS cart-pole), and the initial-state covariance is ``I_n``.
The larger systems (n = 20 ... 60) and the cart-pole are built by code in
``problem_data_large.py``; the discrete-time systems (``"discrete_time": true``) in
``problem_data_discrete.py``.

For an open-loop system that is not Hurwitz the file also holds a stabilizing,
deliberately sub-optimal initial gain ``K0`` (convention ``u = -K x``), computed
with Bass's method:

    (A + beta I) X + X (A + beta I)^T = 2 B B^T,    K0 = B^T X^{-1}.

If ``X`` is positive definite then ``(A - B K0 + beta I) X`` is skew-symmetric,
so every closed-loop eigenvalue has real part ``-beta`` (a guarantee that needs
``-(A + beta I)`` Hurwitz, i.e. ``beta > -min Re eig(A)``).  The rule used here:

    beta = beta0 + 0.5 k,   beta0 = max(0, spectral abscissa of A) + 1,

with the smallest ``k >= 0`` such that (i) ``X`` is positive definite,
(ii) ``A - B K0`` is Hurwitz after ``K0`` is rounded to 6 significant digits,
(iii) the LQR cost of the rounded ``K0`` is between 1.5x and 1e4x the optimal cost.

An open-loop Hurwitz system gets no ``K0`` (so ``K0 = 0``) unless ``J(0) > 1e4 J*``;
then it gets a Bass gain by the same rule.  When no Bass gain passes (i)-(iii)
(a chain of masses actuated only at its ends: placing every pole at ``-beta``
needs gains so large that ``J(K0)/J*`` exceeds 1e10), ``K0`` is instead the LQR
gain for the heavier input weight ``rho R``, ``rho = 10^j`` with the smallest
``j >= 1`` such that the rounded gain passes (ii) and (iii).

Run with ``python scripts/make_problem_data.py``; it rewrites the JSON files and
prints a summary table.  Only numpy and scipy are needed.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg as la
from problem_data_large import large_systems
from problem_data_discrete import discrete_systems

OUT_DIR = Path(__file__).resolve().parent.parent / "src" / "azopg" / "data" / "problems"

COMPLEIB = (
    "F. Leibfritz, 'COMPleib: COnstraint Matrix-optimization Problem library - a "
    "collection of test examples for nonlinear semidefinite programs, control system "
    "design and related problems', Tech. Report, Universitaet Trier, 2004"
)

# ----------------------------------------------------------------------------------
# The systems.  Verified sources (public copies read while building this file):
#   [C]  COMPleib.m, Version 1.1 (09.03.2005), copy in GitHub repository
#        xi1ngang/Hinf-structured-output-Feedback, path COMPlib_r1_1/COMPleib.m
#        (commit 33dce0f47b42db9d8ab90750cb3da0bd8c5da907).
#   Further independent copies are named per system.
# ----------------------------------------------------------------------------------

SYSTEMS: list[dict] = []

# AC1 -- verified in [C] (block "(AC1)").  Independent copies of the same A, B
# (the aircraft example of Maciejowski, Multivariable Feedback Design, 1989) found in
# several public MATLAB/Python files, e.g. a 1998 file by P. J. Gawthrop.
SYSTEMS.append(
    dict(
        name="ac1",
        title="Aircraft (longitudinal dynamics, 5 states, 3 inputs)",
        source=(
            "Y. S. Hung and A. G. J. MacFarlane, 'Multivariable Feedback: A Quasi-Classical "
            "Approach', Lecture Notes in Control and Information Sciences 40, Springer-Verlag, "
            "1982 (also the aircraft example in J. M. Maciejowski, 'Multivariable Feedback "
            "Design', Addison-Wesley, 1989); COMPleib AC1 (Leibfritz 2004). " + COMPLEIB
        ),
        A=[
            [0, 0, 1.132, 0, -1],
            [0, -0.0538, -0.1712, 0, 0.0705],
            [0, 0, 0, 1, 0],
            [0, 0.0485, 0, -0.8556, -1.013],
            [0, -0.2909, 0, 1.0532, -0.6859],
        ],
        B=[
            [0, 0, 0],
            [-0.12, 1, 0],
            [0, 0, 0],
            [4.419, 0, -1.665],
            [1.575, 0, -0.0732],
        ],
        notes_extra="states: altitude, forward speed, pitch angle, pitch rate, vertical speed; "
        "an open-loop pole at exactly 0 (altitude integrator), so K = 0 is not stabilizing",
    )
)

# AC17 -- verified in [C] (block "(AC17)"); COMPleib spells the second author "Bramish".
SYSTEMS.append(
    dict(
        name="ac17",
        title="L-1011 aircraft, lateral-axis dynamics",
        source=(
            "A. R. Galimidi and B. R. Barmish, 'The constrained Lyapunov problem and its "
            "application to robust output feedback stabilization', IEEE Transactions on "
            "Automatic Control 31(5):410-419, 1986; COMPleib AC17 (Leibfritz 2004). " + COMPLEIB
        ),
        A=[
            [-2.98, 0.93, 0, -0.034],
            [-0.99, -0.21, 0.035, -0.0011],
            [0, 0, 0, 1],
            [0.39, -5.555, 0, -1.89],
        ],
        B=[[-0.032], [0], [0], [-1.6]],
        notes_extra="single input",
    )
)

# HE1 -- verified in [C] (block "(HE1)") and, independently, in a public Japanese
# BMI-solver example script that types the same A and b2 (= B) out in comments.
SYSTEMS.append(
    dict(
        name="he1",
        title="VTOL helicopter (longitudinal motion)",
        source=(
            "K. S. Narendra and S. S. Tripathi, 'Identification and optimization of aircraft "
            "dynamics', Journal of Aircraft 10(4):193-199, 1973; used in L. H. Keel, "
            "S. P. Bhattacharyya and J. W. Howze, 'Robust control with structured "
            "perturbations', IEEE Transactions on Automatic Control 33(1):68-78, 1988; "
            "COMPleib cites S. N. Singh and A. A. R. Coelho, 'Nonlinear control of mismatched "
            "uncertain linear systems and application to control of aircraft', Journal of "
            "Dynamic Systems, Measurement and Control 106:203-210, 1984; "
            "COMPleib HE1 (Leibfritz 2004). " + COMPLEIB
        ),
        A=[
            [-0.0366, 0.0271, 0.0188, -0.4555],
            [0.0482, -1.01, 0.0024, -4.0208],
            [0.1002, 0.3681, -0.7070, 1.42],
            [0, 0, 1, 0],
        ],
        B=[
            [0.4422, 0.1761],
            [3.5446, -7.5922],
            [-5.52, 4.49],
            [0, 0],
        ],
        notes_extra="states: horizontal velocity, vertical velocity, pitch rate, pitch angle; "
        "inputs: collective and longitudinal cyclic pitch",
    )
)

# HE3 -- verified in [C] (block "(HE3)").
SYSTEMS.append(
    dict(
        name="he3",
        title="Bell 201A-1 helicopter (8 states, 4 inputs)",
        source=(
            "D.-W. Gu, P. Hr. Petkov and M. M. Konstantinov, 'H_inf and H_2 Optimization "
            "Toolbox in SLICOT', SLICOT Working Note 1999-12, 1999; "
            "COMPleib HE3 (Leibfritz 2004). " + COMPLEIB
        ),
        A=[
            [-0.0046, 0.038, 0.3259, -0.0045, -0.402, -0.073, -9.81, 0],
            [-0.1978, -0.5667, 0.357, -0.0378, -0.2149, 0.5683, 0, 0],
            [0.0039, -0.0029, -0.2947, 0.007, 0.2266, 0.0148, 0, 0],
            [0.0133, -0.0014, -0.4076, -0.0654, -0.4093, 0.2674, 0, 9.81],
            [0.0127, -0.01, -0.8152, -0.0397, -0.821, 0.1442, 0, 0],
            [-0.0285, -0.0232, 0.1064, 0.0709, -0.2786, -0.7396, 0, 0],
            [0, 0, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 0],
        ],
        B=[
            [0.0676, 0.1221, -0.0001, -0.0016],
            [-1.1151, 0.1055, 0.0039, 0.0035],
            [0.0062, -0.0682, 0.001, -0.0035],
            [-0.017, 0.0049, 0.1067, 0.1692],
            [-0.0129, 0.0106, 0.2227, 0.143],
            [0.139, 0.0059, 0.0326, -0.407],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
        ],
        notes_extra="gravity terms (9.81) couple the attitude angles into the velocities; "
        "P* is the worst-conditioned of the set",
    )
)

# REA1 -- verified in [C] (block "(REA1)").  Independent check: the same plant is
# Example 1 of Kautsky, Nichols & Van Dooren (1985), reproduced in the docstring of
# scipy.signal.place_poles (scipy/signal/_ltisys.py): A is identical; older scipy
# releases list B flattened column by column as [0, 5.679, 1.136, 1.136, 0, 0, -3.146, 0],
# i.e. the same B as COMPleib.  (Newer scipy docstrings show that vector mis-reshaped
# row by row; COMPleib's REA2 uses a rounded A: 1.4, -0.208, -0.581.)
SYSTEMS.append(
    dict(
        name="rea1",
        title="Unstable chemical (batch) reactor",
        source=(
            "Y. S. Hung and A. G. J. MacFarlane, 'Multivariable Feedback: A Quasi-Classical "
            "Approach', Lecture Notes in Control and Information Sciences 40, Springer-Verlag, "
            "1982 (the Rosenbrock unstable batch reactor; also Example 1 of J. Kautsky, "
            "N. K. Nichols and P. Van Dooren, 'Robust pole assignment in linear state feedback', "
            "International Journal of Control 41(5):1129-1155, 1985); "
            "COMPleib REA1 (Leibfritz 2004). " + COMPLEIB
        ),
        A=[
            [1.38, -0.2077, 6.715, -5.676],
            [-0.5814, -4.29, 0, 0.675],
            [1.067, 4.273, -6.654, 5.893],
            [0.048, 4.273, 1.343, -2.104],
        ],
        B=[
            [0, 0],
            [5.679, 0],
            [1.136, -3.146],
            [1.136, 0],
        ],
        notes_extra="two unstable real poles (about +1.99 and +0.06); fast stable mode near -8.67",
    )
)

# COLA5 -- NOT in COMPleib: COMPleib's distillation columns (BDT1, n=11; BDT2, n=82)
# exceed 10 states, and its "DIS" series are decentralized interconnected systems, not
# distillation columns.  This is the scaled 5-state LV model of Skogestad's "column A",
# verified in the book's own MATLAB files, copy in GitHub repository
# braveheartwm/multivariable-feedback-control (commit 4f7c1d9fa6ca73bcd12192f772c15712cf48a386):
# matlab_m/Sec13_42.m (header "Section 12.4.2. Detailed LV-model ... Model (12.19)")
# and matlab_m/cola/cola_commands.m -- identical A and B in both.
SYSTEMS.append(
    dict(
        name="cola5",
        title="Binary distillation column ('column A'), 5-state LV model",
        source=(
            "S. Skogestad and I. Postlethwaite, 'Multivariable Feedback Control: Analysis and "
            "Design', Wiley, 1996, Section 12.4 (detailed LV model, eq. (12.19); Section 13.4 "
            "in the 2nd ed., 2005); model from M. Hovd and S. Skogestad, 'Simple "
            "frequency-dependent tools for control system analysis, structure selection and "
            "design', Automatica 28(5):989-996, 1992"
        ),
        A=[
            [-5.131e-3, 0, 0, 0, 0],
            [0, -7.366e-2, 0, 0, 0],
            [0, 0, -1.829e-1, 0, 0],
            [0, 0, 0, -4.620e-1, 9.895e-1],
            [0, 0, 0, -9.895e-1, -4.620e-1],
        ],
        B=[
            [-0.629, 0.624],
            [0.055, -0.172],
            [0.030, -0.108],
            [-0.186, -0.139],
            [-1.23, -0.056],
        ],
        notes_extra="scaled model (time in minutes); inputs reflux L and boilup V; "
        "very slow pole at -0.005131 (time constant about 195 min)",
    )
)

# TG1 -- verified in [C] (block "(TG1)"); no second public copy was found.
_tg1_B = [[0, 0] for _ in range(8)] + [[1.6667, 0], [0, 10]]
SYSTEMS.append(
    dict(
        name="tg1",
        title="Turbo-generator (10 states, 2 inputs)",
        source=(
            "Y. S. Hung and A. G. J. MacFarlane, 'Multivariable Feedback: A Quasi-Classical "
            "Approach', Lecture Notes in Control and Information Sciences 40, Springer-Verlag, "
            "1982, pp. 117/167; COMPleib TG1 (Leibfritz 2004). " + COMPLEIB
        ),
        A=[
            [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, -0.11323, -0.98109, -11.847, -11.847, -63.08, -34.339, -34.339, -27.645, 0],
            [324.121, -1.1755, -29.101, 0.12722, 2.83448, -967.73, -678.14, -678.14, 0, -129.29],
            [-127.3, 0.46167, 11.4294, -1.0379, 13.1237, 380.079, 266.341, 266.341, 0, 1054.85],
            [-186.05, 0.67475, 16.7045, 0.86092, -17.068, 555.502, 389.268, 389.268, 0, -874.92],
            [341.917, 1.09173, 1052.75, 756.465, 756.465, -29.774, 0.16507, 3.27626, 0, 0],
            [-30.748, -0.09817, -94.674, -68.029, -68.029, 2.67753, -2.6558, 4.88497, 0, 0],
            [-302.36, -0.96543, -930.96, -668.95, -668.95, 26.3292, 2.42028, -9.5603, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, -1.6667, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, -10],
        ],
        B=_tg1_B,
        notes_extra="entries of A up to about 1e3 (stiff, badly scaled); inputs enter "
        "through first-order actuator lags (-1.6667, -10)",
    )
)

# DIS4 -- verified in [C] (block "(DIS4)").
SYSTEMS.append(
    dict(
        name="dis4",
        title="Decentralized interconnected system (6 states, 4 local inputs)",
        source=(
            "H. T. Toivonen and P. M. Maekilae, 'A descent Anderson-Moore algorithm for "
            "optimal decentralized control', Automatica 21(6):743-744, 1985; "
            "COMPleib DIS4 (Leibfritz 2004). " + COMPLEIB
        ),
        A=[
            [0, 1, 0.5, 1, 0.6, 0],
            [-2, -3, 1, 0, 0, 1],
            [0, 2, 0.5, 1, 1, 0.5],
            [1, 3, 0, 0.5, 0, -0.5],
            [0, 1, 1, 0, 1, 0],
            [-3, -4, 0, 0.5, 0.5, 0],
        ],
        B=[
            [1, 0, 0, 0],
            [1, 0, 0, 0],
            [0, 3, 0, 0],
            [0, 0, 4, 0],
            [0, 0, 0, 2],
            [0, 0, 0, 3],
        ],
        notes_extra="COMPleib 'DIS' = decentralized interconnected system (not distillation); "
        "B is block-diagonal over the control stations",
    )
)


# ----------------------------------------------------------------------------------
# Computations
# ----------------------------------------------------------------------------------


def spectral_abscissa(M: np.ndarray) -> float:
    return float(np.max(np.linalg.eigvals(M).real))


def lqr_cost(A: np.ndarray, B: np.ndarray, K: np.ndarray, Q=None, R=None) -> float:
    """tr(P), (A-BK)^T P + P (A-BK) + Q + K^T R K = 0 (default Q=I, R=I), Omega=I."""
    Acl = A - B @ K
    if spectral_abscissa(Acl) >= 0:
        return math.inf
    n = A.shape[0]
    W = np.eye(n) + K.T @ K if Q is None else Q + K.T @ R @ K
    P = la.solve_continuous_lyapunov(Acl.T, -W)
    return float(np.trace(P))


def round_sig(M: np.ndarray, digits: int = 6) -> np.ndarray:
    return np.vectorize(lambda x: float(f"{x:.{digits}g}"))(M)


def bass_gain(A: np.ndarray, B: np.ndarray, beta: float) -> tuple[np.ndarray, float]:
    """K0 = B^T X^{-1}, (A + beta I) X + X (A + beta I)^T = 2 B B^T.

    scipy's solve_continuous_lyapunov(a, q) solves a X + X a^H = q, which is the
    equation above with a = A + beta I and q = 2 B B^T.
    Returns the gain and the smallest eigenvalue of (symmetrised) X.
    """
    n = A.shape[0]
    Ab = A + beta * np.eye(n)
    X = la.solve_continuous_lyapunov(Ab, 2.0 * B @ B.T)
    X = 0.5 * (X + X.T)
    K = B.T @ np.linalg.inv(X)
    return K, float(np.min(np.linalg.eigvalsh(X)))


def choose_k0(A: np.ndarray, B: np.ndarray, J_opt: float, Q=None, R=None) -> tuple[np.ndarray, float, float, int]:
    beta0 = max(0.0, spectral_abscissa(A)) + 1.0
    for k in range(200):
        beta = beta0 + 0.5 * k
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # singular Lyapunov operator
            K, xmin = bass_gain(A, B, beta)
        if not np.all(np.isfinite(K)) or xmin <= 0:
            continue
        K = round_sig(K)
        if spectral_abscissa(A - B @ K) >= 0:
            continue
        J0 = lqr_cost(A, B, K, Q, R)
        if 1.5 * J_opt <= J0 <= 1e4 * J_opt:
            return K, beta, J0, k
    raise RuntimeError("no acceptable Bass gain found")


def _bass_passes(A: np.ndarray, B: np.ndarray, J_opt: float, Q=None, R=None) -> bool:
    try:
        choose_k0(A, B, J_opt, Q, R)
    except RuntimeError:
        return False
    return True


def heavy_input_gain(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray,
                     J_opt: float, exponents: range = range(1, 13)) -> tuple[np.ndarray, float, float]:
    """K0 = rounded LQR gain for (Q, rho R), rho = 10^j, the first j of ``exponents`` (default: the smallest
    j >= 1) passing (ii), (iii)."""
    for j in exponents:
        rho = 10.0**j
        try:
            P = la.solve_continuous_are(A, B, Q, rho * R)
        except np.linalg.LinAlgError:  # the solver fails for this weight (e.g. an uncontrollable mode)
            continue
        K = round_sig(np.linalg.solve(rho * R, B.T @ P))
        if spectral_abscissa(A - B @ K) >= 0:
            continue
        J0 = lqr_cost(A, B, K, Q, R)
        if 1.5 * J_opt <= J0 <= 1e4 * J_opt:
            return K, rho, J0
    raise RuntimeError("no acceptable LQR gain for a scaled input weight found")


def fmt_matrix(M, indent: str) -> str:
    rows = [json.dumps([float(x) for x in row]) for row in np.asarray(M, dtype=float)]
    return "[\n" + ",\n".join(indent + "  " + r for r in rows) + "\n" + indent + "]"


def write_json(path: Path, rec: dict) -> None:
    parts = []
    for key, val in rec.items():
        if key in ("A", "B", "Q", "R", "K0"):
            parts.append(f'  "{key}": ' + fmt_matrix(val, "  "))
        else:
            parts.append(f'  "{key}": ' + json.dumps(val))
    path.write_text("{\n" + ",\n".join(parts) + "\n}\n", encoding="utf-8")


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    header = (
        f"{'name':8s} {'n':>2s} {'m':>2s} {'OL Hurwitz':>10s} {'absc(A)':>9s} {'J*':>10s} "
        f"{'J(K0 or 0)':>11s} {'ratio':>7s} {'cond(P*)':>9s} {'absc(A-BK*)':>11s}  K0"
    )
    print(header)
    for sysd in SYSTEMS + large_systems():
        A = np.array(sysd["A"], dtype=float)
        B = np.array(sysd["B"], dtype=float)
        n, m = B.shape
        assert A.shape == (n, n), sysd["name"]
        assert n <= 60, sysd["name"]
        Qw, Rw = sysd.get("Q"), sysd.get("R")  # own weights, else I (None keeps the I path)
        Q = np.eye(n) if Qw is None else np.array(Qw, dtype=float)
        R = np.eye(m) if Rw is None else np.array(Rw, dtype=float)

        # stabilizable / detectable check: the CARE has a stabilizing solution
        P = la.solve_continuous_are(A, B, Q, R)
        Kstar = np.linalg.solve(R, B.T @ P)
        a_cl = spectral_abscissa(A - B @ Kstar)
        assert a_cl < 0, f"{sysd['name']}: A - B K* not Hurwitz"
        J_opt = float(np.trace(P))
        J_check = lqr_cost(A, B, Kstar, Qw, Rw)
        assert abs(J_check - J_opt) <= 1e-6 * J_opt, (sysd["name"], J_check, J_opt)
        condP = float(np.linalg.cond(P))

        a_ol = spectral_abscissa(A)
        hurwitz = a_ol < -1e-13 * max(1.0, float(np.max(np.abs(A))))  # a pole at 0 is not
        rec: dict = {
            "name": sysd["name"],
            "title": sysd["title"],
            "source": sysd["source"],
            "A": A,
            "B": B,
            "Q": Q,
            "R": R,
        }
        J_zero = lqr_cost(A, B, np.zeros((m, n)), Qw, Rw) if hurwitz else math.inf
        if hurwitz and J_zero <= 1e4 * J_opt:
            J0 = J_zero
            k0_txt = "-"
            stab_txt = f"open-loop stable (spectral abscissa {a_ol:.4g})"
        elif not _bass_passes(A, B, J_opt, Qw, Rw):
            K0, rho, J0 = heavy_input_gain(A, B, Q, R, J_opt)
            rec["K0"] = K0
            rec["K0_method"] = f"LQR gain for input weight {rho:g} R"
            k0_txt = f"LQR(Q, {rho:g} R) (no Bass gain passes)"
            stab_txt = (
                f"open loop not Hurwitz (spectral abscissa {a_ol:.4g}); no Bass gain gives "
                f"J(K0) <= 1e4 J*, so K0 = LQR gain for (Q, rho R), rho = {rho:g} = the smallest "
                f"power of 10 giving J(K0) >= 1.5 J*, rounded to 6 digits; A - B K0 spectral "
                f"abscissa {spectral_abscissa(A - B @ K0):.4g}, J(K0)/J* = {J0 / J_opt:.3g}"
            )
        else:
            K0, beta, J0, k = choose_k0(A, B, J_opt, Qw, Rw)
            rec["K0"] = K0
            beta_s = f"{beta:.6g}"
            rule = "max(0, spectral abscissa of A) + 1" + (f" + 0.5*{k}" if k else "")
            rec["K0_method"] = f"Bass (beta={beta_s})"
            k0_txt = f"Bass beta={beta_s} ({rule})"
            stab_txt = (
                f"open-loop unstable (spectral abscissa {a_ol:.4g})"
                if a_ol > 0
                else f"open loop not Hurwitz (spectral abscissa {a_ol:.4g})"
                if not hurwitz
                else f"open-loop stable (spectral abscissa {a_ol:.4g}) but J(0)/J* = "
                f"{J_zero / J_opt:.3g} > 1e4"
            )
            stab_txt += (
                f"; K0 = Bass gain, beta = {beta_s} = {rule}, chosen as the smallest such "
                f"beta giving X > 0 and J(K0) >= 1.5 J*; A - B K0 spectral abscissa "
                f"{spectral_abscissa(A - B @ K0):.4g}, J(K0)/J* = {J0 / J_opt:.3g}"
            )
        rec["notes"] = (
            f"n={n}, m={m}; {stab_txt}; optimal cost tr(P*) = {J_opt:.6g} "
            f"({sysd.get('weights', 'Q=I, R=I')}, x0 covariance I); {sysd['notes_extra']}"
        )
        write_json(OUT_DIR / f"{sysd['name']}.json", rec)
        print(
            f"{sysd['name']:8s} {n:2d} {m:2d} {hurwitz!s:>10s} {a_ol:9.4g} {J_opt:10.5g} "
            f"{J0:11.5g} {J0 / J_opt:7.3g} {condP:9.3g} {a_cl:11.4g}  {k0_txt}"
        )

    for rec in discrete_systems():  # complete records, written as they are
        write_json(OUT_DIR / f"{rec['name']}.json", rec)
        print(f"{rec['name']:8s} {len(rec['A']):2d} {len(rec['R']):2d}  discrete time: {rec['notes']}")


if __name__ == "__main__":
    main()
