"""3D track counter: a Conv3D network on the (18, 113, 30) voxel grid (top-view row, column, z bin).

The grid holds 61,020 voxels per event, of which a few dozen are hits, and on CPU a Conv3D costs
most where the grid is large and the channels few (memory, not multiply-adds) and MaxPooling3D's
gradient is slow. The variants (:data:`VARIANTS`, measured by ``benchmarks/bench_view3d.py``)
differ in how they keep that part small; in every one the convolutions are ``Conv3D`` layers
with 3D kernels on a 3D grid:

- ``full``: the first release's model, 3x3x3 kernels, the first strided (1, 2, 2), max pooling.
- ``zstem``, ``strided``: a z-reducing or strided stem, then (2+1)D blocks ((3, 3, 1) kernel in
  the top-view plane, then (1, 1, 3) along z) with max pooling; slower than ``full`` here,
  because they keep 8-16 channels on (18, 113, 6) or (18, 57, 10) grids.
- ``s2``, ``s2full``: a (3, 3, 5) stem of strides (2, 2, 5), then strided (2+1)D or 3x3x3 blocks,
  no pooling. ``fold5``, ``fold5flat``: the same with the z bins folded 5 by 5 into channels.
- ``lite`` (the fourth release's): z bins folded 5 by 5 into channels (a free Reshape: 6 bins
  of 500 mm, the 5 sub-bins as channels), a 3x3x3 stem of strides (2, 2, 2) on that grid (a
  Conv3D of kernel (3, 3, 15) and strides (2, 2, 10) on the 100 mm grid), then strided (2+1)D
  blocks: (18, 113, 30, C) -> (18, 113, 6, 5C) -> (9, 57, 3, 16) -> (9, 29, 3, 32)
  -> (9, 15, 3, 48) -> (9, 15, 3, 48) -> ``features`` (B, 96); about 29 M multiply-adds per event.
- ``sides6`` (default), ``sides``, ``sides_full``: the layers of each side folded into channels
  as well (free Reshapes and a Permute), so the grid is (2 sides, 113 columns, 6 or 3 z slabs)
  with the 9 layers x 5 or 10 z bins of each cell as channels, as the fast view counters read a
  view's short axis as channels; then Conv3D kernels (1, 5, 1) along the columns (strided by 2)
  and (2, 1, 3) across the foil and along z: (2, 113, 6, 45C) -> (2, 57, 6, 32) -> (2, 29, 3, 48)
  -> (2, 15, 3, 64) -> ``features`` (B, 128); 16.5 M multiply-adds per event, but many channels
  on a small grid, which a CPU runs well (training 1,147 samples/s against ``lite``'s 671 in one
  run of ``benchmarks/bench_view3d.py`` at batch 256).

Layer names: ``stem_fold_z``, ``stem_conv<j>``, ``stem_bn<j>``, ``stem_relu<j>``, ``stem_pool``;
``block<i>_conv<j>``, ``block<i>_bn<j>``, ``block<i>_relu<j>``, ``block<i>_pool``; then
``features`` (global average and max pooling of the last block, where
:func:`architectures.combined.cut_at_features` cuts), ``head_dense``, ``head_dropout``, ``count``
(the shared :func:`architectures.top.counting_head`). BatchNorm momentum 0.9 (see
:func:`architectures.top.view_cnn`). A voxel is empty where the hit's z is missing.
"""

from __future__ import annotations

from architectures.top import counting_head
from snemo import geometry as geo

