"""Files of a run directory: the directory itself and atomic writes (a leaf module)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from .records import csv_value

__all__ = ["csv_text", "prepare_out_dir", "write_json_atomic", "write_text_atomic"]


def prepare_out_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check it is a writable directory.

    Raises
    ------
    SettingsError
        If it cannot be created or written.
    """
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"--out {str(path)!r}: cannot create directory ({exc.strerror})") from None
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise SettingsError(f"--out {str(path)!r}: not a writable directory")
    return out


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a temporary file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (no NaN or infinity: they are not JSON)."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def csv_text(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """A CSV document: ``header``, then ``rows`` with :func:`~azopg.run.records.csv_value` cells."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows([csv_value(v) for v in row] for row in rows)
    return buf.getvalue()
