"""JSON files of run folders (config, history, metrics): one atomic writer, one NaN-to-null rule.

:func:`json_safe` turns NumPy scalars and arrays into plain Python and NaN / inf into ``None``
(JSON ``null``), recursively; :func:`write_json` writes ``path.tmp`` and renames it, so a killed
job never leaves a half-written file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np


def json_safe(value):
    """``value`` with dict keys as strings, tuples and arrays as lists, NumPy scalars as Python numbers,
    NaN / inf as ``None`` and paths as strings (recursively). Example: ``{"a": np.float32("nan")}`` ->
    ``{"a": None}``."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json(path, data) -> Path:
    """Write ``json_safe(data)`` to ``path`` atomically (``path.tmp``, then rename), creating the folder.

    Values JSON cannot hold (other than the ones :func:`json_safe` converts) are written with ``str``.
    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(json_safe(data), handle, indent=1, allow_nan=False, default=str)
    os.replace(tmp, path)
    return path


def read_json(path, default=None):
    """The content of JSON file ``path``, or ``default`` when it does not exist."""
    path = Path(path)
    if not path.exists():
        return default
    with open(path) as handle:
        return json.load(handle)
