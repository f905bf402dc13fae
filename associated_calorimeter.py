"""Predict the calorimeter cell (side, column, row of the 22 x 15 grid) hit by each track.

--mode single: one track's hits (truth-clustered tracks, folded onto side 1) -> softmax over the
330 cells of the track's side (architectures/calorimeter.py build_single). --mode multi: an
unclustered event -> scores over the 660 cells of both sides (build_multi on the views; with
--views wall, build_wall on the wall view of datasets/wall_view.py), --loss softmax
(target: tracks per cell / number of tracks) or sigmoid (multi-hot, binary cross-entropy), with a
number-of-tracks head (loss weight --count-weight) unless --no-count-head; decoding takes the top
k cells, k the true number of tracks or the count head's (--k). Trains with the shared loop,
evaluates on the test split and writes the run folder: model.keras, config.json, history.json,
metrics.json, training_curves and by_tracks (PDF, PNG), tensorboard/, checkpoints/ (rerun with the
same --out to resume). --compare RUN_A RUN_B only plots two multi-label runs by number of tracks.

    python associated_calorimeter.py --mode single --epochs 10
    python associated_calorimeter.py --mode multi --loss softmax --k predicted --out runs/calo_softmax
    python associated_calorimeter.py --mode single ... --init-model models/calorimeter_single_my_generator.keras  # further
    python associated_calorimeter.py --mode multi --loss sigmoid --out runs/calo_sigmoid
    python associated_calorimeter.py --mode multi --views wall --filters 24 24 --out runs/calo_wall
    python associated_calorimeter.py --mode multi --views wall --line-prior --init-model models/calorimeter_multi_my_generator.keras
    python associated_calorimeter.py --compare runs/calo_softmax runs/calo_sigmoid --out runs/calo_compare
"""

from __future__ import annotations

import sys

from snemo import cli

VIEWS = ("top", "side", "front")


def build_parser():
    """Flags: the shared ones (snemo.cli) plus the task's."""
    parser = cli.make_parser("associated_calorimeter.py", __doc__.split("\n\n")[0], epochs=10)
    task = parser.add_argument_group("calorimeter association")
    task.add_argument("--mode", choices=("single", "multi"), default="single",
                      help="single: one track -> its cell; multi: an unclustered event -> its tracks' cells "
                           "(default %(default)s)")
    task.add_argument("--loss", choices=("softmax", "sigmoid"), default="softmax",
                      help="multi: softmax on tracks per cell / number of tracks, or sigmoid + binary "
                           "cross-entropy on the multi-hot target (default %(default)s)")
    task.add_argument("--k", choices=("true", "predicted"), default="true",
                      help="multi: decode the top k cells, k the true number of tracks or the count head's "
                           "prediction (default %(default)s; both are in metrics.json with the count head)")
    task.add_argument("--no-count-head", action="store_true", help="multi: train the cell output alone")
    task.add_argument("--count-weight", type=float, default=0.5,
                      help="multi: weight of the count head's cross-entropy in the loss (default %(default)s)")
    task.add_argument("--z-channel", action="store_true",
                      help="single: the top view also carries each hit's z (wirez / 1500 mm) as a channel")
    task.add_argument("--filters", type=int, nargs=2, default=[16, 32], metavar="N",
                      help="convolution filters of the two blocks of each view's branch (default %(default)s)")
    task.add_argument("--squeeze", type=int, default=8,
                      help="channels of each branch's 1x1 convolution before flattening (default %(default)s)")
    task.add_argument("--units", type=int, default=64, help="features of each view's branch (default %(default)s)")
    task.add_argument("--line-input", action="store_true",
                      help="single: the model also reads the straight-line fit of the track's hits "
                           "(datasets/line_fit.py: where it reaches the wall, its slopes)")
    task.add_argument("--line-skip", action="store_true",
                      help="single, with --line-input and --head factorised: the line input also enters the "
                           "row and column logits through one linear layer each, which starts from the grid "
                           "binning of the line's wall position (the cell the line alone predicts)")
    task.add_argument("--line-prior", action="store_true",
                      help="multi, with --views wall: the model also reads the cells where the event's Hough "
                           "lines meet the wall (calorimeter_prior.py; no truth), each candidate's logit raised "
                           "by a learned weight")
    task.add_argument("--head", choices=("full", "factorised"), default="full",
                      help="single: the cell softmax from one dense layer, or from a row term plus a column "
                           "term plus a cell term (default %(default)s)")
    task.add_argument("--views", nargs="+", choices=VIEWS + ("wall",), default=list(VIEWS),
                      help="views the model reads (default: %(default)s); multi: 'wall' alone, the wall view "
                           "(datasets/wall_view.py) and its fully convolutional model (build_wall)")
    task.add_argument("--init-model", default=None, metavar="MODEL.keras",
                      help="start from the weights of this trained calorimeter model (same mode, views, channels "
                           "and sizes) instead of random ones")
    task.add_argument("--compare", nargs="+", metavar="RUN", default=None,
                      help="plot these multi-label runs' metrics by number of tracks into --out (or .) and exit")
    return parser


