"""Built-in problems: published benchmark systems and generators.

Published systems ship as JSON files in ``azopg/data/problems`` (matrices from
COMPleib and the original papers, cited in each file's ``source``; ``Q = I``,
``R = I``, ``x0_cov = I``; an open-loop unstable system carries a Bass stabilizing
``K0``); the collection ``carex`` (:data:`COLLECTIONS`) lives in its own folder, with
its own weights. Generators build families: ``chain`` (mass-spring chain) and ``random``.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProblemError, ProblemFileError
from . import carex
from .problem import LQRProblem
from .validation import oracle_bytes, require_memory

__all__ = ["COLLECTIONS", "DEFAULT_PROBLEM", "problem_names", "get_problem", "load_problem", "mass_spring_chain",
           "random_system"]

#: Name of the problem ``azopg train`` runs when none is given.
DEFAULT_PROBLEM = "chain3"


def mass_spring_chain(masses: int = 3, damping: float = 0.1) -> LQRProblem:
    """A chain of ``masses`` unit masses joined by unit springs, fixed at both ends,
    with a force input on every mass (n = 2s, m = s) and damping ``damping`` times the
    stiffness matrix, so the open loop is Hurwitz and ``K0 = 0``.

    The undamped chain is the example of Mohammadi et al. (IEEE TAC 2022).

    Parameters
    ----------
    masses : int
        Number of masses ``s`` (>= 1).
    damping : float
        Damping as a multiple of the stiffness matrix (> 0); the default 0.1 gives the
        built-in ``chainS`` problems.

    Returns
    -------
    LQRProblem
        Named ``chainS`` (or ``chainS-cD`` for another damping), ``Q = I``, ``R = I``.

    Raises
    ------
    ProblemError
        If ``masses < 1`` or ``damping <= 0``.

    Examples
    --------
    >>> import azopg
    >>> p = azopg.mass_spring_chain(2)
    >>> p.name, p.n, p.m
    ('chain2', 4, 2)
    >>> p.K0.tolist()   # the damped open loop is Hurwitz, so K0 = 0
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    >>> bool(p.optimal_cost < p.cost(p.K0))
    True
    """
    s = int(masses)
    if s < 1:
        raise ProblemError(f"masses must be >= 1, got {masses}")
    if not damping > 0:
        raise ProblemError(f"damping must be > 0, got {damping}")
    require_memory(oracle_bytes(2 * s, s), f"a chain of {s} masses (n = {2 * s} states)")
    T = 2 * np.eye(s) - np.eye(s, k=1) - np.eye(s, k=-1)
    A = np.block([[np.zeros((s, s)), np.eye(s)], [-T, -damping * T]])
    B = np.vstack([np.zeros((s, s)), np.eye(s)])
    return LQRProblem(
        A, B, name=f"chain{s}" if damping == 0.1 else f"chain{s}-c{damping:g}",
        title=f"Mass-spring chain, {s} masses, damping {damping:g}",
        source="Mass-spring chain as in H. Mohammadi, A. Zare, M. Soltanolkotabi, M. R. Jovanovic, "
        "IEEE Trans. Automatic Control 67(5), 2022 (with light damping added)",
    )


def random_system(n: int, m: int, seed: int = 0, stable: bool = True) -> LQRProblem:
    """A random system: Gaussian ``A`` shifted to spectral abscissa -0.5 (``stable``) or
    +0.5 (unstable, with a Bass stabilizing ``K0``), Gaussian ``B``, ``Q = I``, ``R = I``.

    Parameters
    ----------
    n, m : int
        Numbers of states and inputs (>= 1).
    seed : int
        The draws come from ``numpy.random.default_rng([seed, n, m])``: the same arguments
        give the same system on every machine.
    stable : bool
        Open-loop stable (``K0 = 0``) or unstable (``K0`` from Bass's method).

    Returns
    -------
    LQRProblem
        Named ``random-stable-nN-mM-sSEED`` or ``random-unstable-nN-mM-sSEED``, the names
        :func:`get_problem` accepts.

    Examples
    --------
    >>> import numpy as np, azopg
    >>> p = azopg.random_system(5, 2, seed=1, stable=False)
    >>> p.name
    'random-unstable-n5-m2-s1'
    >>> bool(p.is_stabilizing(p.K0)), bool(p.is_stabilizing(np.zeros((2, 5))))
    (True, False)
    """
    import scipy.linalg as sla

    if n < 1 or m < 1:
        raise ProblemError(f"n and m must be >= 1, got n={n}, m={m}")
    require_memory(oracle_bytes(n, m), f"a random system with n = {n} states")
    rng = np.random.default_rng([seed, n, m])
    A = rng.standard_normal((n, n)) / np.sqrt(n)
    A -= (np.max(np.linalg.eigvals(A).real) + (0.5 if stable else -0.5)) * np.eye(n)
    B = rng.standard_normal((n, m)) / np.sqrt(n)
    K0 = None
    if not stable:  # Bass: (A + beta I) X + X (A + beta I)' = 2 B B', K0 = B' X^-1
        beta = 1.5
        X = sla.solve_continuous_lyapunov(A + beta * np.eye(n), 2 * B @ B.T)
        K0 = B.T @ np.linalg.inv(X)
    kind = "stable" if stable else "unstable"
    return LQRProblem(A, B, K0=K0, name=f"random-{kind}-n{n}-m{m}-s{seed}",
                      title=f"Random {kind} system n={n}, m={m}, seed {seed}", source="generated")


#: Collections shipped beside the core library, each in its own folder of ``azopg/data/problems``:
#: ``carex``, the continuous-time examples of CAREX (Abels & Benner, SLICOT Working Note 1999-14).
COLLECTIONS = ("carex",)


@cache
def _published(collection: str = "") -> dict[str, dict[str, Any]]:
    out = {}
    folder = resources.files("azopg.data.problems")
    for entry in (folder.joinpath(collection) if collection else folder).iterdir():
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text())
            out[data["name"]] = data
    return dict(sorted(out.items(), key=lambda kv: _natural(kv[0])))


def _natural(name: str) -> tuple[Any, ...]:
    """Sort key putting ``carex1.2`` before ``carex1.10`` and ``-n8`` before ``-n16``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def problem_names(collection: str | None = None) -> list[str]:
    """Names of the built-in problems: the core library (the default chain first), or
    those of a collection in :data:`COLLECTIONS` (e.g. ``"carex"``).

    Parameters
    ----------
    collection : str, optional
        A collection of :data:`COLLECTIONS`; ``None`` (default) lists the core library:
        ``chain3``, then the published systems in alphabetical order. The generated
        families ``chainS`` and ``random-...`` are not listed (see :func:`get_problem`).

    Returns
    -------
    list of str

    Raises
    ------
    ProblemError
        If there is no such collection.

    Examples
    --------
    >>> import azopg
    >>> names = azopg.problem_names()
    >>> names[0]
    'chain3'
    >>> "he1" in names and "cartpole" in names and "dean3" in names
    True
    >>> "carex1.1" in azopg.problem_names("carex")
    True
    """
    if collection is None:
        return [DEFAULT_PROBLEM, *_published()]
    if collection not in COLLECTIONS:
        raise ProblemError(f"unknown collection {collection!r}; known: {', '.join(COLLECTIONS)}")
    return list(_published(collection))


def get_problem(name: str) -> LQRProblem:
    """A built-in problem by name: a published system, ``chainS`` (S masses),
    ``random-stable-nN-mM-sSEED`` / ``random-unstable-...``, or a scalable CAREX example at any
    size (``carex4.2-n200``, ``carex4.3-l100``; :func:`azopg.model.carex.carex_scalable`).

    Parameters
    ----------
    name : str
        One of :func:`problem_names`, or a generated family's name.

    Returns
    -------
    LQRProblem

    Raises
    ------
    ProblemError
        If there is no such problem.

    Examples
    --------
    >>> import azopg
    >>> p = azopg.get_problem("he1")
    >>> p.n, p.m
    (4, 2)
    >>> bool(p.is_stabilizing(p.K0))
    True
    >>> azopg.get_problem("chain5").n, azopg.get_problem("random-stable-n3-m1-s0").m
    (10, 1)
    """
    for pub in (_published(), *(_published(c) for c in COLLECTIONS)):
        if name in pub:
            return LQRProblem.from_dict(pub[name])
    if name.startswith("chain") and name[5:].isdigit():
        return mass_spring_chain(int(name[5:]))
    if carex.is_scalable(name):
        return carex.carex_scalable(name)
    parts = name.split("-")
    if len(parts) == 5 and parts[0] == "random" and parts[1] in ("stable", "unstable"):
        try:
            n, m, seed = int(parts[2].lstrip("n")), int(parts[3].lstrip("m")), int(parts[4].lstrip("s"))
        except ValueError:
            pass
        else:
            return random_system(n, m, seed, stable=parts[1] == "stable")
    raise ProblemError(
        f"unknown problem {name!r}; built-in: {', '.join(problem_names())}, chainS, "
        "random-stable-nN-mM-sSEED, carex4.2-nN, carex4.3-lL (any size)"
    )


def load_problem(spec: str) -> LQRProblem:
    """A problem from a built-in name or a JSON file path.

    Parameters
    ----------
    spec : str
        A path to a JSON problem file (``A``, ``B``, ``Q``, ``R``, optionally ``K0``,
        ``x0_cov``, ``name``, ...; see the user guide's "Problem files"), recognized by its
        ``.json`` suffix, a ``/`` or an existing file; otherwise a name for :func:`get_problem`.

    Returns
    -------
    LQRProblem
        Named after the file's stem unless the file gives a ``name``.

    Raises
    ------
    ProblemFileError
        If the file is missing, unreadable or not valid JSON.
    ProblemError
        If its content is not a valid problem.

    Examples
    --------
    >>> import json, os, tempfile, azopg
    >>> path = os.path.join(tempfile.mkdtemp(), "double_integrator.json")
    >>> with open(path, "w") as f:
    ...     json.dump({"A": [[0, 1], [0, 0]], "B": [[0], [1]], "Q": [[1, 0], [0, 1]], "R": 1,
    ...                "K0": [[1, 1]]}, f)
    >>> p = azopg.load_problem(path)
    >>> p.name, p.n, p.m
    ('double_integrator', 2, 1)
    >>> p.optimal_gain.round(6)   # the Riccati gain [[1, sqrt(3)]]
    array([[1.      , 1.732051]])
    >>> azopg.load_problem("rea1").name
    'rea1'
    """
    path = Path(spec)
    if spec.endswith(".json") or path.exists() or "/" in spec:
        if path.is_dir():
            raise ProblemFileError(f"problem file {spec!r} is a directory, not a JSON problem file")
        if not path.is_file():
            raise ProblemFileError(f"problem file {spec!r} not found")
        try:
            text = path.read_text()
        except OSError as exc:
            raise ProblemFileError(f"cannot read problem file {spec!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ProblemFileError(f"problem file {spec!r} is not UTF-8 text") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProblemFileError(f"problem file {spec!r} is not valid JSON: {exc.msg} "
                                   f"(line {exc.lineno}, column {exc.colno})") from None
        try:
            return LQRProblem.from_dict(data, name=path.stem)
        except ProblemError as exc:
            raise type(exc)(f"problem file {spec!r}: {exc}") from None
    return get_problem(spec)