# Per variant: blocks (the first is the stem), each a list of ("conv", filters, kernel, strides) and
# ("pool", size) steps. Shapes are (rows, columns, z bins, channels) for the (18, 113, 30, 1) grid.
VARIANTS = {
    # The first release: (18, 57, 15, 8) -> (9, 29, 15, 16) -> (9, 15, 8, 32) -> (9, 8, 8, 48).
    "full": [[("conv", 8, (3, 3, 3), (1, 2, 2)), ("pool", (2, 2, 1))],
             [("conv", 16, (3, 3, 3), (1, 1, 1)), ("pool", (1, 2, 2))],
             [("conv", 32, (3, 3, 3), (1, 1, 1)), ("pool", (1, 2, 1))],
             [("conv", 48, (3, 3, 3), (1, 1, 1))]],
    # z stem at full resolution, (2+1)D blocks with pooling:
    # (18, 113, 6, 8) -> (18, 57, 6, 16) -> (9, 29, 3, 32) -> (9, 15, 3, 48) -> (9, 15, 3, 64).
    "zstem": [[("conv", 8, (1, 1, 5), (1, 1, 5))],
              [("conv", 16, (3, 3, 1), (1, 1, 1)), ("conv", 16, (1, 1, 3), (1, 1, 1)), ("pool", (1, 2, 1))],
              [("conv", 32, (3, 3, 1), (1, 1, 1)), ("conv", 32, (1, 1, 3), (1, 1, 1)), ("pool", (2, 2, 2))],
              [("conv", 48, (3, 3, 1), (1, 1, 1)), ("conv", 48, (1, 1, 3), (1, 1, 1)), ("pool", (1, 2, 1))],
              [("conv", 64, (3, 3, 1), (1, 1, 1)), ("conv", 64, (1, 1, 3), (1, 1, 1))]],
    # Strided 3x3x3 stem, (2+1)D blocks with pooling:
    # (18, 57, 10, 16) -> (9, 29, 5, 24) -> (9, 15, 5, 48) -> (9, 15, 5, 64).
    "strided": [[("conv", 16, (3, 3, 3), (1, 2, 3))],
                [("conv", 24, (3, 3, 1), (1, 1, 1)), ("conv", 24, (1, 1, 3), (1, 1, 1)), ("pool", (2, 2, 2))],
                [("conv", 48, (3, 3, 1), (1, 1, 1)), ("conv", 48, (1, 1, 3), (1, 1, 1)), ("pool", (1, 2, 1))],
                [("conv", 64, (3, 3, 1), (1, 1, 1)), ("conv", 64, (1, 1, 3), (1, 1, 1))]],
    # Stem strided 2 in rows and columns and 5 in z, then strided (2+1)D blocks, no pooling:
    # (9, 57, 6, 16) -> (9, 29, 3, 32) -> (9, 15, 3, 48) -> (9, 15, 3, 64).
    "s2": [[("conv", 16, (3, 3, 5), (2, 2, 5))],
           [("conv", 32, (3, 3, 1), (1, 2, 1)), ("conv", 32, (1, 1, 3), (1, 1, 2))],
           [("conv", 48, (3, 3, 1), (1, 2, 1)), ("conv", 48, (1, 1, 3), (1, 1, 1))],
           [("conv", 64, (3, 3, 1), (1, 1, 1)), ("conv", 64, (1, 1, 3), (1, 1, 1))]],
    # Same stem, then strided 3x3x3 kernels: (9, 57, 6, 16) -> (9, 29, 3, 32) -> (9, 15, 3, 48) -> (9, 15, 3, 48).
    "s2full": [[("conv", 16, (3, 3, 5), (2, 2, 5))],
               [("conv", 32, (3, 3, 3), (1, 2, 2))],
               [("conv", 48, (3, 3, 3), (1, 2, 1))],
               [("conv", 48, (3, 3, 3), (1, 1, 1))]],
    # z bins folded 5 by 5 into channels, a 3x3x3 stem strided 2 along rows, columns and z (a Conv3D of
    # kernel (3, 3, 15) and strides (2, 2, 10) on the 100 mm grid), then strided (2+1)D blocks:
    # (18, 113, 6, 5) -> (9, 57, 3, 16) -> (9, 29, 3, 32) -> (9, 15, 3, 48) -> (9, 15, 3, 48).
    "lite": [[("fold_z", 5), ("conv", 16, (3, 3, 3), (2, 2, 2))],
             [("conv", 32, (3, 3, 1), (1, 2, 1)), ("conv", 32, (1, 1, 3), (1, 1, 1))],
             [("conv", 48, (3, 3, 1), (1, 2, 1)), ("conv", 48, (1, 1, 3), (1, 1, 1))],
             [("conv", 48, (3, 3, 1), (1, 1, 1)), ("conv", 48, (1, 1, 3), (1, 1, 1))]],
    # z bins folded 5 by 5 into channels (the stem below then acts as a Conv3D of kernel (3, 3, 15) and
    # strides (2, 2, 5) on the 100 mm grid), then the same blocks:
    # (18, 113, 6, 5) -> (9, 57, 6, 16) -> (9, 29, 3, 32) -> (9, 15, 3, 48) -> (9, 15, 3, 48).
    "fold5": [[("fold_z", 5), ("conv", 16, (3, 3, 3), (2, 2, 1))],
              [("conv", 32, (3, 3, 3), (1, 2, 2))],
              [("conv", 48, (3, 3, 3), (1, 2, 1))],
              [("conv", 48, (3, 3, 3), (1, 1, 1))]],
    # The same with a (3, 3, 1) stem (= s2full's (3, 3, 5) kernel of stride 5 in z).
    "fold5flat": [[("fold_z", 5), ("conv", 16, (3, 3, 1), (2, 2, 1))],
                  [("conv", 32, (3, 3, 3), (1, 2, 2))],
                  [("conv", 48, (3, 3, 3), (1, 2, 1))],
                  [("conv", 48, (3, 3, 3), (1, 1, 1))]],
    # Layers of each side folded into channels as well: a (2 sides, 113 columns, 3 z slabs of 1 m)
    # grid, each cell's 9 layers x 10 z bins (100 mm) as its 90 channels, the columns strided by 2
    # per block; kernels (1, 5, 1) along the columns, then (2, 1, 3) across the foil and along z:
    # (2, 113, 3, 90) -> (2, 57, 3, 48) -> (2, 29, 3, 64) -> (2, 15, 3, 64).
    "sides": [[("fold_z", 10), ("fold_rows", 9), ("conv", 48, (1, 5, 1), (1, 2, 1)), ("conv", 48, (2, 1, 3), (1, 1, 1))],
              [("conv", 64, (1, 5, 1), (1, 2, 1)), ("conv", 64, (2, 1, 3), (1, 1, 1))],
              [("conv", 64, (1, 5, 1), (1, 2, 1)), ("conv", 64, (2, 1, 3), (1, 1, 1))]],
    # The same grid with full (2, 5, 3) kernels and fewer filters:
    # (2, 113, 3, 90) -> (2, 57, 3, 32) -> (2, 29, 3, 48) -> (2, 15, 3, 64).
    "sides_full": [[("fold_z", 10), ("fold_rows", 9), ("conv", 32, (2, 5, 3), (1, 2, 1))],
                   [("conv", 48, (2, 5, 3), (1, 2, 1))],
                   [("conv", 64, (2, 5, 3), (1, 2, 1))]],
    # 6 z slabs of 500 mm (5 bins as channels, 45 per cell), kernels as ``sides``:
    # (2, 113, 6, 45) -> (2, 57, 6, 32) -> (2, 29, 3, 48) -> (2, 15, 3, 64).
    "sides6": [[("fold_z", 5), ("fold_rows", 9), ("conv", 32, (1, 5, 1), (1, 2, 1)), ("conv", 32, (2, 1, 3), (1, 1, 1))],
               [("conv", 48, (1, 5, 1), (1, 2, 2)), ("conv", 48, (2, 1, 3), (1, 1, 1))],
               [("conv", 64, (1, 5, 1), (1, 2, 1)), ("conv", 64, (2, 1, 3), (1, 1, 1))]],
}
DEFAULT_VARIANT = "sides6"


