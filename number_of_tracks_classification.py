"""Count the tracks of an event (1..--max-tracks) from one view of the tracker: top, side or front.

Trains a CNN (architectures/top.py, side.py, front.py), with ``--architecture capsnet`` a
capsule network (architectures/capsnet.py, margin loss), or with ``--architecture fast`` the fast
1D-convolution counter (architectures/fast.py) with the shared training loop, evaluates it
on the test split and writes the run folder: model.keras, history.json, config.json, metrics.json,
training_curves and confusion_matrix (PDF, PNG), tensorboard/, checkpoints/. Run it again with the
same --out to resume a killed job. --init-model starts from the weights of a trained counter of the
same view (fine-tuning, e.g. a shipped model on realistic events).

    python number_of_tracks_classification.py --view top --data data/my_generator --epochs 20
    python number_of_tracks_classification.py --view top --init-model models/top_my_generator.keras \
        --data data/realistic --learning-rate 2e-4 --epochs 3
    python number_of_tracks_classification.py --view side --architecture fast --data data/my_generator
"""

from __future__ import annotations

import sys

import counting
from snemo import cli

VIEWS = ("top", "side", "front")


def cnn_default_filters(view: str) -> tuple:
    """The default ``filters`` of ``architectures.<view>.build``: one count per block of the view's CNN."""
    import importlib
    import inspect

    build = importlib.import_module(f"architectures.{view}").build
    return tuple(inspect.signature(build).parameters["filters"].default)


def build_parser():
    """Flags: the shared ones (snemo.cli) plus --view, --architecture and --init-model."""
    parser = cli.make_parser("number_of_tracks_classification.py", __doc__.split("\n\n")[0], epochs=10)
    parser.add_argument("--view", choices=VIEWS, default="top", help="which view of the tracker (default %(default)s)")
    parser.add_argument("--architecture", choices=("cnn", "capsnet", "fast"), default="cnn",
                        help="cnn: the view's CNN; capsnet: capsules with routing by agreement; fast: 1D "
                             "convolutions along each view, its short axis as channels (default %(default)s)")
    parser.add_argument("--filters", type=int, nargs="+", default=None, metavar="N",
                        help="filters per block: --architecture fast any number of blocks (default 32 48 48); "
                             "cnn one count per block of the view's CNN (top and side 4, default 16 32 48 64; "
                             "front 3, default 16 32 64)")
    counting.add_init_flag(parser)
    return parser


def main(argv=None) -> int:
    """Parse flags, train and evaluate; returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.check_args(parser, args)
    if args.filters is not None:
        if args.architecture == "capsnet" or min(args.filters) < 1:
            parser.error("--filters takes positive filter counts, for --architecture fast or cnn")
        blocks = len(cnn_default_filters(args.view))
        if args.architecture == "cnn" and len(args.filters) != blocks:
            parser.error(f"--filters: the {args.view}-view CNN has {blocks} blocks, got {len(args.filters)} filter counts")

    def body():
        import importlib

        counting.check_init_flag(args)
        run = cli.start_run(f"number_of_tracks_{args.view}", args, argv,
                            program="number_of_tracks_classification.py")
        splits = counting.load(run, view=args.view)
        options = {}
        if args.architecture == "fast":
            from architectures import fast

            sizes = {"filters": tuple(args.filters)} if args.filters else {}
            model = cli.build_in_scope(run, fast.build, input_shape=cli.input_shape(splits.train),
                                       n_classes=args.max_tracks, input_name=args.view, **sizes)
        elif args.architecture == "capsnet":
            from architectures import capsnet
            from capsule import margin_loss

            model = cli.build_in_scope(run, capsnet.build, input_shape=cli.input_shape(splits.train),
                                       n_classes=args.max_tracks, view=args.view)
            options["loss_fn"] = margin_loss
        else:
            architecture = importlib.import_module(f"architectures.{args.view}")
            sizes = {"filters": tuple(args.filters)} if args.filters else {}
            model = cli.build_in_scope(run, architecture.build, input_shape=cli.input_shape(splits.train),
                                       n_classes=args.max_tracks, **sizes)
        counting.apply_init(run, model, args)
        run.open()
        cli.train_model(run, model, splits, **options)
        name = {"capsnet": "CapsNet", "fast": "fast 1D CNN"}.get(args.architecture, "CNN")
        counting.report(run, model, splits, title=f"{args.view}-view track counting ({name})")

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
