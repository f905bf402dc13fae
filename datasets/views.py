"""Hits -> images: the one module that knows the view layouts (DESIGN.md, section Views).

Every function converts a whole batch of events at once: per-hit pixel indices are computed with
vectorised NumPy and written with ONE flat scatter into ``np.zeros`` (no loop per event or hit).

==========  ================  ===========================================  =============
view        shape             index                                        pixel value
==========  ================  ===========================================  =============
top         (18, 113)         top-view row (8 - layer on side 0,           hit (1.0)
                              9 + layer on side 1); column
side        (30, 113)         z bin of ``wirez`` (100 mm); column          hit count
front       (30, 18)          z bin; top-view row                          hit (1.0)
voxel       (18, 113, 30)     top-view row; column; z bin                  hit (1.0)
==========  ================  ===========================================  =============

Pixels are float32, 0.0 where no hit lies. A "hit" pixel is 1.0 where at least one hit lies; a
"hit count" pixel holds the number of hits in it (at most :data:`MAX_PIXEL_COUNT`). Top and voxel
pixels are single cells, so counting would change nothing there. The side view stacks the 18 cells
of a (z, column) pixel on top of each other: with 0/1 pixels two back-to-back tracks leaving the
foil perpendicularly on both sides look exactly like one track, and the count tells them apart.
With ``radius_channel`` a second channel holds the drift radius / 22 mm of the hit (the largest if
two hits share a pixel). With ``z_channel`` the top view (the one view without a z axis) gets a
channel holding wirez / 1500 mm of the hit (0 where z is missing), before the radius channel:
channels are [hit, z (top only), radius], as many as :func:`n_channels` says.

A hit whose z was not measured (``wirez_missing`` = 1) is drawn in the top view only: in the side,
front and voxel views its pixel index is the image size (one past the last pixel) and
:func:`scatter` draws nothing for it. A cell that the input lists twice in one event (the original
macro lists a cell crossed by two tracks under both) is one pixel of the 0/1 views (top, front,
voxel) and counts twice in the side view when both listings fall in one (z bin, column) pixel: the
side view counts listings, as the input gives them.

Functions take an :class:`snemo.events.EventBatch`; the ``*_pixels`` and :func:`scatter` functions
take the flat per-hit arrays and the hit offsets directly.
"""

from __future__ import annotations

import numpy as np

from snemo import geometry as geo
from snemo.events import EventBatch

VIEW_SHAPES: dict[str, tuple[int, ...]] = {
    "top": geo.TOP_SHAPE,  # (18, 113)
    "side": geo.SIDE_SHAPE,  # (30, 113)
    "front": geo.FRONT_SHAPE,  # (30, 18)
    "voxel": geo.VOXEL_SHAPE,  # (18, 113, 30)
}
VIEW_NAMES = tuple(VIEW_SHAPES)

# What the first channel of each view holds (see the module docstring).
PIXEL_VALUES: dict[str, str] = {"top": "hit", "side": "count", "front": "hit", "voxel": "hit"}
MAX_PIXEL_COUNT = 255  # counts are capped so that they fit the loaders' uint8 wire format

# Hit branches each view reads (the loaders read only these).
VIEW_FIELDS: dict[str, tuple[str, ...]] = {
    "top": ("grid_side", "grid_layer", "grid_column"),
    "side": ("grid_column", "wirez", "wirez_missing"),
    "front": ("grid_side", "grid_layer", "wirez", "wirez_missing"),
    "voxel": ("grid_side", "grid_layer", "grid_column", "wirez", "wirez_missing"),
}
Z_VIEWS = ("side", "front", "voxel")  # views that place a hit by its z: a hit without z is not drawn there
Z_CHANNEL_VIEWS = ("top",)  # views without a z axis: the ones a z channel is added to


def view_size(name: str) -> int:
    """Number of pixels of one image of view ``name`` (e.g. 2034 for top)."""
    return int(np.prod(VIEW_SHAPES[_check_name(name)]))


