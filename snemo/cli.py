"""Command-line set-up shared by every script, written once; it knows no task.

* :func:`make_parser`: an ``argparse`` parser with the flags every script shares (data, run
  folder, training, device strategy); a wrong flag prints one line and exits with status 2;
  :func:`check_args` refuses impossible values the same way.
* :func:`start_run`: checks the run folder first (writable, not under a file, not another script's
  run, and on resume that no flag that changes the model or the data changed: see
  :data:`RESUME_MAY_CHANGE`), then the strategy (first TensorFlow work, as a multi-worker strategy
  requires) and the seeds. Nothing is written yet: :meth:`Run.open` creates the folder and writes
  ``config.json`` once the data are read and the model is built, so a failed start writes nothing.
* :func:`data_source`: the --data paths, or the built-in dataset made by the function the script
  passes in (the core imports no generator).
* :func:`train_model`: training through :func:`snemo.training.train` with the flags' settings.
* :func:`check_keras_file`, :func:`load_keras_model`: a model file named by a flag, checked.
* :func:`run_main`: runs a script's body; bad input (:class:`snemo.events.EventFileError`), a
  device that does not exist, a bad value or an unusable folder prints one line and returns 2.

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

from snemo.events import EventFileError, find_files
from snemo.jsonfile import json_safe, read_json, write_json  # noqa: F401
from snemo.runfolder import (CONFIG_FILE, DATA_FLAGS, RESUME_MAY_CHANGE, RunFolderError, check_out_dir,  # noqa: F401
                             describe_files, flag_name, resume_changes, resume_conflicts)
from snemo.modelfile import check_keras_file, load_keras_model  # noqa: F401
from snemo.strategy import StrategyError, sum_over_workers  # noqa: F401

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
                           "built-in dataset of --dataset-kind, generated on first use)")
    data.add_argument("--dataset-kind", choices=DATASET_KINDS, default="my_generator",
                      help="built-in dataset used when --data is absent (default %(default)s)")
    data.add_argument("--data-dir", default=None, metavar="FOLDER",
                      help="parent folder of the built-in datasets (default $SNEMO_DATA_DIR, else data/ in the "
                           "repository)")
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
    """Refuse impossible values of the shared flags with a one-line parser error naming the flag (exit 2).

    --epochs 0 is refused: a run trains at least one epoch (``plot_confusion.py`` evaluates a model).
    """
    minimum = {"epochs": 1, "batch_size": 1, "max_tracks": 2, "max_events": 1, "steps_per_epoch": 1, "seed": 0,
               "early_stopping": 0}
    for name, low in minimum.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if getattr(args, "learning_rate", 1.0) <= 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")


def explicit_dests(parser: argparse.ArgumentParser, argv=None) -> set[str]:
    """Names (``dest``) of the flags given on the command line ``argv`` (default ``sys.argv[1:]``), not defaulted."""
    unset = object()
    saved = {action: action.default for action in parser._actions}
    saved_defaults = dict(parser._defaults)
    try:
        for action in parser._actions:
            action.default = unset
        parser._defaults.clear()
        given = parser.parse_args(sys.argv[1:] if argv is None else argv)
    finally:
        for action, default in saved.items():
            action.default = default
        parser._defaults.update(saved_defaults)
    return {name for name, value in vars(given).items() if value is not unset}


@dataclass
class Run:
    """One script run: its flags, strategy, folder and the worker this process is.

    ``out``: the run folder (the same path on every worker; only the chief writes there), created
    by :meth:`open`. ``shard``: (worker index, worker count) for the loaders. ``config``: what
    config.json holds. ``previous``: the config.json found in ``out`` (a resume), else None.
    """

    script: str
    args: argparse.Namespace
    strategy: object
    out: Path
    chief: bool
    shard: tuple[int, int]
    config: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    previous: dict | None = None
    opened: bool = False

    def log(self, *parts, **kwargs) -> None:
        """Print on the chief only (and not with --quiet)."""
        if self.chief and not self.args.quiet:
            print(*parts, **kwargs, flush=True)

    def record(self, **items) -> None:
        """Add items to the config kept in memory (written by the next :meth:`open` / :meth:`update_config`)."""
        self.config.update(items)

    def open(self) -> Path:
        """Create the run folder and write config.json (chief only); call once data and model are ready."""
        if self.chief:
            if not self.opened:
                self.log(f"run folder {self.out}{' (resuming)' if self.config.get('resumed') else ''}")
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / CONFIG_FILE, self.config)
        self.opened = True
        return self.out

    def update_config(self, **items) -> None:
        """Add items to config.json (chief only; creates the run folder if :meth:`open` was not called)."""
        self.config.update(items)
        self.open()


def default_out(script: str) -> Path:
    """runs/<script>-<YYYYmmdd-HHMMSS>/ relative to the working directory."""
    return Path("runs") / f"{script}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def start_run(script: str, args, argv=None, *, program: str | None = None, resumable: bool = True) -> Run:
    """Check the run folder, create the strategy, seed everything; returns the :class:`Run` (nothing written).

    ``argv``: the flags as given (default ``sys.argv[1:]``) and ``program`` the script file, for
    the ``command`` of config.json. ``resumable``: a training run; an existing run folder of the
    same script is resumed when no flag outside :data:`RESUME_MAY_CHANGE` changed (else
    :class:`RunFolderError`), and config.json keeps its first command and lists each resume with
    the flags it changed. Not resumable (an evaluation): the folder's outputs are replaced. A folder
    holding another script's run is always refused. Raises :class:`StrategyError` for a device
    that does not exist.
    """
    from snemo.strategy import describe, is_chief, make_strategy, worker_shard

    out = Path(args.out) if args.out else default_out(script)
    if not args.out:
        stem, number = out, 1
        while out.exists():
            number += 1
            out = stem.with_name(f"{stem.name}-{number}")
    check_out_dir(out)
    previous = read_json(out / CONFIG_FILE) if (out / CONFIG_FILE).is_file() else None
    command = " ".join(["python", program or os.path.basename(sys.argv[0]) or script]
                       + [shlex.quote(str(item)) for item in (sys.argv[1:] if argv is None else argv)])
    new_args = dict(vars(args))
    if previous is not None:
        if previous.get("script") != script:
            raise RunFolderError(f"--out {out} holds a run of {previous.get('script')} ({CONFIG_FILE}); this is "
                                 f"{script}: choose another --out")
        if resumable:
            conflicts = resume_conflicts(previous.get("args", {}), new_args)
            if conflicts:
                raise RunFolderError(f"cannot resume {out}: it was made with {'; '.join(conflicts)}; a resume may "
                                     f"change only how long and how it trains (--epochs, --learning-rate, "
                                     f"--lr-schedule, ...): use another --out")

    strategy = make_strategy(args)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    resumed = resumable and (out / "checkpoints").exists()
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    config = {
        "script": script,
        "command": command,
        "args": new_args,
        "strategy": describe(strategy),
        "resumed": resumed,
        "started": now,
        "host": socket.gethostname(),
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__},
    }
    if previous is not None and resumable:
        resume = {"command": command, "started": now, "host": config["host"], "strategy": config["strategy"],
                  "changed": resume_changes(previous.get("args", {}), new_args)}
        kept = {key: previous[key] for key in ("command", "started", "data_files") if key in previous}
        config.update(kept, resumed=True, resumes=list(previous.get("resumes", [])) + [resume])
    run = Run(script=script, args=args, strategy=strategy, out=out, chief=is_chief(strategy),
              shard=worker_shard(strategy), config=config, previous=previous if resumable else None)
    run.log(f"{script}: {describe(strategy)}")
    return run


def barrier(strategy) -> None:
    """Wait until every worker gets here (a tiny all-reduce); nothing to do in a single process."""
    from snemo.strategy import worker_shard
    from snemo.training import agree_steps

    if worker_shard(strategy)[1] > 1:
        agree_steps(strategy, 1)


def data_source(run: Run, builtin: Callable | None = None):
    """The --data source, or the built-in dataset of --dataset-kind (made by the chief on first use).

    ``builtin(kind, data_dir_path=FOLDER or None, progress=bool) -> folder``: the script's maker of
    built-in datasets (e.g. ``Generator.builtin.default_dataset``); None: --data is required.
    Resolves the files (``EventFileError`` for a missing path), refuses a resume on other files
    than the run's (:class:`RunFolderError`) and records them as ``data_files``. Returns a path
    string or a list of them, for the loaders.
    """
    args = run.args
    if args.data:
        source = args.data[0] if len(args.data) == 1 else list(args.data)
    elif builtin is None:
        raise ValueError("--data is required: this command has no built-in dataset")
    else:
        data_dir = getattr(args, "data_dir", None)
        if data_dir is not None:
            check_out_dir(data_dir, flag="--data-dir")
        if run.chief:
            folder = builtin(args.dataset_kind, data_dir_path=data_dir, progress=not args.quiet)
        barrier(run.strategy)
        if not run.chief:
            folder = builtin(args.dataset_kind, data_dir_path=data_dir, progress=False)
        source = str(folder)
    files = [os.path.abspath(path) for path in find_files(source)]
    before = (run.previous or {}).get("data_files")
    if before is not None and before != files:
        raise RunFolderError(f"cannot resume {run.out}: it was trained on {describe_files(before)}; this command "
                             f"reads {describe_files(files)} (--data, --dataset-kind, --data-dir): use another --out")
    run.record(data_files=files)
    return source


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


def finish(run: Run) -> None:
    """Record in config.json when the run ended and its wall time (chief only)."""
    run.update_config(finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      wall_seconds=round(time.time() - run.started, 1))


def one_line(err: BaseException) -> str:
    """The error message on one line (messages quoted from uproot or TensorFlow may hold newlines)."""
    return " ".join(str(err).split())


def run_main(body: Callable[[], int | None]) -> int:
    """Run a script body; print bad input / device / value / folder errors as one line on stderr, return 2.

    ``SNEMO_DEBUG=1`` shows the traceback of a ValueError or OSError instead.
    """
    try:
        status = body()
    except (EventFileError, StrategyError, FileExistsError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:  # bad values of flags or data, folders that cannot be written
        if os.environ.get("SNEMO_DEBUG"):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0 if status is None else int(status)
