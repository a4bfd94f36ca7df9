"""A gymnasium environment named on the command line: ``azopg train --env ID|MODULE:FACTORY``.

An :class:`EnvSpec` is what ``--env`` and its options say -- a registered gymnasium id
(``azopg/...`` ids are registered on demand, ``module:Env-v0`` imports ``module`` first) or
``module:factory`` (a callable returning the environment), keyword arguments, ``dt``, the
episode length, the evaluation states, the input weight ``R``, the stepping mode. It is
stored in the run's checkpoint (:meth:`EnvSpec.to_dict`), so :func:`azopg.resume` rebuilds
the same plant. The plant is a :class:`~azopg.plants.gym.GymPlant`: observation = state,
action = input, **cost = minus the summed reward** (so a reward of ``-(x'Qx + u'Ru) dt`` per
step gives the continuous-time LQR cost, and ``-(x'Qx + u'Ru)`` without ``dt`` the
discrete-time one).
"""

from __future__ import annotations

import functools
import importlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AzopgError, SettingsError
from ..model.validation import as_matrix
from ..plants.gym import VECTOR_MODES, GymPlant

__all__ = ["EnvSpec", "make_env", "read_matrix"]


def read_matrix(text: str, option: str) -> Any:
    """The JSON value of ``text``, or of the file it names (``--K0 FILE|JSON``).

    Raises
    ------
    SettingsError
        If neither parses.
    """
    path = Path(text)
    try:
        source = path.read_text() if not text.lstrip().startswith(("[", "{")) and path.is_file() else text
        value = json.loads(source)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SettingsError(f"{option} {text!r}: neither a JSON value nor a readable JSON file ({exc})") from None
    if isinstance(value, dict) and option == "--K0" and "K" in value:  # a result.json
        value = value["K"]
    return value


def _resolve(name: str) -> tuple[str, Any]:
    """``("factory", callable)`` for ``module:factory``, else ``("id", id)``."""
    if ":" in name:
        module, attr = name.split(":", 1)
        try:
            mod = importlib.import_module(module)
        except Exception as exc:
            raise SettingsError(f"--env {name!r}: cannot import {module!r} ({type(exc).__name__}: {exc})") from None
        factory = getattr(mod, attr, None)
        if callable(factory) and not attr.endswith(("-v", "-v0")) and "-v" not in attr:
            return "factory", factory
    return "id", name


def make_env(name: str, kwargs: dict[str, Any], episode_steps: int | None) -> Any:
    """Build the environment ``name`` (a picklable factory: ``functools.partial(make_env, ...)``).

    Raises
    ------
    SettingsError
        If the id is not registered, or the factory or ``gymnasium.make`` raises.
    """
    import gymnasium as gym

    kind, target = _resolve(name)
    try:
        if kind == "factory":
            env = target(**kwargs)
            if episode_steps is not None:
                env = gym.wrappers.TimeLimit(env, max_episode_steps=episode_steps)
            return env
        if name.startswith("azopg/"):
            from ..plants.envs import register_envs

            register_envs()
        extra: dict[str, Any] = {} if episode_steps is None else {"max_episode_steps": episode_steps}
        return gym.make(name, **kwargs, **extra)
    except gym.error.Error as exc:
        raise SettingsError(f"--env {name!r}: {exc}") from None
    except AzopgError as exc:
        raise SettingsError(f"--env {name!r}: {exc}") from None
    except Exception as exc:
        raise SettingsError(f"--env {name!r}: building the environment raised {type(exc).__name__}: {exc}") from None


def _vector_factory(name: str, kwargs: dict[str, Any], episode_steps: int | None, num_envs: int) -> Any:
    import gymnasium as gym

    extra: dict[str, Any] = {} if episode_steps is None else {"max_episode_steps": episode_steps}
    return gym.make_vec(name, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs, **extra)


