"""Reconstruct event files with trained models: number of tracks, clusters and calorimeter cells of every event.

For every input file (a file, a folder searched recursively, a glob, or several of them) writes
FOLDER/<input base name>, a ROOT file with one TTree ``reco`` whose entry i belongs to entry i of
the input's ``hit_tree`` (usable as a friend tree; DESIGN.md "Reconstruction output"):

    source_entry    int64, per event: the entry of the input event (alignment check)
    n_tracks        int8, per event: the counter's predicted number of tracks (0: no hit)
    n_tracks_score  float32[K], per event: the counter's softmax over 1..K tracks (zeros: no hit)
    nhit            int32, per event: the number of hits (the counter of the per-hit branches)
    cluster         int16[nhit], per hit, in the input's hit order: the predicted track, 0..n-1 in
                    canonical order, -1 for noise and for hits the pre-filter dropped
    ntrack          int32, per event: predicted tracks of the calorimeter branches
    calo_side, calo_column, calo_row   int8[ntrack]: predicted cell of the 22 x 15 grid
    calo_score      float32[ntrack]: the model's probability of that cell
    calo_cluster    int16[ntrack]: the cluster the cell belongs to; -1 (multi-label model)

Steps that did not run (--clusterer none, --calorimeter none) leave their branches out. The input
is read in chunks of --chunk-size events (memory does not grow with the number of events), each
output is written as name.tmp and renamed when complete, an existing output is refused without
--overwrite, and bad input (a missing, broken or empty file, a bad model file, flags that exclude
each other) prints one line and exits with status 2 before anything is written. --score scores the
reconstruction against the input's truth (reconstruction_score.py) and writes FOLDER/<base>.score.json
and FOLDER/score.json.

    python reconstruct.py data/realistic/2 --out runs/reco
    python reconstruct.py 'files/*.root' --out reco --clusterer hough --calorimeter multilabel --score
"""

from __future__ import annotations

import os
import signal
import sys

from snemo import cli

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")
SHIPPED_COUNTERS = ("combined", "top", "side", "front", "voxel")  # --counter NAME: models/NAME_my_generator.keras
DEFAULT_COUNTER = os.path.join(MODELS, "combined_my_generator.keras")
# The default clusterer: a generator file (used when it exists, else hough) or "hough" / "dbscan".
# Hough: on the held-out sets it beats the shipped generator (models/README.md, "Clustering").
DEFAULT_CLUSTERER = "hough"
SHIPPED_GENERATOR = os.path.join(MODELS, "clustering_my_generator.keras")
DEFAULT_CALO_SINGLE = os.path.join(MODELS, "calorimeter_single_my_generator.keras")
DEFAULT_CALO_MULTI = os.path.join(MODELS, "calorimeter_multi_my_generator.keras")
CLASSICAL = ("hough", "dbscan")
FIELDS = ("grid_side", "grid_layer", "grid_column", "wirez", "radius", "wirez_missing", "track_split")
TRUTH_FIELDS = ("calo_side", "calo_column", "calo_row")
TREE = "reco"


