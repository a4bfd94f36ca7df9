"""Run directories: which directory holds a run, its lock, and what a checkpoint must be.

A directory *holds a run* when it has a ``result.json``, ``checkpoint.json`` or
``history.csv``. :func:`claim` never writes into such a directory unless asked to replace
it (``overwrite``, which removes the run files of :data:`RUN_FILES` and nothing else) or
to continue it (``resume``). A claimed directory is locked for the run's life by
``fcntl.flock`` on :data:`LOCK`: a second run into it is refused with the holder's pid,
and the lock of a killed run goes with its process.

:func:`validate_checkpoint` checks every field of a checkpoint the way a problem file is
checked, so that a damaged or edited checkpoint is one clear error, not a traceback or a
run resumed from a gain that does not stabilize.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.backends import BACKENDS
from ..errors import AzopgError, SettingsError
from ..method.state import FORMAT2_FIELDS, STATE_FIELDS
from ..model.problem import LQRProblem, as_matrix
from ..settings import Settings

__all__ = ["CHECKPOINT", "FINISHED", "FORMAT", "FORMATS", "LOCK", "RUN_FILES", "RunDir", "claim", "holds_run",
           "out_path", "prepare_out_dir", "validate_checkpoint"]

CHECKPOINT = "checkpoint.json"
#: Version of the checkpoint document (2: with the length and sha256 of the logs it counts; 3: with the
#: safeguards' stall counters, :data:`~azopg.method.state.STALL_FIELDS`, and the counters added since).
FORMAT = 3
#: The formats this azopg resumes (a format-2 run resumes with no rejected check counted).
FORMATS = (2, 3)
#: Statuses of a run that ended on its own (resuming it has nothing to do).
FINISHED = ("converged", "max_updates", "max_rollouts", "max_time", "blown_up")
#: Every file a run (and ``azopg compare``) writes: what ``overwrite`` removes.
RUN_FILES = ("result.json", CHECKPOINT, "history.csv", "arrivals.csv", "problem.json", "convergence.png",
             "responses.png", "compare.json")
#: The lock file of a run directory.
LOCK = ".azopg.lock"
_MARKERS = ("result.json", CHECKPOINT, "history.csv")


def out_path(path: str | os.PathLike[str], label: str = "out_dir") -> Path:
    """``path`` as a :class:`~pathlib.Path`, refusing an empty name (which would mean the
    current directory)."""
    if not str(os.fspath(path)).strip():
        raise SettingsError(f"{label} {str(os.fspath(path))!r}: empty directory name")
    return Path(path)


def prepare_out_dir(path: str | os.PathLike[str], *, files: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Create ``path`` if needed and check it is a writable directory.

    Parameters
    ----------
    files : sequence of str
        Names the caller will write: if one exists, the directory is refused unless ``overwrite``.

    Raises
    ------
    SettingsError
        If it cannot be created or written, or already holds one of ``files``.
    """
    out = out_path(path, "--out")
    found = [name for name in files if os.path.lexists(out / name)]
    if found and not overwrite:
        raise SettingsError(f"--out {str(path)!r} holds {', '.join(found)} of an earlier run; pass --overwrite "
                            "to replace it, or choose another directory")
    _make_dir(out, f"--out {str(path)!r}")
    return out


def _make_dir(out: Path, named: str) -> None:
    """Create ``out`` (and its parents) if needed; refuse it unless it is a writable directory
    (``named``: how messages name it)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"{named}: cannot create directory ({exc.strerror})") from None
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise SettingsError(f"{named}: not a writable directory")


def holds_run(path: str | os.PathLike[str]) -> list[str]:
    """The names of the run files (``result.json``, ``checkpoint.json``, ``history.csv``)
    present in ``path``: non-empty if it holds a run."""
    return [name for name in _MARKERS if os.path.lexists(Path(path) / name)]


def _resumable(path: Path) -> bool:
    try:
        status = json.loads((path / CHECKPOINT).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(status, str) and status not in FINISHED


class RunDir(os.PathLike):
    """A claimed run directory: its path and the lock held on it until :meth:`release`."""

    def __init__(self, path: Path, fd: int, created: bool) -> None:
        self.path, self._created = path, created
        self._fd: int | None = fd

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Release the lock; a directory created by :func:`claim` that received nothing is removed."""
        if self._fd is None:
            return
        try:
            if self._created and os.listdir(self.path) == [LOCK]:
                os.unlink(self.path / LOCK)  # still locked: a waiting claim sees the file is gone
                os.rmdir(self.path)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)  # explicitly: a forked child may share the descriptor
        os.close(self._fd)
        self._fd = None


