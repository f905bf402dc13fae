"""3D track counter: a Conv3D network on the (18, 113, 30) voxel grid (top-view row, column, z bin).

Layer names: ``block<i>_conv``, ``block<i>_bn``, ``block<i>_relu``, ``block<i>_pool``, then
``features`` (global average and max pooling of the last block), ``head_dense``, ``head_dropout``,
``count``. The first convolution is strided along columns and z to keep the cost moderate
(61,020 voxels per event). BatchNorm momentum 0.9 (see :func:`architectures.top.view_cnn`).
"""

from __future__ import annotations

from architectures.top import counting_head
from snemo import geometry as geo


def build(input_shape=(*geo.VOXEL_SHAPE, 1), n_classes: int = 4, *, filters=(8, 16, 32, 48), dense: int = 128,
          dropout: float = 0.3):
    """Voxel counter: (B, 18, 113, 30, C) -> (B, n_classes) softmax; input layer named "voxels".

    Blocks: conv stride (1, 2, 2) -> (18, 57, 15, 8) -> pool (2, 2, 1) -> (9, 29, 15, 16)
    -> pool (1, 2, 2) -> (9, 15, 8, 32) -> pool (1, 2, 1) -> (9, 8, 8, 48) -> ``features`` (B, 96).
    """
    import keras
    from keras import layers

    if len(filters) != 4:
        raise ValueError(f"view3d takes 4 filter counts, got {filters}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    inputs = keras.Input(shape=tuple(input_shape), name="voxels")  # (B, 18, 113, 30, C)
    x = layers.Conv3D(filters[0], 3, strides=(1, 2, 2), padding="same", use_bias=False, name="block1_conv")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="block1_bn")(x)
    x = layers.ReLU(name="block1_relu")(x)  # (B, 18, 57, 15, 8)
    pools = [(2, 2, 1), (1, 2, 2), (1, 2, 1)]
    for block, (n_filters, pool) in enumerate(zip(filters[1:], pools), start=2):
        x = layers.MaxPooling3D(pool_size=pool, padding="same", name=f"block{block}_pool")(x)
        x = layers.Conv3D(n_filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
    average = layers.GlobalAveragePooling3D(name="global_average")(x)  # (B, filters[-1])
    maximum = layers.GlobalMaxPooling3D(name="global_max")(x)  # (B, filters[-1])
    outputs = counting_head(average, maximum, n_classes, dense, dropout)  # (B, n_classes)
    return keras.Model(inputs, outputs, name="voxel_counter")