def fields_for(names, radius_channel: bool = False, z_channel: bool = False) -> tuple[str, ...]:
    """Hit branches needed to build the views ``names`` (a name or a sequence of names)."""
    names = (names,) if isinstance(names, str) else tuple(names)
    fields = {f for name in names for f in VIEW_FIELDS[_check_name(name)]}
    if radius_channel:
        fields.add("radius")
    if z_channel and set(names) & set(Z_CHANNEL_VIEWS):
        fields.update(("wirez", "wirez_missing"))
    return tuple(sorted(fields))


def n_channels(name: str, radius_channel: bool = False, z_channel: bool = False) -> int:
    """Channels C of view ``name``'s images: 1 (hit) + z (top view only) + radius."""
    return 1 + int(bool(z_channel) and _check_name(name) in Z_CHANNEL_VIEWS) + int(bool(radius_channel))


def scaled_z(batch: EventBatch) -> np.ndarray:
    """Per-hit z channel value, float32 (n_hits,): wirez / 1500 mm, 0 where z is missing."""
    z = np.where(batch.z_missing(), 0.0, batch.hits["wirez"]) / geo.TRACKER_HALF_Z
    return z.astype(np.float32)


def _check_name(name: str) -> str:
    if name not in VIEW_SHAPES:
        raise ValueError(f"unknown view '{name}'; choose one of {list(VIEW_SHAPES)}")
    return name


# ------------------------------------------------------------------------------------------------
# Per-hit pixel indices (flat index inside one image), from flat hit arrays
# ------------------------------------------------------------------------------------------------
# geometry.top_row of every (side, layer), looked up by the int8 key side * 9 + layer: the same
# numbers, several times faster on millions of hits than evaluating it per hit in int64.
_ROW_OF_SIDE_LAYER = geo.top_row(np.repeat(np.arange(geo.N_SIDES), geo.N_LAYERS),
                                 np.tile(np.arange(geo.N_LAYERS), geo.N_SIDES)).astype(np.int16)


def _row(side, layer) -> np.ndarray:
    """Top-view row of each hit, int16 (geometry.top_row through a lookup table)."""
    key = np.asarray(side).astype(np.int8, copy=False) * np.int8(geo.N_LAYERS)
    key += np.asarray(layer).astype(np.int8, copy=False)
    return _ROW_OF_SIDE_LAYER[key]


def _zbin(wirez) -> np.ndarray:
    """z bin of each hit, int16 (geometry.z_bin)."""
    return geo.z_bin(wirez).astype(np.int16)


def _column(column) -> np.ndarray:
    return np.asarray(column).astype(np.int16, copy=False)


def top_pixels(side, layer, column) -> np.ndarray:
    """Flat top-view pixel of each hit: row * 113 + column, int16 (n_hits,)."""
    return _row(side, layer) * np.int16(geo.N_COLUMNS) + _column(column)


def side_pixels(column, wirez) -> np.ndarray:
    """Flat side-view pixel of each hit: z_bin * 113 + column, int16 (n_hits,). ``wirez`` in mm."""
    return _zbin(wirez) * np.int16(geo.N_COLUMNS) + _column(column)


def front_pixels(side, layer, wirez) -> np.ndarray:
    """Flat front-view pixel of each hit: z_bin * 18 + top row, int16 (n_hits,)."""
    return _zbin(wirez) * np.int16(geo.TOP_ROWS) + _row(side, layer)


def voxel_pixels(side, layer, column, wirez) -> np.ndarray:
    """Flat voxel of each hit: (top row * 113 + column) * 30 + z_bin, int32 (n_hits,)."""
    return top_pixels(side, layer, column).astype(np.int32) * geo.N_Z_BINS + _zbin(wirez)


def pixel_index(batch: EventBatch, name: str) -> np.ndarray:
    """Flat pixel index of every hit of ``batch`` inside its event's image of view ``name``.

    int16 for top, side and front; int32 for voxel (up to 61019). A hit without z gets the image
    size in the z views (drawn nowhere)."""
    hits = batch.hits
    name = _check_name(name)
    if name == "top":
        return top_pixels(hits["grid_side"], hits["grid_layer"], hits["grid_column"])
    if name == "side":
        pixels = side_pixels(hits["grid_column"], hits["wirez"])
    elif name == "front":
        pixels = front_pixels(hits["grid_side"], hits["grid_layer"], hits["wirez"])
    else:
        pixels = voxel_pixels(hits["grid_side"], hits["grid_layer"], hits["grid_column"], hits["wirez"])
    return _drop_missing_z(pixels, batch, name)


