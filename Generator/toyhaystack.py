"""SN-IEgenerator-style toy generator: straight 3D tracks in the real demonstrator geometry (mm).

Every event has ``n_tracks`` straight tracks starting on the source foil, the Geiger cells they
cross, and per-track truth: the generating line, the calorimeter module it reaches first, and,
for kinked tracks, the break. Everything is vectorised over events, tracks and cells.

Physics, as implemented (all lengths in mm, coordinates of ``snemo.geometry``):

* Vertex on the foil: x = 0, y ~ U(TRACKER_MIN_Y, TRACKER_MAX_Y) (the tracker length, +-2486),
  z ~ U(-(TRACKER_HALF_Z - VERTEX_Z_MARGIN), +(TRACKER_HALF_Z - VERTEX_Z_MARGIN)) (+-1400).
  One vertex per track, or one per event with ``common_vertex`` (double-beta topology).
* Direction: side 0 (x < 0) or 1 (x > 0) with probability 1/2 each, then isotropic over that
  half-space: |dirx| = cos(theta) ~ U(0, 1], azimuth phi ~ U(0, 2 pi) around the x axis, diry =
  sin(theta) cos(phi), dirz = sin(theta) sin(phi). This is the angular distribution of
  electrons emitted isotropically from the foil, before the visibility cuts below.
* A cell (side, layer, column) is hit when its wire (vertical, at geometry.wire_x, wire_y) lies
  within CELL_HALF = 22 mm of the line in the top (x, y) view, the point of the line closest to
  the wire in that view lies between the track's start and its calorimeter, and its z is inside
  the chamber (|z| < TRACKER_HALF_Z). The top-view distance is used because the wires are vertical:
  the drift circle of a Geiger cell is measured in the (x, y) plane, so ``radius`` is that
  distance and ``wirez`` the z of the line at that point.
* The track ends at the first calorimeter plane it reaches: main wall |x| = 435, X-wall
  |y| = 2505.5, gamma veto |z| = 1550 (all outside the tracker volume, so no cell beyond the
  hit calorimeter can be hit). Module numbering follows SN-IEgenerator: main wall column 0..19
  from y and row 0..12 from z (259 mm pitch); X-wall wall 0 at y < 0 / 1 at y > 0, column = depth
  0..1 from |x| (from 29 mm, 203 mm deep), row 0..15 from z (212 mm pitch); gamma veto wall 0 at
  the bottom / 1 at the top, column 0..15 from y (311.5 mm pitch, 10.5 mm gap between the two
  blocks of 8). Inter-module gaps of a few mm inside a wall are ignored.
* Gaps: a line that reaches the X-wall plane at |x| < 29 mm (between the foil and the X-wall) or
  the gamma-veto plane in the 10.5 mm central gap or beyond the outer veto modules
  (|y| > 2497.25) hits no calorimeter; such tracks are redrawn, so every track has a calorimeter
  hit, as in SN-IEgenerator's haystack. The gamma veto is taken to cover the whole depth
  0 < |x| < 435 (the geometry module has no depth for it).
* A cell crossed by two tracks belongs to the one closer to its wire (the first on a tie), so no
  cell appears twice in an event. Every track keeps at least ``min_hits`` cells after that:
  tracks that leave fewer on their own, or miss the calorimeter, are redrawn (direction only
  with a common vertex, vertex and direction otherwise); events in which sharing leaves a track
  with fewer are redrawn whole. The number of tracks of an event is therefore the visible one.
* Kinks (probability ``kink_prob`` per track): the track breaks on the boundary between layers
  L - 1 and L (|x| = TRACKER_MIN_ABS_X + 44 L), L uniform among the layers 1..8 whose boundary
  the line reaches inside the chamber (tracks reaching none stay straight). The direction turns
  in the top view by ``bpangle`` ~ N(0, KINK_ANGLE_SIGMA) (counter-clockwise seen from +z, dirz
  unchanged; redrawn if it would turn back towards the foil). Layers < L are hit by the first
  line, layers >= L by the second, which also decides the calorimeter. Truth: ``break_layer`` = L
  (-1 straight), ``breakpointx/y`` the break (0 straight), ``bpangle`` (rad, 0 straight); ``dir*``
  and ``point*`` stay the first line and the vertex.
* Hits of a track are ordered by path length from the vertex. Noise: Poisson(``noise_hits``)
  extra hits per event in distinct cells no track hit, after the last track's hits, with z ~
  U(-1500, 1500) and radius ~ U(0, 22). Then drift radii of track hits are smeared by
  N(0, ``radius_sigma``) and clipped to [0, 22], and each hit loses its z (wirez = 0, as real data
  without a cathode signal) with probability ``missing_z_fraction``.

Command line (files ``<out>/<N>/toyhaystack_t<N>_<i>.root``)::

    python Generator/toyhaystack.py --events 10000 --tracks 1 2 3 4 --files 2 --seed 1 \\
        [--common-vertex] [--min-hits 3] [--kink-prob 0.1] [--noise-hits 2] \\
        [--radius-sigma 1] [--missing-z-fraction 0.05] [--out data/toyhaystack] [--overwrite]

In Python: ``generate(1000, 2, np.random.default_rng(1), common_vertex=True)`` returns an
:class:`snemo.events.EventBatch`.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

if __name__ == "__main__" and __package__ in (None, ""):  # run as a script: make `snemo` importable
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from snemo import geometry as geo
from snemo.events import HIT_FIELDS, TRACK_FIELDS, EventBatch, offsets_from_counts

NAME = "toyhaystack"
VERTEX_Z_MARGIN = 100.0  # mm kept free between the vertex and the chamber's top and bottom
KINK_ANGLE_SIGMA = math.radians(10.0)  # rad, width of the kink angle distribution
CHUNK_EVENTS = 20_000  # events generated at once: bounds the memory of the candidate-cell arrays
MAX_ROUNDS = 1000  # rejection rounds before giving up (reached only with impossible settings)
MAX_NOISE_HITS = geo.N_CELLS / 4  # mean noise hits per event: a quarter of the cells, far above real rates

_LAYERS = np.arange(geo.N_LAYERS)
_WIRE_ABS_X = geo.LAYER0_WIRE_ABS_X + geo.CELL_PITCH * _LAYERS  # (9,) mm
_BREAK_ABS_X = geo.TRACKER_MIN_ABS_X + geo.CELL_PITCH * _LAYERS  # (9,) mm, inner face of each layer


# ------------------------------------------------------------------------------------------------
# Lines
# ------------------------------------------------------------------------------------------------
def _draw_vertices(n: int, rng: np.random.Generator):
    """Vertices on the foil: (y, z) arrays (n,) in mm; x is 0."""
    y = rng.uniform(geo.TRACKER_MIN_Y, geo.TRACKER_MAX_Y, n)
    half = geo.TRACKER_HALF_Z - VERTEX_Z_MARGIN
    z = rng.uniform(-half, half, n)
    return y, z


def _draw_directions(n: int, rng: np.random.Generator):
    """Side (n,) int and unit directions (ux, uy, uz), isotropic over the half-space of the side."""
    side = rng.integers(0, geo.N_SIDES, n)
    cos_theta = 1.0 - rng.random(n)  # (0, 1]: never parallel to the foil
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    sin_theta = np.sqrt(1.0 - cos_theta ** 2)
    ux = np.where(side == 1, cos_theta, -cos_theta)
    return side, ux, sin_theta * np.cos(phi), sin_theta * np.sin(phi)


def _reachable_break_layers(py, pz, ux, uy, uz):
    """Number of layer boundaries 1..8 that the line from (0, py, pz) crosses inside the chamber (n,)."""
    t = _BREAK_ABS_X[1:][None, :] / np.abs(ux)[:, None]  # (n, 8) path length to each boundary
    inside = ((np.abs(py[:, None] + uy[:, None] * t) < geo.TRACKER_MAX_Y)
              & (np.abs(pz[:, None] + uz[:, None] * t) < geo.TRACKER_HALF_Z))
    return inside.sum(axis=1)  # the line leaves the box once: reachable layers are 1..count


def _draw_kink_angles(ux, uy, rng: np.random.Generator):
    """Kink angles (rad) ~ N(0, KINK_ANGLE_SIGMA), redrawn until the turned line still moves away from the foil."""
    angle = rng.normal(0.0, KINK_ANGLE_SIGMA, len(ux))
    for _ in range(MAX_ROUNDS):
        back = (ux * np.cos(angle) - uy * np.sin(angle)) * np.sign(ux) <= 0.0
        if not back.any():
            return angle
        angle[back] = rng.normal(0.0, KINK_ANGLE_SIGMA, int(back.sum()))
    raise RuntimeError("could not draw kink angles that keep tracks moving away from the foil")


def _draw_lines(vertex_y, vertex_z, kink_prob: float, rng: np.random.Generator) -> dict:
    """Draw one line per vertex (arrays (n,), mm); returns a dict of per-track arrays.

    Keys: side, py, pz (vertex, x = 0), ux, uy, uz (unit direction), break_layer (-1 straight),
    bx, by, bz (break point), vx, vy, vz (direction after the break, = u when straight), bpangle
    (rad), t_break (path length from the vertex to the break, mm).
    """
    n = len(vertex_y)
    side, ux, uy, uz = _draw_directions(n, rng)
    lines = dict(side=side, py=np.array(vertex_y, dtype=np.float64), pz=np.array(vertex_z, dtype=np.float64),
                 ux=ux, uy=uy, uz=uz,
                 break_layer=np.full(n, -1, dtype=np.int64), t_break=np.zeros(n), bpangle=np.zeros(n),
                 bx=np.zeros(n), by=np.zeros(n), bz=np.zeros(n), vx=ux.copy(), vy=uy.copy(), vz=uz.copy())
    if kink_prob <= 0.0:
        return lines
    n_reachable = _reachable_break_layers(vertex_y, vertex_z, ux, uy, uz)
    kinked = (rng.random(n) < kink_prob) & (n_reachable > 0)
    k = np.flatnonzero(kinked)
    layer = 1 + np.floor(rng.random(len(k)) * n_reachable[k]).astype(np.int64)
    angle = _draw_kink_angles(ux[k], uy[k], rng)
    t_break = _BREAK_ABS_X[layer] / np.abs(ux[k])
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    lines["break_layer"][k] = layer
    lines["t_break"][k] = t_break
    lines["bpangle"][k] = angle
    lines["bx"][k] = ux[k] * t_break
    lines["by"][k] = vertex_y[k] + uy[k] * t_break
    lines["bz"][k] = vertex_z[k] + uz[k] * t_break
    lines["vx"][k] = ux[k] * cos_a - uy[k] * sin_a
    lines["vy"][k] = ux[k] * sin_a + uy[k] * cos_a
    return lines


def _last_segment(lines: dict):
    """Start point (x, y, z) and unit direction (x, y, z) of each track's last straight segment."""
    kinked = lines["break_layer"] >= 0
    start = (np.where(kinked, lines["bx"], 0.0), np.where(kinked, lines["by"], lines["py"]),
             np.where(kinked, lines["bz"], lines["pz"]))
    return start, (lines["vx"], lines["vy"], lines["vz"])


