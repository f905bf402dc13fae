"""Straight-line fit of each event's hits, as a small input that a calorimeter model reads beside its views.

A track in this tracker is close to a straight line in the top view (column against layer) and
in the front view (z against layer). The calorimeter cell it hits is where that line reaches the
calorimeter walls, beyond the last layer, which a CNN finds hard to read precisely off binned
images. :func:`line_features` fits both lines to every event's hits at once (one event = one
track or one cluster) by least squares and returns where they reach the tracker's outer face,
their slopes and how well the event constrains them, scaled to about [-1, 1], followed by the
two wall positions encoded on fine radial-basis grids (one Gaussian bump per tracker column,
one per 30 mm of z), from which a dense layer reads any binning of the wall into calorimeter
cells almost linearly, and the grid cell itself where the line meets the wall (the toys' grid
convention), one-hot: :func:`grid_binning` maps it onto logits a model can start from. The
model learns the corrections (tracks the line gets wrong, mirror images, other geometries).

The top-view line is fitted to the drift circles, not to the wires: a track passes at the drift
radius from each wire it fires, on one side or the other. :func:`top_line` starts from the
orthogonal least-squares line through the wires and then, a few times over, moves each wire's
point to where its drift circle is closest to the current line (the tangent point, on the
line's side of the wire) and refits. The z line is then fitted against u at the foot of each
wire's perpendicular on that line, which is where the wire's z is read: the middle of the track's
crossing of the cell; a hit far from that z line (:data:`Z_OUTLIER`), which a clusterer took from
another track where the two cross in the top view, is dropped from it (:func:`_z_line`).

A track whose hits all lie in one layer runs nearly along the layers, and the fit through its
wires is a line along the wire row that says neither which way the track goes nor on which side
of the wires it passes. Such a track starts at the layer's foil-side face (u = layer, the foil
itself for layer 0) and moves away from the foil: :func:`_one_layer_start` puts each hit on the
foil side of its wire before the hit of smallest radius (where the track crosses the wire row)
and on the far side after it, along the way the track goes (towards the end of its hits that
touches the first or last column: it leaves through that X-wall; otherwise from the end of
larger radius, where it entered), and the tangent-point refits start from the line through
those points. Wires that all lie on one line otherwise (a track along a column or a diagonal) fit
two mirror images of the track equally well; the features keep the line through the wires, half
way between them (the best guess of where the track meets the wall), while a clusterer, which
needs a line that touches every drift circle, asks for one of the two (``cross_collinear``: cross
the wires' line where the radius is smallest, on one side before and the other after).

Coordinates (cell units, as the toys): u = layer + 0.5 (the wire), c = column + 0.5, z = wirez /
44 mm, radius / 44 mm; only hits with z enter the z fit. Vectorised: per-event sums with
``np.bincount``.
"""

from __future__ import annotations

import numpy as np

from snemo import geometry as geo
from snemo.events import EventBatch

FEATURE_NAMES = ("column_at_wall", "z_at_wall", "top_angle", "front_angle", "layers_spanned",
                 "hits_with_z", "column_at_foil", "z_at_foil")
_WALL_U = float(geo.N_LAYERS)  # the tracker's outer face, u = 9
_HALF_HEIGHT = geo.TRACKER_HALF_Z / geo.CELL_PITCH  # 34.09 cell units
COLUMN_CENTRES = np.arange(-5.5, geo.N_COLUMNS + 6.0, 1.0)  # column centres at the wall, -5.5 .. 118.5 (125)
Z_CENTRES = np.arange(-1.3, 1.3001, 0.02)  # z at the wall / half height, about 30 mm apart (131)
N_BUMP_FEATURES = len(FEATURE_NAMES) + len(COLUMN_CENTRES) + len(Z_CENTRES)  # 264: what the first models read
N_FEATURES = N_BUMP_FEATURES + geo.CALO_GRID_COLUMNS + geo.CALO_GRID_ROWS  # 301: then the line's grid cell
DRIFT_ITERATIONS = 6  # tangent-point refits after the fit through the wires (converged by 4 on tracks of the toys)
# A hit this far (cell units) from the fitted line is not the track's (noise, or another track's hit that
# a clusterer took where the two cross): at most OUTLIER_ROUNDS such hits are dropped per event, one at a time.
TOP_OUTLIER = 0.25  # 11 mm between the drift circle and the top-view line
Z_OUTLIER = 1.0  # 44 mm between the wire's z and the z line
OUTLIER_ROUNDS = 6
OUTLIER_ITERATIONS = 3  # tangent-point refits after each drop


