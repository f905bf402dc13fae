"""Run folders: where a command may write, and what a resume may change.

* :func:`check_out_dir`: a folder can be created or written (checked before any work);
* :func:`resume_conflicts` / :func:`resume_changes`: the flags a resume changes, refused or
  recorded (:data:`RESUME_MAY_CHANGE`);
* :class:`RunFolderError`: the one error of both, a ``ValueError`` that command lines print as one line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from snemo.jsonfile import json_safe

CONFIG_FILE = "config.json"

# Flags a resume may change: how long and how fast to train, how to read, where to run. Every other
# flag (view, architecture, model files, --seed, --split-by, --max-tracks, --max-events,
# --radius-channel, --batch-size, --skip-out-of-range, --init-model, ...) changes the model or the
# data and is refused; --data, --dataset-kind and --data-dir are compared as the files they name.
RESUME_MAY_CHANGE = frozenset({
    "epochs", "learning_rate", "lr_schedule", "early_stopping", "steps_per_epoch", "finetune_epochs",
    "finetune_learning_rate", "quiet", "streaming", "cache", "out", "OneDeviceStrategy", "MirroredStrategy",
    "MultiWorkerMirroredStrategy"})
DATA_FLAGS = frozenset({"data", "dataset_kind", "data_dir"})


class RunFolderError(ValueError):
    """The run folder cannot be used: not writable, under a file, another script's run, or a resume
    that would change the model or the data."""


def check_out_dir(path, *, flag: str = "--out") -> Path:
    """Check that folder ``path`` can be created or written, before any work; returns it as a Path.

    Raises :class:`RunFolderError` naming ``flag`` when ``path`` or one of its parents is a regular
    file, or when its nearest existing parent cannot be written (probed with a temporary folder,
    removed at once, so the check also holds for root and read-only mounts).
    """
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"lies under the file {probe}"
        raise RunFolderError(f"{flag} {path} {where}, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".snemo-probe-", dir=probe))
    except OSError as err:
        raise RunFolderError(f"{flag} {path}: cannot write in {probe} ({err.strerror or err})") from None
    return path


def flag_name(dest: str) -> str:
    """Command-line spelling of an argparse ``dest``: "max_tracks" -> "--max-tracks" (device flags as spelled)."""
    return "--" + (dest if dest.endswith("Strategy") else dest.replace("_", "-"))


def _show(value) -> str:
    if value is None or value is False:
        return "(not given)" if value is None else "(off)"
    if value is True:
        return "(on)"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def resume_conflicts(old_args: dict, new_args: dict) -> list[str]:
    """Flags of ``new_args`` that differ from the run's ``old_args`` and may not change on resume.

    Both are {dest: value}; only names present in both are compared, :data:`RESUME_MAY_CHANGE` and
    :data:`DATA_FLAGS` are skipped. Returns "--flag OLD (now NEW)" strings.
    """
    conflicts = []
    for name in sorted(set(old_args) & set(new_args)):
        if name in RESUME_MAY_CHANGE or name in DATA_FLAGS:
            continue
        old, new = old_args[name], json_safe(new_args[name])
        if old != new:
            conflicts.append(f"{flag_name(name)} {_show(old)} (now {_show(new)})")
    return conflicts


def resume_changes(old_args: dict, new_args: dict) -> dict:
    """{dest: [old, new]} of the allowed flags a resume changes (recorded in config.json's "resumes")."""
    return {name: [old_args[name], json_safe(new_args[name])] for name in sorted(set(old_args) & set(new_args))
            if name in RESUME_MAY_CHANGE and name != "out" and old_args[name] != json_safe(new_args[name])}


def describe_files(files: list[str]) -> str:
    """"N file(s), first PATH" for a message."""
    return f"{len(files)} file(s), first {files[0]}" if files else "no file"
