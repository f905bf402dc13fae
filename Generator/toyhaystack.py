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
* Hits of a track are ordered by path length from the vertex.
* Detector effects (:mod:`snemo.detector`, the same flags and meaning as ``my_generator.py``):
  dead cells (``dead_cells``, a fixed set per ``dead_cell_seed``, the dataset ``--seed``) are
  never hit; after sharing, each track hit is lost with probability ``inefficiency``; a track left
  under ``min_hits`` by dead cells is redrawn, an event in which inefficiency leaves a track under
  ``min_hits`` is redrawn whole. Then drift radii of track hits are smeared by N(0,
  ``radius_sigma``) and clipped to [0, 22]; Poisson(``noise_hits``) noise hits per event go to
  distinct free cells (no track hit, not dead) after the last track's hits, with z ~ U(-1500,
  1500) and radius ~ U(0, 22); each hit loses its z with probability ``missing_z_fraction``
  (``wirez_missing`` = 1, ``wirez`` = 0; the branch is written only when that fraction is > 0).

Command line (files ``<out>/<N>/toyhaystack_t<N>_<i>.root``)::

    python Generator/toyhaystack.py --events 10000 --tracks 1 2 3 4 --files 2 --seed 1 \\
        [--common-vertex] [--min-hits 3] [--realistic] [--kink-prob 0.1] [--noise-hits 2] \\
        [--inefficiency 0.02] [--dead-cells 0.01] [--missing-z-fraction 0.05] [--radius-sigma 1] \\
        [--out data/toyhaystack] [--overwrite]

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

from snemo import detector
from snemo import geometry as geo
from snemo.events import HIT_FIELDS, TRACK_FIELDS, EventBatch, offsets_from_counts

from Generator.toyhaystack_tracks import VERTEX_Z_MARGIN, generate_tracks  # noqa: F401 (VERTEX_Z_MARGIN: API)

NAME = "toyhaystack"
CHUNK_EVENTS = 20_000  # events generated at once: bounds the memory of the candidate-cell arrays
MAX_NOISE_HITS = detector.MAX_NOISE_HITS


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
                    min_hits: int, kink_prob: float, effects: dict, dead_mask) -> EventBatch:
    """:func:`generate` for one chunk of events (arguments already checked)."""
    tracks, hits = generate_tracks(n_events, n_tracks, rng, common_vertex=common_vertex, min_hits=min_hits,
                                   kink_prob=kink_prob, inefficiency=effects["inefficiency"], dead_mask=dead_mask)
    hit_event = hits["track"] // n_tracks
    cells = dict(grid_side=hits["side"], grid_layer=hits["layer"], grid_column=hits["column"], wirez=hits["z"],
                 radius=hits["distance"])
    cells = {k: v.astype(HIT_FIELDS[k]) for k, v in cells.items()}  # narrow first: the effects move less memory
    hit_event, cells = detector.apply_hit_effects(hit_event, cells, n_events, effects, rng,
                                                  max_radius=geo.MAX_DRIFT_RADIUS, dead_mask=dead_mask)
    return EventBatch(
        hit_offsets=offsets_from_counts(np.bincount(hit_event, minlength=n_events)),
        hits={k: v.astype(HIT_FIELDS[k], copy=False) for k, v in cells.items()},
        track_offsets=offsets_from_counts(np.full(n_events, n_tracks)),
        tracks={k: np.asarray(v).astype(TRACK_FIELDS[k])
                for k, v in _track_truth(tracks, hits, n_events, n_tracks).items()})