def _lock(out: Path, name: str) -> int:
    path = out / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SettingsError(f"{name}: cannot create its lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise SettingsError(f"{name}: in use by another azopg run (pid {holder}); wait "
                                    "for it to end or choose another directory") from None
            raise SettingsError(f"{name}: cannot lock it ({exc.strerror})") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its owner removed the lock file while we waited: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def claim(path: str | os.PathLike[str], *, overwrite: bool = False, resume: bool = False,
          label: str = "out_dir") -> RunDir:
    """Lock ``path`` for a run, creating it if needed.

    Parameters
    ----------
    path : path
    overwrite : bool
        Replace a run the directory holds (its :data:`RUN_FILES` are removed).
    resume : bool
        The run continues the one the directory holds (which must exist).
    label : str
        Names the directory in messages (``"out_dir"``, shown as ``--out`` by the CLI).

    Raises
    ------
    SettingsError
        If the directory cannot be created or written, another run holds its lock, or it
        holds a run and neither ``overwrite`` nor ``resume`` is given.
    """
    out = out_path(path, label)
    created = not out.exists()
    if resume:
        if not out.is_dir():
            raise SettingsError(f"{str(out)!r}: {'not a directory' if out.exists() else 'no such directory'}")
    else:
        _make_dir(out, f"{label} {str(out)!r}")
    fd = _lock(out, repr(str(out)) if resume else f"{label} {str(out)!r}")
    run = RunDir(out, fd, created)
    try:
        found = [] if resume else holds_run(out)
        if found and not overwrite:
            how = (f"resume it with `azopg train --resume {out}`, or " if _resumable(out) else "")
            raise SettingsError(f"{label} {str(out)!r} holds a run ({', '.join(found)}); {how}pass --overwrite "
                                "to replace it, or choose another directory")
        if found:
            for name in RUN_FILES:
                target = out / name
                if target.is_dir() and not target.is_symlink():
                    raise SettingsError(f"{label} {str(out)!r}: {name} is a directory; not removing it")
                try:
                    target.unlink(missing_ok=True)
                except OSError as exc:
                    raise SettingsError(f"{label} {str(out)!r}: cannot remove {name} ({exc.strerror})") from None
    except BaseException:
        run.release()
        raise
    return run


# ------------------------------------------------------------------ checkpoint fields

_POSITIVE_FLOATS = ("alpha", "r", "tau")
_POSITIVE_INTS = ("N", "check_every", "max_delay", "stall_limit")
_MAYBE_INFINITE = ("last_cost", "last_gap")  # inf before the first check; stored as "inf"


def _bad(field: str, value: Any, what: str) -> SettingsError:
    text = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return SettingsError(f"{CHECKPOINT}: {field} = {text}: {what}")


def _int(data: dict[str, Any], key: str, field: str, low: int = 0) -> None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(field, value, f"expected an integer >= {low}")