def build_parser():
    """Flags: the inputs, --out, the models and steps, the pre-filter, --score, sizes, --overwrite, --quiet."""
    parser = cli.OneLineParser(prog="reconstruct.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="ROOT file(s), folder(s) or glob pattern(s)")
    parser.add_argument("--out", required=True, metavar="FOLDER", help="output folder (one file per input)")
    parser.add_argument("--counter", default=DEFAULT_COUNTER, metavar="MODEL.keras|NAME",
                        help="track counter: a file or a shipped one by name "
                             f"({', '.join(SHIPPED_COUNTERS)}; default combined)")
    parser.add_argument("--clusterer", default=None, metavar="MODEL.keras|generator|hough|dbscan|none",
                        help="clustering generator (generator: the shipped models/clustering_my_generator.keras), a classical clusterer (hough: stops at the counter's count; "
                             "dbscan) or none (no cluster branch); default hough, which beats the shipped generator "
                             "on held-out events")
    parser.add_argument("--line-refit", choices=("on", "off"), default="on",
                        help="refine the clusters by the 3D lines fitted to them: every hit to the nearest line "
                             "or noise (clustering.refine_by_lines; DBSCAN: off always; default %(default)s)")
    parser.add_argument("--calorimeter", choices=("clustered", "multilabel", "none"), default=None,
                        help="calorimeter cells: clustered (single-label model per cluster), multilabel (top k "
                             "cells of the unclustered event, k = n_tracks) or none; default clustered when "
                             "--calo-single exists, else multilabel when --calo-multi exists, else none")
    parser.add_argument("--calo-single", default=DEFAULT_CALO_SINGLE, metavar="MODEL.keras",
                        help="single-label calorimeter model (default models/calorimeter_single_my_generator.keras)")
    parser.add_argument("--calo-multi", default=DEFAULT_CALO_MULTI, metavar="MODEL.keras",
                        help="multi-label calorimeter model (default models/calorimeter_multi_my_generator.keras)")
    parser.add_argument("--isolated", choices=("drop", "keep"), default="drop",
                        help="hits with no other hit in the 8 neighbouring cells: dropped before every step and "
                             "labelled -1, or kept (default %(default)s)")
    parser.add_argument("--score", action="store_true",
                        help="score against the input's truth: print a table, write FOLDER/<base>.score.json "
                             "and FOLDER/score.json")
    parser.add_argument("--batch-size", type=int, default=1024, help="events per model call (default %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=20_000,
                        help="events read from a file at a time (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return parser


def resolve(args, parser) -> None:
    """Fill the defaults that depend on files (counter name, clusterer, calorimeter mode); refuse bad combinations."""
    for name in ("batch_size", "chunk_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.counter in SHIPPED_COUNTERS:
        args.counter = os.path.join(MODELS, f"{args.counter}_my_generator.keras")
    if args.clusterer == "generator":
        args.clusterer = SHIPPED_GENERATOR
    if args.clusterer is None:
        usable = DEFAULT_CLUSTERER in CLASSICAL or os.path.exists(DEFAULT_CLUSTERER)
        args.clusterer = DEFAULT_CLUSTERER if usable else "hough"
    if args.calorimeter is None:
        if args.clusterer != "none" and os.path.exists(args.calo_single):
            args.calorimeter = "clustered"
        else:
            args.calorimeter = "multilabel" if os.path.exists(args.calo_multi) else "none"
    # what --line-refit means for this clusterer: DBSCAN and no clustering are never refitted
    args.refit = args.line_refit == "on" and args.clusterer not in ("dbscan", "none")
    if args.calorimeter == "clustered" and args.clusterer == "none":
        parser.error("--calorimeter clustered needs clusters: give a --clusterer other than none, "
                     "or --calorimeter multilabel / none")


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
        written = [out] + ([score_path(out), os.path.join(args.out, "score.json")] if args.score else [])
        for name in written:
            if os.path.exists(name) and not args.overwrite:
                raise FileExistsError(f"{name} exists; pass --overwrite to replace it")
        pairs.append((path, out))
    return pairs


def score_path(out: str) -> str:
    """FOLDER/<base>.score.json of the output FOLDER/<base>.root."""
    return os.path.splitext(out)[0] + ".score.json"


def count_entries(path: str, chunk_size: int) -> int:
    """Read and validate every chunk of ``path`` (bad input fails here, before any output); returns its entries."""
    from snemo.events import iterate_events

    return sum(len(chunk) for chunk in iterate_events(path, step_size=chunk_size, fields=FIELDS))


def reco_arrays(chunk, steps: dict, *, batch_size: int, scorer=None) -> dict:
    """The ``reco`` branches of one chunk of events, as the dict that :func:`snemo.treewriter.write_tree` takes.

    ``steps``: "counter" (a :class:`clustering_inference.Counter`), "cluster" (``(batch, n_tracks)
    -> labels`` or None), "isolated" ("drop" | "keep"), "calorimeter" ("clustered" | "multilabel" |
    "none") and "calo" (a :class:`reconstruction.CaloModel` or None). ``scorer``: a
    :class:`reconstruction_score.Scorer` that also gets the chunk.
    """
    import awkward as ak
    import numpy as np

    import clustering_inference as inference
    import reconstruction

    n_hits = int(chunk.hit_offsets[-1] - chunk.hit_offsets[0])
    dropped = reconstruction.isolated_hits(chunk) if steps["isolated"] == "drop" else np.zeros(n_hits, bool)
    kept = reconstruction.keep_hits(chunk, ~dropped)
    counts, scores = inference.predict_counts(steps["counter"], kept, batch_size=batch_size)
    data = {"source_entry": chunk.entry.astype(np.int64),
            "n_tracks": np.minimum(counts, np.iinfo(np.int8).max).astype(np.int8),
            "n_tracks_score": scores.astype(np.float32)}
    labels = kept_labels = cells = None
    if steps["cluster"] is not None:
        kept_labels = steps["cluster"](kept, counts)
        labels = np.full(n_hits, -1, np.int16)
        labels[~dropped] = kept_labels
        data["hit"] = ak.zip({"cluster": ak.unflatten(labels, chunk.n_hits)}, depth_limit=2)
    else:
        data["nhit"] = chunk.n_hits.astype(np.int32)
    if steps["calorimeter"] == "clustered":
        cells = reconstruction.clustered_cells(steps["calo"], kept, kept_labels, batch_size=batch_size)
    elif steps["calorimeter"] == "multilabel":
        cells = reconstruction.multilabel_cells(steps["calo"], kept, counts, batch_size=batch_size)
    if cells is not None:
        data["track"] = ak.zip({name: ak.unflatten(values, cells.per_event) for name, values in
                                (("calo_side", cells.side), ("calo_column", cells.column), ("calo_row", cells.row),
                                 ("calo_score", cells.score), ("calo_cluster", cells.cluster))}, depth_limit=2)
    if scorer is not None:
        scorer.add(chunk, counts, dropped, labels, cells)
    return data


def write_reco(path: str, out: str, steps: dict, *, chunk_size: int, batch_size: int, title: str,
               progress=None, scorer=None) -> int:
    """Write the ``reco`` tree of input ``path`` to ``out`` (``out.tmp`` renamed at the end); returns the entries.

    ``steps``: see :func:`reco_arrays`. ``progress``: a tqdm bar updated with the events done;
    ``scorer``: given every chunk (then the truth branches are read too).
    """
    from snemo.events import iterate_events
    from snemo.treewriter import write_tree

    fields = FIELDS + (TRUTH_FIELDS if scorer is not None else ())

    def chunks():
        for chunk in iterate_events(path, step_size=chunk_size, fields=fields):
            yield reco_arrays(chunk, steps, batch_size=batch_size, scorer=scorer)
            if progress is not None:
                progress.update(len(chunk))

    return write_tree(out, TREE, chunks(), title=title)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like an exception: the writer removes its .tmp


def main(argv=None) -> int:
    """Parse flags, check every input, reconstruct each file; returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve(args, parser)

    def body():
        import time

        from tqdm import tqdm

        cli.check_keras_file(args.counter, flag="--counter")
        if args.clusterer not in CLASSICAL + ("none",):
            cli.check_keras_file(args.clusterer, flag="--clusterer")
        calo_flag, calo_path = {"clustered": ("--calo-single", args.calo_single),
                                "multilabel": ("--calo-multi", args.calo_multi)}.get(args.calorimeter, (None, None))
        if calo_flag:
            cli.check_keras_file(calo_path, flag=calo_flag)
        pairs = plan(args)
        total = sum(count_entries(path, args.chunk_size) for path, _ in pairs)

        import clustering_inference as inference
        import reconstruction

        steps = {"counter": inference.load_counter(args.counter), "cluster": None, "isolated": args.isolated,
                 "calorimeter": args.calorimeter, "calo": None}
        if args.clusterer != "none":
            steps["cluster"], _ = inference.make_clusterer(args.clusterer, batch_size=args.batch_size, refit=args.refit)
        if calo_flag:
            steps["calo"] = reconstruction.load_calorimeter(calo_path, "single" if args.calorimeter == "clustered"
                                                            else "multi", flag=calo_flag)
        title = (f"SuperNEMO reco: counter {os.path.basename(args.counter)}, clusterer "
                 f"{os.path.basename(args.clusterer)}"
                 + (", line refit" if args.refit else "")
                 + f", calorimeter {args.calorimeter}"
                 + (f" ({os.path.basename(calo_path)})" if calo_flag else "") + f", isolated hits {args.isolated}")
        os.makedirs(args.out, exist_ok=True)
        start = time.time()
        scorers = []
        with tqdm(total=total, unit="event", desc="reconstruct", disable=args.quiet, file=sys.stderr,
                  mininterval=1.0, smoothing=0.1) as progress:
            for path, out in pairs:
                scorer = new_scorer(args) if args.score else None
                write_reco(path, out, steps, chunk_size=args.chunk_size, batch_size=args.batch_size, title=title,
                           progress=progress, scorer=scorer)
                if not args.quiet:
                    progress.write(f"{out}")
                if scorer is not None:
                    scorers.append((path, out, scorer))
        if not args.quiet:
            seconds = time.time() - start
            print(f"{total} events in {len(pairs)} file(s), {seconds:.1f} s ({total / max(seconds, 1e-9):.0f} events/s); "
                  f"{title[len('SuperNEMO reco: '):]}", flush=True)
        if args.score:
            report_scores(args, scorers)

    previous = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return cli.run_main(body)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def new_scorer(args):
    """A :class:`reconstruction_score.Scorer` for the steps of this run."""
    from reconstruction_score import Scorer

    return Scorer(clustering=args.clusterer != "none", calorimeter=args.calorimeter)


def report_scores(args, scorers) -> None:
    """Print and write the scores of every file with truth and of all of them together (FOLDER/score.json)."""
    from reconstruction_score import format_table
    from snemo.jsonfile import write_json

    scored = []
    for path, out, scorer in scorers:
        if not scorer.has_truth():
            print(f"{path}: no truth (track_split is empty in every entry); not scored", flush=True)
            continue
        if args.calorimeter != "none" and not scorer.calo_truth:
            print(f"{path}: no calorimeter truth (calo_side, calo_column, calo_row); calorimeter not scored",
                  flush=True)
        result = scorer.result()
        write_json(score_path(out), {"input": path, "reco": out, **settings(args), **result})
        print(f"{path}\n{format_table(result)}", flush=True)
        scored.append(scorer)
    if not scored:
        return
    everything = new_scorer(args)
    everything.parts = [part for scorer in scored for part in scorer.parts]
    everything.calo_truth = all(scorer.calo_truth for scorer in scored)
    if not everything.calo_truth:
        everything.parts = [{key: value for key, value in part.items() if key not in ("calo_ok", "calo_exact")}
                            for part in everything.parts]
    result = everything.result()
    write_json(os.path.join(args.out, "score.json"),
               {"inputs": [path for path, _, scorer in scorers if scorer in scored], **settings(args), **result})
    if len(scored) > 1:
        print(f"all {len(scored)} files\n{format_table(result)}", flush=True)


def settings(args) -> dict:
    """The models and steps of the run, recorded in every score file."""
    return {"counter": args.counter, "clusterer": args.clusterer,
            "line_refit": args.refit,
            "calorimeter": args.calorimeter,
            "calo_model": {"clustered": args.calo_single, "multilabel": args.calo_multi}.get(args.calorimeter),
            "isolated": args.isolated}


if __name__ == "__main__":
    sys.exit(main())