def _drop_missing_z(pixels: np.ndarray, batch: EventBatch, name: str) -> np.ndarray:
    """``pixels`` with the hits that have no z moved to the image size (drawn nowhere), for the z views."""
    if name not in Z_VIEWS or "wirez_missing" not in batch.hits:
        return pixels
    return np.where(batch.hits["wirez_missing"] != 0, pixels.dtype.type(view_size(name)), pixels)


def top_pixel_index(batch: EventBatch) -> np.ndarray:
    """Flat top-view pixel (row * 113 + column) of every hit, int16 (n_hits_total,).

    With ``batch.hit_event_index()`` this locates each hit in the (n, 18, 113) top view, which is
    what clustering needs to read per-hit scores back from a predicted image.
    """
    return pixel_index(batch, "top")


# ------------------------------------------------------------------------------------------------
# The scatter
# ------------------------------------------------------------------------------------------------
def scatter(pixels: np.ndarray, hit_offsets: np.ndarray, size: int, values: np.ndarray | None = None,
            mask: np.ndarray | None = None, dtype=np.float32, count: bool = False) -> np.ndarray:
    """Images (n_events, size) of ``dtype`` (float32) from per-hit flat pixels with one vectorised assignment.

    ``pixels``: (n_hits,) pixel of each hit inside its event's image; ``hit_offsets``: (n + 1,)
    start of each event's hits (need not start at 0). ``values``: (n_hits,) pixel values (default
    1.0); where several hits share a pixel the largest value is kept. ``mask``: (n_hits,) bool,
    only these hits are drawn. ``count``: without ``values``, each pixel holds the number of its
    hits (capped at :data:`MAX_PIXEL_COUNT`) instead of 1.0. A pixel index >= ``size`` (a hit
    without z in a z view) is drawn nowhere.
    """
    hit_offsets = np.asarray(hit_offsets)
    n_events = len(hit_offsets) - 1
    counts = np.diff(hit_offsets)
    event = np.repeat(np.arange(n_events, dtype=np.int64), counts)
    flat = event * size + pixels  # (n_hits,) index into the (n_events * size,) buffer
    outside = pixels >= size
    if outside.any():
        mask = ~outside if mask is None else (mask & ~outside)
    if mask is not None:
        flat = flat[mask]
        values = None if values is None else values[mask]
    out = np.zeros(n_events * size, dtype=dtype)
    if count and values is None:
        # Counting the few hit pixels is 10x faster than a bincount over every pixel of the batch.
        hit_pixels, counts = np.unique(flat, return_counts=True)
        out[hit_pixels] = np.minimum(counts, MAX_PIXEL_COUNT)
        return out.reshape(n_events, size)
    if values is None:
        out[flat] = 1.0
    elif len(flat):
        # Largest value per pixel, deterministically: sort by (pixel, value), keep the last of each pixel.
        order = np.lexsort((values, flat))
        flat, values = flat[order], values[order]
        last = np.ones(len(flat), dtype=bool)
        last[:-1] = flat[1:] != flat[:-1]
        out[flat[last]] = values[last]
    return out.reshape(n_events, size)


def _counts(name: str) -> bool:
    return PIXEL_VALUES[name] == "count"


def _image(batch: EventBatch, name: str, mask=None) -> np.ndarray:
    size = view_size(name)
    images = scatter(pixel_index(batch, name), batch.hit_offsets, size, mask=mask, count=_counts(name))  # (n, size)
    return images.reshape((len(batch),) + VIEW_SHAPES[name])


def top(batch: EventBatch) -> np.ndarray:
    """Top view (n, 18, 113) float32: 1.0 at (top row, column) of every hit."""
    return _image(batch, "top")


