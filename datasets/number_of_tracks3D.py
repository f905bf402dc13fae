"""Track counting on the 3-D voxel grid: (B, 18, 113, 30, C) -> one-hot number of tracks.

Same labels and options as :mod:`datasets.number_of_tracks`; the input is the voxel view
(top-view row, column, z bin of 100 mm), C = 1 (hit) or 2 (hit, radius / 22 mm).
"""

from __future__ import annotations

from datasets import common, views
from datasets.common import Splits
from datasets.number_of_tracks import counting_task


def load(source, *, max_tracks: int = 4, radius_channel: bool = False, **options) -> Splits:
    """Train / validation / test datasets of voxel track counting.

    Inputs (B, 18, 113, 30, C) float32; labels one-hot (B, max_tracks). ``options``: the common
    loader arguments (see :func:`datasets.common.build_splits`), including ``skip_out_of_range``.
    A ``view`` argument, if given, must be "voxel".
    """
    view = options.pop("view", "voxel")
    names = views.parse_views(view, allowed=("voxel",))
    task = counting_task("number_of_tracks3D", names, max_tracks, radius_channel)
    return common.build_splits(task, source, **options)
