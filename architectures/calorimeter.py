"""Calorimeter association models: which cell of the 22 x 15 grid (DESIGN.md) each track hits.

The column of the hit cell follows from y at the calorimeter (the top view: column against
layer), the row from z (the front view: z bin against layer; the side view: z bin against
column, which also serves tracks that end on an X-wall or a gamma veto). Each view goes through
its own small CNN *branch* that keeps where the track lies: the last feature map is squeezed to a
few channels by a 1x1 convolution, flattened and read by a dense layer (global pooling would
forget the position, which is the answer here). The branches are concatenated, then a dense
layer and the output.

* :func:`build_single`: one track's hits, folded onto side 1 (see
  :mod:`datasets.associated_calohit_singlelabel`), so the model only reads top-view rows 9-17 and
  front-view columns 9-17 (``Cropping2D``). Output ``cell``: (B, 330) softmax over the grid of the
  track's own side, index ``row * 22 + column``; the side is that of the track's hits (tracks
  never cross the foil in either generator).
* :func:`build_wall`: the multi-label model on the wall view (:mod:`datasets.wall_view`): fully
  convolutional on each side's (z, column) image, layers as channels, mapped onto the grids.
* :func:`build_multi`: an unclustered event's views (both sides). Output ``cells``: (B, 660) over
  both sides' grids, index ``side * 330 + row * 22 + column``, softmax (target: tracks per cell /
  number of tracks) or sigmoid (multi-hot target); with ``max_tracks``, a second output ``count``:
  (B, max_tracks) softmax over 1..max_tracks tracks.

Inputs are named after their views ("top", "side", "front"), so ``model.input_names`` tell which
views a model reads (:func:`input_views`); :func:`input_channels` tells its channels (a single-label model with the z
channel on its top view is named ``calorimeter_single_z``). A single-label model may also read
"line" (B, 301), the straight-line fit of the track's hits (:mod:`datasets.line_fit`): where the
track reaches the wall, which the views show only binned. Functional Keras 3, no Lambda layer: loadable with ``safe_mode=True``.
"""

from __future__ import annotations

from datasets.associated_calohit_multilabel import PRIOR_INPUT  # build_wall(prior=True): the (B, 660) candidate cells
from snemo import geometry as geo

VIEWS = ("top", "side", "front")
LINE_INPUT = "line"  # name of the line-fit input
LINE_FEATURES = 301  # datasets.line_fit.N_FEATURES (models of the first kind read the first 264)
WALL_INPUT = "wall"  # name of the wall-view input of build_wall (datasets.wall_view)
PRIOR_WEIGHT = 10.0  # start of the learned weight of a candidate cell in its logit (3 let the trunk outvote its own prior)
VIEW_SHAPES = {"top": geo.TOP_SHAPE, "side": geo.SIDE_SHAPE, "front": geo.FRONT_SHAPE}
# Per view: max-pooling after each block, as (rows, columns); for the top view of one folded
# track the 9 layers are the rows, for the front view the 30 z bins are the rows.
POOLS = {"top": ((1, 2), (3, 2)), "side": ((2, 2), (3, 2)), "front": ((2, 1), (3, 1))}
POOLS_EVENT = {"top": ((2, 2), (3, 2)), "side": ((2, 2), (3, 2)), "front": ((2, 2), (3, 1))}


def view_branch(inputs, name: str, *, pools, filters=(16, 32), squeeze: int = 8, units: int = 64,
                bn_momentum: float = 0.9):
    """One view's branch: [conv 3x3, BatchNorm, ReLU, max-pool] per block, 1x1 conv, flatten, dense.

    ``inputs``: a (B, H, W, C) tensor; ``pools``: one pool size per block; ``filters``: filters
    per block; ``squeeze``: channels of the 1x1 convolution before flattening; ``units``: the
    branch's feature size. Returns the (B, units) ReLU features; layers are named ``<name>_...``.
    """
    from keras import layers

    if len(pools) != len(filters):
        raise ValueError(f"one pool size per block: {len(pools)} pools for {len(filters)} filters")
    x = inputs
    for block, (n_filters, pool) in enumerate(zip(filters, pools), start=1):
        x = layers.Conv2D(n_filters, 3, padding="same", use_bias=False, name=f"{name}_conv{block}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{block}")(x)
        x = layers.ReLU(name=f"{name}_relu{block}")(x)
        x = layers.MaxPooling2D(pool_size=pool, padding="same", name=f"{name}_pool{block}")(x)
    x = layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    return layers.Dense(units, activation="relu", name=f"{name}_dense")(x)  # (B, units)