def _number(value: Any, field: str, *, positive: bool = False, optional: bool = False) -> None:
    """A finite number >= 0 (``positive``: > 0; ``optional``: or None)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(field, value, "expected a number")
    if not math.isfinite(value):
        raise _bad(field, value, "expected a finite number")
    if (positive and not value > 0) or value < 0:
        raise _bad(field, value, f"expected a number {'> 0' if positive else '>= 0'}")


def _real(value: Any, field: str) -> None:
    """Any real number, non-finite ones written as strings ("inf", "nan")."""
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(field, value, "expected a number")


def _gain(value: Any, field: str, m: int, n: int) -> np.ndarray:
    try:
        return as_matrix(value, field, m, n)
    except (AzopgError, TypeError, ValueError) as exc:
        raise SettingsError(f"{CHECKPOINT}: {exc}") from None


def validate_checkpoint(data: Any, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every field of a checkpoint (see :mod:`azopg.run.checkpoint`) and return it.

    Raises
    ------
    SettingsError
        Naming the first field that is missing, of the wrong type, not finite, of the
        wrong shape or, for the gains ``K`` and ``anchor_K``, not stabilizing.
    """
    where = f"{str(run_dir)!r}: "
    try:
        if not isinstance(data, dict):
            raise _bad("the document", type(data).__name__, "expected a JSON object")
        if data.get("format") not in FORMATS:
            raise _bad("format", data.get("format"), f"this azopg reads checkpoints of formats "
                       f"{', '.join(map(str, FORMATS))} only; a checkpoint of another format cannot be resumed "
                       "(its result so far is in the logs)")
        status = data.get("status")
        if not isinstance(status, str) or status not in (*FINISHED, "running", "interrupted", "failed"):
            raise _bad("status", status, "unknown run status")
        if data.get("backend") not in BACKENDS:
            raise _bad("backend", data.get("backend"), f"expected one of {', '.join(BACKENDS)}")
        if not isinstance(data.get("settings"), dict):
            raise _bad("settings", data.get("settings"), "expected a JSON object")
        try:
            Settings.from_dict(data["settings"])
        except (AzopgError, TypeError, ValueError) as exc:
            raise SettingsError(f"{CHECKPOINT}: settings: {exc}") from None
        for key in ("elapsed_s", "calibration_s"):
            _number(data.get(key), key, optional=key == "calibration_s")
        for key in ("resumes", "history_rows", "arrival_rows"):
            _int(data, key, key)
        logs = data.get("logs")
        if not isinstance(logs, dict):
            raise _bad("logs", logs, "expected a JSON object")
        for name in ("history.csv", "arrivals.csv"):
            entry = logs.get(name)
            if not isinstance(entry, dict):
                raise _bad(f"logs.{name}", entry, "expected a JSON object")
            _int(entry, "bytes", f"logs.{name}.bytes")
            digest = entry.get("sha256")
            if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
                raise _bad(f"logs.{name}.sha256", digest, "expected 64 hexadecimal digits")
        master = data.get("master")
        if not isinstance(master, dict):
            raise _bad("master", master, "expected a JSON object")
        env = data.get("env")
        if env is not None and (not isinstance(env, dict) or not isinstance(env.get("env"), str)):
            raise _bad("env", env, "expected an environment spec (a JSON object naming an env)")
        if data.get("problem") is None:
            return data  # a black-box plant: resumed from its env spec, or refused
        try:
            problem = LQRProblem.from_dict(data["problem"])
        except (AzopgError, TypeError, ValueError) as exc:
            raise SettingsError(f"{CHECKPOINT}: problem: {exc}") from None
        _gain(data.get("K0"), "K0", problem.m, problem.n)
        for key in ("K", "anchor_K"):
            if key not in master:
                raise SettingsError(f"{CHECKPOINT}: master.{key} is missing")
            if not problem.is_stabilizing(_gain(master[key], f"master.{key}", problem.m, problem.n)):
                raise SettingsError(f"{CHECKPOINT}: master.{key} does not stabilize the problem "
                                    "(A - B K is not Hurwitz)")
        fields = STATE_FIELDS if data["format"] >= 3 else FORMAT2_FIELDS
        for key in (*fields, "last_cost", "last_gap"):
            field = f"master.{key}"
            if key not in master:
                raise SettingsError(f"{CHECKPOINT}: {field} is missing")
            if key in _POSITIVE_FLOATS:
                _number(master[key], field, positive=True)
            elif key in _MAYBE_INFINITE:
                _real(master[key], field)
            elif key == "anchor_cost":  # "inf": not measured yet (policy iteration measures K0's cost in its loop)
                if master[key] != "inf":
                    _number(master[key], field)
            else:
                _int(master, key, field, low=1 if key in _POSITIVE_INTS else 0)
    except SettingsError as exc:
        raise SettingsError(where + str(exc)) from None
    return data
