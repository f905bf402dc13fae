"""Voxel counter throughput: training and prediction samples/s of each ``architectures.view3d`` variant.

Random sparse voxel batches of the real shape (B, 18, 113, 30, 1) (about 60 hits per event, 1..4
track labels), in memory: the model alone, no loader. Training = the shared training loop's step
(forward, categorical cross-entropy, gradients, Adam), predict = a forward pass in inference mode,
both ``tf.function``s on the CPU. After a warm-up, each variant is timed in several rounds that
alternate between the variants (the machine is shared, so its speed drifts); a variant's rate is
its best round, and speeds are also given as ratios to the first release's model (``full``)
measured in the same run (the median over rounds of the ratio within a round), and per CPU-second
of the process (all threads; less sensitive to other jobs on the cores). The top-view counter is timed the same way for reference. Prints a
table and writes ``benchmarks/results/bench_view3d.json``.

    python benchmarks/bench_view3d.py            # batch 64, 3 rounds
    python benchmarks/bench_view3d.py --quick    # 2 rounds, shorter timings
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

import numpy as np  # noqa: E402

from snemo import geometry as geo  # noqa: E402
from snemo.jsonfile import write_json  # noqa: E402

HITS_PER_EVENT = 60


def random_batch(batch_size: int, shape, rng: np.random.Generator, n_classes: int = 4):
    """(inputs, one-hot labels): ``batch_size`` events of ``shape`` with HITS_PER_EVENT random 1.0 pixels each."""
    images = np.zeros((batch_size, int(np.prod(shape))), np.float32)
    rows = np.repeat(np.arange(batch_size), HITS_PER_EVENT)
    images[rows, rng.integers(0, images.shape[1], rows.size)] = 1.0
    labels = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, batch_size)]
    return images.reshape(batch_size, *shape, 1), labels


def multiply_adds(model) -> int:
    """Multiply-adds of one event through the model's Conv2D/Conv3D and Dense layers."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D)):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += positions * int(np.prod(layer.kernel_size)) * int(layer.input.shape[-1]) * layer.filters
        elif isinstance(layer, keras.layers.Dense):
            total += int(layer.input.shape[-1]) * layer.units
    return total