# ------------------------------------------------------------------------------------------------
# Calorimeter
# ------------------------------------------------------------------------------------------------
def _plane_distance(start, direction, plane_abs):
    """Path length (mm) along ``direction`` from ``start`` to the plane |coordinate| = plane_abs ahead.

    Inf where the direction is parallel to the plane.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.copysign(plane_abs, direction) - start) / direction
    return np.where(direction != 0.0, t, np.inf)


def first_calorimeter(start, direction):
    """The calorimeter module that straight lines reach first.

    ``start``: (x, y, z) arrays (n,) in mm, inside the tracker volume; ``direction``: (x, y, z) unit
    vectors, x moving away from the foil. Returns a dict of arrays (n,): ``t_calo`` path length to
    the calorimeter (mm), ``calo_type`` (0 main wall, 1 X-wall, 2 gamma veto), ``calo_side``,
    ``calo_wall`` (-1 main wall), ``module_column``, ``module_row`` (module coordinates as in
    SN-IEgenerator; 0 for gamma-veto rows) and ``calo_hit`` (False where the line escapes through
    a gap).
    """
    x0, y0, z0 = start
    dx, dy, dz = direction
    t = np.stack([_plane_distance(x0, dx, geo.MAIN_FRONT_ABS_X), _plane_distance(y0, dy, geo.XWALL_ABS_Y),
                  _plane_distance(z0, dz, geo.GVETO_ABS_Z)])  # (3, n), in calo_type order
    calo_type = np.argmin(t, axis=0)
    t_hit = np.min(t, axis=0)
    x, y, z = x0 + dx * t_hit, y0 + dy * t_hit, z0 + dz * t_hit

    main_column, main_row = geo.main_column_of_y(y), geo.main_row_of_z(z)
    xwall_column = np.floor((np.abs(x) - geo.XWALL_MIN_ABS_X) / geo.XWALL_DEPTH_PITCH).astype(np.int64)
    xwall_row = np.floor((z - geo.XWALL_MIN_Z) / geo.XWALL_ROW_PITCH).astype(np.int64)
    gveto_column = np.where(y < 0.0, np.floor((y - geo.GVETO_MIN_Y) / geo.GVETO_PITCH),
                            geo.GVETO_BLOCK_COLUMNS + np.floor((y - geo.GVETO_BLOCK1_MIN_Y) / geo.GVETO_PITCH))
    gveto_column = gveto_column.astype(np.int64)
    xwall_hit = ((xwall_column >= 0) & (xwall_column < geo.XWALL_COLUMNS)
                 & (xwall_row >= 0) & (xwall_row < geo.XWALL_ROWS))
    gveto_hit = (((y >= geo.GVETO_MIN_Y) & (y < geo.GVETO_BLOCK0_MAX_Y))
                 | ((y >= geo.GVETO_BLOCK1_MIN_Y) & (y < geo.GVETO_MAX_Y)))

    is_main, is_xwall = calo_type == geo.CALO_TYPE_MAIN, calo_type == geo.CALO_TYPE_XWALL
    return dict(
        t_calo=t_hit, calo_type=calo_type, calo_side=(x > 0).astype(np.int64),
        calo_wall=np.where(is_main, -1, np.where(is_xwall, dy > 0, dz > 0).astype(np.int64)),
        module_column=np.where(is_main, main_column, np.where(is_xwall, xwall_column, gveto_column)),
        module_row=np.where(is_main, main_row, np.where(is_xwall, xwall_row, 0)),
        calo_hit=np.where(is_main, True, np.where(is_xwall, xwall_hit, gveto_hit)))


# ------------------------------------------------------------------------------------------------
# Tracker cells
# ------------------------------------------------------------------------------------------------
def _per_layer_segments(lines: dict, t_stop):
    """Segment that crosses each layer: dict of (n, 9) arrays.

    Keys: x, y, z (segment start, mm), ux, uy, uz (direction), t_max (path length along the
    segment to its end), wire_x (mm).
    """
    kinked = lines["break_layer"] >= 0
    second = kinked[:, None] & (_LAYERS[None, :] >= lines["break_layer"][:, None])  # (n, 9)

    def pick(first, after):
        return np.where(second, np.asarray(after)[:, None], np.asarray(first)[:, None])

    sign = np.where(lines["side"] == 1, 1.0, -1.0)
    return dict(x=pick(np.zeros(len(sign)), lines["bx"]), y=pick(lines["py"], lines["by"]),
                z=pick(lines["pz"], lines["bz"]), ux=pick(lines["ux"], lines["vx"]),
                uy=pick(lines["uy"], lines["vy"]), uz=pick(lines["uz"], lines["vz"]),
                t_max=pick(np.where(kinked, lines["t_break"], t_stop), t_stop),
                wire_x=sign[:, None] * _WIRE_ABS_X[None, :])


def _candidate_columns(seg: dict):
    """First column and number of columns (n, 9) that may hold a hit, from the segment's geometry.

    A wire of the layer at y = wy is within CELL_HALF of the top-view line when |wy - y_c| < h, y_c
    being the line's y at the wire plane and h = CELL_HALF / |cos| of the line's top-view angle to
    x; it also lies within CELL_HALF of the part of the segment inside the chamber and before its
    end. Returns (first, count) int64 arrays (n, 9).
    """
    ux, uy, uz = seg["ux"], seg["uy"], seg["uz"]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low = np.where(uz != 0.0, (np.copysign(geo.TRACKER_HALF_Z, -uz) - seg["z"]) / uz, -np.inf)
        t_high = np.where(uz != 0.0, (np.copysign(geo.TRACKER_HALF_Z, uz) - seg["z"]) / uz, np.inf)
    t_a = np.maximum(t_low, 0.0)
    t_b = np.minimum(t_high, seg["t_max"])
    y_a, y_b = seg["y"] + uy * t_a, seg["y"] + uy * t_b
    y_c = seg["y"] + uy * (seg["wire_x"] - seg["x"]) / ux
    half = geo.CELL_HALF * np.hypot(ux, uy) / np.abs(ux)
    low = np.maximum(y_c - half, np.minimum(y_a, y_b) - geo.CELL_HALF)
    high = np.minimum(y_c + half, np.maximum(y_a, y_b) + geo.CELL_HALF)
    first = np.ceil(np.clip((low - geo.COLUMN0_WIRE_Y) / geo.CELL_PITCH, 0, geo.N_COLUMNS))
    last = np.floor(np.clip((high - geo.COLUMN0_WIRE_Y) / geo.CELL_PITCH, -1, geo.N_COLUMNS - 1))
    count = np.where(t_a < t_b, np.maximum(last - first + 1, 0), 0)
    return first.astype(np.int64), count.astype(np.int64)


def track_hits(lines: dict, t_stop):
    """Cells hit by every track on its own (no sharing between tracks yet).

    ``lines``: per-track arrays from the line drawing (see :func:`_draw_lines`); ``t_stop`` (n,):
    path length (mm) of the last segment from its start to the calorimeter. Returns a dict of
    per-hit arrays: ``track`` (0..n-1), ``side``, ``layer``, ``column``, ``distance`` (top-view
    wire-line distance, mm), ``z`` (mm), ordered by track and along each track.

    Hits are made in the order of the path length from the vertex: the closest points of the
    wires of a layer lie inside that layer's band of x, which the track crosses after the bands of
    the layers below, and within a layer they move along the line with the wire's y (columns are
    walked downwards when the line goes towards negative y).
    """
    n = len(lines["ux"])
    seg = _per_layer_segments(lines, t_stop)
    first, count = _candidate_columns(seg)
    count = count.ravel()
    total = int(count.sum())
    flat = np.repeat(np.arange(n * geo.N_LAYERS), count)  # (track, layer) of each candidate
    step = np.arange(total) - (np.cumsum(count) - count)[flat]
    downwards = (seg["uy"] < 0.0).ravel()[flat]
    first = first.ravel()[flat]
    column = np.where(downwards, first + count[flat] - 1 - step, first + step)

    def at(name):
        return seg[name].ravel()[flat]

    ux, uy = at("ux"), at("uy")
    dx = at("wire_x") - at("x")
    dy = geo.wire_y(column) - at("y")
    norm2 = ux * ux + uy * uy
    t = (dx * ux + dy * uy) / norm2
    distance = np.abs(dy * ux - dx * uy) / np.sqrt(norm2)
    z = at("z") + at("uz") * t
    keep = (distance < geo.CELL_HALF) & (t >= 0.0) & (t <= at("t_max")) & (np.abs(z) < geo.TRACKER_HALF_Z)
    track = flat[keep] // geo.N_LAYERS
    return dict(track=track, side=lines["side"][track], layer=flat[keep] % geo.N_LAYERS, column=column[keep],
                distance=distance[keep], z=z[keep])


def _select(columns: dict, mask_or_index) -> dict:
    """The same items of every array of a dict of equally long arrays."""
    return {k: v[mask_or_index] for k, v in columns.items()}


class _Accepted:
    """Tracks accepted round after round of a rejection loop, and their hits.

    ``tracks``: dict of per-track arrays, filled in place; ``hit_parts``: per-hit dicts whose
    ``track`` gives the final track position.
    """

    def __init__(self):
        self.tracks: dict | None = None
        self.hit_parts: list[dict] = []

    def add(self, tracks: dict, hits: dict, position, ok) -> None:
        """Keep the tracks where ``ok`` at their final ``position`` (the first round covers every position)."""
        if self.tracks is None:
            self.tracks = tracks
        else:
            for key, values in self.tracks.items():
                values[position[ok]] = tracks[key][ok]
        kept = _select(hits, ok[hits["track"]])
        kept["track"] = position[kept["track"]]
        self.hit_parts.append(kept)

    def hits(self) -> dict:
        """All kept hits, ordered by track (the order within a track is kept)."""
        merged = {k: np.concatenate([part[k] for part in self.hit_parts]) for k in self.hit_parts[0]}
        return _select(merged, np.argsort(merged["track"], kind="stable"))


def _visible_tracks(vertex_y, vertex_z, keep_vertex: bool, min_hits: int, kink_prob: float,
                    rng: np.random.Generator):
    """Draw one track per vertex, redrawing those that miss the calorimeter or leave < min_hits cells.

    ``keep_vertex``: redraw only the direction (common vertex) instead of vertex and direction.
    Returns (tracks, hits): the per-track dict of :func:`_draw_lines` and :func:`first_calorimeter`
    arrays (n,), and the per-hit dict of :func:`track_hits` with ``track`` indexing the n tracks.
    """
    accepted = _Accepted()
    todo = np.arange(len(vertex_y))
    y, z = vertex_y, vertex_z
    for _ in range(MAX_ROUNDS):
        tracks = _draw_lines(y, z, kink_prob, rng)
        tracks.update(first_calorimeter(*_last_segment(tracks)))
        hits = track_hits(tracks, tracks["t_calo"])
        ok = tracks["calo_hit"] & (np.bincount(hits["track"], minlength=len(todo)) >= min_hits)
        accepted.add(tracks, hits, todo, ok)
        todo = todo[~ok]
        if not len(todo):
            return accepted.tracks, accepted.hits()
        if keep_vertex:
            y, z = vertex_y[todo], vertex_z[todo]
        else:
            y, z = _draw_vertices(len(todo), rng)
    raise RuntimeError(f"tracks with >= {min_hits} hits could not be drawn in {MAX_ROUNDS} rounds")


def _resolve_shared_cells(hits: dict, n_tracks: int) -> dict:
    """Give each cell of an event to the closest track (the first on a tie); keeps the order of the hits.

    ``hits``: per-hit dict of :func:`track_hits`, ``track`` numbering the tracks event-major.
    """
    key = (hits["track"] // n_tracks) * geo.N_CELLS + geo.cell_id(hits["side"], hits["layer"], hits["column"])
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    repeated = sorted_key[1:] == sorted_key[:-1]
    shared = np.zeros(len(key), dtype=bool)
    shared[1:] |= repeated
    shared[:-1] |= repeated
    contested = order[shared]  # the few hits in cells that several tracks cross
    by_distance = contested[np.lexsort((hits["distance"][contested], key[contested]))]
    winner = np.ones(len(by_distance), dtype=bool)
    winner[1:] = key[by_distance][1:] != key[by_distance][:-1]
    keep = np.ones(len(key), dtype=bool)
    keep[contested] = False
    keep[by_distance[winner]] = True
    return _select(hits, keep)


# ------------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------------
def _generate_tracks(n_events: int, n_tracks: int, rng: np.random.Generator, *, common_vertex: bool,
                     min_hits: int, kink_prob: float):
    """Events whose every track keeps >= min_hits cells after sharing.

    Returns (tracks, hits): per-track dict of arrays (n_events * n_tracks,), event-major, and the
    per-hit dict ordered by event, track and path length (``track`` indexes the tracks).
    """
    accepted = _Accepted()
    todo = np.arange(n_events)
    for _ in range(MAX_ROUNDS):
        if common_vertex:
            y, z = (np.repeat(v, n_tracks) for v in _draw_vertices(len(todo), rng))
        else:
            y, z = _draw_vertices(len(todo) * n_tracks, rng)
        tracks, hits = _visible_tracks(y, z, common_vertex, min_hits, kink_prob, rng)
        hits = _resolve_shared_cells(hits, n_tracks)
        per_track = np.bincount(hits["track"], minlength=len(todo) * n_tracks).reshape(len(todo), n_tracks)
        ok = (per_track >= min_hits).all(axis=1)
        position = (todo[:, None] * n_tracks + np.arange(n_tracks)[None, :]).ravel()
        accepted.add(tracks, hits, position, np.repeat(ok, n_tracks))
        todo = todo[~ok]
        if not len(todo):
            return accepted.tracks, accepted.hits()
    raise RuntimeError(f"events of {n_tracks} tracks with >= {min_hits} hits each could not be drawn "
                       f"in {MAX_ROUNDS} rounds; lower min_hits or n_tracks")


def _contains(sorted_keys, keys):
    """Whether each of ``keys`` is in the sorted int array ``sorted_keys`` (bool array like ``keys``)."""
    position = np.searchsorted(sorted_keys, keys)
    found = np.zeros(len(keys), dtype=bool)
    inside = position < len(sorted_keys)
    found[inside] = sorted_keys[position[inside]] == keys[inside]
    return found


def _noise_cells(occupied_keys, n_noise, rng: np.random.Generator):
    """Distinct random free cells: ``n_noise`` (n_events,) per event, avoiding ``occupied_keys``.

    Keys are event * N_CELLS + cell_id; ``n_noise`` must not exceed an event's free cells.
    Returns (event, cell_id) int64 arrays ordered by event.
    """
    occupied = np.sort(np.asarray(occupied_keys, dtype=np.int64), kind="stable")  # radix sort: keys are integers
    placed = np.zeros(0, np.int64)  # sorted keys of the noise hits placed so far
    need = n_noise.astype(np.int64)
    events, cells = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for _ in range(MAX_ROUNDS):
        if not need.any():
            event, cell = np.concatenate(events), np.concatenate(cells)
            order = np.argsort(event, kind="stable")
            return event[order], cell[order]
        event = np.repeat(np.arange(len(need)), need)
        cell = rng.integers(0, geo.N_CELLS, len(event))
        key = event * geo.N_CELLS + cell
        fresh = np.zeros(len(key), dtype=bool)
        fresh[np.unique(key, return_index=True)[1]] = True  # first draw of a cell in this round
        accepted = fresh & ~_contains(occupied, key) & ~_contains(placed, key)
        events.append(event[accepted])
        cells.append(cell[accepted])
        placed = np.sort(np.concatenate([placed, key[accepted]]), kind="stable")
        need -= np.bincount(event[accepted], minlength=len(need))
    raise RuntimeError("could not place the noise hits in free cells")


def _with_noise(hit_event, cells: dict, n_events: int, noise_hits: float, rng: np.random.Generator):
    """Append Poisson(noise_hits) noise hits per event (at most the free cells), after the track hits.

    ``hit_event`` (n_hits,): event of each track hit, ordered; ``cells``: per-hit arrays grid_side,
    grid_layer, grid_column, wirez (mm), radius (mm). Returns the new (hit_event, cells).
    """
    free = geo.N_CELLS - np.bincount(hit_event, minlength=n_events)
    n_noise = np.minimum(rng.poisson(noise_hits, n_events), free)
    if not n_noise.any():
        return hit_event, cells
    occupied = hit_event * geo.N_CELLS + geo.cell_id(cells["grid_side"], cells["grid_layer"], cells["grid_column"])
    noise_event, noise_cell = _noise_cells(occupied, n_noise, rng)
    noise = dict(zip(("grid_side", "grid_layer", "grid_column"), geo.cell_from_id(noise_cell)))
    noise["wirez"] = rng.uniform(-geo.TRACKER_HALF_Z, geo.TRACKER_HALF_Z, len(noise_event))
    noise["radius"] = rng.uniform(0.0, geo.MAX_DRIFT_RADIUS, len(noise_event))
    event = np.concatenate([hit_event, noise_event])
    is_noise = np.arange(len(event)) >= len(hit_event)
    order = np.argsort(event * 2 + is_noise, kind="stable")  # per event: track hits, then noise
    return event[order], {k: np.concatenate([cells[k], noise[k]])[order] for k in cells}


def _track_truth(tracks: dict, hits: dict, n_events: int, n_tracks: int) -> dict:
    """The per-track output fields (TRACK_FIELDS names) from the accepted tracks and their hits."""
    per_track = np.bincount(hits["track"], minlength=n_events * n_tracks).reshape(n_events, n_tracks)
    calo = [tracks[k] for k in ("calo_type", "calo_wall", "module_column", "module_row")]
    grid_column, grid_row = geo.calo_grid_cell(*calo)
    kinked = tracks["break_layer"] >= 0
    return dict(
        track_split=np.cumsum(per_track, axis=1).ravel(), calo_side=tracks["calo_side"],
        calo_column=grid_column, calo_row=grid_row, calo_type=tracks["calo_type"], calo_wall=tracks["calo_wall"],
        calo_om=geo.om_number(calo[0], tracks["calo_side"], *calo[1:]),
        dirx=tracks["ux"], diry=tracks["uy"], dirz=tracks["uz"], pointx=np.zeros(len(kinked)),
        pointy=tracks["py"], pointz=tracks["pz"], break_layer=tracks["break_layer"],
        breakpointx=np.where(kinked, tracks["bx"], 0.0), breakpointy=np.where(kinked, tracks["by"], 0.0),
        bpangle=tracks["bpangle"])


def _generate_chunk(n_events: int, n_tracks: int, rng: np.random.Generator, *, common_vertex: bool,
                    min_hits: int, kink_prob: float, noise_hits: float, radius_sigma: float,
                    missing_z_fraction: float) -> EventBatch:
    """:func:`generate` for one chunk of events (arguments already checked)."""
    tracks, hits = _generate_tracks(n_events, n_tracks, rng, common_vertex=common_vertex, min_hits=min_hits,
                                    kink_prob=kink_prob)
    radius = hits["distance"]
    if radius_sigma > 0.0:
        radius = np.clip(radius + rng.normal(0.0, radius_sigma, len(radius)), 0.0, geo.MAX_DRIFT_RADIUS)
    hit_event = hits["track"] // n_tracks
    cells = dict(grid_side=hits["side"], grid_layer=hits["layer"], grid_column=hits["column"], wirez=hits["z"],
                 radius=radius)
    if noise_hits > 0.0:
        hit_event, cells = _with_noise(hit_event, cells, n_events, noise_hits, rng)
    if missing_z_fraction > 0.0:
        cells["wirez"] = np.where(rng.random(len(hit_event)) < missing_z_fraction, 0.0, cells["wirez"])
    return EventBatch(
        hit_offsets=offsets_from_counts(np.bincount(hit_event, minlength=n_events)),
        hits={k: v.astype(HIT_FIELDS[k]) for k, v in cells.items()},
        track_offsets=offsets_from_counts(np.full(n_events, n_tracks)),
        tracks={k: np.asarray(v).astype(TRACK_FIELDS[k])
                for k, v in _track_truth(tracks, hits, n_events, n_tracks).items()})


def _check_options(n_events, n_tracks, rng, min_hits, kink_prob, noise_hits, radius_sigma, missing_z_fraction):
    """Raise ValueError naming the first bad argument of :func:`generate`."""
    def is_int(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    def is_number(value):
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
            and math.isfinite(value)

    if not is_int(n_events) or n_events < 0:
        raise ValueError(f"n_events must be an integer >= 0, got {n_events!r}")
    if not is_int(n_tracks) or n_tracks < 1:
        raise ValueError(f"n_tracks must be an integer >= 1, got {n_tracks!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                         f"got {type(rng).__name__}")
    if not is_int(min_hits) or not 1 <= min_hits <= geo.N_LAYERS:
        raise ValueError(f"min_hits must be an integer from 1 to {geo.N_LAYERS}, got {min_hits!r}")
    limits = (("kink_prob", kink_prob, 1.0), ("missing_z_fraction", missing_z_fraction, 1.0),
              ("noise_hits", noise_hits, MAX_NOISE_HITS), ("radius_sigma", radius_sigma, math.inf))
    for name, value, high in limits:
        if not is_number(value) or not 0.0 <= value <= high:
            bound = f"[0, {high:g}]" if math.isfinite(high) else ">= 0 and finite"
            raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def generate(n_events: int, n_tracks: int, rng: np.random.Generator, *, common_vertex: bool = False,
             min_hits: int = 3, kink_prob: float = 0.0, noise_hits: float = 0.0, radius_sigma: float = 0.0,
             missing_z_fraction: float = 0.0) -> EventBatch:
    """Generate ``n_events`` events of ``n_tracks`` visible straight tracks each (physics: module docstring).

    ``rng``: a ``numpy.random.Generator`` (the same seed gives the same events). ``common_vertex``:
    all tracks of an event start at one vertex. ``min_hits``: cells every track keeps (1..9).
    ``kink_prob``: probability that a track breaks. ``noise_hits``: mean number (Poisson) of noise
    hits per event. ``radius_sigma``: drift-radius smearing, mm. ``missing_z_fraction``: fraction
    of hits with wirez set to 0.

    Returns an :class:`~snemo.events.EventBatch` with every HIT_FIELDS array (wirez and radius in
    mm) and every TRACK_FIELDS array: track_split, calorimeter truth (type, side, wall, om, 22 x 15
    grid column and row), the line (dirx..dirz unit, pointx..pointz vertex in mm) and the break
    (break_layer, breakpointx/y in mm, bpangle in rad). Raises ValueError for bad arguments.

    >>> batch = generate(100, 2, np.random.default_rng(1), common_vertex=True)
    >>> batch.n_tracks[:3]
    array([2, 2, 2])
    """
    _check_options(n_events, n_tracks, rng, min_hits, kink_prob, noise_hits, radius_sigma, missing_z_fraction)
    options = dict(common_vertex=bool(common_vertex), min_hits=int(min_hits), kink_prob=float(kink_prob),
                   noise_hits=float(noise_hits), radius_sigma=float(radius_sigma),
                   missing_z_fraction=float(missing_z_fraction))
    chunks = [_generate_chunk(min(CHUNK_EVENTS, n_events - start), int(n_tracks), rng, **options)
              for start in range(0, n_events, CHUNK_EVENTS)]
    if not chunks:
        return _generate_chunk(0, int(n_tracks), rng, **options)
    return chunks[0] if len(chunks) == 1 else EventBatch.concatenate(chunks)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (shared generation flags plus the toyhaystack options)."""
    from snemo.datagen import add_generation_flags

    parser = argparse.ArgumentParser(
        description="Generate SN-IEgenerator-style toy events (straight 3D tracks from the foil in the "
                    "demonstrator geometry, mm) into <out>/<N>/toyhaystack_t<N>_<i>.root.")
    add_generation_flags(parser, default_out="data/toyhaystack")
    parser.add_argument("--common-vertex", action="store_true",
                        help="all tracks of an event start at one vertex (double-beta topology)")
    parser.add_argument("--min-hits", type=int, default=3,
                        help="cells every track keeps after sharing, 1..9; tracks with fewer are redrawn "
                             "(default %(default)s)")
    parser.add_argument("--kink-prob", type=float, default=0.0,
                        help="probability that a track breaks at a random layer (default %(default)s)")
    parser.add_argument("--noise-hits", type=float, default=0.0,
                        help="mean number (Poisson) of noise hits per event in free cells (default %(default)s)")
    parser.add_argument("--radius-sigma", type=float, default=0.0,
                        help="Gaussian smearing of drift radii in mm, clipped to [0, 22] (default %(default)s)")
    parser.add_argument("--missing-z-fraction", type=float, default=0.0,
                        help="fraction of hits whose z is missing, written as wirez = 0 (default %(default)s)")
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status (2 on bad input or refused overwrite)."""
    from snemo.datagen import run_generator_cli

    def generate_from_args(args):
        options = dict(common_vertex=args.common_vertex, min_hits=args.min_hits, kink_prob=args.kink_prob,
                       noise_hits=args.noise_hits, radius_sigma=args.radius_sigma,
                       missing_z_fraction=args.missing_z_fraction)
        _check_options(1, 1, np.random.default_rng(0), args.min_hits, args.kink_prob, args.noise_hits,
                       args.radius_sigma, args.missing_z_fraction)
        return lambda n_events, n_tracks, rng: generate(n_events, n_tracks, rng, **options)

    return run_generator_cli(generate_from_args, build_parser(), NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
