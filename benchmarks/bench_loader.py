"""Loader throughput: compressed ROOT files on local disk -> batched tensors, per view, against the
original per-event path and against the rate at which ``model.fit`` consumes events.

Writes its own files (ZSTD-1) in a temporary folder: ``my_generator.generate`` events with 1..4
tracks (random events if the generator is not importable), 8 files. Prints a table and writes
``benchmarks/results/bench_loader.json``.

    python benchmarks/bench_loader.py            # ~200k events
    python benchmarks/bench_loader.py --quick    # ~20k events, fewer training steps

Rates: "end to end" = events / (reading the files + one pass over the train dataset, batch 256,
shuffled); "ev/cpu-s" = the same events per CPU-second of the process (all threads: a per-core
rate, less sensitive to other jobs on the machine); "pipeline" = events / (the pass alone, events
already in memory). Each row is the best of two runs. "top, pinned to one core" repeats the top
row in a subprocess restricted to one CPU (sched_setaffinity): the per-core figure of the target.
The pass is ``dataset.reduce`` (iteration inside TensorFlow, as ``model.fit`` consumes it). The
reference is the original loader's path: open the file, read ONE entry, fill the image hit by hit
in Python, per event. The voxel row uses a tenth of the events (62 MB of float32 per batch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

import numpy as np  # noqa: E402

from snemo import geometry as geo  # noqa: E402
from snemo.events import EventBatch, offsets_from_counts, write_events  # noqa: E402

N_FILES = 8
BATCH = 256


def random_events(n_events: int, n_tracks: int, rng: np.random.Generator) -> EventBatch:
    """Fallback events when my_generator is not importable: n_tracks random tracks of 8..24 hits."""
    track_hits = rng.integers(8, 25, (n_events, n_tracks))
    n_hits = track_hits.sum(axis=1)
    total = int(n_hits.sum())
    hits = {"grid_side": rng.integers(0, 2, total).astype(np.int8),
            "grid_layer": rng.integers(0, geo.N_LAYERS, total).astype(np.int8),
            "grid_column": rng.integers(0, geo.N_COLUMNS, total).astype(np.int16),
            "wirez": rng.uniform(-1500, 1500, total).astype(np.float32),
            "radius": rng.uniform(0, 22, total).astype(np.float32)}
    tracks = {"track_split": np.cumsum(track_hits, axis=1).reshape(-1).astype(np.int32),
              "calo_side": rng.integers(0, 2, n_events * n_tracks).astype(np.int8),
              "calo_column": rng.integers(0, 22, n_events * n_tracks).astype(np.int8),
              "calo_row": rng.integers(0, 15, n_events * n_tracks).astype(np.int8)}
    return EventBatch(offsets_from_counts(n_hits), hits, offsets_from_counts(np.full(n_events, n_tracks)), tracks)


def write_dataset(folder: Path, n_events: int) -> tuple[list[str], str]:
    """N_FILES files (two per track count 1..4) of n_events / N_FILES events, ZSTD-1. Returns (paths, generator)."""
    try:
        from my_generator.my_generator import generate
        name = "my_generator.generate"
    except ImportError:
        generate, name = random_events, "random events (my_generator not importable)"
    paths = []
    per_file = max(1, n_events // N_FILES)
    for i in range(N_FILES):
        n_tracks = 1 + i % 4
        batch = generate(per_file, n_tracks, np.random.default_rng([11, i]))
        paths.append(write_events(folder / f"bench_t{n_tracks}_{i}.root", batch, compression="ZSTD", level=1))
    return paths, name


def per_event_reference(paths: list[str], n_events: int) -> float:
    """The original path: per event, open the file, read one entry, fill the top view hit by hit. Returns ev/s."""
    import uproot

    start = time.perf_counter()
    for k in range(n_events):
        path = paths[k % len(paths)]
        entry = k // len(paths)
        with uproot.open(path) as file:
            arrays = file["hit_tree"].arrays(["grid_side", "grid_layer", "grid_column", "track_split"],
                                             entry_start=entry, entry_stop=entry + 1, library="np")
        image = np.zeros((geo.TOP_ROWS, geo.N_COLUMNS, 1), dtype=np.float32)
        for side, layer, column in zip(arrays["grid_side"][0], arrays["grid_layer"][0], arrays["grid_column"][0]):
            row = 8 - layer if side == 0 else 9 + layer
            image[row, column, 0] = 1.0
        label = np.zeros(4, np.float32)
        label[len(arrays["track_split"][0]) - 1] = 1.0
    return n_events / (time.perf_counter() - start)


def count_events(dataset) -> int:
    """Iterate a dataset of (inputs, labels) once inside TensorFlow (as model.fit does); returns events."""
    import tensorflow as tf

    return int(dataset.reduce(tf.constant(0, tf.int64),
                              lambda total, batch: total + tf.cast(tf.shape(batch[1])[0], tf.int64)))


def loader_rate(loader, source, *, max_events=None, streaming=False, repeats=2, **kwargs) -> dict:
    """Build the train split of everything (split 1/0/0) and iterate it once; best of ``repeats`` runs.

    Returns events, seconds reading (building the Splits) and iterating, wall-clock rates and the
    end-to-end rate per CPU-second of the process (all threads), i.e. per core.
    """
    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        splits = loader(source, batch_size=BATCH, split=(1.0, 0.0, 0.0), max_events=max_events,
                        streaming=streaming, **kwargs)
        built = time.perf_counter()
        n = count_events(splits.train)
        done, cpu_done = time.perf_counter(), time.process_time()
        row = {"events": n, "read_s": round(built - wall, 3), "iterate_s": round(done - built, 3),
               "end_to_end_ev_per_s": n / (done - wall), "pipeline_ev_per_s": n / (done - built),
               "end_to_end_ev_per_cpu_s": n / (cpu_done - cpu)}
        if best is None or row["end_to_end_ev_per_s"] > best["end_to_end_ev_per_s"]:
            best = row
    return best


def fit_rate(source, steps: int) -> dict:
    """Events per second consumed by ``model.fit`` of a ~230k-parameter CNN on the top view."""
    import keras
    from datasets import number_of_tracks

    splits = number_of_tracks.load(source, view="top", batch_size=BATCH, split=(1.0, 0.0, 0.0),
                                   max_events=steps * BATCH + BATCH)
    inputs = keras.Input((18, 113, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)  # (B, 18, 113, 32)
    x = keras.layers.MaxPooling2D()(x)  # (B, 9, 56, 32)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)  # (B, 4, 28, 64)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)  # (B, 7168)
    x = keras.layers.Dense(24, activation="relu")(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "categorical_crossentropy")
    warm = 20
    model.fit(splits.train.repeat(), steps_per_epoch=warm, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(splits.train.repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    return {"params": model.count_params(), "steps": steps, "ev_per_s": steps * BATCH / seconds}


def one_core_rate(paths: list[str]) -> dict:
    """The top-view row again in a subprocess pinned to one CPU (affinity set before TensorFlow starts)."""
    code = ("import json, os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "sys.path.insert(0, %r); sys.path.insert(0, %r)\n"
            "import bench_loader\n"
            "from datasets import number_of_tracks\n"
            "paths = json.loads(sys.argv[1])\n"
            "bench_loader.loader_rate(number_of_tracks.load, paths, max_events=2048, repeats=1)\n"
            "print(json.dumps(bench_loader.loader_rate(number_of_tracks.load, paths, view='top')))"
            % (str(ROOT_DIR), str(ROOT_DIR / "benchmarks")))
    result = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], capture_output=True, text=True,
                            check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return json.loads(result.stdout.strip().splitlines()[-1])


def streaming_peak_rss(paths: list[str]) -> dict:
    """Peak memory of a subprocess that streams the files once: 2 files against all 8 (2 open at a time).

    Peak RSS (resource.getrusage, TensorFlow's own memory included) and the peak of Python and
    NumPy allocations (tracemalloc, started after TensorFlow is imported).
    """
    code = ("import resource, sys, json, tracemalloc; sys.path.insert(0, %r)\n"
            "from datasets import number_of_tracks\n"
            "import tensorflow\n"
            "files = json.loads(sys.argv[1])\n"
            "tracemalloc.start()\n"
            "s = number_of_tracks.load(files, view='top', batch_size=256, split=(1.0, 0.0, 0.0), streaming=True,\n"
            "                          stream_files=2)\n"
            "n = sum(int(y.shape[0]) for x, y in s.train)\n"
            "print(json.dumps({'events': n, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,\n"
            "                  'peak_python_numpy_mb': tracemalloc.get_traced_memory()[1] / 2**20}))"
            % str(ROOT_DIR))
    out = {}
    for k in (2, len(paths)):
        result = subprocess.run([sys.executable, "-c", code, json.dumps(paths[:k])], capture_output=True, text=True,
                                check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        out[f"{k}_files"] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def main(argv=None) -> int:
    """Run the benchmark; print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events written (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="20k events, 100 training steps, 200 reference events")
    parser.add_argument("--out", default=str(ROOT_DIR / "benchmarks" / "results" / "bench_loader.json"))
    args = parser.parse_args(argv)
    n_events = 20_000 if args.quick else args.events
    steps = 100 if args.quick else 300
    n_reference = 200 if args.quick else 500

    from datasets import number_of_tracks, number_of_tracks3D

    results = {"events_written": n_events, "batch_size": BATCH, "cpu_count": os.cpu_count(),
               "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        start = time.perf_counter()
        paths, generator = write_dataset(Path(tmp), n_events)
        results["generator"] = generator
        results["write_s"] = round(time.perf_counter() - start, 2)
        results["file_mb"] = round(sum(os.path.getsize(p) for p in paths) / 1e6, 1)
        print(f"wrote {n_events} events ({generator}) in {results['write_s']} s, {results['file_mb']} MB, ZSTD-1")

        rows = {}
        loader_rate(number_of_tracks.load, paths, max_events=2048, repeats=1)  # warm-up: TF start, file cache
        for label, loader, kwargs in (
                ("top", number_of_tracks.load, dict(view="top")),
                ("side", number_of_tracks.load, dict(view="side")),
                ("front", number_of_tracks.load, dict(view="front")),
                ("top+side+front", number_of_tracks.load, dict(view=("top", "side", "front"))),
                ("top, streaming", number_of_tracks.load, dict(view="top", streaming=True)),
                ("voxel", number_of_tracks3D.load, dict(max_events=max(BATCH, n_events // 10)))):
            rows[label] = loader_rate(loader, paths, **kwargs)
        rows["top, pinned to one core"] = one_core_rate(paths)
        reference = per_event_reference(paths, n_reference)
        results["per_event_reference_ev_per_s"] = reference
        results["loaders"] = rows
        results["fit"] = fit_rate(paths, steps)
        results["streaming_peak_rss"] = streaming_peak_rss(paths)

    print(f"\n{'path':<26}{'events':>9}{'read s':>8}{'iter s':>8}{'end-to-end ev/s':>17}{'ev/cpu-s':>10}"
          f"{'pipeline ev/s':>15}{'x per-event':>13}")
    for label, row in rows.items():
        print(f"{label:<26}{row['events']:>9}{row['read_s']:>8.2f}{row['iterate_s']:>8.2f}"
              f"{row['end_to_end_ev_per_s']:>17,.0f}{row['end_to_end_ev_per_cpu_s']:>10,.0f}"
              f"{row['pipeline_ev_per_s']:>15,.0f}{row['end_to_end_ev_per_s'] / reference:>13,.0f}")
    print(f"{'per-event reference (top)':<26}{n_reference:>9}{'':>16}{reference:>17,.1f}{'':>25}{1:>13}")
    fit = results["fit"]
    print(f"{'model.fit, CNN on top':<26}{fit['steps'] * BATCH:>9}{'':>16}{fit['ev_per_s']:>17,.0f}{'':>38}"
          f"   ({fit['params']:,} params; loader/fit margin "
          f"x{rows['top']['end_to_end_ev_per_s'] / fit['ev_per_s']:.0f})")
    for key, value in results["streaming_peak_rss"].items():
        print(f"streaming, {key.replace('_', ' ')}: {value['events']} events, peak RSS {value['peak_rss_mb']:.0f} MB "
              f"(TensorFlow included), peak Python + NumPy allocations {value['peak_python_numpy_mb']:.0f} MB")
    results["load_average_at_end"] = os.getloadavg()
    print(f"load average at start / end: {results['load_average_at_start'][0]:.1f} / "
          f"{results['load_average_at_end'][0]:.1f} on {os.cpu_count()} cores")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
