"""azopg: model-free LQR by asynchronous zeroth-order policy gradient (AZOPG)."""

from .errors import AzopgError, NotStabilizingError, ProblemError, ProblemFileError, SettingsError
from .method.estimators import Estimate, estimate_gradient, sphere_directions
from .model.library import get_problem, load_problem, mass_spring_chain, problem_names, random_system
from .model.problem import LQRProblem
from .plants.base import Plant, RolloutResult
from .plants.callable import CallablePlant  # noqa: F401 -- black-box plants (azopg.plants.callable, .gym)
from .plants.gym import GymPlant  # noqa: F401
from .plants.linear import LinearPlant
from .run.checkpoint import RunFinished
from .run.records import Result
from .run.train import resume, train
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AzopgError", "Estimate", "LQRProblem", "LinearPlant", "NotStabilizingError", "Plant",
    "ProblemError", "ProblemFileError", "Result", "RolloutResult", "RunFinished", "Settings", "SettingsError",
    "estimate_gradient", "get_problem", "load_problem", "mass_spring_chain", "problem_names",
    "random_system", "resume", "sphere_directions", "train",
]
