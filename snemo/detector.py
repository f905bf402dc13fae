"""Detector effects that both toy generators add to their clean tracks, with the same flags and meaning.

Real tracker data is not the clean toy. What this module models (lengths in mm, probabilities in
[0, 1]):

* **dead cells** (``dead_cells``, a fraction of the 2034 cells): a fixed set of cells per dataset,
  derived from ``dead_cell_seed`` alone (the dataset ``--seed``), so every file and every track
  count of one dataset shares it; a dead cell never fires, noise included. The sets are nested: a
  larger fraction at the same seed contains the smaller one.
* **inefficiency** (``inefficiency``): each track hit is lost with this probability.
* **noise hits** (``noise_hits``, the Poisson mean per event): cells that fire without a track,
  drawn uniformly among the event's free cells (not hit by a track of the event, not dead) of both
  sides, with z ~ U(-1500, 1500) and radius ~ U(0, 22); they are stored after the event's last
  track hit, so ``track_split`` stays valid and "after the last offset" means noise.
* **missing z** (``missing_z_fraction``): each hit (noise included) loses its z: ``wirez_missing``
  = 1 and ``wirez`` = 0, as real data without a cathode signal.
* **radius smearing** (``radius_sigma``, mm): track-hit drift radii get N(0, sigma) added and are
  clipped to [0, the generator's largest radius].

The generators redraw a track that keeps fewer than their minimum hits after dead cells and
inefficiency, so the number of tracks of an event stays the visible one. :data:`REALISTIC` is the
``--realistic`` preset; :func:`add_detector_flags` and :func:`detector_options` give both command
lines the same flags.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from snemo import geometry as geo

EFFECTS = ("noise_hits", "inefficiency", "dead_cells", "missing_z_fraction", "radius_sigma")
REALISTIC = {"noise_hits": 2.0, "inefficiency": 0.02, "dead_cells": 0.01, "missing_z_fraction": 0.05,
             "radius_sigma": 1.0, "kink_prob": 0.1}  # kink_prob: toyhaystack only
CLEAN = {name: 0.0 for name in REALISTIC}
MAX_NOISE_HITS = geo.N_CELLS / 4  # mean noise hits per event: a quarter of the cells, far above real rates
NOISE_MAX_RADIUS = geo.MAX_DRIFT_RADIUS  # mm, noise radii are U(0, 22)
MAX_ROUNDS = 1000  # rejection rounds before giving up (reached only with impossible settings)
_DEAD_CELL_STREAM = 0xDEAD  # seed-sequence word that keeps the dead-cell stream apart from the files' streams


def check_effects(*, noise_hits=0.0, inefficiency=0.0, dead_cells=0.0, missing_z_fraction=0.0, radius_sigma=0.0,
                  dead_cell_seed=0) -> dict:
    """Check the effect options; return them as floats (``dead_cell_seed`` an int).

    Raises ValueError naming the first bad option: probabilities in [0, 1] (``inefficiency`` and
    ``dead_cells`` below 1: a detector that sees nothing has no visible tracks), ``noise_hits`` in
    [0, MAX_NOISE_HITS], ``radius_sigma`` >= 0 (mm), ``dead_cell_seed`` an integer >= 0.
    """
    limits = (("noise_hits", noise_hits, 0.0, MAX_NOISE_HITS, True), ("inefficiency", inefficiency, 0.0, 1.0, False),
              ("dead_cells", dead_cells, 0.0, 1.0, False), ("missing_z_fraction", missing_z_fraction, 0.0, 1.0, True),
              ("radius_sigma", radius_sigma, 0.0, math.inf, True))
    for name, value, low, high, closed in limits:
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < low or value > high or (value == high and not closed):
            bound = f">= {low:g} and finite" if math.isinf(high) else f"in [{low:g}, {high:g}{']' if closed else ')'}"
            raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    if isinstance(dead_cell_seed, bool) or not isinstance(dead_cell_seed, (int, np.integer)) or dead_cell_seed < 0:
        raise ValueError(f"dead_cell_seed must be an integer >= 0, got {dead_cell_seed!r}")
    return dict(noise_hits=float(noise_hits), inefficiency=float(inefficiency), dead_cells=float(dead_cells),
                missing_z_fraction=float(missing_z_fraction), radius_sigma=float(radius_sigma),
                dead_cell_seed=int(dead_cell_seed))


def dead_cell_ids(fraction: float, seed: int) -> np.ndarray:
    """The dead cells of a dataset: sorted int64 cell ids (``geometry.cell_id``), round(fraction * 2034) of them.

    Depends on ``seed`` (the dataset seed) and ``fraction`` only; a larger fraction at one seed
    contains the cells of a smaller one.
    """
    count = int(round(fraction * geo.N_CELLS))
    if count == 0:
        return np.zeros(0, np.int64)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), _DEAD_CELL_STREAM])).permutation(geo.N_CELLS)
    return np.sort(order[:count]).astype(np.int64)


def dead_cell_mask(fraction: float, seed: int) -> np.ndarray:
    """Bool array (2034,) indexed by cell id: True where the cell is dead (:func:`dead_cell_ids`)."""
    mask = np.zeros(geo.N_CELLS, dtype=bool)
    mask[dead_cell_ids(fraction, seed)] = True
    return mask


def hits_kept(n_hits: int, inefficiency: float, rng: np.random.Generator) -> np.ndarray:
    """Bool (n_hits,): True for the hits that survive, each lost with probability ``inefficiency``.

    Draws nothing from ``rng`` when ``inefficiency`` is 0 (clean events stay what they were).
    """
    if inefficiency <= 0.0:
        return np.ones(n_hits, dtype=bool)
    return rng.random(n_hits, dtype=np.float32) >= inefficiency


def smear_radius(radius, sigma: float, rng: np.random.Generator, max_radius: float) -> np.ndarray:
    """Radii (mm) plus N(0, ``sigma``) mm, clipped to [0, ``max_radius``]; unchanged (no draw) when sigma is 0."""
    radius = np.asarray(radius)
    if sigma <= 0.0:
        return radius
    smeared = radius + np.float32(sigma) * rng.standard_normal(len(radius), dtype=np.float32)
    return np.clip(smeared, 0.0, max_radius).astype(radius.dtype, copy=False)


def _contains(sorted_keys, keys):
    """Whether each of ``keys`` is in the sorted int array ``sorted_keys`` (bool array like ``keys``).

    ``keys`` must fit the dtype of ``sorted_keys`` (cast so that the large array is not copied).
    """
    keys = keys.astype(sorted_keys.dtype, copy=False)
    position = np.searchsorted(sorted_keys, keys)
    found = np.zeros(len(keys), dtype=bool)
    inside = position < len(sorted_keys)
    found[inside] = sorted_keys[position[inside]] == keys[inside]
    return found


def free_cell_draws(occupied_keys, n_noise, rng: np.random.Generator, dead_mask=None):
    """Distinct random free cells: ``n_noise[e]`` for each event e, avoiding ``occupied_keys`` and dead cells.

    Keys are event * 2034 + cell id, ``occupied_keys`` a sorted integer array (repeats allowed);
    ``n_noise`` (n_events,) must not exceed an event's free cells. ``dead_mask``: bool (2034,) or
    None. Returns (event, cell id) int64 arrays ordered by event.
    """
    occupied = np.asarray(occupied_keys)
    placed = np.zeros(0, np.int64)  # sorted keys of the noise hits placed so far
    need = np.asarray(n_noise).astype(np.int64)
    events, cells = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for _ in range(MAX_ROUNDS):
        if not need.any():
            event, cell = np.concatenate(events), np.concatenate(cells)
            order = np.argsort(event, kind="stable")
            return event[order], cell[order]
        event = np.repeat(np.arange(len(need)), need)
        cell = rng.integers(0, geo.N_CELLS, len(event))
        key = event * geo.N_CELLS + cell
        order = np.argsort(key, kind="stable")
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[order][1:] != key[order][:-1]
        fresh = np.zeros(len(key), dtype=bool)
        fresh[order[first]] = True  # first draw of a cell in this round
        accepted = fresh & ~_contains(occupied, key) & ~_contains(placed, key)
        if dead_mask is not None:
            accepted &= ~dead_mask[cell]
        events.append(event[accepted])
        cells.append(cell[accepted])
        placed = np.sort(np.concatenate([placed, key[accepted]]), kind="stable")
        need -= np.bincount(event[accepted], minlength=len(need))
    raise RuntimeError("could not place the noise hits in free cells")


def add_noise_hits(hit_event, cells: dict, n_events: int, mean: float, rng: np.random.Generator, dead_mask=None):
    """Append Poisson(``mean``) noise hits per event (at most its free cells), after the event's track hits.

    ``hit_event`` (n_hits,): event of each hit, non-decreasing; ``cells``: per-hit arrays
    ``grid_side``, ``grid_layer``, ``grid_column``, ``wirez`` (mm), ``radius`` (mm) (other keys
    are not allowed); the noise hits take their dtypes. Noise cells are distinct, not hit in the
    event and not dead; z ~ U(-1500, 1500) mm, radius ~ U(0, 22) mm. Returns the new (hit_event, cells), ordered by event with
    each event's noise after its track hits. Draws nothing when ``mean`` is 0.
    """
    if mean <= 0.0:
        return hit_event, cells
    hit_event = np.asarray(hit_event, dtype=np.int64)
    key_type = np.int32 if n_events * geo.N_CELLS < 2 ** 31 else np.int64  # int32 sorts twice as fast
    cell = (cells["grid_side"].astype(key_type) * geo.N_LAYERS + cells["grid_layer"]) * geo.N_COLUMNS \
        + cells["grid_column"]
    occupied = np.sort(hit_event.astype(key_type) * geo.N_CELLS + cell, kind="stable")
    n_dead = 0 if dead_mask is None else int(dead_mask.sum())
    # At most the free cells: a cell listed under two tracks (my_generator) is counted twice here,
    # which only matters when the Poisson draw would fill the whole chamber.
    free = geo.N_CELLS - n_dead - np.bincount(hit_event, minlength=n_events)
    n_noise = np.minimum(rng.poisson(mean, n_events), free)
    if not n_noise.any():
        return hit_event, cells
    noise_event, noise_cell = free_cell_draws(occupied, n_noise, rng, dead_mask)
    noise = dict(zip(("grid_side", "grid_layer", "grid_column"), geo.cell_from_id(noise_cell)))
    noise["wirez"] = rng.uniform(-geo.TRACKER_HALF_Z, geo.TRACKER_HALF_Z, len(noise_event))
    noise["radius"] = rng.uniform(0.0, NOISE_MAX_RADIUS, len(noise_event))
    # Scatter instead of a sort: each event's track hits, then its noise hits, in their order.
    n_track_hits = np.bincount(hit_event, minlength=n_events)
    old_start = np.cumsum(n_track_hits) - n_track_hits
    new_start = np.cumsum(n_track_hits + n_noise) - (n_track_hits + n_noise)
    noise_start = np.cumsum(n_noise) - n_noise
    track_position = np.arange(len(hit_event)) - old_start[hit_event] + new_start[hit_event]
    noise_position = (np.arange(len(noise_event)) - noise_start[noise_event] + new_start[noise_event]
                      + n_track_hits[noise_event])
    merged = {}
    for name in cells:  # in the track hits' dtypes
        values = np.empty(len(hit_event) + len(noise_event), cells[name].dtype)
        values[track_position] = cells[name]
        values[noise_position] = noise[name]
        merged[name] = values
    return np.repeat(np.arange(n_events), n_track_hits + n_noise), merged


def lose_z(cells: dict, fraction: float, rng: np.random.Generator) -> dict:
    """Per-hit arrays with each hit's z lost with probability ``fraction``: ``wirez`` = 0 and ``wirez_missing`` = 1.

    ``wirez_missing`` (int8) is added only when ``fraction`` > 0 (absent means every z measured);
    nothing is drawn when it is 0.
    """
    if fraction <= 0.0:
        return cells
    missing = rng.random(len(cells["wirez"]), dtype=np.float32) < fraction
    return dict(cells, wirez=np.where(missing, 0.0, cells["wirez"]), wirez_missing=missing.astype(np.int8))


def apply_hit_effects(hit_event, cells: dict, n_events: int, effects: dict, rng: np.random.Generator, *,
                      max_radius: float, dead_mask=None):
    """The per-hit effects after the tracks are final: radius smearing, noise hits, then missing z.

    ``hit_event``, ``cells``: as :func:`add_noise_hits` (track hits only, dead cells and lost hits
    already removed); ``effects``: the dict of :func:`check_effects`; ``max_radius`` (mm): the
    generator's largest track-hit radius. Returns (hit_event, cells).
    """
    cells = dict(cells, radius=smear_radius(cells["radius"], effects["radius_sigma"], rng, max_radius))
    hit_event, cells = add_noise_hits(hit_event, cells, n_events, effects["noise_hits"], rng, dead_mask)
    return hit_event, lose_z(cells, effects["missing_z_fraction"], rng)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def _number_type(low: float, high: float, closed_high: bool = True):
    """argparse type: a finite float in [low, high] (or [low, high)); argparse names the flag on error."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (value == high and not closed_high):
            bound = f">= {low:g}" if math.isinf(high) else f"in [{low:g}, {high:g}{']' if closed_high else ')'}"
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text}")
        return value
    return parse