def _check_views(views) -> tuple[str, ...]:
    views = (views,) if isinstance(views, str) else tuple(views)
    if not views or len(set(views)) != len(views) or any(v not in VIEWS for v in views):
        raise ValueError(f"views must be distinct names among {list(VIEWS)}, got {views!r}")
    return views


def _inputs(views, channels: int, z_channel: bool = False):
    import keras

    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 (hits) or 2 (hits, radius), got {channels}")
    return {view: keras.Input(shape=VIEW_SHAPES[view] + (channels + int(z_channel and view == "top"),), name=view)
            for view in views}  # (B, H, W, C)


def input_views(model) -> tuple[str, ...]:
    """The views a calorimeter model reads, from its input names (the line input left out): views
    among "top", "side", "front" in that order, or ("wall",). Raises ValueError naming the inputs otherwise."""
    names = tuple(tensor.name.split(":")[0] for tensor in model.inputs
                  if tensor.name.split(":")[0] not in (LINE_INPUT, PRIOR_INPUT))
    if names == (WALL_INPUT,):
        return names
    views = tuple(view for view in VIEWS if view in names)
    if not views or len(views) != len(names):
        raise ValueError(f"not a calorimeter model: its inputs are {list(names)}, expected views among "
                         f"{', '.join(VIEWS)} or the wall view alone")
    return views


def reads_prior(model) -> bool:
    """True when the model reads the candidate cells (:func:`build_wall` with ``prior``)."""
    return PRIOR_INPUT in {tensor.name.split(":")[0] for tensor in model.inputs}


def input_channels(model) -> dict:
    """{"radius_channel", "z_channel" (bools), "line_input"} of a calorimeter model, from its inputs and name.

    Channels are [hit, z (top view only), radius] (:func:`datasets.views.make_view`); ``line_input``:
    False, or the number of features of the input "line" the model reads (the first ones of
    :func:`datasets.line_fit.line_features`: 301, or 264 for models of the first kind). Raises
    ValueError when the input shapes fit no such layout.
    """
    name = str(model.name)
    z_channel = name.startswith("calorimeter_single") and "z" in name.split("_")
    shapes = {tensor.name.split(":")[0]: int(tensor.shape[-1]) for tensor in model.inputs}
    line_input = shapes.pop(LINE_INPUT, None) or False
    shapes.pop(PRIOR_INPUT, None)
    if set(shapes) == {WALL_INPUT}:  # the wall view carries z and the radius itself
        return {"radius_channel": True, "z_channel": False, "line_input": False}
    for radius_channel in (False, True):
        wanted = {view: 1 + int(radius_channel) + int(z_channel and view == "top") for view in shapes}
        if wanted == shapes:
            return {"radius_channel": radius_channel, "z_channel": z_channel, "line_input": line_input}
    raise ValueError(f"model {model.name!r}: input channels {shapes} fit no layout [hit, z (top), radius]")


def _trunk(features: list, dense: int, dropout: float, name: str):
    from keras import layers

    x = features[0] if len(features) == 1 else layers.Concatenate(name="features")(features)
    x = layers.Dense(dense, activation="relu", name=f"{name}_dense")(x)
    return layers.Dropout(dropout, name=f"{name}_dropout")(x)


LINE_PRIOR_SCALE = 4.0  # logits given to the line's own grid column and row at the start


