"""Reconstruct event files with trained models: the number of tracks and the clustering of the hits of every event.

For every input file (a file, a folder searched recursively, a glob, or several of them) writes
FOLDER/<input base name>, a ROOT file with one TTree ``reco`` whose entry i belongs to entry i of
the input's ``hit_tree`` (usable as a friend tree; DESIGN.md "Reconstruction output"):

    source_entry    int64, per event: the entry of the input event (alignment check)
    n_tracks        int8, per event: the counter's predicted number of tracks (0: no hit)
    n_tracks_score  float32[K], per event: the counter's softmax over 1..K tracks (zeros: no hit)
    nhit            int32, per event: the number of hits (the counter of the per-hit branches)
    cluster         int16[nhit], per hit, in the input's hit order: the predicted track, 0..n-1 in
                    canonical order, -1 for noise

The input is read in chunks of --chunk-size events (memory does not grow with the number of
events), each output is written as name.tmp and renamed when complete, an existing output is
refused without --overwrite, and bad input (a missing, broken or empty file, a bad model file)
prints one line and exits with status 2 before anything is written.

    python reconstruct.py data/realistic/2 --out runs/reco
    python reconstruct.py 'files/*.root' --out reco --clusterer hough --overwrite
"""

from __future__ import annotations

import os
import sys

from snemo import cli

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_COUNTER = os.path.join(HERE, "models", "top_my_generator.keras")
DEFAULT_CLUSTERER = os.path.join(HERE, "models", "clustering_my_generator.keras")
CLASSICAL = ("hough", "dbscan")
FIELDS = ("grid_side", "grid_layer", "grid_column", "wirez", "radius", "wirez_missing", "track_split")
TREE = "reco"


def build_parser():
    """Flags: the inputs, --out, the models, batch and chunk sizes, --overwrite, --quiet."""
    parser = cli.OneLineParser(prog="reconstruct.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="ROOT file(s), folder(s) or glob pattern(s)")
    parser.add_argument("--out", required=True, metavar="FOLDER", help="output folder (one file per input)")
    parser.add_argument("--counter", default=DEFAULT_COUNTER, metavar="MODEL.keras",
                        help="track counter (default models/top_my_generator.keras)")
    parser.add_argument("--clusterer", default=None, metavar="MODEL.keras|hough|dbscan",
                        help="clustering generator, or a classical clusterer: hough (stops at the counter's count) "
                             "or dbscan (default models/clustering_my_generator.keras when it exists, else hough)")
    parser.add_argument("--batch-size", type=int, default=1024, help="events per model call (default %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=20_000,
                        help="events read from a file at a time (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return parser


def plan(args) -> list[tuple[str, str]]:
    """(input file, output file) pairs, checked before any work; raises EventFileError / ValueError / FileExistsError."""
    from snemo.events import find_files

    cli.check_out_dir(args.out)
    files = find_files(list(args.inputs))
    pairs, seen = [], {}
    for path in files:
        out = os.path.join(args.out, os.path.basename(path))
        if out in seen:
            raise ValueError(f"{seen[out]} and {path} have the same base name: both would write {out}; "
                             f"reconstruct them into different --out folders")
        seen[out] = path
        if os.path.exists(out) and os.path.samefile(out, path):
            raise ValueError(f"--out {args.out}: the output {out} would replace its input; choose another folder")
        if os.path.exists(out) and not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        pairs.append((path, out))
    return pairs


def count_entries(path: str, chunk_size: int) -> int:
    """Read and validate every chunk of ``path`` (bad input fails here, before any output); returns its entries."""
    from snemo.events import iterate_events

    return sum(len(chunk) for chunk in iterate_events(path, step_size=chunk_size, fields=FIELDS))


def write_reco(path: str, out: str, counter, cluster, *, chunk_size: int, batch_size: int, title: str,
               progress=None) -> int:
    """Write the ``reco`` tree of input ``path`` to ``out`` (``out.tmp`` renamed at the end); returns the entries.

    ``counter``: a :class:`clustering_inference.Counter`; ``cluster(batch, n_tracks) -> int16
    labels``. ``progress``: a tqdm bar updated with the events done.
    """
    import awkward as ak
    import numpy as np
    import uproot

    import clustering_inference as inference
    from snemo.events import iterate_events

    tmp = out + ".tmp"
    n_classes = counter.n_classes
    written = 0
    try:
        with uproot.recreate(tmp, compression=uproot.ZSTD(1)) as file:
            tree = file.mktree(TREE, {"source_entry": np.int64, "n_tracks": np.int8,
                                      "n_tracks_score": np.dtype((np.float32, (n_classes,))),
                                      "hit": ak.types.ListType(ak.types.RecordType([ak.types.NumpyType("int16")],
                                                                                   ["cluster"]))},
                               title=title, counter_name=lambda name: "n" + name,
                               field_name=lambda outer, inner: inner)
            for chunk in iterate_events(path, step_size=chunk_size, fields=FIELDS):
                counts, scores = inference.predict_counts(counter, chunk, batch_size=batch_size)
                labels = cluster(chunk, counts)
                tree.extend({"source_entry": chunk.entry.astype(np.int64),
                             "n_tracks": np.minimum(counts, np.iinfo(np.int8).max).astype(np.int8),
                             "n_tracks_score": scores.astype(np.float32),
                             "hit": ak.zip({"cluster": ak.unflatten(labels.astype(np.int16), chunk.n_hits)},
                                           depth_limit=2)})
                written += len(chunk)
                if progress is not None:
                    progress.update(len(chunk))
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return written


def main(argv=None) -> int:
    """Parse flags, check every input, reconstruct each file; returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("batch_size", "chunk_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    clusterer = args.clusterer
    if clusterer is None:
        clusterer = DEFAULT_CLUSTERER if os.path.exists(DEFAULT_CLUSTERER) else "hough"

    def body():
        import time

        from tqdm import tqdm

        cli.check_keras_file(args.counter, flag="--counter")
        if clusterer not in CLASSICAL:
            cli.check_keras_file(clusterer, flag="--clusterer")
        pairs = plan(args)
        total = sum(count_entries(path, args.chunk_size) for path, _ in pairs)

        import clustering_inference as inference

        counter = inference.load_counter(args.counter)
        cluster, described = inference.make_clusterer(clusterer, batch_size=args.batch_size)
        title = f"SuperNEMO reco: counter {os.path.basename(args.counter)}, clusterer {os.path.basename(clusterer)}"
        os.makedirs(args.out, exist_ok=True)
        start = time.time()
        with tqdm(total=total, unit="event", desc="reconstruct", disable=args.quiet, file=sys.stderr,
                  mininterval=1.0, smoothing=0.1) as progress:
            for path, out in pairs:
                write_reco(path, out, counter, cluster, chunk_size=args.chunk_size, batch_size=args.batch_size,
                           title=title, progress=progress)
                if not args.quiet:
                    progress.write(f"{out}")
        if not args.quiet:
            seconds = time.time() - start
            print(f"{total} events in {len(pairs)} file(s), {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} events/s); "
                  f"counter {args.counter}, clusterer {described['clusterer']}", flush=True)

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
