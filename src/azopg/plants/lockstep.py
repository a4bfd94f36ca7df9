"""Rollouts of a gymnasium environment in lockstep: one ``step`` call advances a whole chunk.

:func:`lockstep` runs a batch of rollouts ``u = -K_i obs`` through a :class:`Stepper`: a
single environment (:class:`SingleStepper`, one rollout at a time -- the reference loop),
a ``gymnasium.vector`` environment of copies (``SyncVectorEnv``, ``AsyncVectorEnv``) or an
environment's own batched form (a ``VectorEnv`` that steps all its copies with array
operations, e.g. :mod:`azopg.plants.envs_vector`). Every chunk of ``num_envs`` rollouts is
reset with the rollouts' own seeds and stepped together; a rollout that ends is masked out
(its copy may go on stepping, or be auto-reset by the vector env: what it returns is
ignored). The arithmetic of the controller is elementwise (:func:`matvec`, :func:`sq_norms`),
so every rollout's numbers are the same whatever the chunk size: the lockstep and the loop
give identical costs for the same seeds.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .base import COST_LIMIT, GROWTH
from .deadline import check_deadline

__all__ = ["ListStepper", "SingleStepper", "Stepper", "VectorStepper", "lockstep", "matvec", "rowdots", "sq_norms"]


#: Up to this many products, the sums of :func:`matvec` and :func:`rowdots` are taken by one
#: ``np.add.accumulate`` (fewer calls); beyond, column by column (no large temporaries). The
#: two ways add in the same order, so the bits do not depend on the size.
_SMALL = 2048


def matvec(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``K_i @ x_i`` for ``K`` (b, m, n) (or (1, m, n): one matrix for all) and ``X`` (b, n),
    summed column by column, ``((k_1 x_1 + k_2 x_2) + k_3 x_3) + ...`` (the same bits for any
    ``b``, unlike a BLAS call whose blocking depends on the sizes)."""
    if X.shape[0] * K.shape[1] * X.shape[1] <= _SMALL:
        return np.add.accumulate(K * X[:, None, :], axis=2)[:, :, -1]
    acc = K[:, :, 0] * X[:, None, 0]
    for j in range(1, X.shape[1]):
        acc = acc + K[:, :, j] * X[:, None, j]
    return acc