def _fit(event, u, y, n_events: int):
    """Per-event least-squares line y = a + b u: (a, b, well_posed) arrays (n_events,).

    An event whose hits all share one u (or that has fewer than 2 hits) gets b = 0, a = mean y
    and ``well_posed`` False.
    """
    n = np.bincount(event, minlength=n_events).astype(np.float64)
    su = np.bincount(event, u, n_events)
    sy = np.bincount(event, y, n_events)
    suu = np.bincount(event, u * u, n_events)
    suy = np.bincount(event, u * y, n_events)
    det = n * suu - su * su
    well_posed = det > 1e-9
    slope = np.where(well_posed, (n * suy - su * sy) / np.where(well_posed, det, 1.0), 0.0)
    intercept = np.where(n > 0, (sy - slope * su) / np.maximum(n, 1.0), 0.0)
    return intercept, slope, well_posed


def _orthogonal_fit(event, u, c, n_events: int):
    """Per-event orthogonal least-squares line through points (u, c).

    Returns (mean_u, mean_c, direction_u, direction_c), arrays (n_events,): a point of the line
    and its unit direction (the major axis of the points' scatter; direction_u >= 0). A single
    point, or none, gets the direction (1, 0).
    """
    n = np.maximum(np.bincount(event, minlength=n_events).astype(np.float64), 1.0)
    mean_u = np.bincount(event, u, n_events) / n
    mean_c = np.bincount(event, c, n_events) / n
    du, dc = u - mean_u[event], c - mean_c[event]
    var_u = np.bincount(event, du * du, n_events)
    var_c = np.bincount(event, dc * dc, n_events)
    cov = np.bincount(event, du * dc, n_events)
    angle = 0.5 * np.arctan2(2.0 * cov, var_u - var_c)  # in [-pi/2, pi/2]: direction_u >= 0
    return mean_u, mean_c, np.cos(angle), np.sin(angle)


def _one_layer_start(event, u, c, radius, n_events: int):
    """Start points for tracks whose hits all lie in one layer (see the module docstring).

    Takes the hits' wires (u, c) and radii (cell units) and their event index. Returns (one_layer,
    u_start, travel): bool (n_events,) for events with 2 or more hits all at one u; per hit, its
    wire's u moved by its radius to the foil side (before the track crosses the wire row) or the
    far side (after); and per event the direction of travel along the columns (+1 or -1, 0 for
    other events).
    """
    n_hits = np.bincount(event, minlength=n_events)
    big = np.inf
    u_min, u_max = np.full(n_events, big), np.full(n_events, -big)
    c_min, c_max = np.full(n_events, big), np.full(n_events, -big)
    np.minimum.at(u_min, event, u), np.maximum.at(u_max, event, u)
    np.minimum.at(c_min, event, c), np.maximum.at(c_max, event, c)
    one_layer = (n_hits >= 2) & (u_max - u_min < 1e-6)
    first_c, last_c = 0.5, geo.N_COLUMNS - 0.5  # wires of the first and last columns
    leaves_high = np.isclose(c_max, last_c) & ~np.isclose(c_min, first_c)
    leaves_low = np.isclose(c_min, first_c) & ~np.isclose(c_max, last_c)
    r_at_low, r_at_high = np.zeros(n_events), np.zeros(n_events)
    np.maximum.at(r_at_low, event, np.where(c == c_min[event], radius, 0.0))
    np.maximum.at(r_at_high, event, np.where(c == c_max[event], radius, 0.0))
    travel = np.where(leaves_high, 1, np.where(leaves_low, -1, np.where(r_at_low >= r_at_high, 1, -1)))
    travel = np.where(one_layer, travel, 0)
    r_min = np.full(n_events, big)
    np.minimum.at(r_min, event, radius)
    # where the track crosses the wire row: the hit of smallest radius (the first along travel if tied),
    # as a position along the travel (travel * column)
    crossing = np.full(n_events, big)
    along = travel[event] * c
    np.minimum.at(crossing, event, np.where(radius == r_min[event], along, big))
    beyond = along > crossing[event]
    return one_layer, np.where(beyond, u + radius, u - radius), travel


