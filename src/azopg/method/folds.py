"""Folds of rows into an upper triangular factor ``T`` (the triangular factor of ``[T; rows]``), and the
triangular helpers of the fits (:mod:`~.equations`, :mod:`~.iv_equations`): every result is independent of the
BLAS thread count, so that a replay reproduces a run bit for bit on any machine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg as sla
from threadpoolctl import ThreadpoolController

from ..errors import OutOfTime

__all__ = ["BLOCK", "FOLD_FLOPS", "UNBLOCKED_COLUMNS", "factor_rows", "fold_blocked", "fold_chunks", "fold_rows",
           "inspect_blas", "numerical_rank_full", "triangular_inverse"]

#: Floating-point operations of one chunk of rows folded into a factor (about 0.05 s on one core):
#: between chunks a fit may end when the time budget is spent (``stop``).
FOLD_FLOPS = 2e8
#: Factors of at most this many columns are folded by LAPACK's unblocked Householder QR (one panel);
#: larger ones by panels of ``BLOCK`` columns (:func:`fold_blocked`), whose chunks have at least ``BLOCK``
#: rows: at matrix-product speed, 6 times the unblocked fold already at ``p_L = 440`` (msd10's master CPU
#: per rollout 42 -> 24 ms, cse1's 22 -> 12 ms; the same rollouts and updates).
UNBLOCKED_COLUMNS, BLOCK = 64, 64


def triangular_inverse(U: np.ndarray, stop: Callable[[], bool] | None) -> np.ndarray:
    """The inverse of the upper triangular ``U``, by blocks of columns of about :data:`FOLD_FLOPS`;
    ``stop`` is asked before each (``OutOfTime``)."""
    k = U.shape[0]
    inv = np.zeros((k, k))
    block = max(1, int(FOLD_FLOPS // k**2))
    for j in range(0, k, block):
        if stop is not None and stop():
            raise OutOfTime("the time budget ran out during a fit")
        top = min(j + block, k)  # columns j..top of the inverse have rows 0..top only
        inv[:top, j:top] = sla.solve_triangular(U[:top, :top], np.eye(top)[:, j:top])
    return inv


def numerical_rank_full(U: np.ndarray) -> bool:
    """Whether the upper triangular ``U`` (columns scaled to unit norm) has full numerical rank: its
    estimated reciprocal condition number above ``size * eps``."""
    if not np.abs(np.diag(U)).min() > 0:
        return False
    rcond, info = sla.lapack.dtrcon(U, norm="1", uplo="U")
    return bool(info == 0 and rcond > U.shape[0] * np.finfo(float).eps)


def fold_chunks(T: np.ndarray, rows: np.ndarray, stop: Callable[[], bool] | None,
                empty: bool = False, trapezoid: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fold_rows` in chunks of at most :data:`FOLD_FLOPS` (at least :data:`BLOCK` rows where the
    fold is blocked; a size that depends on the factor's alone, so a replay folds alike); before each
    chunk after the first, ``stop()`` may end the work: returns the factor so far and the rows left.
    ``empty``: ``T`` is zero (nothing folded yet), and a first chunk of at most as many rows as columns is
    factored alone (:func:`factor_rows`; with more rows the fold is as fast). ``trapezoid``: as for
    :func:`fold_rows`, if the rows make one chunk."""
    chunk = max(BLOCK if T.shape[1] > UNBLOCKED_COLUMNS else 1, int(FOLD_FLOPS // T.shape[1] ** 2))
    trapezoid = trapezoid if rows.shape[0] <= chunk else 0
    for i in range(0, rows.shape[0], chunk):
        if i and stop is not None and stop():
            return T, rows[i:]
        first = empty and not i and min(chunk, rows.shape[0]) <= T.shape[1]  # fewer rows than columns
        T = factor_rows(rows[:chunk]) if first else fold_rows(T, rows[i:i + chunk], trapezoid)
    return T, rows[:0]


def factor_rows(rows: np.ndarray) -> np.ndarray:
    """The square triangular factor of ``rows`` alone (:func:`fold_rows` into a zero factor): LAPACK's
    blocked ``dgeqrf`` on one BLAS thread (a result independent of the thread count), whose reflectors
    shorten as the columns are reduced -- about half the flops of a fold into zeros when there are fewer
    rows than columns (msd10's first fit: 410 rows of 621 columns). Each row's sign as the fold gives it
    (a non-positive diagonal: the condition estimate, ``dtrcon``, depends on the signs); equal to the
    fold to rounding."""
    k, p = rows.shape
    T = np.zeros((p, p))
    if k:
        with _one_blas_thread():
            a, _, _, info = sla.lapack.dgeqrf(rows)
        if info != 0:  # pragma: no cover - LAPACK argument errors only
            raise np.linalg.LinAlgError(f"dgeqrf failed (info {info})")
        T[:min(k, p)] = np.triu(a[:p])
        T *= np.where(np.diag(T) > 0.0, -1.0, 1.0)[:, None]
    return T


def fold_rows(T: np.ndarray, rows: np.ndarray, trapezoid: int = 0) -> np.ndarray:
    """The triangular factor of ``[T; rows]`` (``T`` upper triangular): LAPACK ``dtpqrt`` with one
    block (its unblocked Householder path), so the result does not depend on the BLAS thread count
    -- a replay reproduces a run bit for bit whatever the machine's thread setting. A factor of more
    than :data:`UNBLOCKED_COLUMNS` columns is folded by :func:`fold_blocked` instead. ``trapezoid``: the
    last so many rows are upper trapezoidal (the ``i``-th of them zero before column ``i``): their zeros
    are skipped (``dtpqrt``'s pentagonal form), the same reflectors in the same order."""
    if T.shape[1] > UNBLOCKED_COLUMNS:
        return fold_blocked(T, rows, trapezoid)
    a, _, _, info = sla.lapack.dtpqrt(trapezoid, T.shape[0], T, rows)
    if info != 0:  # pragma: no cover - LAPACK argument errors only
        raise np.linalg.LinAlgError(f"dtpqrt failed (info {info})")
    return np.triu(a)


def fold_blocked(T: np.ndarray, rows: np.ndarray, trapezoid: int = 0) -> np.ndarray:
    """:func:`fold_rows` by panels of :data:`BLOCK` columns: each panel's reflectors by LAPACK's
    unblocked ``dtpqrt``, applied to the columns right of it as one block reflector
    ``I - [I; V] F [I; V]'`` (two matrix products: ``O(rows p^2)`` flops like the unblocked fold, at
    matrix-product speed -- 6-7 times faster at ``p = 2000``). ``F`` is formed here from ``V'V`` and the
    reflectors' scalars (LAPACK's own ``F`` depends on the BLAS thread count), and the products run on
    one BLAS thread (OpenBLAS's products are not bit-identical across thread counts: a run at
    ``OMP_NUM_THREADS=1`` replayed at 2 differed by 3e-11 on msd10), so the result does not depend on the
    thread count. Equal to the unblocked fold to rounding. ``trapezoid`` as for :func:`fold_rows`: each
    panel's reflectors have the rows up to the trapezoid's row at its last column only."""
    with _one_blas_thread():
        return _fold_panels(T, rows, trapezoid)


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's BLAS thread pools (inspected once)."""
    return ThreadpoolController()


def inspect_blas(columns: int) -> None:
    """Inspect the process's BLAS thread pools now if a factor of ``columns`` columns will use the blocked fold
    (about 30 ms, once a process): when the equations are made, not at the run's first fit, while every worker
    waits for it."""
    if columns > UNBLOCKED_COLUMNS:
        _blas()


def _one_blas_thread() -> Any:
    """A context in which BLAS runs on one thread (:mod:`threadpoolctl`)."""
    return _blas().limit(limits=1, user_api="blas")


def _fold_panels(T: np.ndarray, rows: np.ndarray, trapezoid: int = 0) -> np.ndarray:
    """The body of :func:`fold_blocked`."""
    T, rows = T.copy(), np.array(rows, dtype=float)
    p = T.shape[1]
    dense = rows.shape[0] - trapezoid  # the rows before the trapezoid
    for j in range(0, p, BLOCK):
        e = min(j + BLOCK, p)
        top = dense + min(e, trapezoid)  # the trapezoid's rows from e on are zero in these columns
        a, V, F, info = sla.lapack.dtpqrt(max(0, min(e, trapezoid) - j), e - j, T[j:e, j:e], rows[:top, j:e])
        if info != 0:  # pragma: no cover - LAPACK argument errors only
            raise np.linalg.LinAlgError(f"dtpqrt failed (info {info})")
        T[j:e, j:e] = np.triu(a)
        if e < p:
            F = _reflector_factor(V, np.diag(F).copy())
            W = F.T @ (T[j:e, e:] + V.T @ rows[:top, e:])
            T[j:e, e:] -= W
            rows[:top, e:] -= V @ W
    return T


def _reflector_factor(V: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """The upper triangular ``F`` of the block reflector ``H_1 ... H_k = I - Y F Y'``, ``Y = [I; V]``,
    ``H_i = I - tau_i y_i y_i'``: the inverse of ``diag(1 / tau) + striu(Y'Y)`` (the "UT transform": one
    triangular inversion, not ``k`` products) when every ``tau_i > 0``; else (a zero column, ``H_i = I``)
    LAPACK ``dlarft``'s recurrence, forward, by columns. Equal to rounding."""
    G = V.T @ V  # y_i'y_j for i != j: the identity block adds nothing
    k = tau.size
    if np.all(tau > 0.0):
        M = np.triu(G, 1)
        M[np.diag_indices(k)] = 1.0 / tau
        F, info = sla.lapack.dtrtri(M, lower=0)
        if info == 0:
            return np.asarray(F)
    F = np.zeros((k, k))
    for i in range(k):
        F[i, i] = tau[i]
        if i:
            F[:i, i] = -tau[i] * (F[:i, :i] @ G[:i, i])
    return F