def rowdots(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``x_i' y_i`` for ``X``, ``Y`` (b, n), summed column by column."""
    if X.size <= _SMALL:
        return np.add.accumulate(X * Y, axis=1)[:, -1]
    acc = X[:, 0] * Y[:, 0]
    for j in range(1, X.shape[1]):
        acc = acc + X[:, j] * Y[:, j]
    return acc


def sq_norms(X: np.ndarray) -> np.ndarray:
    """``x_i' x_i`` for ``X`` (b, n), summed column by column."""
    return rowdots(X, X)


class Stepper(Protocol):
    """``num_envs`` copies of an environment, reset and stepped together."""

    num_envs: int

    def reset(self, seeds: list[int], X: np.ndarray | None) -> np.ndarray:
        """Reset copy ``i`` with ``seeds[i]`` (and the reset option ``x0 = X[i]`` if ``X`` is given);
        the observations (num_envs, n)."""
        ...

    def step(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply the actions ``U`` (num_envs, m): observations, rewards, terminated, truncated and
        ``info["blown_up"]`` (num_envs,)."""
        ...

    def close(self) -> None: ...


class SingleStepper:
    """One environment: a chunk of one rollout."""

    num_envs = 1

    def __init__(self, env: Any) -> None:
        self.env = env

    def reset(self, seeds: list[int], X: np.ndarray | None) -> np.ndarray:
        options = None if X is None else {"x0": X[0].copy()}
        obs, _ = self.env.reset(seed=int(seeds[0]), options=options)
        return np.asarray(obs, dtype=float).reshape(1, -1)

    def step(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        obs, reward, terminated, truncated, info = self.env.step(U[0])
        blown = bool(terminated and info.get("blown_up", False))
        return (np.asarray(obs, dtype=float).reshape(1, -1), np.array([float(reward)]), np.array([bool(terminated)]),
                np.array([bool(truncated)]), np.array([blown]))

    def close(self) -> None:  # the plant owns the environment
        pass


class ListStepper:
    """Copies of an environment stepped one after the other in each lockstep step (what
    gymnasium's ``SyncVectorEnv`` does, with each copy reset from its own ``x0`` option)."""

    def __init__(self, envs: list[Any]) -> None:
        self.envs = envs
        self.num_envs = len(envs)

    def reset(self, seeds: list[int], X: np.ndarray | None) -> np.ndarray:
        obs = [env.reset(seed=int(s), options=None if X is None else {"x0": X[i].copy()})[0]
               for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True))]
        return np.array(obs, dtype=float).reshape(self.num_envs, -1)

    def step(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        E = self.num_envs
        obs, reward = [], np.empty(E)
        terminated, truncated, blown = np.zeros(E, dtype=bool), np.zeros(E, dtype=bool), np.zeros(E, dtype=bool)
        for i, env in enumerate(self.envs):
            o, r, term, trunc, info = env.step(U[i])
            obs.append(o)
            reward[i], terminated[i], truncated[i] = float(r), bool(term), bool(trunc)
            blown[i] = bool(term and info.get("blown_up", False))
        return np.array(obs, dtype=float).reshape(E, -1), reward, terminated, truncated, blown

    def close(self) -> None:
        for env in self.envs:
            env.close()


class VectorStepper:
    """A ``gymnasium.vector.VectorEnv``.

    Parameters
    ----------
    venv : gymnasium.vector.VectorEnv
    batched_x0 : bool
        The reset option ``x0`` takes all the copies' states at once, an array (num_envs, n)
        (an environment's own batched form); otherwise (``SyncVectorEnv``, ``AsyncVectorEnv``,
        whose options go to every copy alike) each copy is reset on its own with
        ``options["reset_mask"]``.
    """

    def __init__(self, venv: Any, batched_x0: bool) -> None:
        self.venv = venv
        self.num_envs = int(venv.num_envs)
        self.batched_x0 = batched_x0
        self._started = False

    def reset(self, seeds: list[int], X: np.ndarray | None) -> np.ndarray:
        seeds = [int(s) for s in seeds]
        if X is None or self.batched_x0:
            obs, _ = self.venv.reset(seed=seeds, options=None if X is None else {"x0": X.copy()})
            self._started = True
            return np.array(obs, dtype=float)
        if not self._started:  # a masked reset needs every copy reset once
            self.venv.reset(seed=seeds)
            self._started = True
        out = np.empty_like(X)
        for i in range(self.num_envs):
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[i] = True
            obs, _ = self.venv.reset(seed=seeds, options={"x0": X[i].copy(), "reset_mask": mask})
            out[i] = np.asarray(obs, dtype=float)[i]
        return out

    def step(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        obs, reward, terminated, truncated, info = self.venv.step(U)
        terminated = np.asarray(terminated, dtype=bool)
        flag = info.get("blown_up")
        blown = np.zeros(self.num_envs, dtype=bool) if flag is None else \
            np.asarray(flag, dtype=bool) & np.asarray(info.get("_blown_up", True), dtype=bool)
        return (np.array(obs, dtype=float), np.asarray(reward, dtype=float), terminated,
                np.asarray(truncated, dtype=bool), terminated & blown)

    def close(self) -> None:
        self.venv.close()


def lockstep(stepper: Stepper, K: np.ndarray, X0: np.ndarray, seeds: list[int], use_x0: bool, steps: int,
             moments: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, int, np.ndarray]:
    """Roll out ``u = -K_i obs`` from ``X0`` (b, n), ``steps`` steps at most, in chunks of ``num_envs``.

    Returns
    -------
    cost, blown_up : ndarray (b,)
        Minus the summed rewards; blown up by the rule of :class:`~azopg.plants.gym.GymPlant`.
    S : ndarray (b, n, n) or None
        ``sum_k obs_k obs_k'`` over the observations actions were computed from (``moments``).
    x_end : ndarray (b, n)
        The last observations.
    taken : int
        Environment steps of the rollouts (padding excluded).
    first_obs : ndarray (b, n)
        The observations of the resets.
    """
    E = stepper.num_envs
    b, n = X0.shape
    cost, bad = np.empty(b), np.zeros(b, dtype=bool)
    S = np.zeros((b, n, n)) if moments else None
    x_end, first = np.empty((b, n)), np.empty((b, n))
    taken = 0
    with np.errstate(all="ignore"):
        for start in range(0, b, E):
            idx = np.arange(start, min(start + E, b))
            k = idx.size
            rows = np.concatenate([idx, np.full(E - k, idx[0])])  # a partial chunk is padded
            Kc = np.ascontiguousarray(K[rows])
            obs = stepper.reset([seeds[i] for i in rows], X0[rows] if use_x0 else None)
            first[idx] = obs[:k]
            norm0 = sq_norms(X0[rows])
            limit = GROWTH**2 * np.where(norm0 > 0, norm0, 1.0)  # on the squared norm
            active = np.arange(E) < k
            total, blown = np.zeros(E), np.zeros(E, dtype=bool)
            Sc = np.zeros((E, n, n)) if moments else None
            last = obs.copy()
            for _ in range(steps):
                check_deadline()  # a long episode stops between steps once the run's time is spent
                if Sc is not None:
                    Sc[active] += obs[active, :, None] * obs[active, None, :]
                obs, reward, terminated, truncated, flagged = stepper.step(-matvec(Kc, obs))
                total[active] -= reward[active]
                taken += int(np.count_nonzero(active))
                last[active] = obs[active]
                grown = ~(sq_norms(obs) <= limit)  # diverged or not finite
                blown |= active & (grown | (~grown & flagged))
                active &= ~(grown | terminated | truncated | ~(total <= COST_LIMIT))
                if not active.any():
                    break
            cost[idx], bad[idx], x_end[idx] = total[:k], blown[:k], last[:k]
            if S is not None and Sc is not None:
                S[idx] = Sc[:k]
    return cost, bad, S, x_end, taken, first