def _worst_beyond(event, off, use, limit: float, n_events: int) -> np.ndarray:
    """Per hit: is it its event's used hit farthest off (``off``, -1 for unused hits), beyond
    ``limit``, in an event that keeps more than 3 used hits? bool (n_hits,)."""
    worst = np.full(n_events, -1.0)
    np.maximum.at(worst, event, off)
    kept = np.bincount(event[use], minlength=n_events)
    return use & (off == worst[event]) & (off > limit) & (kept[event] > 3)


def top_line(event, u, c, radius, n_events: int, iterations: int = DRIFT_ITERATIONS,
             outlier_rounds: int = OUTLIER_ROUNDS, cross_collinear: bool = False):
    """Per-event top-view line fitted to the drift circles: centres (u, c), radii ``radius`` (cell units).

    Starts from :func:`_orthogonal_fit` through the centres (for tracks in one layer, through the
    points of :func:`_one_layer_start`); each iteration takes, per hit, the point of its circle
    closest to the current line and refits; with ``cross_collinear``, wires that all lie on one line
    start from one of the track's two mirror images (module docstring). Returns (mean_u, mean_c,
    direction_u, direction_c) as
    :func:`_orthogonal_fit` (a one-layer track's direction_c has the sign of its travel), and the
    signed distance of each wire from the final line (n_hits,), cell units.
    """
    def signed_distance(line):  # of each wire from the line, and the line's unit normal at each hit
        mean_u, mean_c, dir_u, dir_c = (part[event] for part in line)
        return (u - mean_u) * -dir_c + (c - mean_c) * dir_u, -dir_c, dir_u

    one_layer, u_start, travel = _one_layer_start(event, u, c, radius, n_events)
    u0 = np.where(one_layer[event], u_start, u)
    line = _orthogonal_fit(event, u0, c, n_events)
    collinear = np.zeros(n_events, dtype=bool)
    if cross_collinear:
        signed, normal_u, normal_c = signed_distance(line)
        off_line = np.zeros(n_events)
        np.maximum.at(off_line, event, np.abs(signed))
        collinear = (np.bincount(event, minlength=n_events) >= 2) & (off_line < 1e-9) & ~one_layer
    if collinear.any():  # wires on one line (a column, a diagonal): cross it at the smallest radius
        along = (u - line[0][event]) * line[2][event] + (c - line[1][event]) * line[3][event]
        r_min = np.full(n_events, np.inf)
        np.minimum.at(r_min, event, radius)
        crossing = np.full(n_events, np.inf)
        np.minimum.at(crossing, event, np.where(radius == r_min[event], along, np.inf))
        side = np.where(along > crossing[event], -1.0, 1.0) * radius * collinear[event]  # one of two mirror images
        line = _orthogonal_fit(event, u0 + side * normal_u, c + side * normal_c, n_events)
    use = np.ones(len(u), dtype=bool)
    for round_ in range(outlier_rounds + 1):
        for _ in range(iterations if round_ == 0 else OUTLIER_ITERATIONS):
            signed, normal_u, normal_c = signed_distance(line)
            towards = -np.sign(signed) * radius  # the tangent point lies on the line's side of the wire
            line = _orthogonal_fit(event[use], (u + towards * normal_u)[use], (c + towards * normal_c)[use],
                                   n_events)
        if round_ == outlier_rounds:
            break
        off = np.where(use, np.abs(np.abs(signed_distance(line)[0]) - radius), -1.0)
        drop = _worst_beyond(event, off, use, TOP_OUTLIER, n_events)
        if not drop.any():
            break
        use &= ~drop
    mean_u, mean_c, dir_u, dir_c = line
    dir_c = np.where(one_layer, travel * np.abs(dir_c), dir_c)  # u grows along the travel
    line = (mean_u, mean_c, dir_u, dir_c)
    return line + (signed_distance(line)[0],)


