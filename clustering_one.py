"""Cluster tracker hits into tracks: train the GAN (or, with --no-adversarial, the same generator alone).

The generator (architectures/generator.py, a small U-Net) maps an event's top view to the cells of
its first remaining track in canonical order; a conditional PatchGAN discriminator
(architectures/discriminator.py) judges (event, track) pairs. Trained through the shared loop
(every device-strategy flag works; rerun with the same --out to resume a killed job), then the
test split is clustered whole (extract, remove, repeat: clustering.cluster_events, up to the
counter's count) and scored beside DBSCAN, Hough and the ceiling, by number of tracks. The run
folder gets model.keras (the best generator), history.json, metrics.json, training_curves and
displays/ (PNG, PDF), tensorboard/, checkpoints/.

    python clustering_one.py --epochs 10 --z-channel --radius-channel
    python clustering_one.py --data data/realistic --no-adversarial --out runs/no-gan
"""

from __future__ import annotations

import os
import sys

from snemo import cli

DEFAULT_COUNTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "top_my_generator.keras")


def build_parser():
    """Flags: the shared ones (snemo.cli) plus the GAN's and the evaluation's."""
    parser = cli.make_parser("clustering_one.py", __doc__.split("\n\n")[0], epochs=10, batch_size=64,
                             learning_rate=1e-3)
    gan = parser.add_argument_group("clustering")
    gan.add_argument("--z-channel", action="store_true", help="add wirez / 1500 mm as an input channel")
    gan.add_argument("--filters", type=int, nargs=5, default=[16, 24, 32, 40, 48], metavar="N",
                     help="generator filters per scale, full resolution to bottleneck (default 16 24 32 40 48; "
                          "8 16 32 40 48 trains about twice as fast)")
    gan.add_argument("--reconstruction-weight", type=float, default=10.0,
                     help="weight of the per-hit reconstruction loss against the adversarial one (default %(default)s)")
    gan.add_argument("--discriminator-ratio", type=float, default=1.0,
                     help="discriminator learning rate / generator learning rate (default %(default)s)")
    gan.add_argument("--no-adversarial", action="store_true",
                     help="train the generator alone on the reconstruction loss (no discriminator)")
    gan.add_argument("--counter", default=DEFAULT_COUNTER, metavar="MODEL.keras|none",
                     help="track counter whose predicted count stops the test clustering; 'none': run until the "
                          "generator finds no track (default models/top_my_generator.keras)")
    gan.add_argument("--displays", type=int, default=2, help="event displays per number of tracks (default %(default)s)")
    return parser


def main(argv=None) -> int:
    """Parse flags, train, cluster the test split and report; returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.check_args(parser, args)
    if args.reconstruction_weight < 0 or (args.no_adversarial and args.reconstruction_weight == 0):
        parser.error(f"--reconstruction-weight must be >= 0 (> 0 with --no-adversarial), got {args.reconstruction_weight}")
    if args.discriminator_ratio <= 0:
        parser.error(f"--discriminator-ratio must be positive, got {args.discriminator_ratio}")
    if min(args.filters) < 1:
        parser.error(f"--filters must be positive, got {args.filters}")
    if args.displays < 0:
        parser.error(f"--displays must be at least 0, got {args.displays}")

    def body():
        counter_path = None if args.counter.lower() == "none" else os.path.abspath(args.counter)
        if counter_path:
            cli.check_keras_file(counter_path, flag="--counter")
        run = cli.start_run("clustering_one", args, argv, program="clustering_one.py")

        import clustering_inference as inference
        import clustering_training as training
        from architectures import discriminator, generator
        from Generator.builtin import default_dataset

        counter = inference.load_counter(counter_path) if counter_path else None
        source = cli.data_source(run, builtin=default_dataset)
        splits = training.load(source, batch_size=args.batch_size, seed=args.seed, split_by=args.split_by,
                               shard=run.shard, max_events=args.max_events, skip_out_of_range=args.skip_out_of_range,
                               z_channel=args.z_channel, radius_channel=args.radius_channel)
        if splits.n_train == 0:
            raise ValueError("the training split is empty: give more events (--data, --max-events)")
        run.record(data={"n_train": splits.n_train, "n_validation": splits.n_validation, "n_test": splits.n_test,
                         "info": splits.info}, counter=counter_path)
        run.log(f"data: {splits.n_train} train, {splits.n_validation} validation, {splits.n_test} test events")
        with run.strategy.scope():
            model = generator.build(args.z_channel, args.radius_channel, filters=tuple(args.filters))
            critic = None if args.no_adversarial else discriminator.build(model.input_shape[-1])
            step = training.ClusteringStep(model, critic, learning_rate=args.learning_rate,
                                           reconstruction_weight=args.reconstruction_weight,
                                           discriminator_ratio=args.discriminator_ratio)
        run.open()
        cli.train_model(run, None, splits, step=step)
        if run.chief:
            training.report(run, model, splits, counter=counter, counter_path=counter_path, displays=args.displays)

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
