"""Larger published systems (n = 20 ... 60) and the CTMS cart-pole, for
``make_problem_data.py``.

COMPleib builds its larger systems either from ``.mat`` files or by MATLAB code.
Only systems built by code are used here, so that every matrix can be reproduced
exactly from public text: the code blocks of COMPleib.m (Version 1.1, 09.03.2005;
copy in GitHub repository xi1ngang/Hinf-structured-output-Feedback, path
COMPlib_r1_1/COMPleib.m, commit 76873b794055d828a2b042ff8efed98c4aa1f752) are
ported line by line below.  As for the small systems, ``B`` is COMPleib's control
matrix ``B`` (never the disturbance matrix ``B1``).

Each generator is checked against the closed-form open-loop spectrum of the
system it builds (:func:`check_spectrum`).
"""

from __future__ import annotations

import math

import numpy as np

COMPLEIB = (
    "F. Leibfritz, 'COMPleib: COnstraint Matrix-optimization Problem library - a "
    "collection of test examples for nonlinear semidefinite programs, control system "
    "design and related problems', Tech. Report, Universitaet Trier, 2004"
)
CAREX = (
    "J. Abels and P. Benner, 'CAREX - A collection of benchmark examples for "
    "continuous-time algebraic Riccati equations (Version 2.0)', SLICOT Working Note "
    "1999-14, 1999, Example 4.3"
)
GEROMEL = (
    "J. C. Geromel and P. B. Gapski, 'Synthesis of positive real H2 controllers', "
    "IEEE Transactions on Automatic Control 42(7):988-992, 1997"
)


def coupled_spring(l: int) -> tuple[np.ndarray, np.ndarray]:
    """COMPleib CSE1 (l = 10) / CSE2 (l = 30): ``l`` masses ``mu = 4`` in a free-free
    chain of unit springs (``kappa = 1``), damping ``delta = mu``, a force on the first
    mass and minus a force on the last.  States: positions, then velocities."""
    mu = 4.0
    delta, kappa = mu, 1.0
    M, L = mu * np.eye(l), delta * np.eye(l)
    K = 2 * np.eye(l) - np.eye(l, k=1) - np.eye(l, k=-1)  # spdiags([-e 2e -e], -1:1)
    K[0, 0] = 1.0
    K[l - 1, l - 1] = 1.0
    K = kappa * K
    D = np.zeros((l, 2))
    D[0, 0] = 1.0
    D[l - 1, 1] = -1.0
    Minv = np.linalg.inv(M)
    A = np.block([[np.zeros((l, l)), np.eye(l)], [-Minv @ K, -Minv @ L]])
    B = np.vstack([np.zeros((l, 2)), Minv @ D])
    return A, B


def coupled_spring_spectrum(l: int) -> np.ndarray:
    """Roots of ``mu s^2 + delta s + kappa k_i``, ``k_i = 2 - 2 cos(i pi / l)``,
    ``i = 0 .. l-1`` (the eigenvalues of the free-free chain's stiffness matrix)."""
    mu, delta = 4.0, 4.0
    k = 2.0 - 2.0 * np.cos(np.arange(l) * np.pi / l)
    return np.concatenate([np.roots([mu, delta, ki]) for ki in k])


def euler_bernoulli_beam(s_max: int, xi: float = 1e-7, p_a: float = 1.7279) -> tuple[np.ndarray, np.ndarray]:
    """COMPleib EB3-EB6: ``s_max`` modes ``q_r'' + 2 xi w_r q_r' + w_r^2 q_r = sin(r p_a) u``
    of a pinned beam, ``w_r = r^2``, point force at ``p_a``.  States (q_r, q_r') per mode."""
    n = 2 * s_max
    A = np.zeros((n, n))
    B = np.zeros((n, 1))
    for s in range(1, s_max + 1):
        w = float(s**2)
        i = 2 * (s - 1)
        A[i : i + 2, i : i + 2] = [[0.0, 1.0], [-(w**2), -2 * xi * w]]
        B[i + 1, 0] = math.sin(s * p_a)
    return A, B


def euler_bernoulli_spectrum(s_max: int, xi: float = 1e-7) -> np.ndarray:
    """``-xi w_r +- i w_r sqrt(1 - xi^2)``, ``w_r = r^2``."""
    w = np.arange(1, s_max + 1, dtype=float) ** 2
    return np.concatenate([-xi * w + 1j * w * math.sqrt(1 - xi**2), -xi * w - 1j * w * math.sqrt(1 - xi**2)])


def ctms_cartpole() -> tuple[np.ndarray, np.ndarray]:
    """The cart-pole of the CTMS tutorial, linearized about the upright position
    (states x, x', phi, phi'; input the force F on the cart)."""
    M, m, b, inertia, g, l = 0.5, 0.2, 0.1, 0.006, 9.8, 0.3
    p = inertia * (M + m) + M * m * l**2
    A = np.array(
        [
            [0, 1, 0, 0],
            [0, -(inertia + m * l**2) * b / p, (m**2 * g * l**2) / p, 0],
            [0, 0, 0, 1],
            [0, -(m * l * b) / p, m * g * l * (M + m) / p, 0],
        ]
    )
    B = np.array([[0], [(inertia + m * l**2) / p], [0], [m * l / p]])
    return A, B


