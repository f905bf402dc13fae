"""Front-view track counter: a small 2D CNN on the (30, 18) front view (rows = z bins, columns = top-view rows).

Same blocks and layer names as :mod:`architectures.top` (``features`` after the last block).
"""

from __future__ import annotations

from architectures.top import view_cnn
from snemo import geometry as geo


def build(input_shape=(*geo.FRONT_SHAPE, 1), n_classes: int = 4, *, filters=(16, 32, 64), dense: int = 128,
          dropout: float = 0.3):
    """Front-view counter: (B, 30, 18, C) -> (B, n_classes) softmax; input layer named "front".

    Blocks: (30, 18) -> pool (2, 1) -> (15, 18) -> pool (2, 2) -> (8, 9) -> last block (8, 9, 64)
    -> ``features`` (B, 128).
    """
    return view_cnn(input_shape, n_classes, pools=[(2, 1), (2, 2), None], filters=filters,
                    convs_per_block=[1, 2, 1], dense=dense, dropout=dropout, input_name="front", name="front_counter")
