"""azopg: model-free LQR by asynchronous zeroth-order policy gradient (AZOPG)."""

from .adapters import CallablePlant, GymPlant  # noqa: F401 -- black-box plants (azopg.adapters)
from .checkpoint import RunFinished, resume
from .errors import AzopgError, NotStabilizingError, ProblemError, ProblemFileError, SettingsError
from .estimators import Estimate, estimate_gradient, sphere_directions
from .learner import Result, train
from .library import get_problem, load_problem, mass_spring_chain, problem_names, random_system
from .plant import LinearPlant, Plant, RolloutResult
from .problem import LQRProblem
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AzopgError", "Estimate", "LQRProblem", "LinearPlant", "NotStabilizingError", "Plant",
    "ProblemError", "ProblemFileError", "Result", "RolloutResult", "RunFinished", "Settings", "SettingsError",
    "estimate_gradient", "get_problem", "load_problem", "mass_spring_chain", "problem_names",
    "random_system", "resume", "sphere_directions", "train",
]
