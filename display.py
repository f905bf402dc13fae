"""Event displays of any event file: the tracker from the top (x, y) and from the side (y, z), hits coloured by truth track.

Writes one PNG per event into --out (default runs/displays): events --start .. --start + --events - 1
of the data (a ROOT file, a folder searched recursively or a glob). Bad input (a missing, empty or
broken file, a --start beyond the file, an unwritable --out) prints one line and exits with status
2, having written nothing.

    python display.py data/my_generator/2 --events 4 --out runs/displays
"""

from __future__ import annotations

import sys

from snemo import cli


def build_parser():
    """Flags: the data, --events, --start, --out."""
    parser = cli.OneLineParser(prog="display.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", help="ROOT file(s), folder(s) or glob pattern(s)")
    parser.add_argument("--events", type=int, default=4, help="number of events to draw (default %(default)s)")
    parser.add_argument("--start", type=int, default=0, help="first event, counted from 0 (default %(default)s)")
    parser.add_argument("--out", default="runs/displays", help="output folder (default %(default)s)")
    return parser


def main(argv=None) -> int:
    """Parse flags, read the events, write the displays; returns the exit status (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error(f"--events must be at least 1, got {args.events}")
    if args.start < 0:
        parser.error(f"--start must be at least 0, got {args.start}")

    def body():
        from snemo.display import save_event_displays
        from snemo.events import read_events

        cli.check_out_dir(args.out)
        source = args.data[0] if len(args.data) == 1 else list(args.data)
        batch = read_events(source, max_events=args.start + args.events)
        if args.start >= len(batch):
            raise ValueError(f"--start {args.start}: {' '.join(args.data)} holds only {len(batch)} event(s)")
        for path in save_event_displays(batch, args.out, args.events, start=args.start):
            print(path)

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