@dataclass
class EnvSpec:
    """An environment as ``azopg train --env`` names it (see the module docstring)."""

    env: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    dt: float | None = None
    episode_steps: int | None = None
    eval_states: int | list[list[float]] | None = None
    R: list[list[float]] | None = None
    vector: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.env, str) or not self.env:
            raise SettingsError(f"--env must name an environment, got {self.env!r}")
        if not isinstance(self.kwargs, dict):
            raise SettingsError(f"--env-kwargs must be a JSON object, got {self.kwargs!r}")
        if self.dt is not None and not (isinstance(self.dt, (int, float)) and math.isfinite(self.dt) and self.dt > 0):
            raise SettingsError(f"--dt {self.dt!r}: must be a finite number > 0")
        if self.episode_steps is not None and not (isinstance(self.episode_steps, int) and self.episode_steps >= 1):
            raise SettingsError(f"--episode-steps {self.episode_steps!r}: must be an integer >= 1")
        if self.vector not in VECTOR_MODES:
            raise SettingsError(f"--vector {self.vector!r}: expected one of {', '.join(VECTOR_MODES)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for the checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> EnvSpec:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        SettingsError
            If ``data`` is not such a dict.
        """
        if not isinstance(data, dict) or set(data) - set(cls.__dataclass_fields__) or "env" not in data:
            raise SettingsError(f"env: expected an environment spec, got {data!r}")
        return cls(**data)

    def factory(self) -> functools.partial[Any]:
        """A picklable ``env_factory``."""
        return functools.partial(make_env, self.env, dict(self.kwargs), self.episode_steps)

    def plant(self) -> GymPlant:
        """The plant: sizes from the environment's spaces; refused if they are not flat boxes.

        Raises
        ------
        SettingsError
            If the environment cannot be built or its spaces are not 1-D.
        """
        factory = self.factory()
        env = factory()
        try:
            sizes = []
            for what in ("observation", "action"):
                shape = getattr(getattr(env, f"{what}_space", None), "shape", None)
                if shape is None or len(shape) != 1:
                    raise SettingsError(f"--env {self.env!r}: the {what} space must be a 1-D box (the "
                                        f"{'state' if what == 'observation' else 'input'}), got shape {shape}")
                sizes.append(int(shape[0]))
            n, m = sizes
            vector_factory = None
            spec = getattr(env, "spec", None)
            if self.vector in ("auto", "native") and getattr(spec, "vector_entry_point", None) is not None:
                vector_factory = functools.partial(_vector_factory, self.env, dict(self.kwargs), self.episode_steps)
            elif self.vector == "native":
                raise SettingsError(f"--vector native: {self.env!r} has no batched form (a gymnasium id registered "
                                    "with a vector_entry_point); use sync")
            eval_states = self.eval_states
            R = None if self.R is None else _matrix(self.R, "--R", m, m)
            plant = GymPlant(factory, n, m, dt=self.dt, eval_states=eval_states, R=R, max_steps=self.episode_steps,
                             vector=self.vector, vector_factory=vector_factory)
        finally:
            env.close()
        _ = plant.env  # probe dt and the x0 option now: bad input fails before the run
        return plant

    def gain(self, K0: Any, plant: GymPlant) -> np.ndarray:
        """``K0`` checked: finite, of shape (m, n) for the environment's spaces.

        Raises
        ------
        SettingsError
            Otherwise.
        """
        K = _matrix([K0] if plant.m == 1 and np.ndim(K0) == 1 else K0, "--K0", None, None)
        if K.shape != (plant.m, plant.n):
            raise SettingsError(f"--K0 has shape {K.shape}, but the environment's action space ({plant.m},) and "
                                f"observation space ({plant.n},) need a gain of shape ({plant.m}, {plant.n})")
        return K


def _matrix(value: Any, option: str, rows: int | None, cols: int | None) -> np.ndarray:
    try:
        return as_matrix(value, option, rows, cols)
    except AzopgError as exc:
        raise SettingsError(str(exc)) from None


def prepare_env(env: str, env_kwargs: str | None, K0: str | None, R: str | None, eval_states: str | None,
                episode_steps: int | None, dt: float | None, vector: str,
                judge: str | None) -> tuple[EnvSpec, Any, np.ndarray]:
    """The options of ``azopg train --env``, checked: the spec, the judge problem (or None), ``K0``.

    The environment is built once here, so that every bad input fails before the run.

    Raises
    ------
    SettingsError
        Naming the option at fault.
    """
    from ..model.library import load_problem

    kwargs = {} if env_kwargs is None else read_matrix(env_kwargs, "--env-kwargs")
    if K0 is None:
        raise SettingsError("--K0 is required with --env (an initial gain that stabilizes the environment)")
    evals: Any = None
    if eval_states is not None:
        evals = int(eval_states) if eval_states.strip().isdigit() else read_matrix(eval_states, "--eval-states")
    spec = EnvSpec(env, kwargs, dt, episode_steps, evals, None if R is None else read_matrix(R, "--R"), vector)
    plant = spec.plant()
    if spec.R is not None:
        spec.R = plant.R.tolist()
    gain = spec.gain(read_matrix(K0, "--K0"), plant)
    problem = None
    if judge is not None:
        try:
            problem = load_problem(judge)
        except AzopgError as exc:
            raise SettingsError(f"--judge {judge!r}: {exc}") from None
        if (problem.n, problem.m) != (plant.n, plant.m):
            raise SettingsError(f"--judge {judge!r}: the problem has n = {problem.n}, m = {problem.m}, the "
                                f"environment n = {plant.n}, m = {plant.m}")
    plant.close()
    return spec, problem, gain
