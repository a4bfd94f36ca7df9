"""Typed exceptions raised by azopg.

Every error the library raises on bad input derives from :class:`AzopgError`, so a
caller (and the CLI) can catch one type and print one clear line.
"""

from __future__ import annotations

__all__ = [
    "AzopgError",
    "ProblemError",
    "NotStabilizingError",
    "SettingsError",
    "ProblemFileError",
    "PlantProtocolError",
    "OutOfTime",
]


class AzopgError(Exception):
    """Base class of every error azopg raises on purpose."""


class ProblemError(AzopgError, ValueError):
    """An LQR problem is malformed (shapes, finiteness, definiteness)."""


class NotStabilizingError(ProblemError):
    """A gain that must stabilize ``A - B K`` does not."""


class ProblemFileError(ProblemError):
    """A problem file is missing, unreadable or not valid JSON."""


class SettingsError(AzopgError, ValueError):
    """A learner or CLI setting has an invalid value."""


class OutOfTime(Exception):
    """The run's time budget (``max_time``) ran out while it waited for a task outside its loop
    (calibration, a step search); the run ends with status ``max_time``. Not an error."""


class PlantProtocolError(AzopgError, TypeError):
    """A plant answered outside the :class:`~azopg.plants.base.Plant` protocol (wrong type,
    shape or values of its rollout costs or initial states)."""