def side(batch: EventBatch) -> np.ndarray:
    """Side view (n, 30, 113) float32: number of hits at each (z bin of wirez, column)."""
    return _image(batch, "side")


def front(batch: EventBatch) -> np.ndarray:
    """Front view (n, 30, 18) float32: 1.0 at (z bin, top row) of every hit."""
    return _image(batch, "front")


def voxel(batch: EventBatch) -> np.ndarray:
    """Voxel grid (n, 18, 113, 30) float32: 1.0 at (top row, column, z bin) of every hit."""
    return _image(batch, "voxel")


def make_view(batch: EventBatch, name: str, radius_channel: bool = False, z_channel: bool = False) -> np.ndarray:
    """View ``name`` with a channel axis: (n, H, W, C) for 2-D views, (n, 18, 113, 30, C) for voxel.

    Channel 0: the pixel value of :data:`PIXEL_VALUES` (1.0 or the hit count where hits lie).
    ``z_channel`` (top view only): wirez / 1500 mm at hit cells (0 where z is missing).
    ``radius_channel``: the drift radius / 22 mm at hit cells. Where two hits share a pixel the
    larger value is kept; 0 elsewhere. C = :func:`n_channels`.
    """
    radius = batch.hits["radius"] if radius_channel else None
    z = scaled_z(batch) if z_channel and name in Z_CHANNEL_VIEWS else None
    return view_from_pixels(pixel_index(batch, name), batch.hit_offsets, name, radius, z=z)


def view_from_pixels(pixels: np.ndarray, hit_offsets: np.ndarray, name: str, radius: np.ndarray | None = None,
                     dtype=np.float32, z: np.ndarray | None = None):
    """(n, H, W, C) images of view ``name`` from per-hit pixels (see :func:`pixel_index`).

    ``z``: per-hit z channel values (see :func:`scaled_z`) or None; ``radius``: per-hit drift
    radius in mm, or None. Channels [hit, z, radius] of those given; float32 when there is more
    than one channel, else ``dtype``.
    """
    shape = VIEW_SHAPES[_check_name(name)]
    size = view_size(name)
    n = len(hit_offsets) - 1
    extra = [] if z is None else [np.asarray(z, dtype=np.float32)]
    if radius is not None:
        extra.append(np.asarray(radius, dtype=np.float32) / np.float32(geo.MAX_DRIFT_RADIUS))
    hit = scatter(pixels, hit_offsets, size, dtype=np.float32 if extra else dtype, count=_counts(name))  # (n, size)
    if not extra:
        return hit.reshape((n,) + shape + (1,))  # (n, H, W, 1)
    channels = [hit] + [scatter(pixels, hit_offsets, size, values=values) for values in extra]
    return np.stack(channels, axis=-1).reshape((n,) + shape + (len(channels),))  # (n, H, W, C)


def pixel_dtype(name: str) -> np.dtype:
    """Narrowest unsigned-safe integer dtype that holds the pixel indices of view ``name``."""
    return np.dtype(np.int16) if view_size(name) <= np.iinfo(np.int16).max else np.dtype(np.uint16)


