"""Clustering discriminator: a conditional PatchGAN (pix2pix-style) on (event image, track image) pairs.

Inputs: the event's top view (B, 18, 113, C) (as the generator reads it) and a track image
(B, 18, 113, 1) (the truth first track, or the generator's output). Output (B, 5, 15, 1): one
LOGIT per patch (no sigmoid: the losses take logits, which is numerically safer), each patch
seeing about 20 x 40 cells, that says whether the track image is the event's true first track.
"""

from __future__ import annotations

from snemo import geometry as geo

PAD = ((1, 1), (1, 2))  # (18, 113) -> (20, 116)


def build(channels: int = 1, *, filters=(16, 32, 64), name: str = "discriminator"):
    """Build the discriminator (Functional API, uncompiled): [(B, 18, 113, C), (B, 18, 113, 1)] -> (B, 5, 15, 1) logits.

    ``channels``: C of the event image. ``filters``: of the three strided convolutions
    ((20, 116) -> (10, 58) -> (5, 29) -> (5, 15)); a 3x3 convolution then gives the patch logits.
    About 30k parameters with the defaults.
    """
    import keras
    from keras import layers

    if len(filters) != 3:
        raise ValueError(f"filters needs 3 values, got {len(filters)}")
    event = keras.Input(geo.TOP_SHAPE + (int(channels),), name="event")  # (B, 18, 113, C)
    track = keras.Input(geo.TOP_SHAPE + (1,), name="track")  # (B, 18, 113, 1)
    x = layers.Concatenate(name="pair")([event, track])  # (B, 18, 113, C + 1)
    x = layers.ZeroPadding2D(PAD, name="pad")(x)  # (B, 20, 116, C + 1)
    for index, (n_filters, strides) in enumerate(zip(filters, ((2, 2), (2, 2), (1, 2)))):
        x = layers.Conv2D(n_filters, 4, strides=strides, padding="same", name=f"conv{index}")(x)
        x = layers.LeakyReLU(0.2, name=f"lrelu{index}")(x)
    logits = layers.Conv2D(1, 3, padding="same", name="patch_logits")(x)  # (B, 5, 15, 1)
    return keras.Model([event, track], logits, name=name)
