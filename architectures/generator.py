"""Clustering generator: a small U-Net from an event's top view to the cells of its first remaining track.

Input (B, 18, 113, C) float32 as ``clustering.event_inputs`` makes it: channel 0 is 1.0 where a
cell has a hit, then optionally wirez / 1500 mm and drift radius / 22 mm. Output (B, 18, 113, 1):
the probability that the cell belongs to the first remaining track in canonical order, multiplied
by the hit mask (exactly 0 on a cell without a hit).

The canonical first track is the one whose hit nearest the foil has the smallest column, a
property of the whole event: the encoder pools mostly along the 113 columns, (20, 116) -> (10, 58)
-> (5, 29) -> (5, 15) -> (5, 8), so the bottleneck sees every column; skip connections bring the
cell-level detail back at each scale. The image is zero-padded to (20, 116) and cropped back.
Importing this module imports Keras (it registers :class:`HitMask`). The input layer's name says the channels (``top``, ``top_z``, ``top_radius``, ``top_z_radius``):
:func:`input_channels` reads it back from a saved model.
"""

from __future__ import annotations

import keras

from snemo import geometry as geo

PAD = ((1, 1), (1, 2))  # (18, 113) -> (20, 116)
POOLS = ((2, 2), (2, 2), (1, 2), (1, 2))  # (20, 116) -> (10, 58) -> (5, 29) -> (5, 15) -> (5, 8)


@keras.saving.register_keras_serializable(package="snemo")
class HitMask(keras.layers.Layer):
    """(B, H, W, C) image -> (B, H, W, 1) float: 1.0 where channel 0 is positive (a cell with a hit).

    Registered as ``snemo>HitMask``: importing this module lets ``keras.saving.load_model(...,
    safe_mode=True)`` load a saved generator.
    """

    def call(self, inputs):
        return keras.ops.cast(inputs[..., :1] > 0, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)


def input_name(z_channel: bool = False, radius_channel: bool = False) -> str:
    """Name of the generator's input layer for these channels: top, top_z, top_radius or top_z_radius."""
    return "top" + ("_z" if z_channel else "") + ("_radius" if radius_channel else "")


def input_channels(model) -> dict:
    """{"z_channel": bool, "radius_channel": bool} of a generator, from its input layer's name.

    Raises ValueError for a model that is not a clustering generator (another input name or shape).
    """
    names = [layer.name for layer in model.layers if layer.__class__.__name__ == "InputLayer"]
    for z_channel in (False, True):
        for radius_channel in (False, True):
            if names == [input_name(z_channel, radius_channel)]:
                wanted = geo.TOP_SHAPE + (1 + z_channel + radius_channel,)
                if tuple(model.input_shape[1:]) != wanted:
                    break
                return {"z_channel": z_channel, "radius_channel": radius_channel}
    raise ValueError(f"model {model.name} is not a clustering generator: inputs {names} of shape {model.input_shape}; "
                     f"expected one input top[_z][_radius] of shape (18, 113, C)")


def _conv_block(x, filters: int, name: str):
    from keras import layers

    for index in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{index}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{index}")(x)
        x = layers.ReLU(name=f"{name}_relu{index}")(x)
    return x


def build(z_channel: bool = False, radius_channel: bool = False, *, filters=(16, 24, 32, 40, 48), name="generator"):
    """Build the generator (Functional API, uncompiled ``keras.Model``): (B, 18, 113, C) -> (B, 18, 113, 1).

    ``z_channel`` / ``radius_channel``: the input's extra channels (C = 1 + their number).
    ``filters``: per scale, from full resolution to the bottleneck (len(POOLS) + 1 values).
    About 195k parameters with the defaults (three channels).
    """
    from keras import layers

    if len(filters) != len(POOLS) + 1:
        raise ValueError(f"filters needs {len(POOLS) + 1} values (one per scale), got {len(filters)}")
    channels = 1 + bool(z_channel) + bool(radius_channel)
    inputs = keras.Input(geo.TOP_SHAPE + (channels,), name=input_name(z_channel, radius_channel))  # (B, 18, 113, C)
    mask = HitMask(name="hit_mask")(inputs)  # (B, 18, 113, 1)
    x = layers.ZeroPadding2D(PAD, name="pad")(inputs)  # (B, 20, 116, C)
    skips = []
    for level, (n_filters, pool) in enumerate(zip(filters[:-1], POOLS)):
        x = _conv_block(x, n_filters, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(pool, padding="same", name=f"down{level}_pool")(x)
    x = _conv_block(x, filters[-1], "bottleneck")  # (B, 5, 8, filters[-1])
    for level in reversed(range(len(POOLS))):
        x = layers.UpSampling2D(POOLS[level], name=f"up{level}_upsample")(x)
        skip = skips[level]
        # Pooling with "same" padding rounds up (29 -> 15 -> 8): crop the upsampled map to the skip's size.
        extra = (x.shape[1] - skip.shape[1], x.shape[2] - skip.shape[2])
        if extra != (0, 0):
            x = layers.Cropping2D(((0, extra[0]), (0, extra[1])), name=f"up{level}_crop")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skip])
        x = _conv_block(x, filters[level], f"up{level}")
    x = layers.Conv2D(1, 1, activation="sigmoid", name="probability")(x)  # (B, 20, 116, 1)
    x = layers.Cropping2D(PAD, name="crop")(x)  # (B, 18, 113, 1)
    outputs = layers.Multiply(name="first_track")([x, mask])  # 0 on cells without a hit
    return keras.Model(inputs, outputs, name=name)
