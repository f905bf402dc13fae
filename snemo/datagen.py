"""Shared command-line front of the toy generators: dataset layout, seeds, progress, atomic files.

Both generators (``my_generator/my_generator.py`` and ``Generator/toyhaystack.py``) expose a
function ``generate(n_events, n_tracks, rng, **options) -> EventBatch``; this module turns it into
a dataset on disk laid out as the original: ``<out>/<N>/<name>_t<N>_<i>.root`` for N tracks and
file number i. Each file's seed is derived from (seed, N, i), so any file can be regenerated alone
and a dataset does not depend on the order in which files were made.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from snemo.cli import OneLineParser
from snemo.events import EventBatch, EventFileError, write_events

GenerateFn = Callable[[int, int, np.random.Generator], EventBatch]


def file_path(out, name: str, n_tracks: int, index: int) -> Path:
    """Path of file ``index`` of the ``n_tracks`` set: ``<out>/<N>/<name>_t<N>_<index>.root``."""
    return Path(out) / str(n_tracks) / f"{name}_t{n_tracks}_{index}.root"


def file_rng(seed: int, n_tracks: int, index: int) -> np.random.Generator:
    """The random generator of one file, derived from the dataset seed, the track count and the index."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(n_tracks), int(index)]))


def check_output_folder(folder, flag: str = "--out") -> None:
    """Raise ValueError (one line naming ``flag``) unless ``folder`` exists as a writable folder or can be made.

    The first existing ancestor of ``folder`` must be a folder (not a regular file) that this
    process may write into. Nothing is created.
    """
    folder = Path(folder)
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {folder}: {existing} is a regular file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {folder}: {existing} is not writable")


def generate_dataset(generate: GenerateFn, *, out, name: str, tracks=(1, 2, 3, 4), events_per_file: int = 1000,
                     files: int = 1, first_file: int = 0, seed: int = 0, overwrite: bool = False,
                     progress: bool = True) -> list[Path]:
    """Generate ``files`` files of ``events_per_file`` events for every track count in ``tracks``.

    Returns the paths written. Checks first that every output folder can be written and refuses to
    replace an existing file unless ``overwrite`` (both for every file before anything is generated,
    so a refused run writes nothing).
    """
    from tqdm import tqdm

    if events_per_file <= 0 or files <= 0:
        raise ValueError(f"events per file and files must be positive, got {events_per_file} and {files}")
    if first_file < 0 or seed < 0 or any(n < 1 for n in tracks):
        raise ValueError(f"first_file and seed must be >= 0 and track counts >= 1, got {first_file}, {seed}, "
                         f"{list(tracks)}")
    check_output_folder(out)
    for n in tracks:
        check_output_folder(file_path(out, name, n, first_file).parent)
    jobs = [(n, i) for n in tracks for i in range(first_file, first_file + files)]
    if not overwrite:
        existing = [str(file_path(out, name, n, i)) for n, i in jobs if file_path(out, name, n, i).exists()]
        if existing:
            raise FileExistsError(f"{len(existing)} output file(s) exist, first {existing[0]}; "
                                  "pass --overwrite to replace them")
    written = []
    with tqdm(total=len(jobs) * events_per_file, unit="ev", desc=f"{name}", disable=not progress,
              file=sys.stderr) as bar:
        for n, i in jobs:
            batch = generate(events_per_file, n, file_rng(seed, n, i))
            written.append(Path(write_events(file_path(out, name, n, i), batch, overwrite=overwrite)))
            bar.update(events_per_file)
    return written


def _integer_type(low: int):
    """argparse type: an integer >= ``low``; argparse names the flag in its one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    return parse


def make_generator_parser(description: str, *, default_out: str, default_events: int = 10_000) -> OneLineParser:
    """A generator's parser: one-line errors (exit status 2) and the shared flags of :func:`add_generation_flags`."""
    parser = OneLineParser(description=description)
    add_generation_flags(parser, default_out=default_out, default_events=default_events)
    return parser


def add_generation_flags(parser: argparse.ArgumentParser, *, default_out: str, default_events: int = 10_000):
    """Flags shared by the generator command lines (integers checked by argparse, which names the flag)."""
    parser.add_argument("--events", type=_integer_type(1), default=default_events,
                        help="events per file (default %(default)s)")
    parser.add_argument("--tracks", type=_integer_type(1), nargs="+", default=[1, 2, 3, 4],
                        help="numbers of tracks per event, one file set each, any number >= 1 (default 1 2 3 4)")
    parser.add_argument("--files", type=_integer_type(1), default=1,
                        help="files per number of tracks (default %(default)s)")
    parser.add_argument("--first-file", type=_integer_type(0), default=0,
                        help="index of the first file, e.g. the Slurm array task id (default %(default)s)")
    parser.add_argument("--seed", type=_integer_type(0), default=0,
                        help="dataset seed: the files' events and the dead-cell set (default %(default)s)")
    parser.add_argument("--out", default=default_out, help="output folder (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run_generator_cli(generate_from_args: Callable[[argparse.Namespace], GenerateFn], parser: argparse.ArgumentParser,
                      name: str, argv=None) -> int:
    """Parse flags, generate the dataset, print one summary line; bad input: one line on stderr, status 2.

    ``generate_from_args(args)`` returns the ``generate(n_events, n_tracks, rng)`` function (it
    raises ValueError for bad flags); a generator that cannot draw the requested events
    (RuntimeError, e.g. more tracks than the chamber holds) is reported the same way.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a flag error, already printed on one line (2)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        generate = generate_from_args(args)
        paths = generate_dataset(generate, out=args.out, name=name, tracks=args.tracks, events_per_file=args.events,
                                 files=args.files, first_file=args.first_file, seed=args.seed,
                                 overwrite=args.overwrite, progress=not args.quiet)
    except (EventFileError, FileExistsError, ValueError, RuntimeError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} file(s), {len(paths) * args.events} events, under {args.out}")
    return 0


def ensure_dataset(generate: GenerateFn, *, out, name: str, tracks=(1, 2, 3, 4), events_per_file: int = 5000,
                   files: int = 2, seed: int = 1, progress: bool = True) -> Path:
    """Make the dataset ``out`` (layout of :func:`file_path`) complete: generate only the files that are missing.

    ``generate``: a generator's ``generate(n_events, n_tracks, rng) -> EventBatch``. Returns ``out``.
    """
    out = Path(out)
    for n in tracks:
        for i in range(files):
            if not file_path(out, name, n, i).exists():
                generate_dataset(generate, out=out, name=name, tracks=(n,), events_per_file=events_per_file,
                                 files=1, first_file=i, seed=seed, progress=progress)
    return out