def _z_line(event, u, z, use, n_events: int, rounds: int = OUTLIER_ROUNDS):
    """Per-event z = a + b u fitted to the hits ``use`` (bool (n_hits,)), robust to a few foreign hits.

    After the least-squares fit (:func:`_fit`), up to ``rounds`` times, each event drops its hit
    farthest from its line if that hit is more than :data:`Z_OUTLIER` (cell units) away and the
    event keeps 3 hits or more, and is refitted. Returns (a, b, well_posed) as :func:`_fit`.
    """
    use = use.copy()
    for round_ in range(rounds + 1):
        a, b, posed = _fit(event[use], u[use], z[use], n_events)
        if round_ == rounds:
            break
        off = np.where(use, np.abs(z - (a[event] + b[event] * u)), -1.0)
        drop = _worst_beyond(event, off, use, Z_OUTLIER, n_events)
        if not drop.any():
            break
        use &= ~drop
    return a, b, posed


def grid_binning(n_features: int = N_FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Linear maps from :func:`line_features` to the grid cell the fitted line alone predicts.

    Returns float32 0/1 matrices (n_features, 22) and (n_features, 15). With all 301 features:
    the identity on the line's grid column and row (the last 37 features). With the first 264
    (a model of the first kind): which grid column (row) each column (z) bump's centre lies in,
    a softer reading near the bin edges. Multiplied into the features: logits a model can start from.
    """
    columns = np.zeros((n_features, geo.CALO_GRID_COLUMNS), np.float32)
    rows = np.zeros((n_features, geo.CALO_GRID_ROWS), np.float32)
    if n_features == N_FEATURES:
        columns[N_BUMP_FEATURES + np.arange(geo.CALO_GRID_COLUMNS), np.arange(geo.CALO_GRID_COLUMNS)] = 1.0
        start = N_BUMP_FEATURES + geo.CALO_GRID_COLUMNS
        rows[start + np.arange(geo.CALO_GRID_ROWS), np.arange(geo.CALO_GRID_ROWS)] = 1.0
        return columns, rows
    if n_features != N_BUMP_FEATURES:
        raise ValueError(f"line features are {N_FEATURES} or the first {N_BUMP_FEATURES}, got {n_features}")
    column, _ = geo.toy_grid_cell(COLUMN_CENTRES, np.zeros_like(COLUMN_CENTRES))
    _, row = geo.toy_grid_cell(np.zeros_like(Z_CENTRES), Z_CENTRES * _HALF_HEIGHT)
    first_column = len(FEATURE_NAMES)
    first_z = first_column + len(COLUMN_CENTRES)
    columns[first_column + np.arange(len(COLUMN_CENTRES)), column] = 1.0
    rows[first_z + np.arange(len(Z_CENTRES)), row] = 1.0
    return columns, rows


def _bumps(values: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, len(centres)) Gaussian bumps exp(-(value - centre)^2 / (2 spacing^2)) of each value."""
    spacing = centres[1] - centres[0]
    return np.exp(-0.5 * ((values[:, None] - centres[None, :]) / spacing) ** 2)


def hit_coordinates(batch: EventBatch):
    """The hits of ``batch`` in cell units: (u, c, z, radius, with_z), arrays (n_hits,).

    u = layer + 0.5 (the wire), c = column + 0.5, z = wirez / 44 mm, radius / 44 mm (clipped at 0);
    ``with_z`` (bool) is False where the hit has no z measurement.
    """
    hits = batch.hits
    return (hits["grid_layer"].astype(np.float64) + 0.5, hits["grid_column"].astype(np.float64) + 0.5,
            hits["wirez"].astype(np.float64) / geo.CELL_PITCH,
            np.clip(hits["radius"].astype(np.float64), 0.0, None) / geo.CELL_PITCH, ~batch.z_missing())


def fit_lines(event, u, c, radius, z, with_z, n_events: int, cross_collinear: bool = False) -> dict:
    """Per-event 3D line of the hits (cell units, as :func:`hit_coordinates`; ``event`` their event index).

    ``cross_collinear`` as :func:`top_line`. Returns a dict of arrays (n_events,): the top-view
    line of :func:`top_line` ("mean_u",
    "mean_c", "dir_u", "dir_c") and the z line z = a_z + b_z u of :func:`_z_line` ("a_z", "b_z",
    "posed_z"), and "signed" (n_hits,), each wire's signed distance from its event's line.
    """
    mean_u, mean_c, dir_u, dir_c, signed = top_line(event, u, c, radius, n_events, cross_collinear=cross_collinear)
    foot_u = u + signed * dir_c[event]  # u of the foot of each wire's perpendicular on the line
    a_z, b_z, posed_z = _z_line(event, foot_u, z, with_z, n_events)
    return {"mean_u": mean_u, "mean_c": mean_c, "dir_u": dir_u, "dir_c": dir_c, "a_z": a_z, "b_z": b_z,
            "posed_z": posed_z, "signed": signed}


def line_cells(batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
    """The grid (column, row) where each event's fitted line meets the wall (the toys' grid
    convention, the one-hot cell of :func:`line_features`): int64 (n,) each."""
    features = line_features(batch)
    columns, rows = grid_binning()
    return np.argmax(features @ columns, axis=1), np.argmax(features @ rows, axis=1)


def mirror_lines(lines: dict, event, u, c, z, with_z, n_events: int) -> dict:
    """The lines of :func:`fit_lines` reflected about the line through their own wires, z refitted.

    Wires that all lie on one line (one layer, a column, a diagonal) fit a track and its mirror
    image about that line equally well; a clusterer tells them apart by the hits beyond the
    cluster that each one meets. Takes the same per-hit arrays as :func:`fit_lines` (cell units)
    and returns a dict of the same keys, (n_events,) each, "signed" (n_hits,) from the new lines.
    """
    axis_u, axis_c, axis_du, axis_dc = _orthogonal_fit(event, u, c, n_events)

    def reflect(vec_u, vec_c):  # about the axis direction: 2 (v . d) d - v
        dot = vec_u * axis_du + vec_c * axis_dc
        return 2.0 * dot * axis_du - vec_u, 2.0 * dot * axis_dc - vec_c

    offset_u, offset_c = reflect(lines["mean_u"] - axis_u, lines["mean_c"] - axis_c)
    mean_u, mean_c = axis_u + offset_u, axis_c + offset_c
    dir_u, dir_c = reflect(lines["dir_u"], lines["dir_c"])
    signed = (u - mean_u[event]) * -dir_c[event] + (c - mean_c[event]) * dir_u[event]
    a_z, b_z, posed_z = _z_line(event, u + signed * dir_c[event], z, with_z, n_events)
    return {"mean_u": mean_u, "mean_c": mean_c, "dir_u": dir_u, "dir_c": dir_c, "a_z": a_z, "b_z": b_z,
            "posed_z": posed_z, "signed": signed}


def hit_residuals(lines: dict, line, u, c, radius, z) -> tuple[np.ndarray, np.ndarray]:
    """How far hits lie from lines of :func:`fit_lines`, cell units: (top, z), arrays (n,).

    ``line`` (n,) is the index of the line each hit (u, c, radius, z: (n,)) is compared with, which
    need not be its own. top: distance between the hit's drift circle and the top-view line; z:
    between its z and the z line at the foot of its wire's perpendicular (meaningless for a hit
    without z: mask it).
    """
    dir_u, dir_c = lines["dir_u"][line], lines["dir_c"][line]
    signed = (u - lines["mean_u"][line]) * -dir_c + (c - lines["mean_c"][line]) * dir_u
    foot_u = u + signed * dir_c
    return np.abs(np.abs(signed) - radius), np.abs(z - (lines["a_z"][line] + lines["b_z"][line] * foot_u))


def line_features(batch: EventBatch) -> np.ndarray:
    """(n_events, 301) float32 line-fit features of each event's hits.

    The first 8 (:data:`FEATURE_NAMES`):

    column_at_wall: fitted column at u = 9 / 113 (clipped to [-0.5, 1.5]); z_at_wall: fitted z at
    u = 9 / 1500 mm (clipped to [-1.5, 1.5]); top_angle, front_angle: arctan of the slopes /
    (pi / 2), in [-1, 1] (top: +-1 for a line along the layers, parallel to the foil); layers_spanned:
    (last - first layer + 1) / 9; hits_with_z: fraction of the hits with z; column_at_foil and
    z_at_foil: the lines at u = 0, scaled and clipped as at the wall. Then the fitted column at
    u = 9 on :data:`COLUMN_CENTRES` and the fitted z at u = 9 (/ half height) on :data:`Z_CENTRES`
    (:func:`_bumps`); last, the grid column (22) and row (15) where the line meets the wall, one-hot
    (:func:`snemo.geometry.toy_grid_cell`). Models of the first kind read the first 264 (:data:`N_BUMP_FEATURES`). An
    event without hits is all zeros.
    """
    n_events = len(batch)
    event = batch.hit_event_index()
    u, column, z, radius, with_z = hit_coordinates(batch)
    n_hits = np.bincount(event, minlength=n_events)
    first = np.full(n_events, geo.N_LAYERS, np.int64)
    last = np.full(n_events, -1, np.int64)
    layer = batch.hits["grid_layer"].astype(np.int64)
    np.minimum.at(first, event, layer)
    np.maximum.at(last, event, layer)
    lines = fit_lines(event, u, column, radius, z, with_z, n_events)
    mean_u, mean_c, dir_u, dir_c = (lines[key] for key in ("mean_u", "mean_c", "dir_u", "dir_c"))
    a_z, b_z, posed_z = lines["a_z"], lines["b_z"], lines["posed_z"]
    # a line along the layers (dir_u = 0: every hit in one layer, radii equal) never reaches u = 9:
    # its slope is capped, so its column at the wall is far beyond the grid (an X-wall)
    b_col = dir_c / np.maximum(dir_u, 1e-6)
    a_col = mean_c - b_col * mean_u
    top_angle = np.arctan2(dir_c, dir_u) / (np.pi / 2)
    front_angle = np.where(~posed_z & (n_hits > 1), 0.0, np.arctan(b_z) / (np.pi / 2))
    width = float(geo.N_COLUMNS)
    column_at_wall = np.clip(a_col + b_col * _WALL_U, -0.5 * width, 1.5 * width)
    z_at_wall = np.clip((a_z + b_z * _WALL_U) / _HALF_HEIGHT, -1.5, 1.5)
    scalars = np.stack([
        column_at_wall / width,
        z_at_wall,
        top_angle,
        front_angle,
        np.where(n_hits > 0, (last - first + 1) / geo.N_LAYERS, 0.0),
        np.where(n_hits > 0, np.bincount(event[with_z], minlength=n_events) / np.maximum(n_hits, 1), 0.0),
        np.clip(a_col / width, -0.5, 1.5),
        np.clip(a_z / _HALF_HEIGHT, -1.5, 1.5),
    ], axis=1)
    grid_column, grid_row = geo.toy_grid_cell(column_at_wall, z_at_wall * _HALF_HEIGHT)
    features = np.concatenate([scalars, _bumps(column_at_wall, COLUMN_CENTRES), _bumps(z_at_wall, Z_CENTRES),
                               np.eye(geo.CALO_GRID_COLUMNS)[grid_column], np.eye(geo.CALO_GRID_ROWS)[grid_row]], axis=1)
    features[n_hits == 0] = 0.0
    return features.astype(np.float32)
