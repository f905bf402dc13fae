"""Top-view track counter: a 2D CNN on the (18, 113) top view (rows = side/layer, columns = tracker columns).

Also holds :func:`view_cnn`, the builder that the side and front counters share (same blocks,
different pooling). Layer names are stable: ``block<i>_conv<j>``, ``block<i>_bn<j>``,
``block<i>_relu<j>``, ``block<i>_pool``, then ``features`` (the pooled output of the last
convolutional block, where :func:`architectures.combined.build` cuts the model), ``head_dense``,
``head_dropout`` and the softmax ``count``.

Design: tracks are near-straight lines leaving the foil (between rows 8 and 9) across the layers
and along the columns; most errors are 3 versus 4 tracks when segments overlap. The blocks
(3x3 convolutions, BatchNorm, ReLU) pool mostly along the 113 columns, so the last block sees
about 50 columns; global average and max pooling keep the head small and the inference cheap.
"""

from __future__ import annotations

from snemo import geometry as geo


def view_cnn(input_shape, n_classes: int, *, pools, filters, convs_per_block=2, dense: int = 128,
             dropout: float = 0.3, bn_momentum: float = 0.9, input_name: str = "image", name: str = "view_cnn"):
    """Build a 2D counting CNN (Functional API) and return the uncompiled ``keras.Model``.

    ``input_shape``: (H, W, C) of one event's image. ``pools``: one (rows, columns) max-pooling
    size per block, None for no pooling. ``filters``: filters per block. ``convs_per_block``: an
    int or one int per block. ``bn_momentum``: BatchNorm moving-average momentum; 0.9 rather than
    Keras' 0.99, because counting reads activation magnitudes and lagging moving statistics bias
    the inference-mode prediction towards fewer tracks. Output: (B, n_classes) softmax over
    1..n_classes tracks. The layer ``features`` is the (B, 2 * filters[-1]) concatenation of global
    average and max pooling of the last block.
    """
    import keras
    from keras import layers

    if len(pools) != len(filters):
        raise ValueError(f"one pool size per block: {len(pools)} pools for {len(filters)} blocks")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if isinstance(convs_per_block, int):
        convs_per_block = [convs_per_block] * len(filters)
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)  # (B, H, W, C)
    x = inputs
    for block, (n_filters, pool, n_convs) in enumerate(zip(filters, pools, convs_per_block), start=1):
        for conv in range(1, n_convs + 1):
            x = layers.Conv2D(n_filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if pool is not None:
            x = layers.MaxPooling2D(pool_size=pool, padding="same", name=f"block{block}_pool")(x)
    average = layers.GlobalAveragePooling2D(name="global_average")(x)  # (B, filters[-1])
    maximum = layers.GlobalMaxPooling2D(name="global_max")(x)  # (B, filters[-1])
    return keras.Model(inputs, counting_head(average, maximum, n_classes, dense, dropout), name=name)


def counting_head(average, maximum, n_classes: int, dense: int, dropout: float):
    """``features`` (concatenated global average and max pooling) -> dense -> dropout -> softmax ``count``.

    Shared by every counter, so the combined model can always cut at ``features``. Returns the
    (B, n_classes) output tensor.
    """
    from keras import layers

    features = layers.Concatenate(name="features")([average, maximum])  # (B, 2 * filters[-1])
    x = layers.Dense(dense, activation="relu", name="head_dense")(features)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(n_classes, activation="softmax", name="count")(x)  # (B, n_classes)


def build(input_shape=(*geo.TOP_SHAPE, 1), n_classes: int = 4, *, filters=(16, 32, 48, 64), dense: int = 128,
          dropout: float = 0.3):
    """Top-view counter: (B, 18, 113, C) -> (B, n_classes) softmax; input layer named "top".

    Blocks (default filters): (18, 113) -> pool (1, 2) -> (18, 57) -> pool (2, 2) -> (9, 29)
    -> pool (1, 2) -> (9, 15) -> last block (9, 15, 64) -> ``features`` (B, 128). About 18 M
    multiply-adds per event.
    """
    return view_cnn(input_shape, n_classes, pools=[(1, 2), (2, 2), (1, 2), None], filters=filters,
                    convs_per_block=[1, 1, 2, 1], dense=dense, dropout=dropout, input_name="top", name="top_counter")