#: The open-loop poles the CTMS tutorial prints for ``eig(A)``.
CARTPOLE_POLES = np.array([0.0, -0.1428, 5.5651, -5.6041])
#: The gain ``lqr(A, B, Q, R)`` that the CTMS tutorial prints for Q = diag(5000, 0, 100, 0), R = 1.
CARTPOLE_LQR_GAIN = np.array([[-70.7107, -37.8345, 105.5298, 20.9238]])


def check_spectrum(A: np.ndarray, expected: np.ndarray, atol: float) -> None:
    """Assert that the eigenvalues of ``A`` are ``expected`` (as multisets, to ``atol``)."""
    from scipy.optimize import linear_sum_assignment

    got = np.linalg.eigvals(A)
    want = np.asarray(expected, dtype=complex)
    assert got.shape == want.shape, (got.shape, want.shape)
    dist = np.abs(got[:, None] - want[None, :])
    rows, cols = linear_sum_assignment(dist)
    err = float(np.max(dist[rows, cols]))
    assert err <= atol, f"open-loop spectrum off by {err:.3g}"


def large_systems() -> list[dict]:
    """The entries (same keys as ``make_problem_data.SYSTEMS``) with their spectra checked."""
    out = []
    for name, l in (("cse1", 10), ("cse2", 30)):
        A, B = coupled_spring(l)
        check_spectrum(A, coupled_spring_spectrum(l), 1e-6)
        out.append(
            dict(
                name=name,
                title=f"Coupled spring experiment, {l} masses (n={2 * l}, 2 inputs)",
                source=(
                    f"{CAREX}; COMPleib {name.upper()} (Leibfritz 2004, code block '({name.upper()})', "
                    f"l={l}). " + COMPLEIB
                ),
                A=A,
                B=B,
                notes_extra=(
                    f"{l} masses mu=4 in a free-free chain of unit springs, damping 4; force on "
                    "the first mass and minus a force on the last; states: positions then "
                    "velocities; a rigid-body pole at exactly 0, so K = 0 is not stabilizing"
                ),
            )
        )
    for name, s_max in (("eb4", 10), ("eb5", 20)):
        A, B = euler_bernoulli_beam(s_max)
        check_spectrum(A, euler_bernoulli_spectrum(s_max), 1e-9)
        out.append(
            dict(
                name=name,
                title=f"Euler-Bernoulli beam, {s_max} modes, very low damping (n={2 * s_max}, 1 input)",
                source=f"{GEROMEL}; COMPleib {name.upper()} (Leibfritz 2004, s_max={s_max}, xi=1e-7). " + COMPLEIB,
                A=A,
                B=B,
                notes_extra=(
                    f"modal model, modes r=1..{s_max} with frequencies r^2 and damping ratio 1e-7; "
                    "point force at p_a=1.7279 (sin(r p_a) input gains; mode 20 is nearly "
                    "uncontrollable, |sin(20 p_a)| about 5e-4)"
                    if s_max == 20
                    else f"modal model, modes r=1..{s_max} with frequencies r^2 and damping ratio "
                    "1e-7; point force at p_a=1.7279 (input gains sin(r p_a))"
                ),
            )
        )
    A, B = ctms_cartpole()
    check_spectrum(A, CARTPOLE_POLES, 1e-4)
    out.append(
        dict(
            name="cartpole",
            title="Inverted pendulum on a cart (CTMS), linearized upright",
            source=(
                "B. Messner, D. Tilbury, R. Hill and J. D. Taylor, 'Control Tutorials for MATLAB "
                "and Simulink (CTMS)', University of Michigan, Carnegie Mellon University and "
                "University of Detroit Mercy: 'Inverted Pendulum: System Modeling' "
                "and 'Inverted Pendulum: State-Space Methods for Controller Design' "
                "(ctms.engin.umich.edu); M=0.5 kg, m=0.2 kg, b=0.1 N/m/s, I=0.006 kg m^2, "
                "g=9.8 m/s^2, l=0.3 m; LQR weights Q=diag(5000, 0, 100, 0), R=1 as in the tutorial"
            ),
            A=A,
            B=B,
            Q=np.diag([5000.0, 0.0, 100.0, 0.0]),
            R=np.eye(1),
            weights="Q=diag(5000, 0, 100, 0) (positive semi-definite; (A, Q^1/2) observable), R=1",
            notes_extra=(
                "states: cart position x, cart velocity, pendulum angle phi from upright, its "
                "rate; input: force F on the cart; open-loop poles 0, -0.1428, 5.5651, -5.6041; "
                "the tutorial's lqr gain is [-70.7107, -37.8345, 105.5298, 20.9238]"
            ),
        )
    )
    return out
