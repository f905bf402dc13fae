"""reconstruct.py end to end: events/s for the counter alone and the whole chain, and peak memory against the number of events.

Every configuration runs ``reconstruct.py`` as a child process on realistic events (made once by
``my_generator/my_generator.py --realistic``, a quarter of each 1..4-track count, kept in
``--data-dir`` and reused while their entries match): the counter alone (``--clusterer none
--calorimeter none``) and the whole chain (reconstruct.py's defaults), at each ``--batch-sizes``
(256 and 1,024) and each ``--events`` total (20,000 and 200,000). For each run:

* ``events/s (script)``: the rate reconstruct.py prints itself, from the first chunk read to the
  last output renamed (reading, views, models, writing), after TensorFlow and the models loaded;
* ``events/s (wall)``: events / wall time of the whole child process, start-up included;
* ``peak MB``: the child's peak resident memory (``os.wait4`` rusage ``ru_maxrss``).

The memory target is flat in the number of events: the peak at the largest ``--events`` within
10 % of the peak at the smallest. Every run reads chunks of ``--chunk-size`` events (default 5,000,
the size of the smallest set's files, one per track count), so the two memory points read chunks
of the same size: with reconstruct.py's default chunk of 20,000 the small set's 5,000-event files
would be read in smaller chunks than the large set's and the comparison would measure the chunk,
not the number of events. When reconstruct.py lacks ``--calorimeter`` or ``--clusterer
none`` (read from its ``--help``), the counter-alone runs use the closest flags it has, and the
table and JSON say which. Other processes on a shared machine only slow runs down: the load
average is recorded. Prints a table and writes benchmarks/results/bench_reconstruct.json.

Usage: python benchmarks/bench_reconstruct.py [--events 20000 200000] [--batch-sizes 256 1024]
       python benchmarks/bench_reconstruct.py --events 2000 --batch-sizes 256      # a quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "bench_reconstruct.json"
DEFAULT_DATA = REPO / "benchmarks" / "results" / "bench_reconstruct_data"
TRACK_COUNTS = (1, 2, 3, 4)
SUMMARY = re.compile(r"(\d+) events in \d+ file\(s\), ([\d.]+) s \((\d+) events/s\)")


def child_env() -> dict:
    """Environment of the child processes: the repository importable, TensorFlow quiet."""
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                TF_CPP_MIN_LOG_LEVEL="2")


def make_events(folder: Path, n_events: int, seed: int) -> tuple[Path, int]:
    """Realistic my_generator events, n_events / 4 of each 1..4 tracks, in ``folder`` (reused when complete).

    Returns (folder, events in it)."""
    from snemo.events import iterate_events

    per_count = -(-n_events // len(TRACK_COUNTS))
    expected = per_count * len(TRACK_COUNTS)
    if folder.is_dir():
        try:
            found = sum(len(chunk) for chunk in iterate_events(folder, fields=("grid_layer",), validate=False))
        except (OSError, ValueError):
            found = -1
        if found == expected:
            return folder, expected
    command = [sys.executable, str(REPO / "my_generator" / "my_generator.py"), "--realistic", "--events",
               str(per_count), "--tracks", *map(str, TRACK_COUNTS), "--files", "1", "--seed", str(seed), "--out",
               str(folder), "--overwrite", "--quiet"]
    print("making", expected, "events:", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, env=child_env())
    return folder, expected


def available_flags() -> dict:
    """What reconstruct.py's --help offers: {'clusterer_none': bool, 'calorimeter': bool}."""
    text = subprocess.run([sys.executable, str(REPO / "reconstruct.py"), "--help"], capture_output=True, text=True,
                          env=child_env(), check=True).stdout
    clusterer = re.search(r"--clusterer\s+([\w.|]+)", text)
    return {"clusterer_none": bool(clusterer and "none" in clusterer.group(1).split("|")),
            "calorimeter": "--calorimeter" in text}


def mode_flags(mode: str, offered: dict) -> tuple[list[str], str]:
    """(flags, note) of a configuration; the note says when the closest available flags stand in."""
    if mode == "chain":
        return [], ""
    flags, missing = [], []
    if offered["clusterer_none"]:
        flags += ["--clusterer", "none"]
    else:
        flags += ["--clusterer", "hough"]
        missing.append("--clusterer none (ran --clusterer hough: counter + Hough, the cheapest clusterer it has)")
    if offered["calorimeter"]:
        flags += ["--calorimeter", "none"]
    else:
        missing.append("--calorimeter (this reconstruct.py has no calorimeter step)")
    note = "reconstruct.py lacks " + "; ".join(missing) if missing else ""
    return flags, note


