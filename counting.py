"""Track counting, the task of number_of_tracks_classification.py, ...3D.py, combined.py and plot_confusion.py.

What those scripts share and the core (``snemo/``) must not know:

* :func:`load`: the counting dataset (``datasets.number_of_tracks`` or ``..3D``) with the run's
  flags; without --data, the built-in dataset of ``Generator.builtin``;
* :func:`report`: the evaluation on the test split that writes ``metrics.json``, the curves and
  the confusion matrix (PDF and PNG) and prints the confusion matrix and the accuracy;
* :func:`labels`, :func:`model_views`: class labels and what a trained counter reads;
* :func:`init_from`: start from the weights of a trained counter (``--init-model``), checked;
  :func:`add_init_flag`, :func:`check_init_flag` and :func:`apply_init` give a script that flag;
* :func:`load_model`: a trained counter, CNN or CapsNet (capsule layers registered first).

    import counting
    splits = counting.load(run, view="top")
"""

from __future__ import annotations

from pathlib import Path

from Generator.builtin import default_dataset
from snemo import cli


def labels(max_tracks: int) -> list[int]:
    """Number of tracks of each class: [1, 2, ..., max_tracks]."""
    return list(range(1, max_tracks + 1))


def source(run: cli.Run):
    """The run's --data, or its built-in dataset (see :func:`snemo.cli.data_source`)."""
    return cli.data_source(run, builtin=default_dataset)


def load(run: cli.Run, *, view=None, three_d: bool = False, shard=None, require_train: bool = True, **extra):
    """Load the counting dataset with the run's flags; returns the loader's ``Splits``.

    ``view``: "top", "side", "front" or a tuple of them (ignored for ``three_d``, the voxel grid).
    ``shard``: default this worker's shard. ``require_train``: an empty training split is an error
    (False for evaluation-only loads). ``extra``: more loader options (e.g. ``split``). Bad files
    raise ``EventFileError`` here, before the run folder exists. The data are recorded in the
    run's config (written when the run opens).
    """
    args = run.args
    if three_d:
        from datasets import number_of_tracks3D as loader
        options = {}
    else:
        from datasets import number_of_tracks as loader
        options = {"view": view}
    data = source(run)
    splits = loader.load(data, max_tracks=args.max_tracks, radius_channel=args.radius_channel,
                         batch_size=args.batch_size, split_by=args.split_by, seed=args.seed, cache=args.cache,
                         max_events=args.max_events, streaming=args.streaming,
                         shard=run.shard if shard is None else shard, skip_out_of_range=args.skip_out_of_range,
                         **options, **extra)
    run.record(data={"source": data if isinstance(data, (str, list)) else str(data),
                     "n_train": splits.n_train, "n_validation": splits.n_validation, "n_test": splits.n_test,
                     "shard": list(run.shard), "info": splits.info})
    run.log(f"data: {splits.n_train} train, {splits.n_validation} validation, {splits.n_test} test events"
            + (f" (worker {run.shard[0]} of {run.shard[1]})" if run.shard[1] > 1 else ""))
    if require_train and splits.n_train == 0:
        raise ValueError("the training split is empty: give more events (--data, --max-events)")
    return splits


def model_views(model) -> tuple[str, ...]:
    """What a counter reads: ("top",), ("side",), ("front",), the three views, or ("voxel",).

    Raises ValueError when its inputs are named otherwise.
    """
    names = tuple(tensor.name.split(":")[0] for tensor in model.inputs)
    layer_names = tuple(layer.name for layer in model.layers if layer.__class__.__name__ == "InputLayer")
    for candidates in (names, layer_names):
        if set(candidates) == {"top", "side", "front"}:
            return ("top", "side", "front")
        if len(candidates) == 1 and candidates[0] in ("top", "side", "front"):
            return candidates
        if len(candidates) == 1 and candidates[0] == "voxels":
            return ("voxel",)
    raise ValueError(f"cannot tell which view the model reads from its inputs {layer_names}; "
                     "expected an input named top, side, front, voxels or the three views")


def load_model(path, *, flag: str):
    """A trained counter (CNN or CapsNet) from ``path`` in safe mode; ValueError naming ``flag`` when unreadable.

    Imports :mod:`capsule` first (it registers the capsule layers), lazily: ``--help`` stays fast and
    TensorFlow is imported only where the core's start-up filter is in place.
    """
    import capsule  # noqa: F401

    return cli.load_keras_model(path, flag=flag)


