"""The small built-in datasets that every script uses when it is given no ``--data``.

``data/<kind>/<N>/<kind>_t<N>_<i>.root`` for N = 1..4 tracks, 2 files of 5,000 events each, seed 1,
made by the generator of ``kind`` on first use (files that exist are kept). The folder ``data/`` is
``$SNEMO_DATA_DIR`` when that is set, else ``data/`` in the repository; ``--data-dir`` moves it.

    python -m Generator.builtin --kind toyhaystack    # prints the folder
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DATASET_KINDS = ("my_generator", "toyhaystack")
REPOSITORY = Path(__file__).resolve().parent.parent


def data_dir(data_dir=None) -> Path:
    """Folder of the built-in datasets: ``data_dir`` if given, else ``$SNEMO_DATA_DIR``, else ``<repository>/data``."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("SNEMO_DATA_DIR") or REPOSITORY / "data")


def generator_of(kind: str):
    """The ``generate(n_events, n_tracks, rng) -> EventBatch`` function of dataset kind ``kind``."""
    if kind == "my_generator":
        from my_generator.my_generator import generate
    elif kind == "toyhaystack":
        from Generator.toyhaystack import generate
    else:
        raise ValueError(f"unknown dataset kind '{kind}'; choose one of {', '.join(DATASET_KINDS)}")
    return generate


def default_dataset(kind: str = "my_generator", *, data_dir_path=None, events_per_file: int = 5000, files: int = 2,
                    seed: int = 1, progress: bool = True) -> Path:
    """Folder of the built-in dataset of ``kind`` (``my_generator`` or ``toyhaystack``), generated on first use.

    ``data_dir_path``: parent folder (default :func:`data_dir`). Returns ``<data dir>/<kind>``.
    """
    from snemo.datagen import ensure_dataset

    generate = generator_of(kind)
    return ensure_dataset(generate, out=data_dir(data_dir_path) / kind, name=kind, events_per_file=events_per_file,
                          files=files, seed=seed, progress=progress)


def main(argv=None) -> int:
    """Make (or find) a built-in dataset and print its folder; exit status 2 on a bad flag or folder."""
    from snemo.cli import OneLineParser

    parser = OneLineParser(prog="python -m Generator.builtin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=DATASET_KINDS, default="my_generator",
                        help="which generator's dataset (default %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="parent folder of the built-in datasets (default $SNEMO_DATA_DIR or <repository>/data)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        print(default_dataset(args.kind, data_dir_path=args.data_dir, progress=not args.quiet))
    except (OSError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