def add_detector_flags(parser: argparse.ArgumentParser, *, kinks: bool = False) -> None:
    """Add the detector-effect flags (and ``--kink-prob`` when ``kinks``) and ``--realistic`` to ``parser``.

    Their defaults are None: :func:`detector_options` fills what was not given from the preset.
    """
    group = parser.add_argument_group(
        "detector effects (default: clean events)",
        "--realistic sets " + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in REALISTIC.items()
                                        if kinks or k != "kink_prob") + "; flags given with it override the preset")
    group.add_argument("--realistic", action="store_true", help="the documented preset of realistic effects")
    group.add_argument("--noise-hits", type=_number_type(0.0, MAX_NOISE_HITS), metavar="MEAN",
                       help="mean number (Poisson) of noise hits per event, in free cells of both sides")
    group.add_argument("--inefficiency", type=_number_type(0.0, 1.0, False), metavar="P",
                       help="probability that a track hit is lost")
    group.add_argument("--dead-cells", type=_number_type(0.0, 1.0, False), metavar="FRACTION",
                       help="fraction of cells that never fire, one fixed set per --seed")
    group.add_argument("--missing-z-fraction", type=_number_type(0.0, 1.0), metavar="P",
                       help="probability that a hit has no z (wirez_missing = 1, wirez = 0)")
    group.add_argument("--radius-sigma", type=_number_type(0.0, math.inf), metavar="MM",
                       help="Gaussian smearing of track-hit drift radii, mm, clipped to the valid range")
    if kinks:
        group.add_argument("--kink-prob", type=_number_type(0.0, 1.0), metavar="P",
                           help="probability that a track breaks at a random layer boundary")


def detector_options(args: argparse.Namespace, *, kinks: bool = False) -> dict:
    """Resolved effect options from parsed flags: explicit flags, else the preset (``--realistic``), else clean.

    Returns the keywords of the generators' ``generate`` (``dead_cell_seed`` = ``args.seed``, and
    ``kink_prob`` when ``kinks``).
    """
    names = EFFECTS + (("kink_prob",) if kinks else ())
    preset = REALISTIC if args.realistic else CLEAN
    options = {name: getattr(args, name) if getattr(args, name) is not None else preset[name] for name in names}
    options["dead_cell_seed"] = int(args.seed)
    return options
