"""Straight-line fit of each event's hits, as a small input that a calorimeter model reads beside its views.

A track in this tracker is close to a straight line in the top view (column against layer) and
in the front view (z against layer). The calorimeter cell it hits is where that line reaches the
calorimeter walls, beyond the last layer, which a CNN finds hard to read precisely off binned
images. :func:`line_features` fits both lines to every event's hits at once (one event = one
track or one cluster) by least squares and returns where they reach the tracker's outer face,
their slopes and how well the event constrains them, scaled to about [-1, 1], followed by the
two wall positions encoded on fine radial-basis grids (one Gaussian bump per tracker column,
one per 30 mm of z), from which a dense layer reads any binning of the wall into calorimeter
cells almost linearly. The model learns the corrections (edges, tracks leaving through an X-wall
or the gamma veto, tracks that do not reach the wall).

The top-view line is fitted to the drift circles, not to the wires: a track passes at the drift
radius from each wire it fires, on one side or the other. :func:`top_line` starts from the
orthogonal least-squares line through the wires and then, a few times over, moves each wire's
point to where its drift circle is closest to the current line (the tangent point, on the
line's side of the wire) and refits. The z line is then fitted against u at the foot of each
wire's perpendicular on that line, which is where the wire's z is read: the middle of the track's
crossing of the cell.

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
N_FEATURES = len(FEATURE_NAMES) + len(COLUMN_CENTRES) + len(Z_CENTRES)  # 264
DRIFT_ITERATIONS = 6  # tangent-point refits after the fit through the wires (converged by 4 on tracks of the toys)


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


def top_line(event, u, c, radius, n_events: int, iterations: int = DRIFT_ITERATIONS):
    """Per-event top-view line fitted to the drift circles: centres (u, c), radii ``radius`` (cell units).

    Starts from :func:`_orthogonal_fit` through the centres; each iteration takes, per hit, the
    point of its circle closest to the current line and refits. Returns (mean_u, mean_c,
    direction_u, direction_c) as :func:`_orthogonal_fit`, and the signed distance of each wire
    from the final line (n_hits,), cell units.
    """
    def signed_distance(line):  # of each wire from the line, and the line's unit normal at each hit
        mean_u, mean_c, dir_u, dir_c = (part[event] for part in line)
        return (u - mean_u) * -dir_c + (c - mean_c) * dir_u, -dir_c, dir_u

    line = _orthogonal_fit(event, u, c, n_events)
    for _ in range(iterations):
        signed, normal_u, normal_c = signed_distance(line)
        towards = -np.sign(signed) * radius  # the tangent point lies on the line's side of the wire
        line = _orthogonal_fit(event, u + towards * normal_u, c + towards * normal_c, n_events)
    return line + (signed_distance(line)[0],)


def _bumps(values: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, len(centres)) Gaussian bumps exp(-(value - centre)^2 / (2 spacing^2)) of each value."""
    spacing = centres[1] - centres[0]
    return np.exp(-0.5 * ((values[:, None] - centres[None, :]) / spacing) ** 2)


def line_features(batch: EventBatch) -> np.ndarray:
    """(n_events, 264) float32 line-fit features of each event's hits.

    The first 8 (:data:`FEATURE_NAMES`):

    column_at_wall: fitted column at u = 9 / 113 (clipped to [-0.5, 1.5]); z_at_wall: fitted z at
    u = 9 / 1500 mm (clipped to [-1.5, 1.5]); top_angle, front_angle: arctan of the slopes /
    (pi / 2), in [-1, 1] (top: +-1 for a line along the layers, parallel to the foil); layers_spanned:
    (last - first layer + 1) / 9; hits_with_z: fraction of the hits with z; column_at_foil and
    z_at_foil: the lines at u = 0, scaled and clipped as at the wall. Then the fitted column at
    u = 9 on :data:`COLUMN_CENTRES` and the fitted z at u = 9 (/ half height) on :data:`Z_CENTRES`
    (:func:`_bumps`). An event without hits is all zeros.
    """
    n_events = len(batch)
    event = batch.hit_event_index()
    hits = batch.hits
    u = hits["grid_layer"].astype(np.float64) + 0.5
    column = hits["grid_column"].astype(np.float64) + 0.5
    z = hits["wirez"].astype(np.float64) / geo.CELL_PITCH
    radius = np.clip(hits["radius"].astype(np.float64), 0.0, None) / geo.CELL_PITCH
    with_z = ~batch.z_missing()
    n_hits = np.bincount(event, minlength=n_events)
    first = np.full(n_events, geo.N_LAYERS, np.int64)
    last = np.full(n_events, -1, np.int64)
    layer = hits["grid_layer"].astype(np.int64)
    np.minimum.at(first, event, layer)
    np.maximum.at(last, event, layer)
    mean_u, mean_c, dir_u, dir_c, signed = top_line(event, u, column, radius, n_events)
    # a line along the layers (dir_u = 0: every hit in one layer, radii equal) never reaches u = 9:
    # its slope is capped, so its column at the wall is far beyond the grid (an X-wall)
    b_col = dir_c / np.maximum(dir_u, 1e-6)
    a_col = mean_c - b_col * mean_u
    foot_u = u + signed * dir_c[event]  # u of the foot of each wire's perpendicular on the line
    a_z, b_z, posed_z = _fit(event[with_z], foot_u[with_z], z[with_z], n_events)
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
    features = np.concatenate([scalars, _bumps(column_at_wall, COLUMN_CENTRES), _bumps(z_at_wall, Z_CENTRES)], axis=1)
    features[n_hits == 0] = 0.0
    return features.astype(np.float32)
