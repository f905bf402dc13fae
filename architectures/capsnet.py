"""CapsNet track counter for any 2D view (top, side, front): convolutions, primary capsules, routed class capsules.

After Sabour, Frosst and Hinton (2017), made small enough for 2 CPU cores. Layer names:
``block<i>_conv``, ``block<i>_bn``, ``block<i>_relu``, ``block<i>_pool``, ``primary_capsules``
(8-D, squashed), ``class_capsules`` (one 16-D capsule per class, 3 routing iterations),
``features`` (the flattened class capsules, where :func:`architectures.combined.build` can cut the
model), ``class_poses`` (back to (B, n_classes, 16)) and ``count``, the capsule lengths
(B, n_classes) in [0, 1): the argmax is the predicted class (1..n_classes tracks). Train with
``capsule.margin_loss`` as the per-example loss (``ClassifierStep(model, loss_fn=margin_loss)``);
the lengths are scores, not probabilities (they need not sum to one).

Default on the top view (3x3 convolutions of 16 and 32 filters): (18, 113) -> pool (1, 2) ->
(18, 57) -> pool (2, 2) -> (9, 29) -> primary capsules 3x3 stride 2 -> (4, 14) x 8 types = 448
capsules of 8 dimensions -> 4 class capsules of 16; 252,816 parameters. A saved model loads with
``safe_mode=True`` after ``import capsule``.
"""

from __future__ import annotations

from snemo import geometry as geo

VIEW_SHAPES = {"top": geo.TOP_SHAPE, "side": geo.SIDE_SHAPE, "front": geo.FRONT_SHAPE}


def view_name(input_shape, view=None) -> str:
    """Input layer name: ``view`` if given, else the view whose (H, W) is ``input_shape[:2]``, else "image"."""
    if view is not None:
        return view
    for name, shape in VIEW_SHAPES.items():
        if tuple(input_shape[:2]) == tuple(shape):
            return name
    return "image"


def capsule_features(inputs, n_classes: int, *, filters=(16, 32), pools=((1, 2), (2, 2)), primary_types: int = 8,
                     primary_dim: int = 8, primary_kernel=3, primary_strides=2, class_dim: int = 16,
                     routing_iterations: int = 3, bn_momentum: float = 0.9):
    """Convolutional blocks -> primary capsules -> class capsules; returns the (B, n_classes, class_dim) tensor.

    ``inputs``: a (B, H, W, C) Keras tensor. ``filters`` / ``pools``: one 3x3 Conv2D + BatchNorm
    (momentum ``bn_momentum``) + ReLU block per entry, each followed by max pooling (None: none).
    ``primary_*``: the :class:`capsule.PrimaryCapsule` (types per position, dimension, kernel,
    strides, valid padding). ``class_dim`` / ``routing_iterations``: of the
    :class:`capsule.SecondaryCapsule`.
    """
    from keras import layers

    from capsule import PrimaryCapsule, SecondaryCapsule

    if len(filters) != len(pools):
        raise ValueError(f"one pool size per block: {len(pools)} pools for {len(filters)} blocks")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    x = inputs
    for block, (n_filters, pool) in enumerate(zip(filters, pools), start=1):
        x = layers.Conv2D(n_filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        if pool is not None:
            x = layers.MaxPooling2D(pool_size=pool, padding="same", name=f"block{block}_pool")(x)
    primary = PrimaryCapsule(primary_types, primary_dim, kernel_size=primary_kernel, strides=primary_strides,
                             name="primary_capsules")(x)  # (B, I, primary_dim)
    return SecondaryCapsule(n_classes, class_dim, routing_iterations=routing_iterations,
                            name="class_capsules")(primary)  # (B, n_classes, class_dim)


def build(input_shape=(*geo.TOP_SHAPE, 1), n_classes: int = 4, *, view: str | None = None, **options):
    """CapsNet counter: (B, H, W, C) -> (B, n_classes) capsule lengths in [0, 1), output layer ``count``.

    ``input_shape``: (H, W, C) of one event's image; the input layer is named ``view`` or, by
    default, after the view of that shape ("top", "side", "front"). ``options``: see
    :func:`capsule_features` (filters, pools, primary_types, primary_dim, primary_kernel,
    primary_strides, class_dim, routing_iterations, bn_momentum).
    """
    import keras
    from keras import layers

    from capsule import CapsuleLength

    name = view_name(input_shape, view)
    inputs = keras.Input(shape=tuple(input_shape), name=name)  # (B, H, W, C)
    capsules = capsule_features(inputs, n_classes, **options)  # (B, n_classes, class_dim)
    n_capsules, class_dim = capsules.shape[1:]
    features = layers.Flatten(name="features")(capsules)  # (B, n_classes * class_dim)
    poses = layers.Reshape((n_capsules, class_dim), name="class_poses")(features)
    outputs = CapsuleLength(name="count")(poses)  # (B, n_classes)
    return keras.Model(inputs, outputs, name=f"{name}_capsnet")


def build_with_decoder(input_shape=(*geo.TOP_SHAPE, 1), n_classes: int = 4, *, view: str | None = None,
                       decoder_units=(256, 512), **options):
    """CapsNet counter with the masked reconstruction decoder of Sabour et al. (not in the default counter).

    Inputs ``{view: (B, H, W, C) image, "label": (B, n_classes) one-hot}``; outputs
    ``{"count": (B, n_classes) lengths, "reconstruction": (B, H, W, C) sigmoid image}``. The
    decoder (dense ``decoder_units``, ReLU, then a sigmoid per pixel) reads the class capsules
    masked by the label in training and by the longest capsule otherwise (the label is then
    ignored). Its loss in the paper: margin loss + 0.0005 * sum of squared pixel differences.
    """
    import math

    import keras
    from keras import layers

    from capsule import CapsuleLength, CapsuleMask

    name = view_name(input_shape, view)
    image = keras.Input(shape=tuple(input_shape), name=name)  # (B, H, W, C)
    label = keras.Input(shape=(n_classes,), name="label")  # (B, n_classes)
    capsules = capsule_features(image, n_classes, **options)  # (B, n_classes, class_dim)
    lengths = CapsuleLength(name="count")(capsules)  # (B, n_classes)
    x = CapsuleMask(name="mask")([capsules, label])  # (B, n_classes * class_dim)
    for index, units in enumerate(decoder_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"decoder_dense{index}")(x)
    x = layers.Dense(math.prod(input_shape), activation="sigmoid", name="decoder_pixels")(x)
    reconstruction = layers.Reshape(tuple(input_shape), name="reconstruction")(x)  # (B, H, W, C)
    return keras.Model({name: image, "label": label}, {"count": lengths, "reconstruction": reconstruction},
                       name=f"{name}_capsnet_decoder")
