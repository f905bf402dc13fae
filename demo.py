"""Demo (``python demo.py``, ``make demo``): data, event displays, a top-view counter trained for a few minutes.

1. Generates the built-in ``my_generator`` dataset under ``data/`` (or --data-dir,
   ``$SNEMO_DATA_DIR``) if it is absent.
2. Writes a few event displays (:mod:`snemo.display`).
3. Trains the top-view track counter on the CPU with small defaults (about 5 minutes on 2 cores),
   evaluates it on the test split and prints the confusion matrix and the accuracy.

Everything goes into one run folder, ``runs/demo-<YYYYmmdd-HHMMSS>/`` (or ``--out``); running
again with the same ``--out`` resumes the training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import number_of_tracks_classification
from snemo import cli


def build_parser() -> argparse.ArgumentParser:
    """Flags of the demo: run folder, epochs, events, displays."""
    parser = cli.OneLineParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="run folder (default runs/demo-<YYYYmmdd-HHMMSS>/)")
    parser.add_argument("--data-dir", default=None,
                        help="parent folder of the built-in dataset (default $SNEMO_DATA_DIR, else data/)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default %(default)s)")
    parser.add_argument("--max-events", type=int, default=None,
                        help="use at most this many events of the built-in dataset (default: all 40,000)")
    parser.add_argument("--displays", type=int, default=2,
                        help="event displays per number of tracks (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def write_displays(source: Path, out: Path, per_count: int) -> list[Path]:
    """Event displays of the first ``per_count`` events of each track-count folder of ``source``.

    Returns the PNG paths.
    """
    from snemo import display
    from snemo.events import EventBatch, find_files, read_events

    folders = sorted(p for p in Path(source).iterdir() if p.is_dir())
    batches = [read_events(find_files(folder)[0], max_events=per_count) for folder in folders]
    batch = EventBatch.concatenate(batches)
    return display.save_event_displays(batch, out / "event_displays", n=len(batch))


def main(argv=None) -> int:
    """Run the demo; returns the exit status."""
    import datetime as dt

    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("epochs", "displays", "max_events"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    out = Path(args.out) if args.out else Path("runs") / f"demo-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def body():
        from Generator.builtin import default_dataset

        cli.check_out_dir(out)
        if args.data_dir is not None:
            cli.check_out_dir(args.data_dir, flag="--data-dir")
        print("1/3 built-in dataset (generated on first use)", flush=True)
        source = default_dataset("my_generator", data_dir_path=args.data_dir, progress=not args.quiet)
        print(f"    {source}")
        print("2/3 event displays", flush=True)
        paths = write_displays(source, out, args.displays)
        print(f"    {len(paths)} displays in {out / 'event_displays'}")
        print("3/3 training the top-view track counter on the CPU", flush=True)
        flags = ["--view", "top", "--data", str(source), "--out", str(out), "--epochs", str(args.epochs),
                 "--batch-size", "128", "--learning-rate", "2e-3", "--lr-schedule", "cosine"]
        if args.max_events:
            flags += ["--max-events", str(args.max_events)]
        if args.quiet:
            flags.append("--quiet")
        return number_of_tracks_classification.main(flags)

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
