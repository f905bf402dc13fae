"""Fast track counter: 1D convolutions along each view's long axis, the short axis as channels.

For ``reconstruct.py`` when speed matters more than the last tenth of a point: about 1-2 M
multiply-adds per event for the three views (the combined counter has about 45 M). Each view
image (H, W, C) becomes a sequence along its longer axis: the top (18, 113) and side (30, 113)
views along the 113 tracker columns, with the 18 layer rows or the 30 z bins (times C) as the
channels of each step; the front (30, 18) view along its 30 z bins, with the 18 layer rows as
channels. A kernel of 5 steps then sees every layer (or z bin) of 5 neighbouring columns at once,
which is where a track shows: a run of hit layers across a few columns.

Each branch: blocks of Conv1D (``kernel`` steps, no bias), BatchNorm (momentum 0.9, as
:func:`architectures.top.view_cnn`), ReLU, max pooling by 2 along the sequence but after the last
block, then global average and max pooling. The branches' pooled vectors meet in the shared
counting head (``features`` -> dense -> dropout -> softmax ``count``), so the model has the same
outputs and layer names as the other counters. Inputs are named after their views.
"""

from __future__ import annotations

from snemo import geometry as geo

SHAPES = {"top": (*geo.TOP_SHAPE, 1), "side": (*geo.SIDE_SHAPE, 1), "front": (*geo.FRONT_SHAPE, 1)}


def build(input_shapes=None, n_classes: int = 4, *, filters=(32, 48, 48), kernel: int = 5, dense: int = 64,
          dropout: float = 0.2, bn_momentum: float = 0.9):
    """Fast counter: {view: (B, H, W, C)} -> (B, n_classes) softmax over 1..n_classes tracks.

    ``input_shapes``: {view: (H, W, C)} for some of "top", "side", "front" (default the three, one
    channel), or one (H, W, C) tuple for the top view alone. ``filters``: filters per block of
    every branch. Returns the uncompiled ``keras.Model``; its inputs are named after the views
    (a dict of them for several views, as the multi-view loader yields).
    """
    import keras
    from keras import layers

    from architectures.top import counting_head

    if input_shapes is None:
        input_shapes = SHAPES
    elif not isinstance(input_shapes, dict):
        input_shapes = {"top": tuple(input_shapes)}
    unknown = set(input_shapes) - set(SHAPES)
    if unknown or not input_shapes:
        raise ValueError(f"views must be some of {tuple(SHAPES)}, got {tuple(input_shapes)}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    inputs, averages, maxima = {}, [], []
    for view in (name for name in SHAPES if name in input_shapes):
        height, width, channels = input_shapes[view]
        inputs[view] = keras.Input(shape=(height, width, channels), name=view)  # (B, H, W, C)
        x = inputs[view]
        if width >= height:  # sequence along the columns: (B, W, H, C) -> (B, W, H * C)
            x = layers.Permute((2, 1, 3), name=f"{view}_columns")(x)
            x = layers.Reshape((width, height * channels), name=f"{view}_sequence")(x)
        else:  # sequence along the rows: (B, H, W * C)
            x = layers.Reshape((height, width * channels), name=f"{view}_sequence")(x)
        for block, n_filters in enumerate(filters, start=1):
            x = layers.Conv1D(n_filters, kernel, padding="same", use_bias=False, name=f"{view}_conv{block}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"{view}_bn{block}")(x)
            x = layers.ReLU(name=f"{view}_relu{block}")(x)
            if block < len(filters):
                x = layers.MaxPooling1D(2, padding="same", name=f"{view}_pool{block}")(x)
        averages.append(layers.GlobalAveragePooling1D(name=f"{view}_average")(x))  # (B, filters[-1])
        maxima.append(layers.GlobalMaxPooling1D(name=f"{view}_max")(x))
    average = averages[0] if len(averages) == 1 else layers.Concatenate(name="global_average")(averages)
    maximum = maxima[0] if len(maxima) == 1 else layers.Concatenate(name="global_max")(maxima)
    outputs = counting_head(average, maximum, n_classes, dense, dropout)
    return keras.Model(next(iter(inputs.values())) if len(inputs) == 1 else inputs, outputs, name="fast_counter")
