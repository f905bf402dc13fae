"""toyhaystack's tracks: lines from the foil, their calorimeter module, the cells they hit, the redraws.

The physics is described in :mod:`Generator.toyhaystack` (lengths in mm, coordinates of
``snemo.geometry``). Everything is vectorised over tracks and cells; the rejection loops redraw
only what failed (tracks that miss the calorimeter or keep fewer than ``min_hits`` cells after dead
cells; events in which sharing or inefficiency leaves a track under ``min_hits``).
"""

from __future__ import annotations

import math

import numpy as np

from snemo import detector
from snemo import geometry as geo

VERTEX_Z_MARGIN = 100.0  # mm kept free between the vertex and the chamber's top and bottom
KINK_ANGLE_SIGMA = math.radians(10.0)  # rad, width of the kink angle distribution
MAX_ROUNDS = 1000  # rejection rounds before giving up (reached only with impossible settings)

_LAYERS = np.arange(geo.N_LAYERS)
_WIRE_ABS_X = geo.LAYER0_WIRE_ABS_X + geo.CELL_PITCH * _LAYERS  # (9,) mm
_BREAK_ABS_X = geo.TRACKER_MIN_ABS_X + geo.CELL_PITCH * _LAYERS  # (9,) mm, inner face of each layer


# ------------------------------------------------------------------------------------------------
# Lines
# ------------------------------------------------------------------------------------------------
def draw_vertices(n: int, rng: np.random.Generator):
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


def select(columns: dict, mask_or_index) -> dict:
    """The same items of every array of a dict of equally long arrays."""
    return {k: v[mask_or_index] for k, v in columns.items()}


class Accepted:
    """Tracks accepted round after round of a rejection loop, and their hits.

    ``tracks``: dict of per-track arrays, filled in place; ``hit_parts``: per-hit dicts whose
    ``track`` gives the final track position.
    """

    def __init__(self):
        self.tracks: dict | None = None
        self.hit_parts: list[dict] = []

    def add(self, tracks: dict, hits: dict, position, ok, hit_mask=None) -> None:
        """Keep the tracks where ``ok`` at their final ``position`` (the first round covers every position).

        ``hit_mask``: bool per hit, the hits that exist (None: all).
        """
        if self.tracks is None:
            self.tracks = tracks
        else:
            for key, values in self.tracks.items():
                values[position[ok]] = tracks[key][ok]
        keep = ok[hits["track"]]
        kept = select(hits, keep if hit_mask is None else keep & hit_mask)
        kept["track"] = position[kept["track"]]
        self.hit_parts.append(kept)

    def hits(self) -> dict:
        """All kept hits, ordered by track (the order within a track is kept)."""
        merged = {k: np.concatenate([part[k] for part in self.hit_parts]) for k in self.hit_parts[0]}
        return select(merged, np.argsort(merged["track"], kind="stable"))


def visible_tracks(vertex_y, vertex_z, keep_vertex: bool, min_hits: int, kink_prob: float,
                   rng: np.random.Generator, dead_mask=None):
    """Draw one track per vertex, redrawing those that miss the calorimeter or leave < min_hits live cells.

    ``keep_vertex``: redraw only the direction (common vertex) instead of vertex and direction.
    ``dead_mask``: bool (2034,) by cell id, or None; hits in dead cells are dropped before counting.
    Returns (tracks, hits): the per-track dict of :func:`_draw_lines` and :func:`first_calorimeter`
    arrays (n,), and the per-hit dict of :func:`track_hits` with ``track`` indexing the n tracks.
    """
    accepted = Accepted()
    todo = np.arange(len(vertex_y))
    y, z = vertex_y, vertex_z
    for _ in range(MAX_ROUNDS):
        tracks = _draw_lines(y, z, kink_prob, rng)
        tracks.update(first_calorimeter(*_last_segment(tracks)))
        hits = track_hits(tracks, tracks["t_calo"])
        live = None if dead_mask is None else ~dead_mask[geo.cell_id(hits["side"], hits["layer"], hits["column"])]
        seen = hits["track"] if live is None else hits["track"][live]
        ok = tracks["calo_hit"] & (np.bincount(seen, minlength=len(todo)) >= min_hits)
        accepted.add(tracks, hits, todo, ok, live)
        todo = todo[~ok]
        if not len(todo):
            return accepted.tracks, accepted.hits()
        if keep_vertex:
            y, z = vertex_y[todo], vertex_z[todo]
        else:
            y, z = draw_vertices(len(todo), rng)
    raise RuntimeError(f"tracks with >= {min_hits} hits could not be drawn in {MAX_ROUNDS} rounds")


def resolve_shared_cells(hits: dict, n_tracks: int) -> dict:
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
    return select(hits, keep)


# ------------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------------
def generate_tracks(n_events: int, n_tracks: int, rng: np.random.Generator, *, common_vertex: bool,
                    min_hits: int, kink_prob: float, inefficiency: float = 0.0, dead_mask=None):
    """Events whose every track keeps >= min_hits cells after dead cells, sharing and inefficiency.

    ``inefficiency``: probability that a track hit is lost (after sharing: a lost cell is lost
    for every track); ``dead_mask``: bool (2034,) by cell id, or None. Returns (tracks, hits):
    per-track dict of arrays (n_events * n_tracks,), event-major, and the per-hit dict ordered by
    event, track and path length (``track`` indexes the tracks).
    """
    accepted = Accepted()
    todo = np.arange(n_events)
    for _ in range(MAX_ROUNDS):
        if common_vertex:
            y, z = (np.repeat(v, n_tracks) for v in draw_vertices(len(todo), rng))
        else:
            y, z = draw_vertices(len(todo) * n_tracks, rng)
        tracks, hits = visible_tracks(y, z, common_vertex, min_hits, kink_prob, rng, dead_mask)
        hits = resolve_shared_cells(hits, n_tracks)
        kept = detector.hits_kept(len(hits["track"]), inefficiency, rng) if inefficiency > 0.0 else None
        seen = hits["track"] if kept is None else hits["track"][kept]
        per_track = np.bincount(seen, minlength=len(todo) * n_tracks).reshape(len(todo), n_tracks)
        ok = (per_track >= min_hits).all(axis=1)
        position = (todo[:, None] * n_tracks + np.arange(n_tracks)[None, :]).ravel()
        accepted.add(tracks, hits, position, np.repeat(ok, n_tracks), kept)
        todo = todo[~ok]
        if not len(todo):
            return accepted.tracks, accepted.hits()
    raise RuntimeError(f"events of {n_tracks} tracks with >= {min_hits} hits each could not be drawn "
                       f"in {MAX_ROUNDS} rounds; lower --min-hits or the number of tracks")
