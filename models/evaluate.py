"""Held-out scores of the shipped models: counters, their robustness, clustering, calorimeter association.

    python models/evaluate.py heldout      # table of models/README.md: clean, realistic, one-sided (both)
    python models/evaluate.py heldout capsnet_top_my_generator --model-dir runs/models/capsnet_top_my_generator
    python models/evaluate.py robustness   # accuracy against the noise mean and the missing-z fraction
    python models/evaluate.py clustering --generator A.keras B.keras --name GAN no-GAN
    python models/evaluate.py calorimeter --single S.keras --multi M.keras --clusterer G.keras

``heldout`` scores every shipped counter on the held-out sets that ``models/train_models.sh`` makes
(``data/heldout/<generator>/<column>``, 20,000 events each, seeds never trained on), writes
``models/heldout.json`` and prints the markdown table. ``robustness`` generates (once) sets of
2,000 events (500 per track count) that differ from the clean events by ONE detector effect,
the noise mean (0, 1, 2, 4, 6 hits per event) or the missing-z fraction (0, 5, 10, 20 %), scores
every counter on them and draws ``models/robustness.{png,pdf}`` and ``models/robustness.json``
(scores of other models already in the JSON files are kept, so models can be scored one by one).
``heldout`` also measures each counter's inference rate (events/s: the model alone on in-memory
views of the clean held-out events, batch 512, after one warm-up batch); ``--model PATH`` or
``--model-dir RUN`` scores a counter that is not (yet) in models/, under the name given.
``clustering`` and ``calorimeter``: see models/evaluate_clustering.py and evaluate_calorimeter.py
(``models/clustering.json``, ``models/calorimeter.json``, markdown tables, target lines).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "models"))  # evaluate_common, evaluate_clustering, evaluate_calorimeter
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = ("top_my_generator", "side_my_generator", "front_my_generator", "voxel_my_generator",
          "combined_my_generator", "top_toyhaystack", "combined_toyhaystack")
COLUMNS = {"my_generator": ("clean", "realistic", "onesided", "onesided_realistic"),
           "toyhaystack": ("clean", "realistic")}
GENERATORS = {"my_generator": "my_generator/my_generator.py", "toyhaystack": "Generator/toyhaystack.py"}
NOISE_MEANS = (0, 1, 2, 4, 6)
MISSING_Z = (0.0, 0.05, 0.10, 0.20)
EVENTS_PER_COUNT = 500  # robustness sets: 2,000 events per point (statistical error about 0.3 points at 98 %)


def generator_of(name: str) -> str:
    """The generator whose events a shipped model was trained on, from its name (``top_toyhaystack`` -> toyhaystack)."""
    return "toyhaystack" if name.endswith("toyhaystack") else "my_generator"


def score(model, source, *, batch_size: int = 512) -> dict:
    """Counting metrics (snemo.metrics) of a loaded counter on every event of ``source``."""
    from datasets import number_of_tracks, number_of_tracks3D
    from plot_confusion import model_views
    from snemo import metrics
    from snemo.training import predict

    views = model_views(model)
    n_classes = int(model.output_shape[-1])
    options = dict(max_tracks=n_classes, batch_size=batch_size, split=(0.0, 0.0, 1.0), shuffle=False)
    if views == ("voxel",):
        splits = number_of_tracks3D.load(source, **options)
    else:
        splits = number_of_tracks.load(source, view=views if len(views) > 1 else views[0], **options)
    targets, outputs = predict(model, splits.test)
    return metrics.counting_metrics(targets, outputs, n_classes)


def score_filtered(counter, source, *, batch_size: int = 512) -> float:
    """Accuracy of ``counter`` (a ``clustering_inference.Counter``) on ``source`` as ``reconstruct.py``
    counts: behind its default pre-filter (isolated hits dropped, ``--isolated drop``); events left
    without hits count 0."""
    import numpy as np

    import clustering_inference as inference
    import reconstruction
    from snemo.events import read_events

    batch = read_events(source)
    kept = reconstruction.keep_hits(batch, ~reconstruction.isolated_hits(batch))
    counts, _ = inference.predict_counts(counter, kept, batch_size=batch_size)
    return float(np.mean(counts == batch.n_tracks))


def load(path):
    """A counter from ``path`` (safe mode; the capsule layers registered first)."""
    import counting

    return counting.load_model(path, flag="--model")


def throughput(model, batch, *, batch_size: int = 512, max_batches: int = 20, max_bytes: float = 3e8) -> dict:
    """Inference rate of a counter: {"events_per_second", "events", "batch_size"}.

    The model alone (``training=False`` in a ``tf.function``) on in-memory views of the first
    events of ``batch``: one warm-up batch, then up to ``max_batches`` batches of ``batch_size``
    timed (fewer when the views would exceed ``max_bytes``: the voxel grid is large).
    """
    import numpy as np
    import tensorflow as tf

    from datasets import views as view_module
    from plot_confusion import model_views

    names = model_views(model)
    radius = any(tensor.shape[-1] == 2 for tensor in model.inputs)
    per_event = sum(int(np.prod(tensor.shape[1:])) * 4 for tensor in model.inputs)
    n = int(min(len(batch), batch_size * max_batches, max(batch_size, max_bytes // per_event)))
    images = [view_module.make_view(batch[:n], name, radius_channel=radius) for name in names]
    inputs = images[0] if len(images) == 1 else dict(zip(names, images))
    forward = tf.function(lambda x: model(x, training=False), autograph=False, reduce_retracing=True)
    size = min(batch_size, n)
    pieces = [tf.nest.map_structure(lambda a: tf.constant(a[i:i + size]), inputs) for i in range(0, n - size + 1, size)]
    np.asarray(tf.nest.flatten(forward(pieces[0]))[0])  # warm-up: tracing and the first call
    start = time.perf_counter()
    for piece in pieces:
        np.asarray(tf.nest.flatten(forward(piece))[0])
    seconds = time.perf_counter() - start
    return {"events_per_second": size * len(pieces) / max(seconds, 1e-9), "events": size * len(pieces),
            "batch_size": size, "rule": "model forward on in-memory views of clean held-out events, after one "
                                       "warm-up batch"}


def heldout(models: dict, data: Path, out_dir: Path) -> dict:
    """{model: {column: metrics, "inference": throughput}} on ``data/<generator>/<column>``.

    ``models``: name -> .keras path. Merged into ``<out_dir>/heldout.json`` (other models' scores
    are kept); prints the table.
    """
    import numpy as np

    from evaluate_common import merge_json, read_column

    updates = {}
    for name, path in models.items():
        model = load(path)
        updates[name] = {"model": str(Path(path).resolve())}
        for column in COLUMNS[generator_of(name)]:
            source = data / generator_of(name) / column
            start = time.time()
            updates[name][column] = score(model, str(source))
            print(f"{name} {column}: {updates[name][column]['accuracy']:.4%} ({time.time() - start:.0f} s)", flush=True)
        events = read_column(data, "clean", 2560, generator=generator_of(name))  # 20 batches of 512
        updates[name]["inference"] = throughput(model, events.take(np.random.default_rng(0).permutation(len(events))))
        print(f"{name}: {updates[name]['inference']['events_per_second']:,.0f} events/s", flush=True)
    results = merge_json(out_dir / "heldout.json", updates, depth=1)
    header = "| model | " + " | ".join(COLUMNS["my_generator"]) + " | events/s |"
    print(header + "\n|" + "---|" * (len(COLUMNS["my_generator"]) + 2))
    for name, per_column in results.items():
        cells = [f"{per_column[c]['accuracy']:.2%}" if c in per_column else "-" for c in COLUMNS["my_generator"]]
        rate = per_column.get("inference", {}).get("events_per_second")
        cells.append("-" if rate is None else f"{rate:,.0f}")
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    return results


def effect_sets(data: Path) -> dict:
    """Generate (once) and return {(generator, effect, value): folder} of the robustness sets."""
    sets = {}
    for generator, script in GENERATORS.items():
        points = [("noise", m, ["--noise-hits", str(m)]) for m in NOISE_MEANS]
        points += [("missing_z", f, ["--missing-z-fraction", str(f)]) for f in MISSING_Z]
        for effect, value, flags in points:
            folder = data / generator / f"{effect}_{value}"
            if not folder.exists():
                subprocess.run([sys.executable, str(REPO / script), "--events", str(EVENTS_PER_COUNT), "--files", "1",
                                "--seed", "777", "--out", str(folder), "--quiet", *flags], check=True)
            sets[(generator, effect, value)] = folder
    return sets


def robustness(models: dict, data: Path, out_dir: Path) -> dict:
    """Accuracy of every model (name -> path) against each effect; writes <out_dir>/robustness.{json,png,pdf}.

    Per model: {"noise": {mean: accuracy}, "missing_z": {fraction: accuracy}} of the model alone, and
    "noise_filtered": the same noise sets behind ``reconstruct.py``'s isolated-hit filter.
    """
    import clustering_inference as inference
    from evaluate_common import merge_json
    from snemo import plots

    sets = effect_sets(data)
    updates = {}
    for name, path in models.items():
        counter = inference.load_counter(path, flag="--model")
        model = counter.model
        updates[name] = {"noise": {}, "missing_z": {}, "noise_filtered": {}}
        for (generator, effect, value), folder in sets.items():
            if generator == generator_of(name):
                updates[name][effect][str(value)] = score(model, str(folder))["accuracy"]
                if effect == "noise":
                    updates[name]["noise_filtered"][str(value)] = score_filtered(counter, str(folder))
        print(name, updates[name], flush=True)
    results = merge_json(out_dir / "robustness.json", updates, depth=1)
    pyplot = plots._pyplot()
    figure, axes = pyplot.subplots(1, 3, figsize=(15, 4.4), sharey=True)
    for name, result in results.items():
        style = "--" if name.endswith("toyhaystack") else "-"
        axes[0].plot(NOISE_MEANS, [100 * result["noise"][str(m)] for m in NOISE_MEANS], style, marker="o", label=name)
        if "noise_filtered" in result:
            axes[1].plot(NOISE_MEANS, [100 * result["noise_filtered"][str(m)] for m in NOISE_MEANS], style,
                         marker="o", label=name)
        axes[2].plot([100 * f for f in MISSING_Z], [100 * result["missing_z"][str(f)] for f in MISSING_Z], style,
                     marker="o", label=name)
    axes[0].set_xlabel("noise hits per event (Poisson mean): the model alone")
    axes[1].set_xlabel("noise hits per event: behind reconstruct.py's isolated-hit filter")
    axes[2].set_xlabel("hits without z (%)")
    axes[0].set_ylabel(f"accuracy on {4 * EVENTS_PER_COUNT:,} held-out events (%)")
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[2].legend(fontsize=7, loc="lower left")
    figure.suptitle("Shipped track counters against one detector effect at a time (others clean)")
    figure.tight_layout()
    plots.save_figure(figure, out_dir / "robustness")
    return results


def counter_paths(names, model, model_dir) -> dict:
    """{name: path} of the counters to score; ValueError naming the flag or the name when one is missing.

    Without ``model``/``model_dir`` the names are shipped models (``models/<name>.keras``, default
    all); with either, one name at most (default: the file's or run folder's name).
    """
    from evaluate_common import model_label
    from snemo.modelfile import check_keras_file

    if model is not None or model_dir is not None:
        path, flag = (Path(model), "--model") if model is not None else (Path(model_dir) / "model.keras", "--model-dir")
        if len(names) > 1:
            raise ValueError(f"{flag} scores one model: give at most one name, got {len(names)}")
        check_keras_file(path, flag=flag)
        return {names[0] if names else model_label(path): path}
    names = names or list(MODELS)
    unknown = [name for name in names if not (REPO / "models" / f"{name}.keras").is_file()]
    if unknown:
        raise ValueError(f"no shipped model {unknown[0]} (models/{unknown[0]}.keras); --model PATH scores another")
    return {name: REPO / "models" / f"{name}.keras" for name in names}


def build_parser() -> argparse.ArgumentParser:
    """Subcommands heldout, robustness, clustering, calorimeter and their flags."""
    from snemo.cli import OneLineParser

    parser = OneLineParser(prog="models/evaluate.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="what", required=True, metavar="{heldout,robustness,clustering,calorimeter}")
    common = OneLineParser(add_help=False)
    common.add_argument("--data", default=None, help="data folder (default data/heldout; robustness: data/robustness)")
    common.add_argument("--out", default=str(REPO / "models"), metavar="FOLDER",
                        help="folder of the JSON files and plots (default models/)")
    for what in ("heldout", "robustness"):
        command = commands.add_parser(what, parents=[common], help=f"{what} scores of track counters")
        command.add_argument("models", nargs="*", default=[], help="model names (default: every shipped counter)")
        which = command.add_mutually_exclusive_group()
        which.add_argument("--model", default=None, metavar="PATH", help="score this .keras counter (one name)")
        which.add_argument("--model-dir", default=None, metavar="RUN", help="score RUN/model.keras (one name)")
    tasks = OneLineParser(add_help=False, parents=[common])
    tasks.add_argument("--counter", default=str(REPO / "models" / "top_my_generator.keras"), metavar="MODEL.keras",
                       help="counter whose count stops the generators and Hough "
                            "(default models/top_my_generator.keras)")
    tasks.add_argument("--events-per-count", type=int, default=5000, metavar="N",
                       help="events of each number of tracks per column (default %(default)s)")
    clustering = commands.add_parser("clustering", parents=[tasks], help="clustering generators beside DBSCAN, Hough")
    clustering.add_argument("--generator", nargs="+", default=None, metavar="MODEL.keras",
                            help="generators to score (default models/clustering_my_generator.keras if present)")
    clustering.add_argument("--name", nargs="+", default=None, metavar="LABEL", help="one label per generator")
    clustering.add_argument("--columns", nargs="+", default=None, metavar="COLUMN",
                            help="held-out columns (default clean realistic onesided onesided_realistic), or folders under DATA/my_generator")
    clustering.add_argument("--no-baselines", action="store_true",
                            help="skip DBSCAN and Hough (their scores already in clustering.json are kept)")
    calorimeter = commands.add_parser("calorimeter", parents=[tasks], help="calorimeter single- and multi-label models")
    calorimeter.add_argument("--single", default=None, metavar="MODEL",
                             help="single-label model (default models/calorimeter_single_my_generator.keras "
                                  "if present; none: skip it; line: the straight-line fit alone, no model)")
    calorimeter.add_argument("--multi", default=None, metavar="MODEL",
                             help="multi-label model (default models/calorimeter_multi_my_generator.keras if "
                                  "present; none: skip it; lines: the cells of the event's Hough lines alone, no "
                                  "model)")
    calorimeter.add_argument("--clusterer", default=None, metavar="MODEL|hough|dbscan",
                             help="clusterer in front of the single-label model (default "
                                  "models/clustering_my_generator.keras if present, else hough); none: truth only")
    calorimeter.add_argument("--columns", nargs="+", default=None, metavar="COLUMN",
                             help="held-out columns (default clean realistic onesided), or folders under DATA/my_generator")
    return parser


def _shipped(name: str):
    path = REPO / "models" / f"{name}.keras"
    return str(path) if path.is_file() else None


def main(argv=None) -> int:
    """Command line (see the module docstring); exit status 2 on a bad argument, a missing model or bad data."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "events_per_count", 1) < 1:
        parser.error(f"--events-per-count must be at least 1, got {args.events_per_count}")

    def body():
        out = Path(args.out)
        if args.what in ("heldout", "robustness"):
            models = counter_paths(args.models, args.model, args.model_dir)
            data = Path(args.data or REPO / "data" / args.what)
            (heldout if args.what == "heldout" else robustness)(models, data, out)
            return 0
        data = Path(args.data or REPO / "data" / "heldout")
        if args.what == "clustering":
            import evaluate_clustering as task

            columns = _columns(args.columns, task.COLUMNS, data)
            task.evaluate(data, out, generators=task.generator_list(args.generator, args.name),
                          counter_path=args.counter, columns=columns, per_count=args.events_per_count,
                          baselines=not args.no_baselines)
            return 0
        import evaluate_calorimeter as task

        single = None if args.single == "none" else args.single or _shipped("calorimeter_single_my_generator")
        multi = None if args.multi == "none" else args.multi or _shipped("calorimeter_multi_my_generator")
        if single is None and multi is None:
            raise ValueError("--single / --multi: no calorimeter model given and none shipped in models/")
        clusterer = args.clusterer or _shipped("clustering_my_generator") or "hough"
        task.evaluate(data, out, single=single, multi=multi, clusterer=None if clusterer == "none" else clusterer,
                      counter_path=args.counter, columns=_columns(args.columns, task.COLUMNS, data),
                      per_count=args.events_per_count)
        return 0

    from snemo.cli import run_main

    return run_main(body)


def _columns(given, known, data) -> tuple:
    """The held-out columns to score: ``given`` or ``known``. A given column is one of the held-out
    columns or a folder ``DATA/my_generator/COLUMN`` (a set made with other generator flags)."""
    if given is None:
        return tuple(known)
    unknown = [column for column in given
               if column not in COLUMNS["my_generator"] and not (Path(data) / "my_generator" / column).is_dir()]
    if unknown or len(set(given)) != len(given):
        raise ValueError(f"--columns: choose distinct columns among {list(COLUMNS['my_generator'])} or folders "
                         f"under {Path(data) / 'my_generator'}, got {given}")
    return tuple(given)


if __name__ == "__main__":
    sys.exit(main())
