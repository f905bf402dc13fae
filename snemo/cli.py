"""Command-line set-up shared by every training script, written once.

* :func:`make_parser`: an ``argparse`` parser with the flags every script shares (data, run
  folder, training, device strategy); a wrong flag prints one line and exits with status 2.
* :func:`start_run`: strategy (first, as a multi-worker strategy requires), seeds, run folder,
  ``config.json`` with the resolved flags.
* :func:`load_counting`, :func:`train_model`, :func:`report_counting`: data loading with this
  worker's shard, training through :func:`snemo.training.train` with the flags' settings, and the
  evaluation on the test split that writes ``metrics.json``, the curves and the confusion matrix
  (PDF and PNG) and prints the confusion matrix and the accuracy.
* :func:`run_main`: runs a script's body; bad input (:class:`snemo.events.EventFileError`), a
  device that does not exist or a bad value prints one line and returns exit status 2.

TensorFlow is imported lazily: ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from snemo.events import EventFileError
from snemo.jsonfile import write_json
from snemo.strategy import StrategyError

DATASET_KINDS = ("my_generator", "toyhaystack")


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on standard error (exit status 2), not the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_strategy_flags(parser: argparse.ArgumentParser) -> None:
    """The device-strategy flags of the original scripts, mutually exclusive."""
    group = parser.add_argument_group("devices (one strategy per process; default: all GPUs, else the CPU)")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--OneDeviceStrategy", metavar="DEVICE", default=None,
                           help="run on one device, e.g. /gpu:0 or /cpu:0")
    exclusive.add_argument("--MirroredStrategy", metavar="DEVICE", nargs="+", default=None,
                           help="synchronous data parallelism over these local devices, e.g. /gpu:0 /gpu:1")
    exclusive.add_argument("--MultiWorkerMirroredStrategy", action="store_true",
                           help="data parallelism over several processes/nodes: configured from Slurm "
                                "(srun with several tasks) or from TF_CONFIG")


def common_parser(*, epochs: int = 10, batch_size: int = 256, learning_rate: float = 1e-3,
                  training: bool = True) -> argparse.ArgumentParser:
    """Parent parser (``add_help=False``) with the data, run and training flags every script shares.

    ``training=False`` leaves out the training flags (for evaluation-only tools). The device flags
    are added by :func:`make_parser` (argparse loses a mutually exclusive group's title in parents).
    """
    parser = argparse.ArgumentParser(add_help=False)
    data = parser.add_argument_group("data")
    data.add_argument("--data", nargs="+", default=None, metavar="PATH",
                      help="ROOT file(s), folder(s) (searched recursively) or glob pattern(s) (default: the "
                           "built-in dataset of --dataset-kind under data/, generated on first use)")
    data.add_argument("--dataset-kind", choices=DATASET_KINDS, default="my_generator",
                      help="built-in dataset used when --data is absent (default %(default)s)")
    data.add_argument("--max-tracks", type=int, default=4, help="classes 1..N tracks (default %(default)s)")
    data.add_argument("--max-events", type=int, default=None, help="read at most this many events (spread over files)")
    data.add_argument("--split-by", choices=("event", "file"), default="event",
                      help="train/validation/test split by event hash or by whole files (default %(default)s)")
    data.add_argument("--streaming", action="store_true", help="read files in chunks instead of all in memory")
    data.add_argument("--cache", action="store_true", help="cache converted images in memory (small data only)")
    data.add_argument("--skip-out-of-range", action="store_true",
                      help="drop events with 0 or more than --max-tracks tracks instead of failing")
    data.add_argument("--radius-channel", action="store_true", help="add the drift radius as a second image channel")
    run = parser.add_argument_group("run")
    run.add_argument("--out", default=None,
                     help="run folder (default runs/<script>-<YYYYmmdd-HHMMSS>/); rerun with the same folder to resume")
    run.add_argument("--seed", type=int, default=0, help="seed of weights, shuffling and split (default %(default)s)")
    run.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    if not training:
        parser.add_argument("--batch-size", type=int, default=batch_size, help="batch size of the predictions")
        return parser
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=epochs, help="total epochs (default %(default)s)")
    training.add_argument("--batch-size", type=int, default=batch_size,
                          help="global batch size, over all replicas (default %(default)s)")
    training.add_argument("--learning-rate", type=float, default=learning_rate,
                          help="Adam learning rate (default %(default)s)")
    training.add_argument("--lr-schedule", choices=("constant", "cosine", "plateau"), default="plateau",
                          help="per-epoch learning-rate schedule; plateau halves it after 2 epochs without a "
                               "lower validation loss (default %(default)s)")
    training.add_argument("--early-stopping", type=int, default=0, metavar="EPOCHS",
                          help="stop after this many epochs without a lower validation loss (0: never, default)")
    training.add_argument("--steps-per-epoch", type=int, default=None,
                          help="cap on training steps per epoch (default: the whole training split)")
    return parser


def make_parser(prog: str, description: str, **defaults) -> OneLineParser:
    """Parser of a script: its description, :func:`common_parser` (``defaults`` go to it) and the device flags.

    ``training=False`` in ``defaults`` leaves out the training and device flags.
    """
    parser = OneLineParser(prog=prog, description=description, parents=[common_parser(**defaults)])
    if defaults.get("training", True):
        add_strategy_flags(parser)
    return parser


def check_args(parser: argparse.ArgumentParser, args) -> None:
    """Reject impossible values of the shared flags with a one-line parser error (exit 2)."""
    for name in ("epochs", "batch_size", "max_tracks"):
        if getattr(args, name, None) is not None and getattr(args, name) < (0 if name == "epochs" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_tracks < 2:
        parser.error(f"--max-tracks must be at least 2, got {args.max_tracks}")
    if getattr(args, "learning_rate", 1.0) <= 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    for name in ("max_events", "steps_per_epoch"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")


@dataclass
class Run:
    """One script run: its flags, strategy, folder and the worker this process is.

    ``out``: the run folder (the same path on every worker; only the chief writes there).
    ``shard``: (worker index, worker count) for the loaders. ``config``: what config.json holds.
    """

    script: str
    args: argparse.Namespace
    strategy: object
    out: Path
    chief: bool
    shard: tuple[int, int]
    config: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def log(self, *parts, **kwargs) -> None:
        """Print on the chief only (and not with --quiet)."""
        if self.chief and not self.args.quiet:
            print(*parts, **kwargs, flush=True)

    def update_config(self, **items) -> None:
        """Add items to config.json (chief only)."""
        self.config.update(items)
        if self.chief:
            write_json(self.out / "config.json", self.config)


def default_out(script: str) -> Path:
    """runs/<script>-<YYYYmmdd-HHMMSS>/ relative to the working directory."""
    return Path("runs") / f"{script}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def start_run(script: str, args, argv=None, *, program: str | None = None) -> Run:
    """Create the strategy (first), seed everything, make the run folder and write config.json.

    ``argv``: the flags as given (default ``sys.argv[1:]``) and ``program`` the script file, for
    the ``command`` of config.json. Raises :class:`StrategyError` for a device that does not exist.
    """
    from snemo.strategy import describe, is_chief, make_strategy, worker_shard

    strategy = make_strategy(args)
    import keras

    keras.utils.set_random_seed(args.seed)
    out = Path(args.out) if args.out else default_out(script)
    chief = is_chief(strategy)
    if chief:
        out.mkdir(parents=True, exist_ok=True)
    resumed = (out / "checkpoints").exists()
    import tensorflow as tf

    config = {
        "script": script,
        "command": " ".join(["python", program or os.path.basename(sys.argv[0]) or script]
                            + [shlex.quote(str(item)) for item in (sys.argv[1:] if argv is None else argv)]),
        "args": {key: value for key, value in vars(args).items()},
        "strategy": describe(strategy),
        "resumed": resumed,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__},
    }
    run = Run(script=script, args=args, strategy=strategy, out=out, chief=chief, shard=worker_shard(strategy),
              config=config)
    run.update_config()
    run.log(f"{script}: {describe(strategy)}; run folder {out}{' (resuming)' if resumed else ''}")
    return run


def barrier(strategy) -> None:
    """Wait until every worker gets here (a tiny all-reduce); nothing to do in a single process."""
    from snemo.strategy import worker_shard
    from snemo.training import agree_steps

    if worker_shard(strategy)[1] > 1:
        agree_steps(strategy, 1)


def data_source(run: Run):
    """The --data paths, or the built-in dataset of --dataset-kind (generated by the chief on first use)."""
    from Generator.builtin import default_dataset  # moved out of snemo by the cli helper

    if run.args.data:
        return run.args.data[0] if len(run.args.data) == 1 else list(run.args.data)
    if run.chief:
        source = default_dataset(run.args.dataset_kind, progress=not run.args.quiet)
    barrier(run.strategy)
    if not run.chief:
        source = default_dataset(run.args.dataset_kind, progress=False)
    return str(source)


def load_counting(run: Run, *, view=None, three_d: bool = False, shard=None, require_train: bool = True, **extra):
    """Load the counting dataset (``datasets.number_of_tracks`` or ``..3D``) with the run's flags.

    ``view``: "top", "side", "front" or a tuple of them (ignored for ``three_d``). ``shard``:
    default this worker's shard. ``require_train``: an empty training split is an error (False
    for evaluation-only loads). ``extra``: more loader options (e.g. ``split``). Returns the
    loader's ``Splits``.
    """
    args = run.args
    if three_d:
        from datasets import number_of_tracks3D as loader
        options = {}
    else:
        from datasets import number_of_tracks as loader
        options = {"view": view}
    source = data_source(run)
    splits = loader.load(source, max_tracks=args.max_tracks, radius_channel=args.radius_channel,
                         batch_size=args.batch_size, split_by=args.split_by, seed=args.seed, cache=args.cache,
                         max_events=args.max_events, streaming=args.streaming,
                         shard=run.shard if shard is None else shard, skip_out_of_range=args.skip_out_of_range,
                         **options, **extra)
    run.update_config(data={"source": source if isinstance(source, (str, list)) else str(source),
                            "n_train": splits.n_train, "n_validation": splits.n_validation, "n_test": splits.n_test,
                            "shard": list(run.shard), "info": splits.info})
    run.log(f"data: {splits.n_train} train, {splits.n_validation} validation, {splits.n_test} test events"
            + (f" (worker {run.shard[0]} of {run.shard[1]})" if run.shard[1] > 1 else ""))
    if require_train and splits.n_train == 0:
        raise ValueError("the training split is empty: give more events (--data, --max-events)")
    return splits


def input_shape(dataset):
    """Per-example input shape(s) of a dataset of batched (inputs, labels): a tuple or a dict of tuples."""
    spec = dataset.element_spec[0]
    if isinstance(spec, dict):
        return {name: tuple(value.shape[1:]) for name, value in spec.items()}
    return tuple(spec.shape[1:])


def build_in_scope(run: Run, builder: Callable, *builder_args, **builder_kwargs):
    """Call ``builder`` under the strategy scope (the model's variables are then distributed)."""
    with run.strategy.scope():
        return builder(*builder_args, **builder_kwargs)


def train_model(run: Run, model, splits, *, phase: str = "train", epochs=None, learning_rate=None, **options):
    """Train on ``splits.train`` / ``splits.validation`` with the run's flags; returns the TrainResult.

    Without ``step=`` in ``options``, ``model`` trains with :class:`snemo.steps.ClassifierStep`
    (Adam at ``learning_rate``, default --learning-rate; ``optimizer``, ``loss_fn``, ``correct_fn``,
    ``model_file`` go to it). ``step=``: a step object of the script's own (a GAN, two heads: see
    :mod:`snemo.steps`); ``model`` is then only logged (None: the step's models) and
    ``learning_rate`` is refused (it belongs to the step). ``epochs`` defaults to --epochs;
    ``lr_schedule``, ``early_stopping``, ``min_lr_fraction``, ``plateau_patience`` and
    ``plateau_factor`` override the flags' :class:`snemo.training.Schedule`; other ``options``
    (``initial_best``, ``restore_best``) go to :func:`snemo.training.train`.
    """
    import math

    import keras

    from snemo.steps import ClassifierStep
    from snemo.training import Schedule, train

    args = run.args
    schedule = Schedule(lr_schedule=options.pop("lr_schedule", args.lr_schedule),
                        early_stopping=options.pop("early_stopping", args.early_stopping),
                        **{key: options.pop(key) for key in ("min_lr_fraction", "plateau_patience", "plateau_factor")
                           if key in options})
    step = options.pop("step", None)
    if step is None:
        step = ClassifierStep(model, learning_rate=args.learning_rate if learning_rate is None else learning_rate,
                              **{key: options.pop(key) for key in ("optimizer", "loss_fn", "correct_fn", "model_file")
                                 if key in options})
    elif learning_rate is not None:
        raise ValueError("learning_rate is for the classifier step: a step object sets its own optimizers' rates")
    models = [model] if model is not None else [value for value in step.trackables().values()
                                                if isinstance(value, keras.Model)]
    counts = [(item, int(item.count_params()), sum(math.prod(v.shape) for v in item.trainable_variables))
              for item in models]
    run.update_config(**{f"trainable_parameters_{phase}": sum(count[2] for count in counts),
                         "parameters": sum(count[1] for count in counts)})
    for item, n_all, n_trainable in counts:
        run.log(f"[{phase}] model {item.name}: {n_all:,} parameters, {n_trainable:,} trainable")
    return train(step, splits.train, splits.validation, strategy=run.strategy, out_dir=run.out,
                 epochs=args.epochs if epochs is None else epochs, phase=phase, schedule=schedule,
                 n_train=splits.n_train, n_validation=splits.n_validation, batch_size=args.batch_size,
                 steps_per_epoch=args.steps_per_epoch, quiet=args.quiet, log=run.log, **options)


def counting_labels(max_tracks: int) -> list[int]:
    """Number of tracks of each class: [1, 2, ..., max_tracks]."""
    return list(range(1, max_tracks + 1))


def report_counting(run: Run, model, splits, *, title: str) -> dict | None:
    """Evaluate a counting model on the test split and write the run folder's report.

    Predicts on this worker's test shard, sums the confusion matrices over workers, then (chief)
    writes ``metrics.json``, ``training_curves.{pdf,png}``, ``confusion_matrix.{pdf,png}`` and
    prints the confusion matrix and the accuracy. Returns the metrics dict (None on other workers).
    """
    import numpy as np

    from snemo import metrics as snm
    from snemo import plots
    from snemo.training import predict, read_history

    n_classes = run.args.max_tracks
    total_batches = -(-splits.n_test // run.args.batch_size) if splits.n_test else 0
    targets, outputs = predict(model, splits.test, log_progress=run.chief and not run.args.quiet, total=total_batches)
    if len(targets):
        matrix = snm.confusion_matrix(targets, outputs, n_classes)
    else:
        matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    matrix = _sum_over_workers(run, matrix)
    if not run.chief:
        return None
    labels = counting_labels(n_classes)
    result = snm.counting_metrics_from_confusion(matrix, labels)
    result = {"task": "track counting", "split": "test", "model": str(run.out / "model.keras"), **result}
    snm.write_metrics(run.out / "metrics.json", result)
    history = read_history(run.out)
    if history:
        plots.plot_history(history, run.out / "training_curves", title=title)
    plots.plot_confusion(matrix, run.out / "confusion_matrix", labels=labels, title=title)
    run.update_config(finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      wall_seconds=round(time.time() - run.started, 1))
    print(snm.format_counting_summary(result), flush=True)
    print(f"run folder: {run.out}", flush=True)
    return result


def _sum_over_workers(run: Run, matrix):
    """Element-wise sum of a NumPy array over all workers (unchanged in a single process)."""
    if run.shard[1] <= 1:
        return matrix
    import numpy as np
    import tensorflow as tf

    value = tf.constant(matrix.astype(np.float64))
    strategy = run.strategy
    replicas = strategy.num_replicas_in_sync
    workers = run.shard[1]

    @tf.function(autograph=False)
    def total():
        # Every replica contributes value / (local replicas) so the sum counts each worker once.
        per_replica = strategy.run(lambda: value * (workers / replicas))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return np.rint(total().numpy()).astype(np.int64)


def one_line(err: BaseException) -> str:
    """The error message on one line (messages quoted from uproot or TensorFlow may hold newlines)."""
    return " ".join(str(err).split())


def run_main(body: Callable[[], int | None]) -> int:
    """Run a script body; print bad input / device / value errors as one line on stderr, return 2."""
    try:
        status = body()
    except (EventFileError, StrategyError, FileExistsError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad values of flags or data; SNEMO_DEBUG=1 shows the traceback
        if os.environ.get("SNEMO_DEBUG"):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0 if status is None else int(status)
