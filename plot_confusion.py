"""Confusion heat map and a gallery of misclassified events for a trained track counter.

Loads --model (.keras, safe mode), predicts on the test split of --data (the same split as the
training script given the same --seed and --split-by; or, with --all-events, on every event of a
held-out --data), writes metrics.json, the confusion matrix
(rows = true count, columns = predicted; PDF and PNG) and a gallery of up to --max-gallery
misclassified events: top, side and front views with the true and predicted count and the softmax
output, as one multi-page PDF (misclassified.pdf) and one PNG per event (misclassified/).

When the model sits in a run folder (config.json next to it), the run's --data, --dataset-kind,
--data-dir, --seed, --split-by, --max-events, --skip-out-of-range and --radius-channel are taken
from it, so the run's own test split is scored without retyping (flags given here win; with
--all-events only --radius-channel is taken). The number of classes is the model's: a different
--max-tracks is refused.

    python plot_confusion.py --model models/top_my_generator.keras --data data/my_generator
    python plot_confusion.py --model runs/top/model.keras          # the run's own test split
"""

from __future__ import annotations

import sys
from pathlib import Path

import counting
from counting import model_views  # noqa: F401  (tests and users read a model's views here)
from snemo import cli

REPO = Path(__file__).resolve().parent
GALLERY_VIEWS = ("top", "side", "front")
# Flags read from the config.json of the model's run folder; with --all-events only the last one.
RUN_FLAGS = ("data", "dataset_kind", "data_dir", "seed", "split_by", "max_events", "skip_out_of_range",
             "radius_channel")


def build_parser():
    """Flags: --model, --max-gallery and the shared data and run flags (no training flags)."""
    parser = cli.make_parser("plot_confusion.py", __doc__.split("\n\n")[0], training=False)
    parser.add_argument("--model", default=str(REPO / "models" / "top_my_generator.keras"),
                        help="trained counting model, .keras (default %(default)s)")
    parser.add_argument("--max-gallery", type=int, default=20,
                        help="misclassified events drawn, 0 for none (default %(default)s)")
    parser.add_argument("--all-events", action="store_true",
                        help="evaluate on every event of --data (a held-out set), not on its test split")
    parser.set_defaults(max_tracks=None)
    return parser


def flags_from_run(args, given: set, model_path) -> list[str]:
    """Take :data:`RUN_FLAGS` not in ``given`` from the config.json next to ``model_path``; returns the flags taken.

    Nothing is taken when there is no config.json; with --all-events only --radius-channel. The
    data are the run's resolved files (``data_files``, absolute) when config.json lists them, so the
    run's built-in dataset or relative --data paths are found from any folder.
    """
    from snemo.jsonfile import read_json

    config_path = Path(model_path).parent / "config.json"
    config = read_json(config_path) if config_path.is_file() else None
    run_args = (config or {}).get("args", {})
    names = ("radius_channel",) if args.all_events else RUN_FLAGS
    taken = []
    if "data" in names and "data" not in given and config.get("data_files"):
        args.data = list(config["data_files"])
        taken.append(f"--data (the run's {len(args.data)} file(s))")
        names = tuple(name for name in names if name not in cli.DATA_FLAGS)
    for name in names:
        if name in run_args and name not in given and run_args[name] != getattr(args, name):
            setattr(args, name, run_args[name])
            taken.append(f"{cli.flag_name(name)} {run_args[name]}")
    return taken


def save_gallery(events, truth, predicted, probabilities, out_dir: Path, *, limit: int, title: str) -> int:
    """Draw misclassified events: one page each in ``misclassified.pdf``, one PNG each in ``misclassified/``.

    ``events``: EventBatch of the test events (dataset order); ``truth`` / ``predicted``: number of
    tracks (N,); ``probabilities``: (N, C) softmax. Returns the number of events drawn.
    """
    import numpy as np
    from matplotlib.backends.backend_pdf import PdfPages

    from datasets.views import make_view
    from snemo import plots

    wrong = np.flatnonzero(truth != predicted)[:limit]
    if len(wrong) == 0:
        return 0
    chosen = events.take(wrong)
    images = {name: make_view(chosen, name) for name in GALLERY_VIEWS}  # (n, H, W, 1) each
    png_dir = out_dir / "misclassified"
    png_dir.mkdir(parents=True, exist_ok=True)
    with PdfPages(out_dir / "misclassified.pdf") as pdf:
        for k, index in enumerate(wrong):
            source = Path(chosen.files[chosen.file_index[k]]).name if chosen.file_index[k] >= 0 else "memory"
            figure = plots.event_views_figure(
                {name: images[name][k] for name in GALLERY_VIEWS}, true_count=int(truth[index]),
                predicted_count=int(predicted[index]), probabilities=probabilities[index],
                title=f"{title}\ntest event {index} ({source}, entry {int(chosen.entry[k])}):")
            pdf.savefig(figure)
            plots.save_figure(figure, png_dir / f"event_{index:06d}", formats=("png",))
    return len(wrong)