def make_steps(model):
    """(train_step, predict_step) ``tf.function``s of ``model``: one Adam step on a batch, one forward pass."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function(autograph=False)
    def train_step(inputs, targets):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(targets, model(inputs, training=True)))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function(autograph=False)
    def predict_step(inputs):
        return model(inputs, training=False)

    return train_step, predict_step


def rate(step, args, batch_size: int, min_seconds: float) -> tuple[float, float]:
    """(samples per wall-second, samples per CPU-second of the process) of ``step(*args)``.

    Steps are repeated until ``min_seconds`` have passed (at least 3 steps). The CPU-second rate
    counts every thread of the process, so it moves less than the wall-clock rate when other jobs
    share the cores.
    """
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while steps < 3 or time.perf_counter() - start < min_seconds:
        result = step(*args)
        steps += 1
    np.asarray(result)  # wait for the last step
    samples = steps * batch_size
    return samples / (time.perf_counter() - start), samples / (time.process_time() - cpu_start)


def main(argv=None) -> int:
    """Build every variant, time training and prediction in alternating rounds, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (default %(default)s)")
    parser.add_argument("--predict-batch-size", type=int, default=256, help="prediction batch (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds over all variants (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=6.0, help="minimum seconds per timing (default %(default)s)")
    parser.add_argument("--variants", nargs="+", default=None, help="variants to time (default: all)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of at least 3 s")
    parser.add_argument("--out", default=str(ROOT_DIR / "benchmarks" / "results" / "bench_view3d.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 2, 3.0

    import tensorflow as tf

    from architectures import top, view3d

    variants = args.variants or list(view3d.VARIANTS)
    unknown = sorted(set(variants) - set(view3d.VARIANTS))
    if unknown:
        parser.error(f"unknown --variants {unknown}; choose from {list(view3d.VARIANTS)}")
    if "full" not in variants:
        variants.insert(0, "full")  # the reference of the ratios
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    voxel_train = random_batch(args.batch_size, geo.VOXEL_SHAPE, rng)
    voxel_predict = random_batch(args.predict_batch_size, geo.VOXEL_SHAPE, rng)[0]
    top_train = random_batch(args.batch_size, geo.TOP_SHAPE, rng)
    top_predict = random_batch(args.predict_batch_size, geo.TOP_SHAPE, rng)[0]

    entries = {}
    for name in [*variants, "top view (2D, reference)"]:
        is_top = name.startswith("top")
        model = top.build() if is_top else view3d.build(variant=name)
        train_step, predict_step = make_steps(model)
        train_args = top_train if is_top else voxel_train
        predict_args = (top_predict if is_top else voxel_predict,)
        for _ in range(2):  # warm-up: tracing and the first allocations
            train_step(*train_args)
            predict_step(*predict_args)
        entries[name] = {"model": model, "train": train_step, "predict": predict_step, "train_args": train_args,
                         "predict_args": predict_args, "train_rates": [], "predict_rates": []}
        print(f"built {name}: {model.count_params():,} parameters", flush=True)

    load_start = os.getloadavg()
    for round_index in range(args.rounds):
        for name, entry in entries.items():
            entry["train_rates"].append(rate(entry["train"], entry["train_args"], args.batch_size, args.seconds))
            entry["predict_rates"].append(rate(entry["predict"], entry["predict_args"], args.predict_batch_size,
                                               args.seconds / 2))
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    reference = entries["full"]
    rows = []
    for name, entry in entries.items():
        model = entry["model"]
        row = {"variant": name, "parameters": model.count_params(),
               "mega_multiply_adds_per_event": round(multiply_adds(model) / 1e6, 2),
               "features": int(model.get_layer("features").output.shape[-1])}
        for kind in ("train", "predict"):
            wall = [value[0] for value in entry[f"{kind}_rates"]]
            cpu = [value[1] for value in entry[f"{kind}_rates"]]
            same_round = [mine[0] / full[0] for mine, full in zip(entry[f"{kind}_rates"], reference[f"{kind}_rates"])]
            row.update({f"{kind}_samples_per_s": round(max(wall), 1),
                        f"{kind}_samples_per_cpu_s": round(max(cpu), 1),
                        f"{kind}_ratio_to_full": round(float(np.median(same_round)), 2),
                        f"{kind}_cpu_ratio_to_full": round(max(cpu) / max(value[1] for value in
                                                                          reference[f"{kind}_rates"]), 2),
                        f"{kind}_samples_per_s_per_round": [round(value, 1) for value in wall]})
        rows.append(row)

    header = (f"{'variant':<26} {'params':>8} {'M MAC/ev':>9} {'train/s':>8} {'x full':>7} {'/cpu-s':>7} "
              f"{'x full':>7} {'predict/s':>10} {'x full':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['variant']:<26} {row['parameters']:>8,} {row['mega_multiply_adds_per_event']:>9.1f} "
              f"{row['train_samples_per_s']:>8.1f} {row['train_ratio_to_full']:>7.2f} "
              f"{row['train_samples_per_cpu_s']:>7.1f} {row['train_cpu_ratio_to_full']:>7.2f} "
              f"{row['predict_samples_per_s']:>10.1f} {row['predict_ratio_to_full']:>7.2f}")
    print("train/s, predict/s: best round (wall clock); x full: median over rounds of the ratio to full in the "
          "same round; /cpu-s: samples per CPU-second of the process (best round), x full: its ratio")
    load_end = os.getloadavg()
    print(f"load average at start / end of the timings: {load_start[0]:.1f} / {load_end[0]:.1f} "
          f"on {os.cpu_count()} cores")
    results = {"batch_size": args.batch_size, "predict_batch_size": args.predict_batch_size, "rounds": args.rounds,
               "min_seconds_per_timing": args.seconds, "hits_per_event": HITS_PER_EVENT,
               "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
               "load_average_at_start": load_start, "load_average_at_end": load_end, "rows": rows}
    path = write_json(args.out, results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
