"""reconstruct.sh: the sbatch array script gives each array task its share of the files, and runs outside Slurm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from my_generator.my_generator import generate
from snemo.events import write_events

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "reconstruct.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(args, tmp_path, **env):
    """bash reconstruct.sh ARGS in ``tmp_path`` with no Slurm variable but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    clean.update(PYTHON=sys.executable, OUT=str(tmp_path / "reco"), **env)
    return subprocess.run(["bash", str(SCRIPT)] + [str(a) for a in args], cwd=tmp_path, env=clean,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three tiny files in two folders, plus an unfinished write that must never be listed."""
    folder = tmp_path_factory.mktemp("sh_inputs")
    rng = np.random.default_rng(4)
    paths = [write_events(folder / "a" / "f0.root", generate(5, 1, rng)),
             write_events(folder / "a" / "f1.root", generate(4, 2, rng)),
             write_events(folder / "b" / "f2.root", generate(3, 3, rng))]
    (folder / "b" / "f3.root.tmp").write_bytes(b"killed")
    return folder, paths


def echoed(result):
    """The files and flags the script would pass to reconstruct.py (RECONSTRUCT=echo)."""
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    at = words.index("--out")
    return words[:at], words[at:]


def test_outside_slurm_one_task_takes_every_file(inputs, tmp_path):
    folder, paths = inputs
    files, rest = echoed(run_script([folder, "--", "--overwrite"], tmp_path, RECONSTRUCT="echo"))
    assert files == paths
    assert rest == ["--out", str(tmp_path / "reco"), "--overwrite"]


@pytest.mark.parametrize("env, share", [
    (dict(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2"), [1]),
    (dict(SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="2"), [0, 2]),
    (dict(SLURM_ARRAY_TASK_ID="7", SLURM_ARRAY_TASK_COUNT="3", SLURM_ARRAY_TASK_MIN="5"), [2]),  # --array=5-7
])
def test_array_task_takes_files_i_with_i_mod_count_equal_to_its_index(inputs, tmp_path, env, share):
    folder, paths = inputs
    listing = tmp_path / "files.txt"
    listing.write_text(f"# inputs\n{folder / 'a'}\n\n  {paths[2]}  \n")
    files, _ = echoed(run_script([listing], tmp_path, RECONSTRUCT="echo", **env))
    assert files == [paths[i] for i in share]


def test_task_without_files_succeeds_and_bad_inputs_exit_2(inputs, tmp_path):
    folder, paths = inputs
    empty = run_script([paths[0]], tmp_path, RECONSTRUCT="echo", SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2")
    assert empty.returncode == 0 and empty.stdout == "" and "0 of 1 file(s)" in empty.stderr
    missing = run_script([tmp_path / "absent"], tmp_path, RECONSTRUCT="echo")
    assert missing.returncode == 2 and "absent" in missing.stderr and len(missing.stderr.splitlines()) == 1
    twin = tmp_path / "c" / "f0.root"
    twin.parent.mkdir()
    shutil.copy(paths[0], twin)
    clash = run_script([folder, twin], tmp_path, RECONSTRUCT="echo")
    assert clash.returncode == 2 and "same base name" in clash.stderr and clash.stdout == ""
    outside = run_script([folder], tmp_path, RECONSTRUCT="echo", SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="2")
    assert outside.returncode == 2 and "outside 0..1" in outside.stderr


def test_real_run_writes_one_reco_file_per_input_of_the_share(inputs, tmp_path):
    pytest.importorskip("tensorflow")
    uproot = pytest.importorskip("uproot")
    folder, paths = inputs
    result = run_script([folder / "a", folder / "b", "--", "--clusterer", "hough", "--quiet"], tmp_path,
                        SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "reco").iterdir()) == ["f0.root", "f2.root"]
    for name, events in (("f0.root", 5), ("f2.root", 3)):
        with uproot.open(tmp_path / "reco" / name) as file:
            np.testing.assert_array_equal(file["reco"]["source_entry"].array(library="np"), np.arange(events))
