"""Vectorised Python twin of the ROOT macro ``my_generator.cxx``: straight tracks in the tracker.

The toy works in cell units (1 = ``geometry.CELL_PITCH`` = 44 mm), as the original macro:

* ``u`` is the distance from the tracker's inner face (|x| = ``geometry.TRACKER_MIN_ABS_X``,
  31 mm), layer L spans u in [L, L + 1] and its wires sit at u = L + 0.5; the toy has no gap
  between the foil and layer 0, so u = 0 stands for the foil;
* ``col`` is the coordinate along the foil, column C spans [C, C + 1], its wire at C + 0.5;
* z is the height; the chamber half height ``dh`` is ``geometry.TRACKER_HALF_Z / CELL_PITCH``
  (1500 mm, where the original used 1550 mm).

A track is the line col = x_event + slope_top * u, z = z_event + slope_front * u with
slope = tan(angle), both angles ~ U(0.01, 3.131592) rad, x_event ~ U(0, 113), z_event ~ U(-dh, dh).
A cell is hit when the point of the line closest to its wire in the top view lies inside the cell
square and its z is inside the chamber; ``wirez`` is that z and ``radius`` the top-view distance
from the line to the wire, both in mm (radius reaches 31 mm in cell corners, as in the original).
Tracks with fewer than ``min_hits`` hits are redrawn. The calorimeter cell is where the line
reaches u = 9 (the tracker's outer face stands for the calorimeter walls in this toy), in the
22 x 15 grid convention of the original.

Detector effects (:mod:`snemo.detector`, the same flags and meaning as toyhaystack; the ROOT macro
keeps the original's clean physics): hits in dead cells and lost hits (inefficiency) are removed
before the ``min_hits`` test, so a track left with fewer is redrawn; then track-hit radii are
smeared (clipped to [0, 31.1] mm, the cell's half diagonal), noise hits go to free cells after the
last track hit, and hits lose their z (``wirez_missing``, written only when that fraction is > 0).
Two tracks may still list the same cell, as in the original; noise never does.

Command line: ``python my_generator/my_generator.py --events N --tracks 1 2 3 4 --files F --seed S
[--sides 1|2] [--min-hits 5] [--realistic] [--noise-hits MEAN] [--inefficiency P] [--dead-cells
FRACTION] [--missing-z-fraction P] [--radius-sigma MM]``.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

if __name__ == "__main__" and __package__ in (None, ""):  # run as a script: make `snemo` importable
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from snemo import detector
from snemo import geometry as geo
from snemo.events import HIT_FIELDS, TRACK_FIELDS, EventBatch, offsets_from_counts

NAME = "my_generator"
ANGLE_MIN, ANGLE_MAX = 0.01, 3.131592  # rad, range of both track angles, as in the original
HALF_HEIGHT = geo.TRACKER_HALF_Z / geo.CELL_PITCH  # chamber half height in cell units (34.09)
WALL_U = float(geo.N_LAYERS)  # u of the tracker's outer face, where the calorimeter cell is read
MAX_POOL = 1 << 18  # tracks drawn per rejection round: bounds the memory of one round
_ACCEPTANCE_GUESS = 0.85  # fraction of drawn tracks with >= 5 hits (measured 0.88); sizes the pool


def _track_hits(x_event, z_event, slope_top, slope_front):
    """Hit cells of many lines. Arrays (n,) in cell units in; returns per-hit arrays.

    Returns (track, layer, column, z, distance): the track index (0..n-1), the cell, the z of the
    closest point and the top-view line-wire distance (cell units), ordered by track, layer, column.

    For a wire at (u_w, col_w) and the line col = x + s u, let k = col_w - (x + s u_w). The closest
    point of the line lies at du = s k / (1 + s^2), dcol = -k / (1 + s^2) from the wire, so the
    original test |du| < 0.5 and |dcol| < 0.5 is |k| < 0.5 (1 + s^2) / max(1, |s|), and the z
    test |z_event + s_front (u_w + du)| < dh is another interval of k: the hit columns of a layer
    are one run of consecutive columns, found without testing every cell.
    """
    n = len(x_event)
    track = np.repeat(np.arange(n, dtype=np.int64), geo.N_LAYERS)  # one (track, layer) pair each
    layer = np.tile(np.arange(geo.N_LAYERS, dtype=np.int64), n)
    x, s, ze, sf = x_event[track], slope_top[track], z_event[track], slope_front[track]
    wire_u = layer + 0.5
    centre = x + s * wire_u  # column of the line at the wire's u
    inv = 1.0 / (1.0 + s * s)
    half = 0.5 / (inv * np.maximum(1.0, np.abs(s)))  # |k| < half: closest point inside the square
    slope_k = sf * s * inv  # dz / dk
    base_z = ze + sf * wire_u
    k_a, k_b = (-HALF_HEIGHT - base_z) / slope_k, (HALF_HEIGHT - base_z) / slope_k
    k_low = np.maximum(-half, np.minimum(k_a, k_b))
    k_high = np.minimum(half, np.maximum(k_a, k_b))
    # Columns C with k = C + 0.5 - centre strictly inside (k_low, k_high).
    low = np.clip(centre - 0.5 + k_low, -2.0, geo.N_COLUMNS + 1.0)
    high = np.clip(centre - 0.5 + k_high, -2.0, geo.N_COLUMNS + 1.0)
    first = np.maximum(np.floor(low).astype(np.int64) + 1, 0)
    last = np.minimum(np.ceil(high).astype(np.int64) - 1, geo.N_COLUMNS - 1)
    counts = np.maximum(last - first + 1, 0)

    pair = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    column = first[pair] + (np.arange(len(pair), dtype=np.int64) - starts[pair])
    k = column + (0.5 - centre[pair])
    z = base_z[pair] + slope_k[pair] * k
    distance = np.abs(k) * np.sqrt(inv[pair])
    return track[pair], layer[pair], column, z, distance


def _calorimeter(x_event, z_event, slope_top, slope_front):
    """Calorimeter truth of lines (cell units in): (grid column, grid row, type, wall), int arrays.

    Grid as in the original (:func:`snemo.geometry.toy_grid_cell` of the line at u = 9): column
    0 / 21 beyond the column range, else int(col / 113 * 20 + 1), and row 0 / 14 beyond the chamber
    height, else int((dh + z) / (2 dh) * 13 + 1).
    Type: gamma veto for rows 0 / 14, X-wall for columns 0 / 21; a corner cell (both) gets the
    type of the boundary the line crosses first. Wall: X-wall 0 / 1 for column 0 / 21, gamma veto
    0 / 1 for bottom / top, -1 on the main wall.
    """
    col = x_event + slope_top * WALL_U
    z = z_event + slope_front * WALL_U
    width = float(geo.N_COLUMNS)
    grid_col, grid_row = geo.toy_grid_cell(col, z)
    beyond_col = (grid_col == 0) | (grid_col == geo.CALO_GRID_COLUMNS - 1)
    beyond_row = (grid_row == 0) | (grid_row == geo.CALO_GRID_ROWS - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u_col = np.where(slope_top > 0, width - x_event, -x_event) / slope_top  # u leaving the columns
        u_z = np.where(slope_front > 0, HALF_HEIGHT - z_event, -HALF_HEIGHT - z_event) / slope_front
    xwall = beyond_col & ~(beyond_row & (u_z < u_col))
    gveto = beyond_row & ~xwall
    calo_type = np.where(xwall, geo.CALO_TYPE_XWALL, np.where(gveto, geo.CALO_TYPE_GVETO, geo.CALO_TYPE_MAIN))
    wall = np.where(xwall, (grid_col > 0).astype(np.int64), np.where(gveto, (grid_row > 0).astype(np.int64), -1))
    return grid_col, grid_row, calo_type, wall


def _draw_tracks(n_tracks: int, rng: np.random.Generator, sides: int, min_hits: int, inefficiency: float = 0.0,
                 dead_mask=None):
    """Draw ``n_tracks`` lines with at least ``min_hits`` visible hits by bulk rejection sampling.

    Each round draws a pool (angle_top, angle_front, x_event, z_event, side, in this order),
    removes hits in dead cells (``dead_mask``: bool (2034,) by cell id, or None) and hits lost with
    probability ``inefficiency``, and keeps its valid tracks in draw order. Returns (track params
    dict, hit tuple of _track_hits).
    """
    params = {k: [np.zeros(0)] for k in ("x", "z", "slope_top", "slope_front")}
    params["side"] = [np.zeros(0, dtype=np.int64)]
    empty = np.zeros(0, dtype=np.int64)
    hit_parts = [(empty, empty, empty, np.zeros(0), np.zeros(0))]
    accepted, empty_rounds = 0, 0
    while accepted < n_tracks:
        needed = n_tracks - accepted
        pool = min(MAX_POOL, (int(math.ceil(needed / _ACCEPTANCE_GUESS)) + 16) << min(empty_rounds, 20))
        slope_top = np.tan(rng.uniform(ANGLE_MIN, ANGLE_MAX, pool))
        slope_front = np.tan(rng.uniform(ANGLE_MIN, ANGLE_MAX, pool))
        x = rng.uniform(0.0, geo.N_COLUMNS, pool)
        z = rng.uniform(-HALF_HEIGHT, HALF_HEIGHT, pool)
        side = rng.integers(0, 2, pool) if sides == 2 else np.ones(pool, dtype=np.int64)
        track, layer, column, wz, dist = _track_hits(x, z, slope_top, slope_front)
        if inefficiency > 0.0 or dead_mask is not None:
            seen = detector.hits_kept(len(track), inefficiency, rng)
            if dead_mask is not None:
                seen &= ~dead_mask[geo.cell_id(side[track], layer, column)]
            track, layer, column, wz, dist = (v[seen] for v in (track, layer, column, wz, dist))
        counts = np.bincount(track, minlength=pool)
        keep = np.flatnonzero(counts >= min_hits)[:needed]
        if len(keep) == 0 and pool >= MAX_POOL:
            raise ValueError(f"min_hits={min_hits}: no track out of {pool} drawn has that many hits")
        empty_rounds = empty_rounds + 1 if len(keep) == 0 else 0
        kept = np.zeros(pool, dtype=bool)
        kept[keep] = True
        new_index = np.cumsum(kept) - 1 + accepted  # index among all accepted tracks
        on_kept = kept[track]
        hit_parts.append((new_index[track[on_kept]], layer[on_kept], column[on_kept], wz[on_kept],
                          dist[on_kept]))
        for key, values in (("x", x), ("z", z), ("slope_top", slope_top), ("slope_front", slope_front),
                            ("side", side)):
            params[key].append(values[keep])
        accepted += len(keep)
    params = {k: np.concatenate(v) for k, v in params.items()}
    hits = tuple(np.concatenate([part[i] for part in hit_parts]) for i in range(5))
    return params, hits


def generate(n_events: int, n_tracks: int, rng: np.random.Generator, *, sides: int = 2, min_hits: int = 5,
             noise_hits: float = 0.0, inefficiency: float = 0.0, dead_cells: float = 0.0,
             missing_z_fraction: float = 0.0, radius_sigma: float = 0.0, dead_cell_seed: int = 0) -> EventBatch:
    """Generate ``n_events`` events of ``n_tracks`` straight tracks each (clean by default: no noise hits).

    ``rng``: a NumPy Generator; the same seed gives identical events. ``sides``: 2 draws each
    track's side at random, 1 puts every track on side 1 (x > 0) as the original macro did.
    ``min_hits``: tracks with fewer (visible) hits are redrawn. Detector effects
    (:mod:`snemo.detector`): ``noise_hits`` mean number (Poisson) of noise hits per event,
    ``inefficiency`` probability that a track hit is lost, ``dead_cells`` fraction of dead cells
    (the set is drawn from ``dead_cell_seed`` alone: pass the dataset seed), ``missing_z_fraction``
    probability that a hit has no z, ``radius_sigma`` drift-radius smearing in mm.

    Returns an :class:`~snemo.events.EventBatch`. Per hit: grid_side, grid_layer (0 next to the
    foil on both sides), grid_column, wirez (mm), radius (mm), ordered by track, layer, column,
    then each event's noise hits; ``wirez_missing`` when ``missing_z_fraction`` > 0. Per track:
    track_split (exclusive end offsets), calo_side (the track's side), calo_column and calo_row
    (22 x 15 grid), calo_type, calo_wall, calo_om (-1: this toy does not model the exact optical
    module) and the generating line: unit vector (dirx, diry, dirz) pointing away from the foil
    and the point (pointx, pointy, pointz) where the line crosses the tracker's inner face,
    |x| = 31 mm (u = 0 of the toy), in mm in the demonstrator frame.

    Example: ``generate(1000, 2, np.random.default_rng(7))``.
    """
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    if n_tracks < 1:
        raise ValueError(f"n_tracks must be >= 1, got {n_tracks}")
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, got {sides}")
    if min_hits < 1:
        raise ValueError(f"min_hits must be >= 1, got {min_hits}")
    effects = detector.check_effects(noise_hits=noise_hits, inefficiency=inefficiency, dead_cells=dead_cells,
                                     missing_z_fraction=missing_z_fraction, radius_sigma=radius_sigma,
                                     dead_cell_seed=dead_cell_seed)
    dead_mask = detector.dead_cell_mask(effects["dead_cells"], effects["dead_cell_seed"])
    dead_mask = dead_mask if dead_mask.any() else None
    n_total = n_events * n_tracks
    params, (track, layer, column, wz, dist) = _draw_tracks(n_total, rng, sides, min_hits, effects["inefficiency"],
                                                            dead_mask)
    x, z, slope_top, slope_front, side = (params[k] for k in ("x", "z", "slope_top", "slope_front", "side"))

    hits_per_track = np.bincount(track, minlength=n_total)
    cells = {"grid_side": side[track], "grid_layer": layer, "grid_column": column,
             "wirez": wz * geo.CELL_PITCH, "radius": dist * geo.CELL_PITCH}
    cells = {k: v.astype(HIT_FIELDS[k]) for k, v in cells.items()}  # narrow first: the effects move less memory
    hit_event, hits = detector.apply_hit_effects(track // n_tracks, cells, n_events, effects, rng,
                                                 max_radius=geo.MAX_HIT_RADIUS, dead_mask=dead_mask)

    per_event = hits_per_track.reshape(n_events, n_tracks)
    track_split = np.cumsum(per_event, axis=1).reshape(-1)
    grid_col, grid_row, calo_type, wall = _calorimeter(x, z, slope_top, slope_front)
    sign = np.where(side == 0, -1.0, 1.0)
    norm = np.sqrt(1.0 + slope_top ** 2 + slope_front ** 2)
    tracks = {
        "track_split": track_split, "calo_side": side, "calo_column": grid_col, "calo_row": grid_row,
        "calo_type": calo_type, "calo_wall": wall, "calo_om": np.full(n_total, -1),
        "dirx": sign / norm, "diry": slope_top / norm, "dirz": slope_front / norm,
        "pointx": sign * geo.TRACKER_MIN_ABS_X, "pointy": geo.TRACKER_MIN_Y + geo.CELL_PITCH * x,
        "pointz": geo.CELL_PITCH * z,
    }
    tracks = {k: np.broadcast_to(v, (n_total,)).astype(TRACK_FIELDS[k]) for k, v in tracks.items()}
    return EventBatch(offsets_from_counts(np.bincount(hit_event, minlength=n_events)), hits,
                      offsets_from_counts(np.full(n_events, n_tracks)), tracks)


def build_parser() -> argparse.ArgumentParser:
    """The command line: the shared generation and detector-effect flags plus --sides and --min-hits."""
    from snemo.datagen import make_generator_parser

    parser = make_generator_parser(
        "Generate straight-track toy events (vectorised twin of my_generator.cxx) into "
        "<out>/<N>/my_generator_t<N>_<i>.root.", default_out="data/my_generator")
    parser.add_argument("--sides", type=int, choices=(1, 2), default=2,
                        help="2: each track on a random side; 1: all on side 1 like the original (default 2)")
    parser.add_argument("--min-hits", type=int, default=5,
                        help="redraw tracks with fewer visible hits (after dead cells and inefficiency; default 5)")
    detector.add_detector_flags(parser)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status (2 on bad input or refused overwrite)."""
    from snemo.datagen import run_generator_cli

    def generate_from_args(args):
        if args.min_hits < 1:
            raise ValueError(f"--min-hits must be >= 1, got {args.min_hits}")
        options = dict(sides=args.sides, min_hits=args.min_hits, **detector.detector_options(args))
        return lambda n_events, n_tracks, rng: generate(n_events, n_tracks, rng, **options)

    return run_generator_cli(generate_from_args, build_parser(), NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
