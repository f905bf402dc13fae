"""The wall view: each side of the tracker seen from its calorimeter wall, layers as channels.

A track reaches its calorimeter cell where its line leaves the last layer: in the (z, column)
plane seen from the wall, its hits of successive layers lie along a line that the cell extends.
The wall view puts every hit at its (side, z bin, column) pixel with three channels per layer,
[hit (1), z offset in its bin ((z - bin centre) / 100 mm, in [-0.5, 0.5]), drift radius / 22 mm],
so a convolution sees neighbouring layers of a track side by side and reads z finer than its
bin. Shape (n, 2, 30, 113, 27): side, z bin (:func:`snemo.geometry.z_bin`), column, channel
``layer * 3 + k``. The multi-label calorimeter model (:func:`architectures.calorimeter.build_wall`)
maps it onto both sides' 15 x 22 grids without clustering. A hit without z is not drawn (a z
view); of a cell listed twice, the last listing is kept.

:func:`wall_hits` precomputes each hit's pixel, channel and values once (what the loaders keep);
:func:`wall_images` scatters them into images; :func:`wall_view` does both.
"""

from __future__ import annotations

import numpy as np

from snemo import geometry as geo
from snemo.events import EventBatch

NAME = "wall"
PER_LAYER = 3  # channels per layer: hit, z offset, radius
CHANNELS = geo.N_LAYERS * PER_LAYER  # 27
SHAPE = (geo.N_SIDES, geo.N_Z_BINS, geo.N_COLUMNS, CHANNELS)  # (2, 30, 113, 27)
PIXELS = geo.N_SIDES * geo.N_Z_BINS * geo.N_COLUMNS  # 6780 pixels per event
FIELDS = ("grid_side", "grid_layer", "grid_column", "wirez", "wirez_missing", "radius")


def wall_hits(batch: EventBatch) -> dict:
    """Per-hit arrays of the wall view: {"wall_pixel": int32, "wall_layer": int8, "wall_z": float32,
    "wall_radius": float32} (n_hits,).

    ``wall_pixel``: (side * 30 + z bin) * 113 + column, or :data:`PIXELS` (drawn nowhere) for a hit
    without z; ``wall_z``: the z offset in the bin (-0.5 .. 0.5); ``wall_radius``: radius / 22 mm.
    """
    hits = batch.hits
    wirez = np.asarray(hits["wirez"], dtype=np.float64)
    zbin = geo.z_bin(wirez)
    pixel = ((np.asarray(hits["grid_side"], np.int64) * geo.N_Z_BINS + zbin) * geo.N_COLUMNS
             + np.asarray(hits["grid_column"], np.int64))
    pixel = np.where(batch.z_missing(), PIXELS, pixel).astype(np.int32)
    offset = (np.clip(wirez, -geo.TRACKER_HALF_Z, geo.TRACKER_HALF_Z) + geo.TRACKER_HALF_Z) / geo.Z_BIN_WIDTH
    offset = np.clip(offset - zbin - 0.5, -0.5, 0.5)
    radius = np.clip(np.asarray(hits["radius"], np.float64), 0.0, None) / geo.MAX_DRIFT_RADIUS
    return {"wall_pixel": pixel, "wall_layer": np.asarray(hits["grid_layer"], np.int8),
            "wall_z": offset.astype(np.float32), "wall_radius": radius.astype(np.float32)}


def wall_images(hits: dict, hit_offsets: np.ndarray) -> np.ndarray:
    """(n, 2, 30, 113, 27) float32 wall views from the :func:`wall_hits` arrays of n events.

    ``hit_offsets``: (n + 1,) offsets of each event's hits into ``hits`` (the first need not be 0).
    """
    offsets = np.asarray(hit_offsets, dtype=np.int64)
    n = len(offsets) - 1
    counts = np.diff(offsets)
    event = np.repeat(np.arange(n, dtype=np.int64), counts)
    part = slice(int(offsets[0]), int(offsets[-1]))
    pixel = hits["wall_pixel"][part].astype(np.int64)
    drawn = pixel < PIXELS
    base = ((event * PIXELS + pixel) * CHANNELS + hits["wall_layer"][part].astype(np.int64) * PER_LAYER)[drawn]
    images = np.zeros(n * PIXELS * CHANNELS, dtype=np.float32)
    images[base] = 1.0
    images[base + 1] = hits["wall_z"][part][drawn]
    images[base + 2] = hits["wall_radius"][part][drawn]
    return images.reshape((n,) + SHAPE)


def wall_view(batch: EventBatch) -> np.ndarray:
    """(n, 2, 30, 113, 27) float32 wall views of the events of ``batch`` (see the module docstring)."""
    return wall_images(wall_hits(batch), batch.hit_offsets)
