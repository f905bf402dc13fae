"""CapsNet against the top-view CNN on one machine: inference events/s, training samples/s, parameters.

Both models run on random sparse (18, 113, 1) top views (2 % of the cells hit, about as many as
four tracks). Inference: ``model(x, training=False)`` in a ``tf.function`` at ``--batch`` events
(default 512), after a warm-up. Training: one ``GradientTape`` + Adam step per batch of
``--train-batch`` (default 256), margin loss for the CapsNet, cross-entropy for the CNN. Each
number is the best of ``--repeat`` timed rounds, the two models alternating (other processes on a
shared machine only ever slow a round down), so their ratio holds even when the absolute rates
do not. Prints a table and writes benchmarks/results/bench_capsnet.json.

Usage: python benchmarks/bench_capsnet.py [--repeat 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = REPO / "benchmarks" / "results" / "bench_capsnet.json"


def timed(function, inputs, steps: int) -> float:
    """Seconds of ``steps`` calls of ``function(*inputs)``, each result fetched to the host."""
    start = time.perf_counter()
    for _ in range(steps):
        result = function(*inputs)
    result.numpy()
    return time.perf_counter() - start


def model_functions(model, loss_fn):
    """(inference, train step) tf.functions of ``model``: x -> predictions, (x, y) -> loss (B,)."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function
    def infer(images):
        return model(images, training=False)

    @tf.function
    def train(images, labels):
        with tf.GradientTape() as tape:
            per_example = loss_fn(labels, model(images, training=True))
            loss = tf.reduce_mean(per_example)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return per_example

    return infer, train


def main(argv=None) -> int:
    """Run the benchmark; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=512, help="inference batch (default %(default)s)")
    parser.add_argument("--train-batch", type=int, default=256, help="training batch (default %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="batches per timed round (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds, best kept (default %(default)s)")
    args = parser.parse_args(argv)
    for flag in ("batch", "train_batch", "steps", "repeat"):
        if getattr(args, flag) < 1:
            print(f"--{flag.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2

    import keras
    import numpy as np
    import tensorflow as tf

    from architectures import capsnet, top
    from capsule import margin_loss
    from snemo import geometry as geo
    from snemo.jsonfile import write_json
    from snemo.steps import categorical_loss

    rng = np.random.default_rng(0)
    images = (rng.random((args.batch, *geo.TOP_SHAPE, 1)) < 0.02).astype(np.float32)
    labels = np.eye(4, dtype=np.float32)[rng.integers(0, 4, args.batch)]
    train_inputs = (tf.constant(images[:args.train_batch]), tf.constant(labels[:args.train_batch]))
    keras.utils.set_random_seed(0)
    models = {"capsnet": (capsnet.build(), margin_loss), "top CNN": (top.build(), categorical_loss)}
    functions = {name: model_functions(model, loss) for name, (model, loss) in models.items()}
    for infer, train in functions.values():  # warm-up: tracing and the first steps
        timed(infer, (tf.constant(images),), 2)
        timed(train, train_inputs, 2)
    best = {name: {"inference": float("inf"), "training": float("inf")} for name in models}
    for _ in range(args.repeat):
        for name, (infer, train) in functions.items():
            best[name]["inference"] = min(best[name]["inference"], timed(infer, (tf.constant(images),), args.steps))
            best[name]["training"] = min(best[name]["training"], timed(train, train_inputs, args.steps))
    rows = []
    for name, (model, _) in models.items():
        rows.append({"model": name, "parameters": int(model.count_params()),
                     "inference_events_per_second": args.batch * args.steps / best[name]["inference"],
                     "training_samples_per_second": args.train_batch * args.steps / best[name]["training"]})
    reference = rows[1]
    print(f"{'model':<10} {'parameters':>11} {'inference ev/s':>15} {'ratio':>6} "
          f"{'training samples/s':>19} {'ratio':>6}")
    for row in rows:
        print(f"{row['model']:<10} {row['parameters']:>11,} {row['inference_events_per_second']:>15,.0f} "
              f"{row['inference_events_per_second'] / reference['inference_events_per_second']:>6.2f} "
              f"{row['training_samples_per_second']:>19,.0f} "
              f"{row['training_samples_per_second'] / reference['training_samples_per_second']:>6.2f}")
    write_json(RESULTS, {"machine": platform.node(), "cpus": os.cpu_count(), "batch": args.batch,
                         "train_batch": args.train_batch, "steps": args.steps, "repeat": args.repeat,
                         "rows": rows})
    print(f"written {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