def _check_options(n_events, n_tracks, rng, min_hits, kink_prob) -> None:
    """Raise ValueError naming the first bad track argument of :func:`generate` (effects: detector.check_effects)."""
    def is_int(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not is_int(n_events) or n_events < 0:
        raise ValueError(f"n_events must be an integer >= 0, got {n_events!r}")
    if not is_int(n_tracks) or n_tracks < 1:
        raise ValueError(f"n_tracks must be an integer >= 1, got {n_tracks!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                         f"got {type(rng).__name__}")
    if not is_int(min_hits) or not 1 <= min_hits <= geo.N_LAYERS:
        raise ValueError(f"min_hits must be an integer from 1 to {geo.N_LAYERS}, got {min_hits!r}")
    is_number = isinstance(kink_prob, (int, float, np.integer, np.floating)) and not isinstance(kink_prob, bool)
    if not is_number or not math.isfinite(kink_prob) or not 0.0 <= kink_prob <= 1.0:
        raise ValueError(f"kink_prob must be a number [0, 1], got {kink_prob!r}")


def _check_capacity(n_tracks: int, min_hits: int, dead_cells: float) -> None:
    """Refuse what no redraw can give: n_tracks * min_hits distinct live cells (no cell is listed twice)."""
    live = geo.N_CELLS - int(round(dead_cells * geo.N_CELLS))
    if n_tracks * min_hits > live:
        raise ValueError(f"{n_tracks} tracks of >= {min_hits} hits need {n_tracks * min_hits} distinct cells; "
                         f"the tracker has {live} live cells")


def generate(n_events: int, n_tracks: int, rng: np.random.Generator, *, common_vertex: bool = False,
             min_hits: int = 3, kink_prob: float = 0.0, noise_hits: float = 0.0, inefficiency: float = 0.0,
             dead_cells: float = 0.0, missing_z_fraction: float = 0.0, radius_sigma: float = 0.0,
             dead_cell_seed: int = 0) -> EventBatch:
    """Generate ``n_events`` events of ``n_tracks`` visible tracks each (physics: module docstring).

    ``rng``: a ``numpy.random.Generator`` (the same seed gives the same events). ``common_vertex``:
    all tracks of an event start at one vertex. ``min_hits``: cells every track keeps (1..9).
    ``kink_prob``: probability that a track breaks. Detector effects (:mod:`snemo.detector`;
    defaults: clean): ``noise_hits`` mean number (Poisson) of noise hits per event,
    ``inefficiency`` probability that a track hit is lost, ``dead_cells`` fraction of dead cells
    (the set is drawn from ``dead_cell_seed`` alone: pass the dataset seed), ``missing_z_fraction``
    probability that a hit has no z, ``radius_sigma`` drift-radius smearing in mm.

    Returns an :class:`~snemo.events.EventBatch` with every HIT_FIELDS array (wirez and radius in
    mm; ``wirez_missing`` only when ``missing_z_fraction`` > 0) and every TRACK_FIELDS array:
    track_split, calorimeter truth (type, side, wall, om, 22 x 15 grid column and row), the line
    (dirx..dirz unit, pointx..pointz vertex in mm) and the break (break_layer, breakpointx/y in mm,
    bpangle in rad). Raises ValueError for bad arguments.

    >>> batch = generate(100, 2, np.random.default_rng(1), common_vertex=True)
    >>> batch.n_tracks[:3]
    array([2, 2, 2])
    """
    _check_options(n_events, n_tracks, rng, min_hits, kink_prob)
    effects = detector.check_effects(noise_hits=noise_hits, inefficiency=inefficiency, dead_cells=dead_cells,
                                     missing_z_fraction=missing_z_fraction, radius_sigma=radius_sigma,
                                     dead_cell_seed=dead_cell_seed)
    _check_capacity(int(n_tracks), int(min_hits), effects["dead_cells"])
    dead_mask = detector.dead_cell_mask(effects["dead_cells"], effects["dead_cell_seed"])
    options = dict(common_vertex=bool(common_vertex), min_hits=int(min_hits), kink_prob=float(kink_prob),
                   effects=effects, dead_mask=dead_mask if dead_mask.any() else None)
    chunks = [_generate_chunk(min(CHUNK_EVENTS, n_events - start), int(n_tracks), rng, **options)
              for start in range(0, n_events, CHUNK_EVENTS)]
    if not chunks:
        return _generate_chunk(0, int(n_tracks), rng, **options)
    return chunks[0] if len(chunks) == 1 else EventBatch.concatenate(chunks)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser: shared generation and detector-effect flags plus the toyhaystack options."""
    from snemo.datagen import make_generator_parser

    parser = make_generator_parser(
        "Generate SN-IEgenerator-style toy events (straight 3D tracks from the foil in the demonstrator "
        "geometry, mm) into <out>/<N>/toyhaystack_t<N>_<i>.root.", default_out="data/toyhaystack")
    parser.add_argument("--common-vertex", action="store_true",
                        help="all tracks of an event start at one vertex (double-beta topology)")
    parser.add_argument("--min-hits", type=int, default=3,
                        help="cells every track keeps after sharing, dead cells and inefficiency, 1..9; tracks "
                             "with fewer are redrawn (default %(default)s)")
    detector.add_detector_flags(parser, kinks=True)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status (2 on bad input or refused overwrite)."""
    from snemo.datagen import run_generator_cli

    def generate_from_args(args):
        options = dict(common_vertex=args.common_vertex, min_hits=args.min_hits,
                       **detector.detector_options(args, kinks=True))
        if not 1 <= args.min_hits <= geo.N_LAYERS:
            raise ValueError(f"--min-hits must be an integer from 1 to {geo.N_LAYERS}, got {args.min_hits}")
        _check_capacity(max(args.tracks), args.min_hits, options["dead_cells"])
        return lambda n_events, n_tracks, rng: generate(n_events, n_tracks, rng, **options)

    return run_generator_cli(generate_from_args, build_parser(), NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