def run_once(data: Path, flags: list[str], batch_size: int, scratch: Path, chunk_size: int) -> dict:
    """One reconstruct.py child on ``data``: wall seconds, its own events/s, peak resident MB, exit status."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=scratch))
    command = [sys.executable, str(REPO / "reconstruct.py"), str(data), "--out", str(out), "--batch-size",
               str(batch_size), "--chunk-size", str(chunk_size), "--overwrite", *flags]
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as stdout, tempfile.TemporaryFile(mode="w+") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=child_env())
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        printed, errors = stdout.read(), stderr.read()
    shutil.rmtree(out, ignore_errors=True)
    summary = SUMMARY.search(printed)
    return {"command": " ".join(command[1:]), "status": child.returncode, "wall_s": wall,
            "script_events_per_s": float(summary.group(3)) if summary else None,
            "script_s": float(summary.group(2)) if summary else None,
            "peak_mb": usage.ru_maxrss / 1024.0,  # ru_maxrss is in KiB on Linux
            "error": "" if child.returncode == 0 else (errors.strip().splitlines() or ["?"])[-1]}


def format_table(rows: list[dict]) -> str:
    """Text table of the runs: mode, batch size, events, both rates, peak memory."""
    lines = [f"{'mode':<8}{'batch':>7}{'events':>9}{'events/s (script)':>19}{'events/s (wall)':>17}{'peak MB':>9}"]
    for row in rows:
        script = "-" if row["script_events_per_s"] is None else f"{row['script_events_per_s']:.0f}"
        wall = f"{row['events'] / row['wall_s']:.0f}" if row["status"] == 0 else f"failed ({row['status']})"
        lines.append(f"{row['mode']:<8}{row['batch_size']:>7}{row['events']:>9}{script:>19}{wall:>17}"
                     f"{row['peak_mb']:>9.0f}")
    return "\n".join(lines)


def memory_growth(rows: list[dict]) -> dict:
    """Per (mode, batch): peak MB at the largest events over the smallest, minus 1 (the target: within 0.10)."""
    growth = {}
    for key in sorted({(row["mode"], row["batch_size"]) for row in rows}):
        runs = sorted((row for row in rows if (row["mode"], row["batch_size"]) == key and row["status"] == 0),
                      key=lambda row: row["events"])
        if len(runs) >= 2:
            growth[f"{key[0]} batch {key[1]}"] = runs[-1]["peak_mb"] / runs[0]["peak_mb"] - 1.0
    return growth


def main(argv=None) -> int:
    """Make the events, run every configuration, print the table, write the JSON; returns 0 (1 if a run failed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[20_000, 200_000],
                        help="total events of each memory point (default %(default)s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024],
                        help="reconstruct.py --batch-size values (default %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=("counter", "chain"), default=["counter", "chain"],
                        help="counter alone and/or the whole chain (default both)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="where the events are made once and reused (default benchmarks/results/"
                             "bench_reconstruct_data; not committed)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=5_000,
                        help="reconstruct.py --chunk-size of every run (default %(default)s: the smallest set's file size)")
    parser.add_argument("--counter", default=None, metavar="MODEL.keras|NAME",
                        help="reconstruct.py --counter of every run (default: reconstruct.py's, the shipped "
                             "combined counter), e.g. an older release's file to compare")
    parser.add_argument("--calo-single", default=None, metavar="MODEL.keras",
                        help="reconstruct.py --calo-single of the chain runs (default: reconstruct.py's, the "
                             "shipped single-label calorimeter model), e.g. a smaller one to compare")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file (default %(default)s)")
    args = parser.parse_args(argv)
    if min(args.events) < len(TRACK_COUNTS) or min(args.batch_sizes) < 1 or args.chunk_size < 1:
        parser.error(f"--events must be at least {len(TRACK_COUNTS)}, --batch-sizes and --chunk-size at least 1")

    from snemo.jsonfile import write_json

    offered = available_flags()
    datasets = {n: make_events(args.data_dir / f"events_{n}", n, args.seed) for n in sorted(set(args.events))}
    load_before = os.getloadavg()
    rows, notes = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-reco-", dir=args.data_dir) as scratch:
        for mode in args.modes:
            flags, note = mode_flags(mode, offered)
            flags = flags + (["--counter", args.counter] if args.counter else [])
            if mode == "chain" and args.calo_single:
                flags = flags + ["--calo-single", args.calo_single]
            if note:
                notes[mode] = note
            for batch_size in args.batch_sizes:
                for n, (folder, events) in datasets.items():
                    result = run_once(folder, flags, batch_size, Path(scratch), args.chunk_size)
                    rows.append({"mode": mode, "batch_size": batch_size, "events": events, "flags": flags, **result})
                    print(format_table(rows[-1:]).splitlines()[1], flush=True)
    print()
    print(format_table(rows))
    for mode, note in notes.items():
        print(f"note ({mode}): {note}")
    growth = memory_growth(rows)
    for key, value in growth.items():
        print(f"peak memory, largest over smallest events, {key}: {100 * value:+.1f} % (target within 10 %)")
    for row in rows:
        if row["status"] != 0:
            print(f"failed: {row['command']}: {row['error']}")
    write_json(args.out, {"machine": platform.node(), "cpus": os.cpu_count(),
                          "load_average_before": load_before, "load_average_after": os.getloadavg(),
                          "python": platform.python_version(), "reconstruct_flags_offered": offered, "notes": notes,
                          "chunk_size": args.chunk_size, "runs": rows, "peak_memory_growth": growth,
                          "targets": {"counter_events_per_s": 20_000, "chain_events_per_s": 2_000,
                                      "peak_memory_growth": 0.10}})
    print(f"wrote {args.out}")
    return 1 if any(row["status"] != 0 for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
