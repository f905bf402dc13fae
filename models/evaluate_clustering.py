"""Held-out clustering scores (``python models/evaluate.py clustering``): generators beside DBSCAN, Hough, the ceiling.

For each held-out column every event is clustered by each given generator (full-event clustering
of :mod:`clustering`, stopped at the counter's count, as ``reconstruct.py`` does; and the same
clusters refined by their fitted lines, "<label> + line refit"), DBSCAN (its tuned defaults, no
count) and Hough (its tuned defaults, stopped at the counter's count; with and without the line
refit that ``clustering.hough_cluster`` ends with by default), scored
with :func:`clustering.score` (DESIGN.md "Metrics") by number of tracks, beside the ceiling from
truth (one label per cell). Results are merged into ``clustering.json`` method by method and
column by column, so generators can be scored one at a time; the tables and the target lines of
the clustering issue are printed from the merged file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from evaluate_common import check, check_cell, markdown_table, merge_json, model_label, percent, read_column

COLUMNS = ("clean", "realistic", "onesided", "onesided_realistic")
DBSCAN, HOUGH, HOUGH_RAW, CEILING = "DBSCAN", "Hough", "Hough, no line refit", "ceiling (1 label/cell)"
REFIT = " + line refit"  # a generator's clusters refined by clustering_refit.refine_by_lines
RESERVED = (DBSCAN, HOUGH, HOUGH_RAW, CEILING)
TARGETS = {  # column -> (label, metric, group, threshold; None: the ceiling's value minus 2 points)
    "clean": (("DM eff. >= 99.0 % (2 tracks)", "efficiency", "2", 0.99),
              ("DM eff. >= 97.0 % (4 tracks)", "efficiency", "4", 0.97),
              ("purity >= 98 % (2 tracks)", "hit_purity", "2", 0.98),
              ("perfect within 2 points of the ceiling (2 tracks)", "perfect_events", "2", None)),
    "realistic": (("DM eff. >= 98.0 % (2 tracks)", "efficiency", "2", 0.98),
                  ("DM eff. >= 95.0 % (4 tracks)", "efficiency", "4", 0.95),
                  ("noise->noise >= 90 %", "noise_as_noise", "all", 0.90)),
}
# Table cells: (header, metric, group)
CELLS = (("DM eff. 1 track", "efficiency", "1"), ("DM eff. 2 tracks", "efficiency", "2"),
         ("DM eff. 3 tracks", "efficiency", "3"), ("DM eff. 4 tracks", "efficiency", "4"),
         ("purity 2 tracks", "hit_purity", "2"), ("perfect 2 tracks", "perfect_events", "2"),
         ("noise->noise", "noise_as_noise", "all"))


def generator_list(paths, names) -> list[tuple[str, str]]:
    """(label, path) of each generator to score; ValueError naming the flag on a bad combination.

    ``paths``: the ``--generator`` files (None: ``models/clustering_my_generator.keras`` when it
    exists, else none); ``names``: ``--name`` labels, one per generator (default: the file's name).
    """
    from clustering_inference import DEFAULT_GENERATOR
    from snemo.modelfile import check_keras_file

    if paths is None:
        paths = [str(DEFAULT_GENERATOR)] if DEFAULT_GENERATOR.is_file() else []
    if names is not None and len(names) != len(paths):
        raise ValueError(f"--name needs one label per --generator: {len(names)} labels for {len(paths)} generators")
    labels = list(names) if names is not None else [model_label(path) for path in paths]
    if len(set(labels)) != len(labels) or any(label in RESERVED for label in labels):
        raise ValueError(f"--name: labels must be distinct and none of {list(RESERVED)}, got {labels}")
    for path in paths:
        check_keras_file(path, flag="--generator")
    return list(zip(labels, [str(Path(path).resolve()) for path in paths]))


def _strip_ceiling(score: dict) -> dict:
    """A :func:`clustering.score` result without the ceiling copies (the ceiling is its own entry)."""
    def strip(group):
        return {name: value for name, value in group.items() if name != "ceiling"}

    return {"all": strip(score["all"]), "by_n_tracks": {k: strip(v) for k, v in score["by_n_tracks"].items()}}


def ceiling_of(batch) -> dict:
    """The ceiling from truth of ``batch`` ({"all", "by_n_tracks"}, fields of :func:`clustering.score`)."""
    import clustering
    from datasets.clustering import canonical_hit_track_ids

    truth = clustering.score(batch, canonical_hit_track_ids(batch))
    return {"all": truth["all"]["ceiling"], "by_n_tracks": {k: v["ceiling"] for k, v in truth["by_n_tracks"].items()},
            "rule": truth["ceiling_rule"]}


def score_column(batch, clusterers: dict, counts) -> dict:
    """{label: clustering.score + seconds, events_per_second} of each clusterer.

    ``clusterers``: label -> (cluster ``(batch, counts) -> labels``, uses the count, refit label or
    None); with a refit label, the same labels refined by :func:`clustering.refine_by_lines` are
    scored under it too (its seconds include the clusterer's).
    """
    import clustering

    def record(label, labels, seconds):
        results[label] = {**_strip_ceiling(clustering.score(batch, labels)), "seconds": round(seconds, 2),
                          "events_per_second": len(batch) / max(seconds, 1e-9)}
        print(f"  {label}: DM eff. {percent(results[label]['all']['efficiency'])}, perfect "
              f"{percent(results[label]['all']['perfect_events'])} ({seconds:.0f} s)", file=sys.stderr, flush=True)

    results = {}
    for label, (cluster, uses_count, refit) in clusterers.items():
        start = time.perf_counter()
        labels = cluster(batch, counts if uses_count else None)
        seconds = time.perf_counter() - start
        record(label, labels, seconds)
        if refit is not None:
            start = time.perf_counter()
            refined = clustering.refine_by_lines(batch, labels)
            record(refit, refined, seconds + time.perf_counter() - start)
    return results


def evaluate(data, out_dir, *, generators, counter_path, columns=COLUMNS, per_count: int = 5000,
             baselines: bool = True, batch_size: int = 1024) -> dict:
    """Score every column; merge into ``<out_dir>/clustering.json``; print the tables and target lines.

    ``generators``: (label, path) pairs (:func:`generator_list`); ``counter_path``: the counter
    whose count stops the generators and Hough. Returns the merged JSON content.
    """
    import functools

    import clustering
    import clustering_inference as inference
    from snemo.modelfile import check_keras_file

    check_keras_file(counter_path, flag="--counter")
    batches = {column: read_column(data, column, per_count) for column in columns}  # bad data fails before work
    counter = inference.load_counter(counter_path)
    clusterers = {label: (inference.make_clusterer(path, batch_size=batch_size, flag="--generator", refit=False)[0],
                          True, label + REFIT) for label, path in generators}
    if baselines:
        clusterers[DBSCAN] = (inference.make_clusterer("dbscan", batch_size=batch_size)[0], False, None)
        raw_hough = functools.partial(clustering.hough_cluster, progress=False, refine=False)
        clusterers[HOUGH_RAW] = (inference.in_batches(raw_hough, batch_size), True, HOUGH)
    kinds = {**{label: {"kind": "generator", "model": path, "count": "counter"} for label, path in generators},
             **{label + REFIT: {"kind": "generator", "model": path, "count": "counter",
                                "refit": "clustering.refine_by_lines"} for label, path in generators},
             DBSCAN: {"kind": "baseline", "model": "clustering.dbscan_cluster (tuned defaults)", "count": "none"},
             HOUGH: {"kind": "baseline", "model": "clustering.hough_cluster (tuned defaults, refined by its lines)",
                     "count": "counter"},
             HOUGH_RAW: {"kind": "baseline", "model": "clustering.hough_cluster(refine=False) (tuned defaults)",
                         "count": "counter"},
             CEILING: {"kind": "ceiling", "model": "truth, one label per cell", "count": "truth"}}
    updates = {"methods": {}, "columns": {}}
    for column, batch in batches.items():
        print(f"{column}: {len(batch)} events", file=sys.stderr, flush=True)
        counts, _ = inference.predict_counts(counter, batch, batch_size=batch_size)
        results = score_column(batch, clusterers, counts)
        results[CEILING] = ceiling_of(batch)
        for label, result in results.items():
            entry = updates["methods"].setdefault(label, {**kinds[label], "columns": {}})
            entry["columns"][column] = result
        updates["columns"][column] = {"data": str(Path(data) / "my_generator" / column), "n_events": len(batch),
                                      "events_per_count": per_count, "counter": str(Path(counter_path).resolve()),
                                      "counter_accuracy": float((counts == batch.n_tracks).mean())}
    path = Path(out_dir) / "clustering.json"
    content = merge_json(path, updates, depth=4)
    content["targets"] = targets(content)
    content = merge_json(path, {"targets": content["targets"]}, depth=1)
    print(report(content), flush=True)
    return content


def _value(entry: dict, column: str, metric: str, group: str):
    result = entry.get("columns", {}).get(column)
    if result is None:
        return None
    values = result["all"] if group == "all" else result["by_n_tracks"].get(group)
    return None if values is None else values.get(metric)


def _ordered(methods: dict) -> list[str]:
    rank = {"generator": 0, "baseline": 1, "ceiling": 2}
    return sorted(methods, key=lambda label: rank.get(methods[label].get("kind"), 1))


def targets(content: dict) -> dict:
    """{method: {column: {target label: check}}} of the clustering issue's targets, every method but the ceiling."""
    methods = content["methods"]
    ceiling = methods.get(CEILING, {})
    out = {}
    for label in _ordered(methods):
        if methods[label].get("kind") == "ceiling":
            continue
        for column, rules in TARGETS.items():
            if column not in methods[label].get("columns", {}):
                continue
            for name, metric, group, threshold in rules:
                if threshold is None:
                    reference = _value(ceiling, column, metric, group)
                    threshold = None if reference is None else reference - 0.02
                value = _value(methods[label], column, metric, group)
                out.setdefault(label, {}).setdefault(column, {})[name] = check(value, threshold)
    return out


def baseline_wins(content: dict, column: str) -> list[str]:
    """Lines naming every table cell of ``column`` where a baseline scores above a generator."""
    methods = content["methods"]
    lines = []
    for label in [m for m in methods if methods[m].get("kind") == "generator"]:
        for header, metric, group in CELLS:
            ours = _value(methods[label], column, metric, group)
            theirs = {baseline: _value(methods.get(baseline, {}), column, metric, group)
                      for baseline in (DBSCAN, HOUGH)}
            better = [f"{baseline} {percent(value)}" for baseline, value in theirs.items()
                      if ours is not None and value is not None and value > ours]
            if better:
                lines.append(f"- {column}, {header}: {label} {percent(ours)} < " + ", ".join(better))
    return lines


def report(content: dict) -> str:
    """Markdown: one table per column (rows = method), the target lines, where a baseline wins."""
    methods = content["methods"]
    order = _ordered(methods)
    parts = []
    for column in COLUMNS:
        rows = [[f"`{label}`" if methods[label].get("kind") == "generator" else label]
                + [percent(_value(methods[label], column, metric, group)) for _, metric, group in CELLS]
                for label in order if column in methods[label].get("columns", {})]
        if rows:
            info = content.get("columns", {}).get(column, {})
            parts.append(f"### {column} ({info.get('n_events', '?')} events, counter accuracy "
                         f"{percent(info.get('counter_accuracy'))})\n\n"
                         + markdown_table(["method"] + [header for header, _, _ in CELLS], rows))
    checks = content.get("targets", {})
    labels = list(checks)
    names = [(column, name) for column, rules in TARGETS.items() for name, _, _, _ in rules
             if any(column in checks[label] for label in labels)]
    if labels and names:
        rows = [[f"{column}: {name}"] + [check_cell(checks[label][column][name]) if column in checks[label] else "-"
                                         for label in labels] for column, name in names]
        parts.append("### Targets of the clustering issue\n\n" + markdown_table(["target"] + labels, rows))
    wins = [line for column in COLUMNS for line in baseline_wins(content, column)]
    parts.append("Where a baseline beats a generator:\n" + ("\n".join(wins) if wins else "- nowhere"))
    return "\n\n".join(parts)
