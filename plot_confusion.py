"""Confusion heat map and a gallery of misclassified events for a trained track counter.

Loads --model (.keras, safe mode), predicts on the test split of --data (the same split as the
training script given the same --seed and --split-by; or, with --all-events, on every event of a
held-out --data), writes metrics.json, the confusion matrix
(rows = true count, columns = predicted; PDF and PNG) and a gallery of up to --max-gallery
misclassified events: top, side and front views with the true and predicted count and the softmax
output, as one multi-page PDF (misclassified.pdf) and one PNG per event (misclassified/).

    python plot_confusion.py --model models/top_my_generator.keras --data data/my_generator
"""

from __future__ import annotations

import sys
from pathlib import Path

from snemo import cli

REPO = Path(__file__).resolve().parent
GALLERY_VIEWS = ("top", "side", "front")


def build_parser():
    """Flags: --model, --max-gallery and the shared data and run flags (no training flags)."""
    parser = cli.make_parser("plot_confusion.py", __doc__.split("\n\n")[0], training=False)
    parser.add_argument("--model", default=str(REPO / "models" / "top_my_generator.keras"),
                        help="trained counting model, .keras (default %(default)s)")
    parser.add_argument("--max-gallery", type=int, default=20,
                        help="misclassified events drawn, 0 for none (default %(default)s)")
    parser.add_argument("--all-events", action="store_true",
                        help="evaluate on every event of --data (a held-out set), not on its test split")
    return parser


def model_views(model):
    """What the model reads: ("top",), ("side",), ("front",), the three views, or ("voxel",)."""
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
    cli.check_args(parser, args)
    if args.max_gallery < 0:
        parser.error(f"--max-gallery must be >= 0, got {args.max_gallery}")
    if args.streaming:
        parser.error("the gallery needs the test events in memory: drop --streaming")

    def body():
        import keras
        import numpy as np

        from snemo import metrics as snm
        from snemo import plots
        from snemo.training import predict

        if not Path(args.model).is_file():
            raise ValueError(f"model not found: {args.model}")
        run = cli.start_run("plot_confusion", args, argv, program="plot_confusion.py")
        model = keras.saving.load_model(args.model, safe_mode=True, compile=False)
        args.max_tracks = int(model.output_shape[-1])
        views = model_views(model)
        whole = dict(split=(0.0, 0.0, 1.0), require_train=False) if args.all_events else {}
        if views == ("voxel",):
            splits = cli.load_counting(run, three_d=True, **whole)
            test = splits.test
        else:
            # Load all three views, so the test events carry every field the gallery draws (the
            # split depends only on the seed, the files and the entries: it is the training run's).
            splits = cli.load_counting(run, view=GALLERY_VIEWS, **whole)
            test = splits.test
            if len(views) == 1:
                import tensorflow as tf

                test = test.map(lambda inputs, labels: (inputs[views[0]], labels),
                                num_parallel_calls=tf.data.AUTOTUNE)
        targets, outputs = predict(model, test, log_progress=not args.quiet,
                                   total=-(-splits.n_test // args.batch_size))
        labels = cli.counting_labels(args.max_tracks)
        result = snm.counting_metrics(targets, outputs, args.max_tracks, labels)
        result = {"task": "track counting", "split": "all events" if args.all_events else "test",
                  "model": str(args.model), **result}
        snm.write_metrics(run.out / "metrics.json", result)
        title = f"{'+'.join(views)} counter {Path(args.model).name}"
        plots.plot_confusion(result["confusion_matrix"], run.out / "confusion_matrix", labels=labels, title=title)
        truth = np.argmax(targets, axis=1) + 1 if len(targets) else np.zeros(0, np.int64)
        predicted = np.argmax(outputs, axis=1) + 1 if len(outputs) else np.zeros(0, np.int64)
        drawn = 0
        if args.max_gallery and splits.test_events is not None:
            drawn = save_gallery(splits.test_events, truth, predicted, outputs, run.out, limit=args.max_gallery,
                                 title=title)
        print(snm.format_counting_summary(result))
        print(f"{int((truth != predicted).sum())} misclassified, {drawn} drawn; outputs in {run.out}")

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
