"""Chunked, atomic writing of one TTree with uproot: the one writer of event files and ``reco`` trees.

:func:`write_tree` creates the tree once (``mktree``, branch types taken from the first chunk) and
``extend``s it chunk by chunk, so memory is bounded by the chunk size, not by the file. It writes
``path.tmp`` and renames it to ``path`` only when every chunk is written: a job killed or failing
in the middle (an exception, Ctrl-C, SIGTERM turned into an exception) never leaves a file that
looks complete, and the ``.tmp`` is removed on any exception. A chunk is a dict of branch name ->
NumPy array (one value or a fixed-size row per entry) or awkward array; an awkward array of
records per entry, e.g. ``ak.zip({"cluster": jagged}, depth_limit=2)`` under the name ``hit``,
becomes the jagged branches of its fields sharing the counter ``n<name>`` (``nhit``).

    write_tree("out.root", "reco", ({"n_tracks": counts} for counts in chunks), title="reco")
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

UNFINISHED_SUFFIX = ".tmp"
COMPRESSIONS = ("ZSTD", "LZ4", "ZLIB", "LZMA")


def branch_types(chunk: dict) -> dict:
    """uproot ``mktree`` types of a chunk: NumPy dtypes (with the row shape), awkward types of records."""
    types = {}
    for name, values in chunk.items():
        if isinstance(values, np.ndarray):
            types[name] = np.dtype((values.dtype, values.shape[1:])) if values.ndim > 1 else values.dtype
        else:
            types[name] = values.type.content  # awkward: the type of one entry
    return types


def _entries(chunk: dict) -> int:
    lengths = {len(values) for values in chunk.values()}
    if len(lengths) != 1:
        raise ValueError(f"every branch of a chunk needs one value per entry, got lengths "
                         f"{ {name: len(values) for name, values in chunk.items()} }")
    return lengths.pop()


def write_tree(path, name: str, chunks: Iterable[dict], *, title: str = "", compression: str = "ZSTD",
               level: int = 1) -> int:
    """Write the chunks of ``chunks`` as TTree ``name`` of ROOT file ``path``, atomically; returns the entries.

    ``chunks``: an iterable (e.g. a generator that reads and converts a chunk at a time) of dicts
    of branch name -> array, the same branches and types in every chunk; a chunk with no entry only
    fixes the types (at least one chunk is needed). ``compression``: one of :data:`COMPRESSIONS`
    at ``level``. Writes ``path.tmp`` and renames it when complete; on any exception (from the
    chunks' producer too) the ``.tmp`` is removed and the exception re-raised. An existing
    ``path`` is replaced: callers that must refuse it check first.
    """
    import uproot

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {list(COMPRESSIONS)}, got {compression!r}")
    path = os.fspath(path)
    codec = getattr(uproot, compression)(level)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + UNFINISHED_SUFFIX
    written = 0
    try:
        with uproot.recreate(tmp, compression=codec) as file:
            tree = None
            for chunk in chunks:
                if tree is None:
                    tree = file.mktree(name, branch_types(chunk), title=title,
                                       counter_name=lambda outer: "n" + outer, field_name=lambda outer, inner: inner)
                entries = _entries(chunk)
                if entries:
                    tree.extend(chunk)
                    written += entries
            if tree is None:
                raise ValueError(f"no chunk to write to {path}: the branch types come from the first chunk")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return written
