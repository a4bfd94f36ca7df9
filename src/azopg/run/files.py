"""Files of a run directory: atomic writes and the one CSV format of the logs (a leaf module)."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .records import csv_value

__all__ = ["csv_bytes", "write_atomic", "write_json_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (a temporary file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (no NaN or infinity: they are not JSON)."""
    write_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


def csv_bytes(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> bytes:
    """The CSV text of ``rows`` (under ``header`` if given), cells by
    :func:`~azopg.run.records.csv_value`: the one format of ``history.csv`` and ``arrivals.csv``."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    if header is not None:
        w.writerow(header)
    w.writerows([csv_value(v) for v in row] for row in rows)
    return buf.getvalue().encode()
