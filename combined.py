"""Combined track counter: transfer learning from trained top, side and front view models.

Each view model (from number_of_tracks_classification.py) is cut after its last convolutional
block (layer "features"); the three feature vectors are concatenated under a new dense head.
Phase "frozen": --epochs epochs with the view branches frozen at --learning-rate; phase
"finetune": --finetune-epochs epochs with everything trainable at --finetune-learning-rate. Each
phase resumes on its own when the job is started again with the same --out. Writes the run folder
(model.keras, history.json, config.json, metrics.json, curves and confusion matrix, tensorboard/,
checkpoints/frozen and checkpoints/finetune). --init-model starts the combined model from a trained
combined counter's weights instead (the view models still give the architecture).

    python combined.py --top models/top_my_generator.keras --side models/side_my_generator.keras \\
        --front models/front_my_generator.keras --epochs 5 --finetune-epochs 5
"""

from __future__ import annotations

import sys
from pathlib import Path

import counting
from snemo import cli

REPO = Path(__file__).resolve().parent


def build_parser():
    """Flags: the shared ones (snemo.cli), the three view models and the fine-tuning phase."""
    parser = cli.make_parser("combined.py", __doc__.split("\n\n")[0], epochs=5)
    models = parser.add_argument_group("view models (trained .keras files)")
    for view in ("top", "side", "front"):
        models.add_argument(f"--{view}", default=str(REPO / "models" / f"{view}_my_generator.keras"),
                            help=f"trained {view}-view counter, or a combined counter whose {view} branch is "
                                 f"taken (default %(default)s)")
    models.add_argument("--init-model", default=None, metavar="MODEL.keras",
                        help="start from the weights of this trained combined counter (same views, channels and "
                             "--max-tracks), e.g. to fine-tune a shipped one")
    tuning = parser.add_argument_group("fine-tuning phase (after the frozen phase of --epochs)")
    tuning.add_argument("--finetune-epochs", type=int, default=5,
                        help="epochs with every layer trainable (default %(default)s)")
    tuning.add_argument("--finetune-learning-rate", type=float, default=1e-4,
                        help="learning rate of the fine-tuning phase, lower than --learning-rate (default %(default)s)")
    return parser


def load_view_models(paths: dict, n_classes: int) -> dict:
    """Load the trained view models (safe mode) and check their inputs and number of classes.

    ``paths``: {"top": path, "side": path, "front": path}; a path may also hold a combined
    counter, whose ``<view>_branch`` (input to ``features``) is then the view model. Call under
    the strategy scope. Raises ValueError naming the flag and the file when a model is missing or
    does not fit.
    """
    models = {}
    for view, path in paths.items():
        model = counting.load_model(path, flag=f"--{view}")
        if model.output_shape[-1] != n_classes:
            raise ValueError(f"{path} predicts {model.output_shape[-1]} classes but --max-tracks is {n_classes}")
        if f"{view}_branch" in [layer.name for layer in model.layers]:  # a combined counter
            model = model.get_layer(f"{view}_branch")
        elif counting.model_views(model) != (view,):
            raise ValueError(f"--{view} {path} reads the {'+'.join(counting.model_views(model))} view, not {view}")
        models[view] = model
    return models


def main(argv=None) -> int:
    """Parse flags, train the frozen then the fine-tuning phase, evaluate; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.check_args(parser, args)
    if args.finetune_epochs < 0 or args.finetune_learning_rate <= 0:
        parser.error("--finetune-epochs must be >= 0 and --finetune-learning-rate positive")

    def body():
        import os

        from architectures import combined

        for view in ("top", "side", "front"):
            try:
                cli.check_keras_file(getattr(args, view), flag=f"--{view}")
            except ValueError as err:
                raise ValueError(f"{err}; train it with `python number_of_tracks_classification.py --view {view}` "
                                 f"and pass --{view} <run folder>/model.keras") from None
        if args.init_model:
            cli.check_keras_file(args.init_model, flag="--init-model")
        run = cli.start_run("combined", args, argv, program="combined.py")
        with run.strategy.scope():
            views = load_view_models({"top": args.top, "side": args.side, "front": args.front}, args.max_tracks)
        splits = counting.load(run, view=("top", "side", "front"))
        shapes = cli.input_shape(splits.train)  # {"top": (18, 113, C), "side": (30, 113, C), "front": (30, 18, C)}
        for view, model in views.items():
            if tuple(model.inputs[0].shape[1:]) != tuple(shapes[view]):
                raise ValueError(f"the {view} model takes {tuple(model.inputs[0].shape[1:])} but the data give "
                                 f"{tuple(shapes[view])} (check --radius-channel)")
        model = cli.build_in_scope(run, combined.build, views["top"], views["side"], views["front"],
                                   n_classes=args.max_tracks, trainable_branches=False)
        if args.init_model:
            with run.strategy.scope():
                counting.init_from(model, args.init_model)
            run.record(init_model=os.path.abspath(args.init_model))
        run.open()
        frozen = cli.train_model(run, model, splits, phase="frozen", epochs=args.epochs)
        combined.set_branches_trainable(model, True)
        cli.train_model(run, model, splits, phase="finetune", epochs=args.finetune_epochs,
                        learning_rate=args.finetune_learning_rate, initial_best=frozen.best_val_loss)
        counting.report(run, model, splits, title="combined (top + side + front) track counting")

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
