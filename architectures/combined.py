"""Combined track counter: top + side + front view models cut at ``features``, concatenated, dense head.

Transfer learning as in the original: each trained view model is cut after its last convolutional
block (the layer named ``features``) and wrapped as a branch sub-model ``top_branch``,
``side_branch``, ``front_branch``; train first with the branches frozen
(:func:`set_branches_trainable` False), then unfreeze (BatchNorm stays frozen) and fine-tune at a
lower learning rate.
Inputs are named "top", "side" and "front", matching the dict that the multi-view loader yields.
"""

from __future__ import annotations

VIEWS = ("top", "side", "front")
BRANCHES = tuple(f"{view}_branch" for view in VIEWS)


def cut_at_features(model, name: str):
    """Sub-model of ``model`` from its input to its layer ``features``: (B, H, W, C) -> (B, F)."""
    import keras

    try:
        features = model.get_layer("features")
    except ValueError:
        raise ValueError(f"model '{model.name}' has no layer named 'features'; its layers: "
                         f"{[layer.name for layer in model.layers]}") from None
    return keras.Model(model.inputs[0], features.output, name=name)


def build(top_model, side_model, front_model, n_classes: int = 4, *, dense: int = 128, dropout: float = 0.3,
          trainable_branches: bool = False):
    """Combined counter: {"top": (B, 18, 113, C), "side": (B, 30, 113, C), "front": (B, 30, 18, C)} -> (B, n_classes).

    ``top_model`` / ``side_model`` / ``front_model``: trained view counters (built by
    :mod:`architectures.top` etc. or loaded from .keras) with a ``features`` layer. Their weights are
    shared with the returned model. ``trainable_branches``: False for the frozen phase.
    """
    import keras
    from keras import layers

    inputs, features = {}, []
    for view, model in zip(VIEWS, (top_model, side_model, front_model)):
        branch = cut_at_features(model, f"{view}_branch")
        branch.trainable = trainable_branches
        inputs[view] = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name=view)  # (B, H, W, C)
        features.append(branch(inputs[view]))  # (B, F_view)
    x = layers.Concatenate(name="concat_features")(features)  # (B, F_top + F_side + F_front)
    x = layers.Dense(dense, activation="relu", name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="count")(x)  # (B, n_classes)
    return keras.Model(inputs, outputs, name="combined_counter")


def set_branches_trainable(model, trainable: bool) -> None:
    """Freeze (False) or unfreeze (True) the three view branches of a combined model; the head stays trainable.

    Unfreezing leaves the branches' BatchNormalization layers frozen, so they keep running in
    inference mode with the statistics learnt on the view (the usual fine-tuning practice; Keras 3
    does not keep a ``training=False`` call argument inside a functional graph).
    """
    import keras

    for name in BRANCHES:
        branch = model.get_layer(name)
        branch.trainable = trainable
        if trainable:
            for layer in branch.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
