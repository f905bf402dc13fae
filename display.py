"""Event displays of any event file: top (x, y) and side (y, z) views, truth and the reco prediction side by side.

Reads our files (my_generator twin, toyhaystack), the original macro's and SN-IEgenerator's. The
truth (``track_split``, calorimeter cells) is drawn on the left; with ``--reco`` (a file written by
reconstruct.py for this input) the prediction of its ``reco`` tree on the right: the ``cluster`` of
each hit, the predicted ``n_tracks`` and calorimeter cells where those branches exist, checked entry
by entry against ``source_entry``.

    python display.py FILE --event 7 --reco runs/reco/FILE.root --out event7.png     # one event
    python display.py FILE --event 7 --out event7.png event7.pdf                     # PNG and PDF
    python display.py FILE --first 6 --reco runs/reco/FILE.root --out gallery.pdf    # a gallery
    python display.py data/my_generator/2 --events 4 --out runs/displays             # one PNG per event

--out: file names ending in .png or .pdf (one figure each, the format by the suffix), or one folder
(default runs/displays) that gets <input name>_entry<N>.png, <input name>_first<K>.png, or with
--events/--start one event_<index>_t<tracks>.png per event. Bad input (a missing or broken file, an
entry beyond the file, a reco file that is not the input's) prints one line naming the file, the entry
and the branch and exits with status 2, having written nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from snemo import cli

FIGURE_SUFFIXES = (".png", ".pdf")


def build_parser():
    """Flags: the data, --event | --first | --events/--start, --reco, --out."""
    parser = cli.OneLineParser(prog="display.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", help="ROOT file(s), folder(s) or glob pattern(s)")
    parser.add_argument("--event", type=int, default=None, metavar="N", help="draw entry N (counted from 0)")
    parser.add_argument("--first", type=int, default=None, metavar="K", help="a gallery of the first K events")
    parser.add_argument("--events", type=int, default=None,
                        help="number of events to draw, one file each (default 4 when neither --event nor --first)")
    parser.add_argument("--start", type=int, default=None, help="first event of --events, counted from 0 (default 0)")
    parser.add_argument("--reco", default=None, metavar="RECO.root",
                        help="reconstruct.py output of this input (one input file): its prediction beside the truth")
    parser.add_argument("--out", nargs="+", action="extend", default=None, metavar="PATH",
                        help="figure file(s) (.png, .pdf) and/or one folder (default runs/displays)")
    return parser


def selection(parser, args) -> tuple[str, int, int]:
    """(mode, first event, number of events) from the flags; a conflicting or negative value is a parser error."""
    for name, low in (("event", 0), ("first", 1), ("events", 1), ("start", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"--{name} must be at least {low}, got {value}")
    chosen = [name for name in ("event", "first") if getattr(args, name) is not None]
    if args.events is not None or args.start is not None:
        chosen.append("events")
    if len(chosen) > 1:
        parser.error(f"choose one of --event, --first and --events/--start (got {', '.join('--' + c for c in chosen)})")
    if args.event is not None:
        return "event", args.event, 1
    if args.first is not None:
        return "first", 0, args.first
    return "events", args.start or 0, args.events or 4


def split_outputs(parser, outputs) -> tuple[list[Path], Path | None]:
    """(figure files, folder or None) of --out; more than one folder is a parser error."""
    files = [Path(p) for p in outputs if Path(p).suffix.lower() in FIGURE_SUFFIXES]
    folders = [Path(p) for p in outputs if Path(p).suffix.lower() not in FIGURE_SUFFIXES]
    if len(folders) > 1:
        parser.error(f"--out takes one folder at most, got {', '.join(map(str, folders))} "
                     f"(figure files end in {' or '.join(FIGURE_SUFFIXES)})")
    return files, (folders[0] if folders else None)


def input_entries(path: str) -> int:
    """Entries of the ``hit_tree`` of ``path`` (already read once, so it opens)."""
    import uproot

    from snemo.events import TREE_NAME

    with uproot.open(path) as file:
        return int(file[TREE_NAME].num_entries)


def main(argv=None) -> int:
    """Parse flags, read the events (and the reco entries), write the displays; returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    mode, start, count = selection(parser, args)
    files, folder = split_outputs(parser, args.out or ["runs/displays"])

    def body():
        from snemo.events import find_files, read_events

        for path in files:
            cli.check_out_dir(path.parent if str(path.parent) else Path("."))
        if folder is not None:
            cli.check_out_dir(folder)
        source = args.data[0] if len(args.data) == 1 else list(args.data)
        inputs = find_files(source)
        if args.reco is not None and len(inputs) != 1:
            raise ValueError(f"--reco {args.reco} belongs to one input file; {' '.join(args.data)} gives "
                             f"{len(inputs)} files")
        batch = read_events(source, max_events=start + count)
        if start >= len(batch):
            flag = {"event": f"--event {start}", "events": f"--start {start}"}.get(mode, "--first")
            raise ValueError(f"{flag}: entry {start} does not exist, {' '.join(args.data)} holds only {len(batch)} "
                             f"event(s)")
        batch = batch[start:start + count]
        reco = None
        if args.reco is not None:
            from snemo.recofile import read_reco

            reco = read_reco(args.reco, batch, n_input_entries=input_entries(inputs[0]),
                             input_name=f"input {inputs[0]}")
        for path in write(batch, reco, mode, start, count, files, folder, Path(inputs[0]).stem if len(inputs) == 1
                          else "events"):
            print(path)

    return cli.run_main(body)


def write(batch, reco, mode: str, start: int, count: int, files, folder, stem: str) -> list[Path]:
    """Draw and write the figures of the selected events ``batch``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snemo import display

    from datasets.clustering import canonical_track_rank

    single = mode == "event"
    rank = canonical_track_rank(batch)  # truth track i and reco cluster i: one colour
    targets = list(files)
    if folder is not None and mode != "events":
        targets.append(folder / (f"{stem}_entry{start}.png" if single else f"{stem}_first{count}.png"))
    paths = []
    if targets:
        figure = (display.draw_event(batch, 0, reco=reco, track_rank=rank) if single else
                  display.draw_gallery(batch, range(len(batch)), reco=reco, track_rank=rank))
        paths += display.save_figure_as(figure, targets)
        plt.close(figure)
    if folder is not None and mode == "events":
        for index in range(len(batch)):
            figure = display.draw_event(batch, index, reco=reco, track_rank=rank)
            name = f"event_{start + index:05d}_t{int(batch.n_tracks[index])}.png"
            paths += display.save_figure_as(figure, [folder / name])
            plt.close(figure)
    return paths


if __name__ == "__main__":
    sys.exit(main())