def _input_shapes(model) -> dict:
    return {tensor.name.split(":")[0]: tuple(tensor.shape[1:]) for tensor in model.inputs}


def init_from(model, path, *, flag: str = "--init-model") -> None:
    """Copy the weights of the trained counter ``path`` into ``model`` (call under the strategy scope).

    The file must hold a counter of the same architecture: the same views and input shapes
    (channels: --radius-channel), the same number of classes (--max-tracks) and weight arrays of
    the same shapes. Raises ValueError naming ``flag`` and the file otherwise.
    """
    trained = load_model(path, flag=flag)
    views, wanted = model_views(trained), model_views(model)
    if views != wanted:
        raise ValueError(f"{flag} {path} reads the {'+'.join(views)} view(s); this run trains on {'+'.join(wanted)}")
    if sorted(_input_shapes(trained).values()) != sorted(_input_shapes(model).values()):
        raise ValueError(f"{flag} {path} takes inputs {sorted(_input_shapes(trained).values())}; this run's model "
                         f"takes {sorted(_input_shapes(model).values())} (check --radius-channel)")
    if trained.output_shape[-1] != model.output_shape[-1]:
        raise ValueError(f"{flag} {path} predicts {trained.output_shape[-1]} classes; --max-tracks is "
                         f"{model.output_shape[-1]}")
    have = [tuple(weight.shape) for weight in trained.weights]
    need = [tuple(weight.shape) for weight in model.weights]
    if have != need:
        raise ValueError(f"{flag} {path}: its {len(have)} weight arrays do not fit the {len(need)} of this "
                         f"architecture ({trained.name} against {model.name}): a counter of another architecture")
    model.set_weights(trained.get_weights())


def add_init_flag(parser) -> None:
    """Add ``--init-model MODEL.keras`` (start from a trained counter's weights) to ``parser``."""
    parser.add_argument("--init-model", default=None, metavar="MODEL.keras",
                        help="start from the weights of this trained counter (same view, channels and "
                             "--max-tracks) instead of random ones")


def check_init_flag(args) -> None:
    """Before anything is written: ``--init-model``, when given, must name a readable Keras file
    (ValueError naming the flag otherwise, see ``snemo.cli.check_keras_file``)."""
    if args.init_model:
        cli.check_keras_file(args.init_model, flag="--init-model")


def apply_init(run: cli.Run, model, args) -> None:
    """With ``--init-model``: copy that counter's weights into ``model`` (checked, see :func:`init_from`) and
    record the file in the run's config; without it, nothing."""
    import os

    if not args.init_model:
        return
    with run.strategy.scope():
        init_from(model, args.init_model)
    run.record(init_model=os.path.abspath(args.init_model))
    run.log(f"weights from {args.init_model}")


def report(run: cli.Run, model, splits, *, title: str) -> dict | None:
    """Evaluate a counting model on the test split and write the run folder's report.

    Predicts on this worker's test shard, sums the confusion matrices over workers, then (chief)
    writes ``metrics.json``, ``training_curves.{pdf,png}``, ``confusion_matrix.{pdf,png}`` and
    prints the confusion matrix and the accuracy. Returns the metrics dict (None on other workers).
    """
    import numpy as np

    from snemo import metrics as snm
    from snemo import plots
    from snemo.strategy import sum_over_workers
    from snemo.training import predict, read_history

    n_classes = run.args.max_tracks
    total_batches = -(-splits.n_test // run.args.batch_size) if splits.n_test else 0
    targets, outputs = predict(model, splits.test, log_progress=run.chief and not run.args.quiet, total=total_batches)
    if len(targets):
        matrix = snm.confusion_matrix(targets, outputs, n_classes)
    else:
        matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    matrix = sum_over_workers(run.strategy, matrix)
    if not run.chief:
        return None
    names = labels(n_classes)
    result = snm.counting_metrics_from_confusion(matrix, names)
    result = {"task": "track counting", "split": "test", "model": str(Path(run.out) / "model.keras"), **result}
    snm.write_metrics(run.out / "metrics.json", result)
    history = read_history(run.out)
    if history:
        plots.plot_history(history, run.out / "training_curves", title=title)
    plots.plot_confusion(matrix, run.out / "confusion_matrix", labels=names, title=title)
    cli.finish(run)
    print(snm.format_counting_summary(result), flush=True)
    print(f"run folder: {run.out}", flush=True)
    return result
