"""Event displays: the tracker seen from the top (x, y) and from the side (y, z), truth and prediction side by side.

The drawing functions; the command line is the top-level ``display.py``::

    python display.py data/my_generator/2/my_generator_t2_0.root --event 3 --reco runs/reco/my_generator_t2_0.root

Hits are circles of their drift radius at the wire (top view) and dots at their wirez (side view;
hits without a z measurement are left out of it), coloured by track: the truth track
(``track_split``) in the left column, the predicted cluster of the ``reco`` tree in the right one,
grey for noise. Calorimeter cells (22 x 15 grid per side) are boxes on the wall they belong to, in
the colour of their track (black: a predicted cell not tied to a cluster). Track i of the truth and
cluster i of the prediction share a colour: both are in canonical order.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from snemo import geometry as geo
from snemo.events import EventBatch

_NOISE_COLOUR = (0.55, 0.55, 0.55, 1.0)
_FREE_CELL_COLOUR = (0.0, 0.0, 0.0, 1.0)  # a predicted calorimeter cell with calo_cluster -1
_CALO_DRAW_DEPTH = 60.0  # mm: drawn thickness of a main-wall block, an X-wall or a gamma-veto strip
_MIN_CIRCLE = 3.0  # mm: smallest drawn hit circle, so that a hit on the wire stays visible


def _colours(n: int) -> np.ndarray:
    """(n + 1, 4) RGBA: tab10 for labels 0..n-1, then the noise grey (index -1 picks it)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return np.array([cmap(i % 10) for i in range(n)] + [_NOISE_COLOUR])


def calo_boxes(side, column, row):
    """Drawn boxes of calorimeter grid cells (arrays of side, grid column 0..21, grid row 0..14).

    Returns (top, side_view): (m, 4) float arrays of (y0, y1, x0, x1) in the top view and
    (y0, y1, z0, z1) in the side view, mm. Main wall: its 259 mm block, just beyond the front face
    |x| = 435 mm. X-walls (grid column 0 / 21): a strip at |y| = 2505.5 mm from |x| = 29 mm to the
    main wall. Gamma veto (row 0 / 14): a strip over the tracker at |z| = 1550 mm.
    """
    side, column, row = (np.asarray(a, dtype=np.int64) for a in (side, column, row))
    xwall = (column == 0) | (column == geo.CALO_GRID_COLUMNS - 1)
    gveto = ~xwall & ((row == 0) | (row == geo.CALO_GRID_ROWS - 1))
    y0 = np.where(column == 0, -geo.XWALL_ABS_Y - _CALO_DRAW_DEPTH,
                  np.where(xwall, geo.XWALL_ABS_Y, geo.MAIN_MIN_Y + geo.MAIN_PITCH * (column - 1)))
    y1 = y0 + np.where(xwall, _CALO_DRAW_DEPTH, geo.MAIN_PITCH)
    z0 = np.where(row == 0, -geo.GVETO_ABS_Z - _CALO_DRAW_DEPTH,
                  np.where(row == geo.CALO_GRID_ROWS - 1, geo.GVETO_ABS_Z, geo.MAIN_MIN_Z + geo.MAIN_PITCH * (row - 1)))
    z1 = z0 + np.where((row == 0) | (row == geo.CALO_GRID_ROWS - 1), _CALO_DRAW_DEPTH, geo.MAIN_PITCH)
    inner = np.where(xwall, geo.XWALL_MIN_ABS_X, np.where(gveto, geo.TRACKER_MIN_ABS_X, geo.MAIN_FRONT_ABS_X))
    outer = np.where(xwall, geo.MAIN_FRONT_ABS_X,
                     np.where(gveto, geo.TRACKER_MAX_ABS_X, geo.MAIN_FRONT_ABS_X + _CALO_DRAW_DEPTH))
    sign = np.where(side == 0, -1.0, 1.0)
    x0, x1 = np.minimum(sign * inner, sign * outer), np.maximum(sign * inner, sign * outer)
    return np.stack([y0, y1, x0, x1], axis=1).astype(float), np.stack([y0, y1, z0, z1], axis=1).astype(float)