def cell_head(x, head: str = "full", line=None, line_prior=None):
    """Softmax over the 330 cells of one side's grid, index ``row * 22 + column``: (B, 330) ``cell``.

    ``head``: "full", one dense layer of 330 logits; "factorised", logit(row, column) = a_row +
    b_column + c_cell with c (a dense layer of 330, initialised at zero) learning what the sum of a
    row term and a column term misses (the column follows from the top view, the row from z, so
    the sum is the right start and the model learns the two apart). ``line``: with the factorised
    head, the (B, 301) line-fit input also reaches a_row and b_column directly, through one linear
    layer each (its radial-basis bumps give the wall position more sharply than the trunk can);
    ``line_prior``: (columns (301, 22), rows (301, 15)) matrices those two layers start from, times
    :data:`LINE_PRIOR_SCALE` (``datasets.line_fit.grid_binning``: the model starts from the cell
    the line alone predicts and learns the corrections), else random.
    """
    from keras import layers

    if head == "full":
        return layers.Dense(geo.CALO_GRID_CELLS, activation="softmax", name="cell")(x)  # (B, 330)
    if head != "factorised":
        raise ValueError(f"head must be 'full' or 'factorised', got {head!r}")
    rows, columns = geo.CALO_GRID_ROWS, geo.CALO_GRID_COLUMNS
    column = layers.Dense(columns, name="column_logits")(x)  # (B, 22)
    row = layers.Dense(rows, name="row_logits")(x)  # (B, 15)
    if line is not None:
        column_from_line = layers.Dense(columns, name="column_from_line")
        row_from_line = layers.Dense(rows, name="row_from_line")
        column = layers.Add(name="column_logits_with_line")([column, column_from_line(line)])
        row = layers.Add(name="row_logits_with_line")([row, row_from_line(line)])
        if line_prior is not None:
            import numpy as np

            for layer, matrix in zip((column_from_line, row_from_line), line_prior):
                layer.set_weights([LINE_PRIOR_SCALE * matrix, np.zeros(matrix.shape[1], np.float32)])
    column = layers.RepeatVector(rows, name="column_by_row")(column)
    row = layers.RepeatVector(columns, name="row_by_column")(row)
    row = layers.Permute((2, 1), name="row_logits_grid")(row)  # (B, 15, 22)
    cell = layers.Dense(geo.CALO_GRID_CELLS, kernel_initializer="zeros", name="cell_logits")(x)
    cell = layers.Reshape((rows, columns), name="cell_logits_grid")(cell)
    logits = layers.Flatten(name="grid_logits")(layers.Add(name="grid_sum")([row, column, cell]))  # (B, 330)
    return layers.Activation("softmax", name="cell")(logits)


def build_single(views=VIEWS, *, channels: int = 1, z_channel: bool = False, filters=(16, 32), squeeze: int = 8,
                 units: int = 64, dense: int = 128, dropout: float = 0.2, head: str = "full",
                 line_input: bool = False, line_skip: bool = False, line_prior=None):
    """Single-label model: one track's views -> (B, 330) softmax ``cell`` on the track's side.

    ``views``: which of "top" (B, 18, 113, C), "side" (B, 30, 113, C), "front" (B, 30, 18, C) it
    reads, the track folded onto side 1 (top rows 0-8 and front columns 0-8 are empty and cropped
    away). ``channels``: 1 (hits / hit counts) or 2 (and the drift radius / 22 mm); ``z_channel``:
    the top view also carries wirez / 1500 mm (its channel 1, before the radius). ``head``: see
    :func:`cell_head`. ``line_input``: a further input "line" (B, 301) (the line fit), which enters
    the trunk both as it is and through a dense layer of 64; ``line_skip`` (factorised head and line
    input only) also adds it to the row and column logits (:func:`cell_head`), starting from
    ``line_prior`` when given. About 240k
    parameters with the defaults and the three views. Returns the uncompiled ``keras.Model``.
    """
    import keras
    from keras import layers

    views = _check_views(views)
    if line_skip and not (line_input and head == "factorised"):
        raise ValueError("line_skip needs line_input and the factorised head")
    inputs = _inputs(views, channels, z_channel)
    crops = {"top": ((geo.N_LAYERS, 0), (0, 0)), "front": ((0, 0), (geo.N_LAYERS, 0))}
    features = []
    for view in views:
        x = inputs[view]
        if view in crops:
            x = layers.Cropping2D(crops[view], name=f"{view}_side1")(x)  # top (B, 9, 113, C), front (B, 30, 9, C)
        features.append(view_branch(x, view, pools=POOLS[view], filters=filters, squeeze=squeeze, units=units))
    line = None
    if line_input:
        line = keras.Input(shape=(LINE_FEATURES,), name=LINE_INPUT)  # (B, 301)
        inputs[LINE_INPUT] = line
        features += [line, layers.Dense(64, activation="relu", name="line_dense")(line)]
    x = _trunk(features, dense, dropout, "head")
    cell = cell_head(x, head, line if line_skip else None, line_prior if line_skip else None)  # (B, 330)
    return keras.Model(inputs if len(inputs) > 1 else inputs[views[0]], cell,
                       name="calorimeter_single" + ("_z" if z_channel else "") + ("_line" if line_input else ""))


