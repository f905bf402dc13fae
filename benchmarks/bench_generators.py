"""Generator throughput on 2-track events: the Python twin, the compiled ROOT macro, toyhaystack.

Prints a table of events per second with ratios to the ROOT macro, and for each Python generator a
row with the ``--realistic`` detector effects (snemo/detector.py) and its slow-down against the
clean row of the same run (target: at most 2x), and writes it as JSON to
benchmarks/results/bench_generators.json. Each Python row is the best of ``--repeat`` runs after a
warm-up (other processes on a shared machine only ever slow a run down). The macro is compiled
with ACLiC first; its rate is timed inside the macro (generation and writing, without ROOT's
start-up and compilation). toyhaystack runs on fewer events when it is slow (at most ~10 s a run).

Usage: python benchmarks/bench_generators.py [--events 100000] [--repeat 3]
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

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from snemo.events import write_events  # noqa: E402
from snemo.jsonfile import write_json  # noqa: E402

N_TRACKS = 2
RESULTS = REPO / "benchmarks" / "results" / "bench_generators.json"


def best_rate(run, n_events: int, repeat: int) -> float:
    """Best events per second of ``repeat`` calls of ``run(n_events, seed)``."""
    best = float("inf")
    for seed in range(repeat):
        start = time.perf_counter()
        run(n_events, seed)
        best = min(best, time.perf_counter() - start)
    return n_events / best


def best_rates_interleaved(runs, n_events: int, repeat: int) -> list[float]:
    """Best events per second of each of ``runs`` (functions ``run(n_events, seed)``), timed in turn.

    Interleaving the calls lets every run see the same share of a loaded machine, so their ratio holds.
    """
    best = [float("inf")] * len(runs)
    for seed in range(repeat):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            run(n_events, seed)
            best[index] = min(best[index], time.perf_counter() - start)
    return [n_events / seconds for seconds in best]


def python_rows(name: str, generate, n_events: int, repeat: int, folder: Path, adapt: bool,
                realistic: dict) -> list[dict]:
    """Rows 'generate', 'generate + write' and 'generate --realistic' of ``generate(n, tracks, rng, **options)``.

    ``realistic``: the keyword options of the preset. The realistic row has ``slowdown_vs_clean``
    (clean events/s over realistic events/s, same run).
    """
    def generate_only(n, seed):
        return generate(n, N_TRACKS, np.random.default_rng(seed))

    def generate_realistic(n, seed):
        return generate(n, N_TRACKS, np.random.default_rng(seed), **realistic)

    def generate_and_write(n, seed):
        write_events(folder / f"{name}.root", generate_only(n, seed), overwrite=True)

    warm = min(n_events, 2000)
    start = time.perf_counter()
    generate_and_write(warm, 0)
    if adapt:  # keep a slow generator to ~10 s a run
        rate = warm / (time.perf_counter() - start)
        n_events = int(min(n_events, max(warm, 10 * rate)))
    generate_realistic(warm, 0)
    clean, rate = best_rates_interleaved([generate_only, generate_realistic], n_events, repeat)
    rows = [
        {"generator": f"{name} generate", "events": n_events, "events_per_s": clean},
        {"generator": f"{name} generate + write", "events": n_events,
         "events_per_s": best_rate(generate_and_write, n_events, repeat)},
    ]
    rows.append({"generator": f"{name} generate --realistic", "events": n_events, "events_per_s": rate,
                 "slowdown_vs_clean": clean / rate, "options": realistic})
    return rows


def macro_row(n_events: int, repeat: int, folder: Path) -> dict:
    """Row of the ROOT macro compiled with ACLiC; 'not available' without ROOT."""
    row = {"generator": "my_generator.cxx (ACLiC) generate + write", "events": n_events, "events_per_s": None}
    root = Path(sys.executable).parent / "root"
    root = str(root) if root.exists() else shutil.which("root")
    if root is None:
        row["note"] = "not available: no `root` executable"
        return row
    shutil.copy(REPO / "my_generator" / "my_generator.cxx", folder)

    def run(n, seed):
        call = f'my_generator.cxx+({N_TRACKS}, {n}, "{folder / "macro"}", 0, {seed})'
        done = subprocess.run([root, "-b", "-q", "-l", call], cwd=folder, capture_output=True, text=True)
        match = re.search(r"in ([\d.e+-]+) s", done.stdout)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"ROOT macro failed:\n{done.stdout}\n{done.stderr}")
        return float(match.group(1))

    start = time.perf_counter()
    run(100, 0)  # compiles
    row["compile_s"] = round(time.perf_counter() - start, 1)
    row["events_per_s"] = n_events / min(run(n_events, seed + 1) for seed in range(repeat))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per run (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row, best kept (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file (default %(default)s)")
    args = parser.parse_args(argv)
    if args.events <= 0 or args.repeat <= 0:
        parser.error("--events and --repeat must be positive")

    from my_generator.my_generator import generate as twin
    from snemo.detector import REALISTIC

    twin_realistic = {k: v for k, v in REALISTIC.items() if k != "kink_prob"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_generators_") as tmp:
        folder = Path(tmp)
        rows += python_rows("my_generator.py", twin, args.events, args.repeat, folder, adapt=False,
                            realistic=twin_realistic)
        rows.append(macro_row(args.events, args.repeat, folder))
        try:
            from Generator.toyhaystack import generate as toyhaystack
        except ImportError as err:
            rows.append({"generator": "toyhaystack", "events": 0, "events_per_s": None,
                         "note": f"not available ({err})"})
        else:
            rows += python_rows("toyhaystack", toyhaystack, args.events, args.repeat, folder, adapt=True,
                                realistic=dict(REALISTIC))

    macro = next(row["events_per_s"] for row in rows if row["generator"].startswith("my_generator.cxx"))
    print(f"{'generator (2-track events)':45s} {'events':>8s} {'events/s':>11s} {'vs macro':>9s} "
          f"{'slower than clean':>18s}")
    for row in rows:
        rate = row["events_per_s"]
        row["ratio_to_macro"] = rate / macro if rate and macro else None
        rate_text = f"{rate:11,.0f}" if rate else f"{'not available':>11s}"
        ratio_text = f"{row['ratio_to_macro']:8.2f}x" if row["ratio_to_macro"] else f"{'':9s}"
        slowdown = f"{row['slowdown_vs_clean']:17.2f}x" if row.get("slowdown_vs_clean") else ""
        print(f"{row['generator']:45s} {row['events']:8d} {rate_text} {ratio_text} {slowdown}")
        if row.get("note"):
            print(f"    {row['note']}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "generators", "tracks_per_event": N_TRACKS, "repeat": args.repeat,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
              "python": platform.python_version(), "rows": rows}
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