def main(argv=None) -> int:
    """Parse flags, train and evaluate (or --compare); returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.check_args(parser, args)
    if len(set(args.views)) != len(args.views):
        parser.error(f"--views must not repeat a view, got {' '.join(args.views)}")
    if args.z_channel and (args.mode != "single" or "top" not in args.views):
        parser.error("--z-channel needs --mode single and the top view among --views")
    if "wall" in args.views and (args.mode != "multi" or len(args.views) > 1):
        parser.error("--views wall needs --mode multi and no other view")
    if args.line_skip and not (args.line_input and args.head == "factorised"):
        parser.error("--line-skip needs --line-input and --head factorised")
    if args.line_input and args.mode != "single":
        parser.error("--line-input needs --mode single")
    if args.line_prior and args.views != ["wall"]:
        parser.error("--line-prior needs --mode multi --views wall")
    if min(args.filters) < 1 or args.squeeze < 1 or args.units < 1:
        parser.error(f"--filters, --squeeze and --units must be positive, got {args.filters}, {args.squeeze}, "
                     f"{args.units}")
    if args.count_weight < 0:
        parser.error(f"--count-weight must be >= 0, got {args.count_weight}")
    if args.mode == "multi" and args.k == "predicted" and args.no_count_head:
        parser.error("--k predicted needs the count head (drop --no-count-head)")

    def body():
        import calorimeter_association as task

        if args.compare:
            for path in task.compare(args.compare, args.out or "."):
                print(path)
            return 0
        from architectures import calorimeter

        if args.init_model:
            cli.check_keras_file(args.init_model, flag="--init-model")
        run = cli.start_run(f"associated_calorimeter_{args.mode}", args, argv, program="associated_calorimeter.py")
        splits = task.load(run)
        channels = 2 if args.radius_channel else 1
        size = dict(filters=tuple(args.filters), squeeze=args.squeeze, units=args.units)
        if args.mode == "single":
            from datasets.line_fit import grid_binning

            model = cli.build_in_scope(run, calorimeter.build_single, tuple(args.views), channels=channels,
                                       z_channel=args.z_channel, head=args.head, line_input=args.line_input,
                                       line_skip=args.line_skip, line_prior=grid_binning() if args.line_skip else None,
                                       **size)
        elif args.views == ["wall"]:
            model = cli.build_in_scope(run, calorimeter.build_wall, filters=args.filters[0], squeeze=args.squeeze,
                                       output=args.loss, max_tracks=None if args.no_count_head else args.max_tracks,
                                       prior=args.line_prior)
        else:
            model = cli.build_in_scope(run, calorimeter.build_multi, tuple(args.views), channels=channels, **size,
                                       output=args.loss, max_tracks=None if args.no_count_head else args.max_tracks)
        if args.init_model:
            task.init_weights(run, model, args.init_model)
        run.open()
        cli.train_model(run, model, task.training_splits(args, splits), step=task.make_step(args, model))
        title = "single-label" if args.mode == "single" else f"multi-label {args.loss}"
        task.report(run, model, splits, title=f"calorimeter association, {title}")

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