def build_multi(views=VIEWS, *, channels: int = 1, output: str = "softmax", max_tracks: int | None = None,
                filters=(16, 32), squeeze: int = 8, units: int = 64, dense: int = 128, dropout: float = 0.2):
    """Multi-label model: an event's views -> (B, 660) ``cells`` scores, optionally the ``count`` head.

    ``views``: as :func:`build_single`, both sides. ``output``: "softmax" (scores sum to 1, target
    tracks per cell / number of tracks) or "sigmoid" (independent cell probabilities, multi-hot
    target). ``max_tracks``: None for one output; else the model returns the dict
    {"cells": (B, 660), "count": (B, max_tracks) softmax over 1..max_tracks tracks}, both read
    from the same features. About 250k parameters with the defaults. Returns the uncompiled model.
    """
    import keras
    from keras import layers

    views = _check_views(views)
    if output not in ("softmax", "sigmoid"):
        raise ValueError(f"output must be 'softmax' or 'sigmoid', got {output!r}")
    if max_tracks is not None and int(max_tracks) < 2:
        raise ValueError(f"max_tracks must be at least 2 (or None: no count head), got {max_tracks}")
    inputs = _inputs(views, channels)
    features = [view_branch(inputs[view], view, pools=POOLS_EVENT[view], filters=filters, squeeze=squeeze,
                            units=units) for view in views]
    x = _trunk(features, dense, dropout, "head")
    cells = layers.Dense(geo.N_SIDES * geo.CALO_GRID_CELLS, activation=output, name="cells")(x)  # (B, 660)
    model_inputs = inputs if len(views) > 1 else inputs[views[0]]
    if max_tracks is None:
        return keras.Model(model_inputs, cells, name=f"calorimeter_multi_{output}")
    count = layers.Dense(int(max_tracks), activation="softmax", name="count")(x)  # (B, max_tracks)
    return keras.Model(model_inputs, {"cells": cells, "count": count}, name=f"calorimeter_multi_{output}_count")


