"""Fast view counter: 1D convolutions along the view's long axis, the short axis as channels.

About 1 M multiply-adds per event and view (the 2D CNN of :mod:`architectures.top` has about
18 M). The view image (H, W, C) becomes a sequence along its longer axis: the top (18, 113) and
side (30, 113) views along the 113 tracker columns, with the 18 layer rows or the 30 z bins (times
C) as the channels of each step; the front (30, 18) view along its 30 z bins, with the 18 layer
rows as channels. A kernel of 5 steps then sees every layer (or z bin) of 5 neighbouring columns
at once, which is where a track shows: a run of hit layers across a few columns.

Blocks of Conv1D (``kernel`` steps, no bias), BatchNorm (momentum 0.9, as
:func:`architectures.top.view_cnn`), ReLU, max pooling by 2 along the sequence between blocks,
then global average and max pooling into the shared counting head (``features`` -> dense ->
dropout -> softmax ``count``): the same outputs and cut point as the other view counters, so
:func:`architectures.combined.build` joins three of them by transfer learning.
"""

from __future__ import annotations

from snemo import geometry as geo

SHAPES = {"top": (*geo.TOP_SHAPE, 1), "side": (*geo.SIDE_SHAPE, 1), "front": (*geo.FRONT_SHAPE, 1)}


def build(input_shape=SHAPES["top"], n_classes: int = 4, *, input_name: str = "top", filters=(32, 48, 48),
          kernel: int = 5, dense: int = 64, dropout: float = 0.2, bn_momentum: float = 0.9):
    """Fast counter of one view: (B, H, W, C) -> (B, n_classes) softmax over 1..n_classes tracks.

    ``input_shape``: (H, W, C) of the view (default the top view, one channel); ``input_name``:
    the view, "top", "side" or "front" (the name of the input, which tells the readers which view
    to make). ``filters``: filters per block. Returns the uncompiled ``keras.Model``.
    """
    import keras
    from keras import layers

    from architectures.top import counting_head

    if input_name not in SHAPES:
        raise ValueError(f"input_name must be one of {tuple(SHAPES)}, got {input_name!r}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    height, width, channels = input_shape
    inputs = keras.Input(shape=(height, width, channels), name=input_name)  # (B, H, W, C)
    if width >= height:  # a sequence along the columns: (B, W, H, C) -> (B, W, H * C)
        x = layers.Permute((2, 1, 3), name="columns_first")(inputs)
        x = layers.Reshape((width, height * channels), name="sequence")(x)
    else:  # a sequence along the rows: (B, H, W * C)
        x = layers.Reshape((height, width * channels), name="sequence")(inputs)
    for block, n_filters in enumerate(filters, start=1):
        x = layers.Conv1D(n_filters, kernel, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        if block < len(filters):
            x = layers.MaxPooling1D(2, padding="same", name=f"block{block}_pool")(x)
    average = layers.GlobalAveragePooling1D(name="global_average")(x)  # (B, filters[-1])
    maximum = layers.GlobalMaxPooling1D(name="global_max")(x)
    return keras.Model(inputs, counting_head(average, maximum, n_classes, dense, dropout), name=f"fast_{input_name}_counter")
