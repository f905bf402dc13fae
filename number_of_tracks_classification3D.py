"""Count the tracks of an event (1..--max-tracks) from the 3D voxel grid (18 rows x 113 columns x 30 z bins).

Trains the Conv3D counter of architectures/view3d.py with the shared training loop, evaluates it
on the test split and writes the run folder (model.keras, history.json, config.json, metrics.json,
curves and confusion matrix as PDF and PNG, tensorboard/, checkpoints/). Same --out resumes.

    python number_of_tracks_classification3D.py --data data/my_generator --epochs 10
    python number_of_tracks_classification3D.py --init-model models/voxel_my_generator.keras ...  # train further
    python number_of_tracks_classification3D.py --variant sides6 ...  # another layout of architectures/view3d.py
"""

from __future__ import annotations

import sys

import counting
from snemo import cli


def build_parser():
    """Flags: the shared ones (snemo.cli), --variant and --init-model; the voxel inputs are large, so the default batch is 64."""
    from architectures import view3d

    parser = cli.make_parser("number_of_tracks_classification3D.py", __doc__.split("\n\n")[0], epochs=10,
                             batch_size=64)
    parser.add_argument("--variant", choices=tuple(view3d.VARIANTS), default=view3d.DEFAULT_VARIANT,
                        help="layout of the Conv3D network (architectures/view3d.py; default %(default)s)")
    counting.add_init_flag(parser)
    return parser


def main(argv=None) -> int:
    """Parse flags, train and evaluate; returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.check_args(parser, args)

    def body():
        from architectures import view3d

        counting.check_init_flag(args)
        run = cli.start_run("number_of_tracks_3D", args, argv, program="number_of_tracks_classification3D.py")
        splits = counting.load(run, three_d=True)
        model = cli.build_in_scope(run, view3d.build, input_shape=cli.input_shape(splits.train),
                                   n_classes=args.max_tracks, variant=args.variant)
        counting.apply_init(run, model, args)
        run.open()
        cli.train_model(run, model, splits)
        counting.report(run, model, splits, title="3D (voxel) track counting")

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