def build_wall(*, filters: int = 24, blocks: int = 3, squeeze: int = 16, output: str = "softmax",
               max_tracks: int | None = None, dropout: float = 0.1, prior: bool = False):
    """Multi-label model on the wall view: an event's (B, 2, 30, 113, 27) ``wall`` input -> (B, 660) ``cells``.

    Each side's (z bin, column) image, layers as channels (:mod:`datasets.wall_view`), goes through
    the same fully convolutional stack: a 1x1 convolution mixing the layers' channels, a 3x3
    convolution, 2 x 2 max-pooling (to 15 x 57, about the grid's 15 rows and two pixels per grid
    column), then ``blocks`` 3x3 convolutions (``filters`` each, BatchNorm, ReLU) that see a
    track's direction over its layers, and a 1x1 convolution to ``squeeze`` maps; then two learned
    linear maps, 57 columns -> 22 grid columns and 15 z pixels -> 15 grid rows, and a 1x1
    combination to one logit per cell: a track's cell is read where its hits lie, so tracks far
    apart do not mix. Index ``side * 330 + row * 22 + column``; ``output`` and ``max_tracks`` as
    :func:`build_multi` (the count head reads the maps' global mean and maximum). With ``prior``, a
    second input ``wall_prior`` (B, 660), 1.0 at each candidate cell (where the event's Hough lines
    meet the wall, ``calorimeter_prior``), adds a learned weight (:data:`PRIOR_WEIGHT` at the start)
    to those cells' logits: untrained, the model ranks the candidates first. Returns the
    uncompiled model, named ``calorimeter_wall_<output>``.
    """
    import keras
    from keras import layers

    from datasets import wall_view

    if output not in ("softmax", "sigmoid"):
        raise ValueError(f"output must be 'softmax' or 'sigmoid', got {output!r}")
    if max_tracks is not None and int(max_tracks) < 2:
        raise ValueError(f"max_tracks must be at least 2 (or None: no count head), got {max_tracks}")

    def block(x, name, kernel=3):
        x = layers.TimeDistributed(layers.Conv2D(filters, kernel, padding="same", use_bias=False), name=f"{name}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input(shape=wall_view.SHAPE, name=WALL_INPUT)  # (B, 2, 30, 113, 27)
    x = layers.Dense(filters, activation="relu", name="wall_layers")(inputs)  # 1x1: (B, 2, 30, 113, F)
    x = block(x, "wall1")
    x = layers.TimeDistributed(layers.MaxPooling2D(2, padding="same"), name="wall_pool")(x)  # (B, 2, 15, 57, F)
    for index in range(2, blocks + 2):
        x = block(x, f"wall{index}")
    maps = layers.Dense(squeeze, activation="relu", name="wall_squeeze")(x)  # 1x1: (B, 2, 15, 57, S)
    x = layers.Dropout(dropout, name="wall_dropout")(maps)
    x = layers.Permute((1, 2, 4, 3), name="columns_last")(x)  # (B, 2, 15, S, 57)
    x = layers.Dense(geo.CALO_GRID_COLUMNS, name="to_grid_columns")(x)  # (B, 2, 15, S, 22)
    x = layers.Permute((1, 4, 3, 2), name="z_last")(x)  # (B, 2, 22, S, 15)
    x = layers.Dense(geo.CALO_GRID_ROWS, name="to_grid_rows")(x)  # (B, 2, 22, S, 15)
    x = layers.Permute((1, 4, 2, 3), name="grid")(x)  # (B, 2, 15, 22, S)
    x = layers.Dense(1, name="cell_logit")(x)  # (B, 2, 15, 22, 1)
    logits = layers.Flatten(name="cell_logits")(x)  # (B, 660)
    if prior:
        candidates = keras.Input(shape=(geo.N_SIDES * geo.CALO_GRID_CELLS,), name=PRIOR_INPUT)  # (B, 660)
        weighted = layers.Reshape((-1, 1), name="prior_cells")(candidates)  # (B, 660, 1)
        weighted = layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(PRIOR_WEIGHT),
                                name="prior_weight")(weighted)
        logits = layers.Add(name="logits_with_prior")([logits, layers.Flatten(name="prior_logits")(weighted)])
        inputs = {WALL_INPUT: inputs, PRIOR_INPUT: candidates}
    cells = layers.Activation(output, name="cells")(logits)
    if max_tracks is None:
        return keras.Model(inputs, cells, name=f"calorimeter_wall_{output}")
    pooled = layers.Concatenate(name="pooled")([layers.GlobalAveragePooling3D(name="maps_mean")(maps),
                                                layers.GlobalMaxPooling3D(name="maps_max")(maps)])  # (B, 2 S)
    hidden = layers.Dense(64, activation="relu", name="count_dense")(pooled)
    count = layers.Dense(int(max_tracks), activation="softmax", name="count")(hidden)
    return keras.Model(inputs, {"cells": cells, "count": count}, name=f"calorimeter_wall_{output}_count")
