"""Held-out scores of the shipped track counters, and their robustness to detector effects.

    python models/evaluate.py heldout      # table of models/README.md: clean, realistic, one-sided (both)
    python models/evaluate.py robustness   # accuracy against the noise mean and the missing-z fraction

``heldout`` scores every shipped counter on the held-out sets that ``models/train_models.sh`` makes
(``data/heldout/<generator>/<column>``, 20,000 events each, seeds never trained on), writes
``models/heldout.json`` and prints the markdown table. ``robustness`` generates (once) sets of
2,000 events (500 per track count) that differ from the clean events by ONE detector effect,
the noise mean (0, 1, 2, 4, 6 hits per event) or the missing-z fraction (0, 5, 10, 20 %), scores
every counter on them and draws ``models/robustness.{png,pdf}`` and ``models/robustness.json``
(scores of other models already in the JSON files are kept, so models can be scored one by one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = ("top_my_generator", "side_my_generator", "front_my_generator", "voxel_my_generator",
          "combined_my_generator", "top_toyhaystack", "combined_toyhaystack")
COLUMNS = {"my_generator": ("clean", "realistic", "onesided", "onesided_realistic"),
           "toyhaystack": ("clean", "realistic")}
GENERATORS = {"my_generator": "my_generator/my_generator.py", "toyhaystack": "Generator/toyhaystack.py"}
NOISE_MEANS = (0, 1, 2, 4, 6)
MISSING_Z = (0.0, 0.05, 0.10, 0.20)
EVENTS_PER_COUNT = 500  # robustness sets: 2,000 events per point (statistical error about 0.3 points at 98 %)


def generator_of(name: str) -> str:
    """The generator whose events a shipped model was trained on, from its name (``top_toyhaystack`` -> toyhaystack)."""
    return "toyhaystack" if name.endswith("toyhaystack") else "my_generator"


def score(model, source, *, batch_size: int = 512) -> dict:
    """Counting metrics (snemo.metrics) of a loaded counter on every event of ``source``."""
    from datasets import number_of_tracks, number_of_tracks3D
    from plot_confusion import model_views
    from snemo import metrics
    from snemo.training import predict

    views = model_views(model)
    n_classes = int(model.output_shape[-1])
    options = dict(max_tracks=n_classes, batch_size=batch_size, split=(0.0, 0.0, 1.0), shuffle=False)
    if views == ("voxel",):
        splits = number_of_tracks3D.load(source, **options)
    else:
        splits = number_of_tracks.load(source, view=views if len(views) > 1 else views[0], **options)
    targets, outputs = predict(model, splits.test)
    return metrics.counting_metrics(targets, outputs, n_classes)


def load(name: str):
    """The shipped model ``models/<name>.keras`` (safe mode)."""
    import keras

    return keras.saving.load_model(REPO / "models" / f"{name}.keras", safe_mode=True, compile=False)


def heldout(names, data: Path) -> dict:
    """{model: {column: metrics}} on ``data/<generator>/<column>`` (merged into models/heldout.json); prints the table."""
    from snemo.jsonfile import read_json, write_json

    results = read_json(REPO / "models" / "heldout.json", {})  # other models' scores are kept
    for name in names:
        model = load(name)
        results[name] = {}
        for column in COLUMNS[generator_of(name)]:
            source = data / generator_of(name) / column
            start = time.time()
            results[name][column] = score(model, str(source))
            print(f"{name} {column}: {results[name][column]['accuracy']:.4%} ({time.time() - start:.0f} s)", flush=True)
    write_json(REPO / "models" / "heldout.json", results)
    header = "| model | " + " | ".join(COLUMNS["my_generator"]) + " |"
    print(header + "\n|" + "---|" * (len(COLUMNS["my_generator"]) + 1))
    for name, per_column in results.items():
        cells = [f"{per_column[c]['accuracy']:.2%}" if c in per_column else "-" for c in COLUMNS["my_generator"]]
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    return results


def effect_sets(data: Path) -> dict:
    """Generate (once) and return {(generator, effect, value): folder} of the robustness sets."""
    sets = {}
    for generator, script in GENERATORS.items():
        points = [("noise", m, ["--noise-hits", str(m)]) for m in NOISE_MEANS]
        points += [("missing_z", f, ["--missing-z-fraction", str(f)]) for f in MISSING_Z]
        for effect, value, flags in points:
            folder = data / generator / f"{effect}_{value}"
            if not folder.exists():
                subprocess.run([sys.executable, str(REPO / script), "--events", str(EVENTS_PER_COUNT), "--files", "1",
                                "--seed", "777", "--out", str(folder), "--quiet", *flags], check=True)
            sets[(generator, effect, value)] = folder
    return sets


def robustness(names, data: Path) -> dict:
    """Accuracy of every model against each effect; writes models/robustness.{json,png,pdf}."""
    from snemo import plots
    from snemo.jsonfile import write_json

    from snemo.jsonfile import read_json

    sets = effect_sets(data)
    results = read_json(REPO / "models" / "robustness.json", {})
    for name in names:
        model = load(name)
        results[name] = {"noise": {}, "missing_z": {}}
        for (generator, effect, value), folder in sets.items():
            if generator == generator_of(name):
                results[name][effect][str(value)] = score(model, str(folder))["accuracy"]
        print(name, results[name], flush=True)
    write_json(REPO / "models" / "robustness.json", results)
    pyplot = plots._pyplot()
    figure, axes = pyplot.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name, result in results.items():
        style = "--" if name.endswith("toyhaystack") else "-"
        axes[0].plot(NOISE_MEANS, [100 * result["noise"][str(m)] for m in NOISE_MEANS], style, marker="o", label=name)
        axes[1].plot([100 * f for f in MISSING_Z], [100 * result["missing_z"][str(f)] for f in MISSING_Z], style,
                     marker="o", label=name)
    axes[0].set_xlabel("noise hits per event (Poisson mean)")
    axes[1].set_xlabel("hits without z (%)")
    axes[0].set_ylabel(f"accuracy on {4 * EVENTS_PER_COUNT:,} held-out events (%)")
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower left")
    figure.suptitle("Shipped track counters against one detector effect at a time (others clean)")
    figure.tight_layout()
    plots.save_figure(figure, REPO / "models" / "robustness")
    return results


def main(argv=None) -> int:
    """Command line: ``heldout`` or ``robustness``, optional model names; exit status 2 on a bad argument."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("heldout", "robustness"))
    parser.add_argument("models", nargs="*", default=list(MODELS), help="shipped model names (default: all)")
    parser.add_argument("--data", default=None, help="data folder (default data/heldout or data/robustness)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.models if not (REPO / "models" / f"{name}.keras").is_file()]
    if unknown:
        print(f"error: no shipped model {unknown[0]} (models/{unknown[0]}.keras)", file=sys.stderr)
        return 2
    data = Path(args.data or REPO / "data" / ("heldout" if args.what == "heldout" else "robustness"))
    (heldout if args.what == "heldout" else robustness)(args.models, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
