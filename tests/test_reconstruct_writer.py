"""snemo.treewriter: one mktree, a chunk per extend, atomic rename, nothing left behind on failure."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from snemo.treewriter import write_tree

uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")


def chunk(start: int, n: int) -> dict:
    counts = np.arange(start, start + n) % 3
    return {"entry": np.arange(start, start + n, dtype=np.int64),
            "score": np.full((n, 2), 0.5, np.float32),
            "hit": ak.zip({"value": ak.unflatten(np.ones(int(counts.sum()), np.int16), counts)}, depth_limit=2)}


def test_chunks_are_written_in_order_with_counters(tmp_path):
    path = tmp_path / "t.root"
    assert write_tree(path, "reco", (chunk(start, 4) for start in (0, 4, 8)), title="test") == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.root"]
    with uproot.open(path) as file:
        tree = file["reco"]
        assert {name: tree[name].typename for name in tree.keys()} == {
            "entry": "int64_t", "score": "float[2]", "nhit": "int32_t", "value": "int16_t[]"}
        arrays = tree.arrays(library="np")
    np.testing.assert_array_equal(arrays["entry"], np.arange(12))
    np.testing.assert_array_equal(arrays["nhit"], np.arange(12) % 3)


def test_an_empty_chunk_fixes_the_types_and_no_chunk_is_refused(tmp_path):
    assert write_tree(tmp_path / "empty.root", "reco", [chunk(0, 0)]) == 0
    with uproot.open(tmp_path / "empty.root") as file:
        assert file["reco"].num_entries == 0 and "value" in file["reco"].keys()
    with pytest.raises(ValueError, match="no chunk"):
        write_tree(tmp_path / "none.root", "reco", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.root"]
    with pytest.raises(ValueError, match="compression"):
        write_tree(tmp_path / "x.root", "reco", [chunk(0, 1)], compression="gzip")


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_failure_in_the_second_chunk_leaves_nothing(tmp_path, failure):
    path = tmp_path / "t.root"
    path.write_text("an older output")  # replaced only on success

    def chunks():
        yield chunk(0, 4)
        raise failure("killed in the second chunk")

    with pytest.raises(failure):
        write_tree(path, "reco", chunks())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.root"] and path.read_text() == "an older output"
    with pytest.raises(ValueError, match="one value per entry"):
        write_tree(tmp_path / "bad.root", "reco", [{"a": np.zeros(2), "b": np.zeros(3)}])
    assert not (tmp_path / "bad.root").exists() and not (tmp_path / "bad.root.tmp").exists()


def test_snemo_imports_nothing_outside_snemo():
    """The writer and the event files it serves stay inside the core."""
    for name in ("treewriter.py", "events.py"):
        tree = ast.parse((Path(__file__).resolve().parents[1] / "snemo" / name).read_text())
        modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names}
        modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and node.module}
        assert modules <= {"__future__", "os", "typing", "numpy", "uproot", "awkward", "difflib", "glob", "pathlib",
                           "snemo"}, (name, modules)
