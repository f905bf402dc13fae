"""The counters shipped in models/: they load in safe mode and still count tracks on fresh events."""

from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parent.parent / "models"
SHAPES = {"top": (18, 113, 1), "side": (30, 113, 1), "front": (30, 18, 1), "voxels": (18, 113, 30, 1)}


def shipped(pattern):
    return sorted(MODELS.glob(pattern))


def test_every_documented_model_is_shipped():
    names = {p.stem for p in shipped("*.keras")}
    assert names == {"top_my_generator", "side_my_generator", "front_my_generator", "voxel_my_generator",
                     "combined_my_generator", "top_toyhaystack", "combined_toyhaystack"}


@pytest.mark.parametrize("path", shipped("*.keras"), ids=lambda p: p.name)
def test_shipped_model_loads_in_safe_mode(path):
    keras = pytest.importorskip("keras")
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert model.output_shape == (None, 4)
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        assert tuple(tensor.shape[1:]) == SHAPES[name], (path.name, name)
    assert path.stat().st_size < 20 * 2**20


def test_shipped_top_model_counts_fresh_events():
    """>= 99 % on 2,000 fresh my_generator events (seed 2026, never used in training), 1..4 tracks."""
    keras = pytest.importorskip("keras")
    from datasets import views
    from my_generator.my_generator import generate
    from snemo.events import EventBatch

    batch = EventBatch.concatenate([generate(500, n, np.random.default_rng([2026, n])) for n in (1, 2, 3, 4)])
    images = views.make_view(batch, "top")  # (2000, 18, 113, 1)
    model = keras.saving.load_model(MODELS / "top_my_generator.keras", safe_mode=True, compile=False)
    predicted = np.argmax(model.predict(images, batch_size=500, verbose=0), axis=1) + 1
    accuracy = float(np.mean(predicted == batch.n_tracks))
    assert accuracy >= 0.99, accuracy