def main(argv=None) -> int:
    """Parse flags, predict, write the heat map, metrics and gallery; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = cli.explicit_dests(parser, argv)
    cli.check_args(parser, args)
    if args.max_gallery < 0:
        parser.error(f"--max-gallery must be >= 0, got {args.max_gallery}")
    if args.streaming:
        parser.error("the gallery needs the test events in memory: drop --streaming")

    def body():
        import numpy as np

        cli.check_keras_file(args.model, flag="--model")
        taken = flags_from_run(args, given, args.model)
        run = cli.start_run("plot_confusion", args, argv, program="plot_confusion.py", resumable=False)
        if taken and run.chief:
            print(f"from {Path(args.model).parent / 'config.json'}: {', '.join(taken)} (flags given here win)", flush=True)
        from snemo import metrics as snm
        from snemo import plots
        from snemo.training import predict

        model = counting.load_model(args.model, flag="--model")
        outputs_size = int(model.output_shape[-1])
        if args.max_tracks is not None and args.max_tracks != outputs_size:
            raise ValueError(f"--max-tracks {args.max_tracks} does not match {args.model}, which predicts "
                             f"1..{outputs_size} tracks: drop --max-tracks or give {outputs_size}")
        args.max_tracks = outputs_size
        views = model_views(model)
        channels = int(model.inputs[0].shape[-1])
        if channels != (2 if args.radius_channel else 1):
            raise ValueError(f"{args.model} takes {channels} channel(s) per pixel but --radius-channel is "
                             f"{'on' if args.radius_channel else 'off'}")
        run.record(args=dict(vars(args)), taken_from_run=taken)
        whole = dict(split=(0.0, 0.0, 1.0), require_train=False) if args.all_events else {}
        if views == ("voxel",):
            splits = counting.load(run, three_d=True, **whole)
            test = splits.test
        else:
            # Load all three views, so the test events carry every field the gallery draws (the
            # split depends only on the seed, the files and the entries: it is the training run's).
            splits = counting.load(run, view=GALLERY_VIEWS, **whole)
            test = splits.test
            if len(views) == 1:
                import tensorflow as tf

                test = test.map(lambda inputs, labels: (inputs[views[0]], labels),
                                num_parallel_calls=tf.data.AUTOTUNE)
        targets, outputs = predict(model, test, log_progress=not args.quiet,
                                   total=-(-splits.n_test // args.batch_size))
        labels = counting.labels(args.max_tracks)
        result = snm.counting_metrics(targets, outputs, args.max_tracks, labels)
        result = {"task": "track counting", "split": "all events" if args.all_events else "test",
                  "model": str(args.model), **result}
        run.open()
        snm.write_metrics(run.out / "metrics.json", result)
        title = f"{'+'.join(views)} counter {Path(args.model).name}"
        plots.plot_confusion(result["confusion_matrix"], run.out / "confusion_matrix", labels=labels, title=title)
        truth = np.argmax(targets, axis=1) + 1 if len(targets) else np.zeros(0, np.int64)
        predicted = np.argmax(outputs, axis=1) + 1 if len(outputs) else np.zeros(0, np.int64)
        drawn = 0
        if args.max_gallery and splits.test_events is not None:
            drawn = save_gallery(splits.test_events, truth, predicted, outputs, run.out, limit=args.max_gallery,
                                 title=title)
        cli.finish(run)
        print(snm.format_counting_summary(result))
        print(f"{int((truth != predicted).sum())} misclassified, {drawn} drawn; outputs in {run.out}")

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
