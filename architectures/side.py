"""Side-view track counter: a 2D CNN on the (30, 113) side view (rows = z bins of 100 mm, columns).

Same blocks and layer names as :mod:`architectures.top` (``features`` after the last block);
the pooling also halves the 30 z bins.
"""

from __future__ import annotations

from architectures.top import view_cnn
from snemo import geometry as geo


def build(input_shape=(*geo.SIDE_SHAPE, 1), n_classes: int = 4, *, filters=(16, 32, 48, 64), dense: int = 128,
          dropout: float = 0.3):
    """Side-view counter: (B, 30, 113, C) -> (B, n_classes) softmax; input layer named "side".

    Blocks: (30, 113) -> pool (2, 2) -> (15, 57) -> pool (1, 2) -> (15, 29) -> pool (2, 2)
    -> (8, 15) -> last block (8, 15, 64) -> ``features`` (B, 128).
    """
    return view_cnn(input_shape, n_classes, pools=[(2, 2), (1, 2), (2, 2), None], filters=filters,
                    convs_per_block=[1, 1, 2, 1], dense=dense, dropout=dropout, input_name="side", name="side_counter")
