"""What the subcommands of ``models/evaluate.py`` share: held-out columns, model names, merged JSON, markdown.

* :func:`read_column`: the events of one held-out column (``<data>/my_generator/<column>/<N>/``,
  N = 1..4 tracks), at most ``per_count`` events of each track count;
* :func:`model_label`: a model's name from its path (a run folder's ``model.keras`` is named after
  the folder);
* :func:`merge_json`: results merged into a JSON file key by key, so that models can be scored one
  by one and an entry of another model survives;
* :func:`percent`, :func:`markdown_table`, :func:`check`: table cells, tables and target lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENERATOR = "my_generator"
TRACK_COUNTS = (1, 2, 3, 4)
HIT_FIELDS = ("grid_side", "grid_layer", "grid_column", "wirez", "radius", "wirez_missing")
CALO_FIELDS = ("calo_side", "calo_column", "calo_row")
FIELDS = HIT_FIELDS + ("track_split",) + CALO_FIELDS


def column_folder(data, column: str, count: int, generator: str = GENERATOR) -> Path:
    """``<data>/<generator>/<column>/<count>``: the held-out events of one column with ``count`` tracks."""
    return Path(data) / generator / column / str(count)


def read_column(data, column: str, per_count: int, *, counts=TRACK_COUNTS, generator: str = GENERATOR):
    """The events of held-out ``column``: at most ``per_count`` of each number of tracks, one EventBatch.

    Reads ``<data>/<generator>/<column>/<N>/*.root`` for N in ``counts`` (hits, ``track_split``
    and the calorimeter cells). Raises ValueError naming the folder when one is missing or empty;
    a bad file raises the reader's ``EventFileError`` (file, entry, branch).
    """
    from snemo.events import EventBatch, read_events

    if per_count < 1:
        raise ValueError(f"--events-per-count must be at least 1, got {per_count}")
    parts = []
    for count in counts:
        folder = column_folder(data, column, count, generator)
        if not folder.is_dir():
            raise ValueError(f"--data: no held-out folder {folder} (made by models/train_models.sh)")
        batch = read_events(str(folder), fields=FIELDS, max_events=per_count)
        if len(batch) == 0:
            raise ValueError(f"--data: no event in {folder}")
        parts.append(batch)
    return EventBatch.concatenate(parts)


def model_label(path) -> str:
    """Name of a model file: its stem, or the run folder's name for ``<run folder>/model.keras``."""
    path = Path(path)
    return path.parent.name if path.stem == "model" else path.stem


def merge_json(path, updates: dict, depth: int = 2) -> dict:
    """Merge ``updates`` into the JSON file ``path`` (atomic write) and return the merged content.

    Dictionaries are merged down to ``depth`` levels (1: top-level keys replaced; 2: e.g.
    {model: {column: ...}}, one column of a model replaced and its other columns kept); below
    that a value replaces the old one. Keys absent from ``updates`` are kept.
    """
    from snemo.jsonfile import json_safe, read_json, write_json

    def merged(old, new, level):
        if level <= 0 or not isinstance(old, dict) or not isinstance(new, dict):
            return new
        out = dict(old)
        for key, value in new.items():
            out[key] = merged(old.get(key), value, level - 1) if key in old else value
        return out

    content = merged(read_json(path, {}), json_safe(updates), depth)
    write_json(path, content)
    return content


def percent(value, digits: int = 2) -> str:
    """``0.98765`` -> ``"98.77 %"``; None or NaN -> ``"-"``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{100 * value:.{digits}f} %"


def markdown_table(header: list, rows: list) -> str:
    """A markdown table: ``header`` cells, then one line per row (lists of cells, already strings)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def check(value, threshold, *, strict: bool = False) -> dict:
    """A target check: {"value", "threshold", "met"}; ``met`` is None when the value is missing (NaN).

    ``value`` and ``threshold`` are fractions; met when value >= threshold (> with ``strict``).
    """
    if value is None or np.isnan(value) or threshold is None or np.isnan(threshold):
        return {"value": value, "threshold": threshold, "met": None}
    return {"value": float(value), "threshold": float(threshold),
            "met": bool(value > threshold if strict else value >= threshold)}


def check_cell(result: dict) -> str:
    """A target check as a table cell: ``"99.12 % met"``, ``"97.40 % missed"`` or ``"- (no value)"``."""
    if result["met"] is None:
        return "- (no value)"
    return f"{percent(result['value'])} {'met' if result['met'] else 'missed'}"
