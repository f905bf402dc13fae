"""Event displays: the tracker seen from the top (x, y) and from the side (y, z), hits coloured by truth track.

The drawing functions; the command line is the top-level ``display.py``::

    python display.py data/my_generator/2 --events 4 --out runs/displays
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from snemo import geometry as geo
from snemo.events import EventBatch

_NOISE_COLOUR = "0.55"


def _track_colours(n_tracks: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n_tracks)]


def draw_event(batch: EventBatch, index: int, *, axes=None):
    """Draw event ``index`` of ``batch`` on two axes (top view x-y, side view y-z); returns the figure.

    Hits are circles of their drift radius (mm) at the wire position, coloured by truth track
    (grey: noise). The foil (x = 0), the tracker frame and the main calorimeter walls are drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle, Rectangle

    if not 0 <= index < len(batch):
        raise ValueError(f"event index {index} outside the batch of {len(batch)} events")
    if axes is None:
        fig, axes = plt.subplots(2, 1, figsize=(11, 6.5), gridspec_kw={"height_ratios": [1, 1.6]})
    else:
        fig = axes[0].figure
    event = batch[index]
    track = event.hit_track_index()
    n_tracks = int(event.n_tracks[0])
    colours = np.array(_track_colours(max(n_tracks, 1)) + [(0.55, 0.55, 0.55, 1.0)])
    colour = colours[np.where(track >= 0, track, len(colours) - 1)]
    x = geo.wire_x(event.grid_side, event.grid_layer)
    y = geo.wire_y(event.grid_column)
    z = event.wirez.astype(np.float64)
    radius = event.radius.astype(np.float64)

    top, side = axes
    for sign in (-1, 1):
        inner_x = geo.TRACKER_MIN_ABS_X if sign > 0 else -geo.TRACKER_MAX_ABS_X
        top.add_patch(Rectangle((geo.TRACKER_MIN_Y, inner_x),
                                geo.TRACKER_MAX_Y - geo.TRACKER_MIN_Y,
                                geo.TRACKER_MAX_ABS_X - geo.TRACKER_MIN_ABS_X, fill=False, lw=0.6, color="0.6"))
        top.axhline(sign * geo.MAIN_FRONT_ABS_X, color="tab:orange", lw=2)
    top.axhline(0.0, color="k", lw=1.5)
    top.add_collection(PatchCollection([Circle((yy, xx), max(r, 3.0)) for yy, xx, r in zip(y, x, radius)],
                                       facecolor=colour, edgecolor=colour, alpha=0.8))
    top.set_xlim(geo.MAIN_MIN_Y, -geo.MAIN_MIN_Y)
    top.set_ylim(-geo.MAIN_FRONT_ABS_X - 30, geo.MAIN_FRONT_ABS_X + 30)
    top.set_xlabel("y [mm]")
    top.set_ylabel("x [mm]")
    top.set_title(f"{Path(batch.files[batch.file_index[index]]).name if batch.files and batch.file_index[index] >= 0 else 'event'}"
                  f" entry {int(batch.entry[index])}: {n_tracks} track(s), {len(x)} hits   (top view; foil at x = 0)")

    side.add_patch(Rectangle((geo.TRACKER_MIN_Y, -geo.TRACKER_HALF_Z), geo.TRACKER_MAX_Y - geo.TRACKER_MIN_Y,
                             2 * geo.TRACKER_HALF_Z, fill=False, lw=0.6, color="0.6"))
    side.scatter(y, z, c=colour, s=14)
    side.set_xlim(geo.MAIN_MIN_Y, -geo.MAIN_MIN_Y)
    side.set_ylim(-geo.GVETO_ABS_Z - 50, geo.GVETO_ABS_Z + 50)
    side.set_xlabel("y [mm]")
    side.set_ylabel("z [mm]")
    side.set_title("side view (both tracker sides overlaid)")
    for t in range(n_tracks):
        side.plot([], [], "o", color=colours[t], label=f"track {t}")
    if np.any(track < 0):
        side.plot([], [], "o", color=_NOISE_COLOUR, label="noise")
    side.legend(loc="upper right", fontsize=8, ncol=5)
    fig.tight_layout()
    return fig


def save_event_displays(batch: EventBatch, out_dir, n: int = 4, *, start: int = 0) -> list[Path]:
    """Write PNG displays of events ``start .. start+n-1`` into ``out_dir``; returns the paths.

    Each file is written as ``name.tmp`` and renamed, so a killed job leaves no half-written PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, min(start + n, len(batch))):
        fig = draw_event(batch, index)
        path = out_dir / f"event_{index:05d}_t{int(batch.n_tracks[index])}.png"
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
        plt.close(fig)
        paths.append(path)
    return paths