def _draw_boxes(ax, boxes: np.ndarray, colours: np.ndarray, fill_alpha) -> None:
    """Rectangles (y0, y1, v0, v1) in ``colours`` (m, 4), filled with opacity ``fill_alpha`` (m,)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    if len(boxes):
        patches = [Rectangle((b[0], b[2]), b[1] - b[0], b[3] - b[2]) for b in boxes]
        faces = colours.copy()
        faces[:, 3] = fill_alpha
        ax.add_collection(PatchCollection(patches, facecolors=faces, edgecolors=colours, lw=1.2))


def draw_views(axes, batch: EventBatch, index: int, labels=None, *, calo=None, title: str = "",
               legend: str = "track") -> None:
    """Draw event ``index`` of ``batch`` on two axes: top view (x against y) and side view (z against y).

    ``labels``: (n_hits of the event,) track of each hit, -1 noise (default: the truth of
    ``track_split``). ``calo``: dict with ``calo_side``, ``calo_column``, ``calo_row`` (one per
    track, grid convention) and optionally ``calo_cluster`` (the label whose colour it takes;
    default: the track's own index), or None. ``title`` goes above the top view; the legend names
    label i "``legend`` i".
    """
    from matplotlib.collections import EllipseCollection
    from matplotlib.patches import Rectangle

    if not 0 <= index < len(batch):
        raise ValueError(f"event index {index} outside the batch of {len(batch)} events")
    event = batch[index]
    labels = event.hit_track_index() if labels is None else np.asarray(labels, dtype=np.int64)
    n_labels = int(max(labels.max(initial=-1) + 1, 1))
    colours = _colours(n_labels)
    colour = colours[np.where(labels >= 0, labels, -1)]
    x = geo.wire_x(event.grid_side, event.grid_layer)
    y = geo.wire_y(event.grid_column)
    diameter = 2 * np.maximum(event.radius.astype(np.float64), _MIN_CIRCLE)
    measured = ~event.z_missing()

    top, side = axes
    for sign in (-1, 1):
        inner_x = geo.TRACKER_MIN_ABS_X if sign > 0 else -geo.TRACKER_MAX_ABS_X
        top.add_patch(Rectangle((geo.TRACKER_MIN_Y, inner_x), geo.TRACKER_MAX_Y - geo.TRACKER_MIN_Y,
                                geo.TRACKER_MAX_ABS_X - geo.TRACKER_MIN_ABS_X, fill=False, lw=0.6, color="0.6"))
        top.axhline(sign * geo.MAIN_FRONT_ABS_X, color="tab:orange", lw=1)
    top.axhline(0.0, color="k", lw=1.5)
    top.add_collection(EllipseCollection(diameter, diameter, np.zeros(len(x)), units="xy", offsets=np.c_[y, x],
                                         offset_transform=top.transData, facecolors=colour, edgecolors=colour,
                                         alpha=0.8))
    top.set_xlim(geo.MAIN_MIN_Y - 2 * _CALO_DRAW_DEPTH, -geo.MAIN_MIN_Y + 2 * _CALO_DRAW_DEPTH)
    top.set_ylim(-geo.MAIN_FRONT_ABS_X - 2 * _CALO_DRAW_DEPTH, geo.MAIN_FRONT_ABS_X + 2 * _CALO_DRAW_DEPTH)
    top.set_ylabel("x [mm]")
    top.set_title(title, fontsize=9)

    side.add_patch(Rectangle((geo.TRACKER_MIN_Y, -geo.TRACKER_HALF_Z), geo.TRACKER_MAX_Y - geo.TRACKER_MIN_Y,
                             2 * geo.TRACKER_HALF_Z, fill=False, lw=0.6, color="0.6"))
    side.scatter(y[measured], event.wirez[measured].astype(np.float64), c=colour[measured], s=12)
    side.set_xlim(*top.get_xlim())
    side.set_ylim(-geo.GVETO_ABS_Z - 2 * _CALO_DRAW_DEPTH, geo.GVETO_ABS_Z + 2 * _CALO_DRAW_DEPTH)
    side.set_xlabel("y [mm]")
    side.set_ylabel("z [mm]")
    without_z = int((~measured).sum())
    side.set_title("side view, both sides overlaid" + (f" ({without_z} hit(s) without z not shown)" if without_z else ""),
                   fontsize=8)
    if calo is not None and len(calo.get("calo_column", ())):
        owner = np.asarray(calo.get("calo_cluster", np.arange(len(calo["calo_column"]))), dtype=np.int64)
        box_colours = _colours(int(max(owner.max(initial=-1) + 1, 1)))[np.maximum(owner, 0)]
        box_colours[owner < 0] = _FREE_CELL_COLOUR
        top_boxes, side_boxes = calo_boxes(calo["calo_side"], calo["calo_column"], calo["calo_row"])
        over_tracker = np.isin(calo["calo_row"], (0, geo.CALO_GRID_ROWS - 1))  # gamma veto, seen from the top
        _draw_boxes(top, top_boxes, box_colours, np.where(over_tracker, 0.08, 0.45))
        _draw_boxes(side, side_boxes, box_colours, np.full(len(side_boxes), 0.45))
    for label in range(n_labels if labels.max(initial=-1) >= 0 else 0):
        side.plot([], [], "o", color=colours[label], label=f"{legend} {label}")
    if np.any(labels < 0):
        side.plot([], [], "o", color=_NOISE_COLOUR, label="noise")
    if side.get_legend_handles_labels()[0]:
        side.legend(loc="upper right", fontsize=7, ncol=6)


def truth_labels(batch: EventBatch, index: int, track_rank=None) -> tuple[np.ndarray, dict | None]:
    """(labels per hit, calorimeter cells per track) of the truth of event ``index``.

    ``track_rank``: (n_tracks_total of ``batch``,) the place of each truth track in its event's
    canonical order (the order of the reco clusters), or None for the file's order. The cells
    (``calo_side``, ``calo_column``, ``calo_row``, ``calo_cluster`` = the track's label) are None
    when the file has no calorimeter truth.
    """
    event = batch[index]
    labels = event.hit_track_index()
    ranks = np.arange(int(event.n_tracks[0]))
    if track_rank is not None:
        first = int(batch.track_offsets[index] - batch.track_offsets[0])
        ranks = np.asarray(track_rank, dtype=np.int64)[first:first + len(ranks)]
        labels = np.where(labels >= 0, ranks[np.maximum(labels, 0)], -1)
    if "calo_column" not in event.tracks or "calo_row" not in event.tracks:
        return labels, None
    calo = {name: event.tracks[name] for name in ("calo_side", "calo_column", "calo_row") if name in event.tracks}
    calo["calo_cluster"] = ranks
    return labels, calo


def event_name(batch: EventBatch, index: int) -> str:
    """'<file name> entry <entry>' of event ``index`` (or 'event <index>' for a batch without files)."""
    file = int(batch.file_index[index])
    name = Path(batch.files[file]).name if batch.files and file >= 0 else "event"
    return f"{name} entry {int(batch.entry[index])}"


def draw_event(batch: EventBatch, index: int, *, axes=None, reco=None, reco_index: int | None = None,
               truth: bool = True, figure=None, track_rank=None):
    """Draw event ``index`` of ``batch``: truth, and the prediction of ``reco`` beside it; returns the figure.

    ``axes``: two axes (top, side) to draw the truth on (the layout of earlier callers). Else a
    figure (or ``figure``, a Figure or SubFigure) gets a column per panel: truth (when ``truth``)
    and ``reco`` (a :class:`snemo.recofile.RecoEvents`, its event ``reco_index``, default ``index``).
    ``track_rank``: canonical rank of each truth track of ``batch`` (see :func:`truth_labels`), so
    that truth track i and reco cluster i share a colour; None keeps the file's track order.
    """
    import matplotlib.pyplot as plt

    if axes is not None:
        n = int(batch.n_tracks[index])
        labels, calo = truth_labels(batch, index, track_rank)
        draw_views(axes, batch, index, labels, calo=calo,
                   title=f"{event_name(batch, index)}: {n} track(s), {int(batch.n_hits[index])} hits")
        return axes[0].figure
    panels = (["truth"] if truth or reco is None else []) + (["reco"] if reco is not None else [])
    if figure is None:
        figure = plt.figure(figsize=(9.5 * len(panels), 6.0))
    # Fixed margins in inches (a layout engine costs more than the drawing): room for the tick labels.
    width, height = figure.bbox.width / figure.dpi, figure.bbox.height / figure.dpi
    grid = figure.subplots(2, len(panels), squeeze=False,
                           gridspec_kw=dict(height_ratios=[1, 1.6], left=0.85 / width, right=1 - 0.15 / width,
                                            bottom=0.5 / height, top=1 - 0.6 / height, wspace=0.18, hspace=0.4))
    event = batch[index]
    for column, panel in enumerate(panels):
        if panel == "truth":
            has_truth = len(event.tracks["track_split"]) > 0 or event.n_hits[0] == 0
            labels, calo = truth_labels(batch, index, track_rank)
            order = " (canonical order)" if track_rank is not None else ""
            draw_views(grid[:, column], batch, index, labels, calo=calo,
                       title=f"truth: {int(event.n_tracks[0])} track(s){order}" if has_truth else "no truth tracks")
            continue
        at = index if reco_index is None else reco_index
        first, n_hits = int(batch.hit_offsets[index] - batch.hit_offsets[0]), int(event.n_hits[0])
        labels = np.full(n_hits, -1) if reco.cluster is None else reco.cluster[first:first + n_hits]
        words = []
        if reco.n_tracks is not None:
            words.append(f"n_tracks {int(reco.n_tracks[at])}")
            if reco.n_tracks_score is not None and reco.n_tracks_score.shape[1]:
                words[-1] += f" (p = {float(reco.n_tracks_score[at].max()):.3f})"
        words.append("clusters: none in the reco file" if reco.cluster is None else
                     f"{len(np.unique(labels[labels >= 0]))} cluster(s)")
        calo = reco.calo_of(at) if reco.calo else None
        if calo is not None:
            words.append(f"{len(calo.get('calo_column', ()))} calo cell(s)")
        draw_views(grid[:, column], batch, index, labels, calo=calo, title="reco: " + ", ".join(words),
                   legend="cluster")
    figure.suptitle(f"{event_name(batch, index)}: {int(batch.n_hits[index])} hits", fontsize=10)
    return figure


def draw_gallery(batch: EventBatch, indices, *, reco=None, truth: bool = True, per_row: int | None = None,
                 track_rank=None):
    """One figure holding the displays of events ``indices`` of ``batch`` (each as :func:`draw_event`).

    ``reco``: a :class:`snemo.recofile.RecoEvents` of the whole batch, or None. ``per_row``: events
    per row (default 2 with a prediction, 3 without). ``track_rank``: as for :func:`draw_event`.
    Returns the figure.
    """
    import matplotlib.pyplot as plt

    indices = list(indices)
    if not indices:
        raise ValueError("a gallery needs at least one event")
    panels = (1 if truth or reco is None else 0) + (reco is not None)
    per_row = per_row or (2 if panels == 2 else 3)
    per_row = min(per_row, len(indices))
    rows = -(-len(indices) // per_row)
    figure = plt.figure(figsize=(6.0 * panels * per_row, 4.2 * rows))
    cells = np.asarray(figure.subfigures(rows, per_row, squeeze=False)).ravel()
    for cell, index in zip(cells, indices):
        draw_event(batch, index, reco=reco, truth=truth, figure=cell, track_rank=track_rank)
    return figure


def save_figure_as(figure, paths, *, dpi: int = 110) -> list[Path]:
    """Write ``figure`` to every path of ``paths`` (format by suffix: .png or .pdf); returns the paths.

    All files are written as ``name.tmp`` first and renamed only when every one is complete, so
    a failure leaves none of them.
    """
    paths = [Path(p) for p in paths]
    temporary = [p.with_name(p.name + ".tmp") for p in paths]
    try:
        for path, tmp in zip(paths, temporary):
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower())
        for path, tmp in zip(paths, temporary):
            os.replace(tmp, path)
    finally:
        for tmp in temporary:
            if tmp.exists():
                tmp.unlink()
    return paths


def save_event_displays(batch: EventBatch, out_dir, n: int = 4, *, start: int = 0, reco=None,
                        track_rank=None) -> list[Path]:
    """Write PNG displays of events ``start .. start+n-1`` into ``out_dir``; returns the paths.

    ``reco``: a :class:`snemo.recofile.RecoEvents` of ``batch`` (prediction beside the truth), or None;
    ``track_rank`` as for :func:`draw_event`.
    Files are ``event_<index>_t<tracks>.png``, each written as ``name.tmp`` and renamed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for index in range(start, min(start + n, len(batch))):
        figure = draw_event(batch, index, reco=reco, track_rank=track_rank)
        paths += save_figure_as(figure, [Path(out_dir) / f"event_{index:05d}_t{int(batch.n_tracks[index])}.png"])
        plt.close(figure)
    return paths