def compact(batch: EventBatch, names, radius_channel: bool = False, hit_masks: dict | None = None,
            z_channel: bool = False) -> EventBatch:
    """The batch reduced to what the views ``names`` need: per-hit pixels, precomputed once.

    Returns an :class:`EventBatch` with the same events and tracks whose ``hits`` hold, for each
    view, its per-hit pixel index under the view's name (int16, uint16 for voxel), plus
    ``radius`` (mm) when ``radius_channel``, ``z_scaled`` (:func:`scaled_z`) when ``z_channel`` and
    a view of :data:`Z_CHANNEL_VIEWS` is among ``names``, and the boolean arrays of ``hit_masks``. Taking,
    slicing and scattering it is much cheaper than working from the branches.
    Use :func:`compact_view` to make images from it.
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    h = batch.hits
    row = _row(h["grid_side"], h["grid_layer"]) if {"top", "front", "voxel"} & set(names) else None
    zbin = _zbin(h["wirez"]) if {"side", "front", "voxel"} & set(names) else None
    column = _column(h["grid_column"]) if {"top", "side", "voxel"} & set(names) else None
    pixels = {"top": lambda: row * np.int16(geo.N_COLUMNS) + column,
              "side": lambda: zbin * np.int16(geo.N_COLUMNS) + column,
              "front": lambda: zbin * np.int16(geo.TOP_ROWS) + row,
              "voxel": lambda: (row * np.int16(geo.N_COLUMNS) + column).astype(np.int32) * geo.N_Z_BINS + zbin}
    hits = {name: _drop_missing_z(pixels[_check_name(name)]().astype(pixel_dtype(name), copy=False), batch, name)
            for name in names}
    if radius_channel:
        hits["radius"] = np.asarray(batch.hits["radius"], dtype=np.float32)
    if z_channel and set(names) & set(Z_CHANNEL_VIEWS):
        hits["z_scaled"] = scaled_z(batch)
    hits.update(hit_masks or {})
    return EventBatch(batch.hit_offsets, hits, batch.track_offsets, dict(batch.tracks), files=batch.files,
                      file_index=batch.file_index, entry=batch.entry)


def compact_view(compact_batch: EventBatch, name: str, radius_channel: bool = False, dtype=np.float32,
                 z_channel: bool = False) -> np.ndarray:
    """(n, H, W, C) images of view ``name`` from a batch made by :func:`compact`.

    ``dtype`` applies to C = 1 images (np.uint8 for the loaders' wire format); C > 1 is float32.
    """
    radius = compact_batch.hits["radius"] if radius_channel else None
    z = compact_batch.hits["z_scaled"] if z_channel and name in Z_CHANNEL_VIEWS else None
    return view_from_pixels(compact_batch.hits[name], compact_batch.hit_offsets, name, radius, dtype, z=z)


def track_image(batch: EventBatch, mask: np.ndarray, name: str = "top") -> np.ndarray:
    """Image (n, H, W, 1) of view ``name`` drawing only the hits where ``mask`` (n_hits_total,) is True.

    Used for the image of one track of each event (clustering targets) and for one-track inputs.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (int(batch.hit_offsets[-1] - batch.hit_offsets[0]),):
        raise ValueError(f"mask must have one entry per hit ({int(batch.hit_offsets[-1] - batch.hit_offsets[0])}), "
                         f"got shape {mask.shape}")
    shape = VIEW_SHAPES[_check_name(name)]
    return _image(batch, name, mask=mask).reshape((len(batch),) + shape + (1,))  # (n, H, W, 1)


# ------------------------------------------------------------------------------------------------
# Model inputs of the loaders
# ------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------
def parse_views(view, allowed=("top", "side", "front")) -> tuple[str, ...]:
    """Normalise ``view`` ("top" or a tuple of names) into a tuple of distinct allowed names."""
    names = (view,) if isinstance(view, str) else tuple(view)
    if not names or len(set(names)) != len(names) or any(name not in allowed for name in names):
        raise ValueError(f"view must be one of {list(allowed)} or a tuple of distinct ones, got {view!r}")
    return names


def view_inputs(compact_batch: EventBatch, names: tuple[str, ...], radius_channel: bool, z_channel: bool = False):
    """Model inputs from a :func:`views.compact` batch: one (n, H, W, C) array for one view, a dict
    name -> array for several. Wire format: uint8 (0/1 or hit counts) for C = 1, float32 for C > 1."""
    images = {name: compact_view(compact_batch, name, radius_channel, dtype=np.uint8, z_channel=z_channel)
              for name in names}
    return images[names[0]] if len(names) == 1 else images


def view_specs(names: tuple[str, ...], radius_channel: bool, batch_dim, z_channel: bool = False):
    """Wire ``tf.TensorSpec`` structure matching :func:`view_inputs` (uint8 is cast to float32 later)."""
    import tensorflow as tf

    specs = {}
    for name in names:
        channels = n_channels(name, radius_channel, z_channel)
        specs[name] = tf.TensorSpec((batch_dim,) + VIEW_SHAPES[name] + (channels,),
                                    tf.float32 if channels > 1 else tf.uint8)
    return specs[names[0]] if len(names) == 1 else specs