def _conv_bn_relu(x, filters: int, kernel, names, strides=(1, 1, 1)):
    """Conv3D (no bias, same padding) -> BatchNorm (momentum 0.9) -> ReLU, layers named ``names`` (3 names)."""
    from keras import layers

    conv, bn, relu = names
    x = layers.Conv3D(filters, kernel, strides=strides, padding="same", use_bias=False, name=conv)(x)
    x = layers.BatchNormalization(momentum=0.9, name=bn)(x)
    return layers.ReLU(name=relu)(x)


def build(input_shape=(*geo.VOXEL_SHAPE, 1), n_classes: int = 4, *, variant: str = DEFAULT_VARIANT, filters=None,
          dense: int = 128, dropout: float = 0.3):
    """Voxel counter: (B, 18, 113, 30, C) -> (B, n_classes) softmax; input layer named "voxels".

    ``input_shape``: (rows, columns, z bins, C), C = 1 (hit) or 2 (hit, radius / 22 mm); the
    ``fold*``, ``lite`` and ``sides6`` variants need a multiple of 5 z bins (``sides``,
    ``sides_full``: of 10), the ``sides*`` ones a multiple of 9 rows. ``variant``: one of
    :data:`VARIANTS` (default ``sides6``; ``full`` is the first release's model). ``filters``:
    optional filter counts, one for the stem then one per block (default: the variant's).
    ``features`` is (B, 2 * last filters); output (B, n_classes) softmax over 1..n_classes tracks.
    Raises ``ValueError`` for an unknown variant, n_classes < 2 or a wrong ``filters``.
    """
    import keras
    from keras import layers

    if variant not in VARIANTS:
        raise ValueError(f"unknown view3d variant '{variant}'; choose one of {', '.join(VARIANTS)}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    blocks = VARIANTS[variant]
    if filters is not None:
        filters = [int(value) for value in filters]
        if len(filters) != len(blocks) or min(filters) < 1:
            raise ValueError(f"view3d variant '{variant}' takes {len(blocks)} positive filter counts "
                             f"(stem, then one per block), got {filters}")

    inputs = keras.Input(shape=tuple(input_shape), name="voxels")  # (B, 18, 113, 30, C)
    x = inputs
    for index, steps in enumerate(blocks):
        block = "stem" if index == 0 else f"block{index}"
        convs = 0
        for step in steps:
            if step[0] == "fold_z":
                rows, columns, z_bins, channels = (int(value) for value in x.shape[1:])
                if z_bins % step[1]:
                    raise ValueError(f"view3d variant '{variant}' folds z bins {step[1]} by {step[1]}: "
                                     f"input_shape needs a multiple of {step[1]} z bins, got {z_bins}")
                x = layers.Reshape((rows, columns, z_bins // step[1], step[1] * channels), name=f"{block}_fold_z")(x)
                continue
            if step[0] == "fold_rows":  # (R, W, Z, C) -> (R / n, n, W, Z, C) -> (R / n, W, Z, n * C)
                rows, columns, z_bins, channels = (int(value) for value in x.shape[1:])
                n = step[1]
                if rows % n:
                    raise ValueError(f"view3d variant '{variant}' folds the rows {n} by {n}: input_shape needs "
                                     f"a multiple of {n} rows, got {rows}")
                x = layers.Reshape((rows // n, n, columns, z_bins, channels), name=f"{block}_split_rows")(x)
                x = layers.Permute((1, 3, 4, 2, 5), name=f"{block}_rows_last")(x)
                x = layers.Reshape((rows // n, columns, z_bins, n * channels), name=f"{block}_fold_rows")(x)
                continue
            if step[0] == "pool":
                x = layers.MaxPooling3D(pool_size=step[1], padding="same", name=f"{block}_pool")(x)
                continue
            _, n_filters, kernel, strides = step
            convs += 1
            n_filters = n_filters if filters is None else filters[index]
            x = _conv_bn_relu(x, n_filters, kernel, (f"{block}_conv{convs}", f"{block}_bn{convs}",
                                                     f"{block}_relu{convs}"), strides)
    average = layers.GlobalAveragePooling3D(name="global_average")(x)  # (B, filters[-1])
    maximum = layers.GlobalMaxPooling3D(name="global_max")(x)  # (B, filters[-1])
    outputs = counting_head(average, maximum, n_classes, dense, dropout)  # (B, n_classes)
    return keras.Model(inputs, outputs, name="voxel_counter")
