"""Extraction from scenes writes object boxes, the question's target and expected answer."""

from __future__ import annotations

import numpy as np
import pytest

from attnstore.analysis.grounding import store_grounding
from attnstore.extraction.demo import DEMO_KINDS, build_scene_store
from attnstore.store import open_dataset
from attnstore.store.validation import validate_store


@pytest.mark.slow
def test_scene_store_has_boxes_targets_and_answers(tiny_model_path, tmp_path):
    out = str(tmp_path / "scenes.zarr")
    report = build_scene_store(out, tiny_model_path, n_scenes=2, seed=3, show_progress=False)
    assert len(report.written) == 2
    ds = open_dataset(out)
    assert validate_store(out).ok
    labels = ds["object_label"].values  # [image, object]
    boxes = ds["object_box"].values  # [image, object, 4]
    for i in range(2):
        present = np.array([bool(str(v)) for v in labels[i]])
        assert present.sum() >= 2 and np.isfinite(boxes[i][present]).all() and np.isnan(boxes[i][~present]).all()
        target = int(ds["target_object"].values[i])
        assert present[target]
        kind, expected = str(ds["question_type"].values[i]), str(ds["expected_answer"].values[i])
        assert kind in DEMO_KINDS
        color, shape = str(labels[i][target]).split()
        assert expected == (color if kind == "color" else shape)
        assert (shape if kind == "color" else color) in str(ds["prompt"].values[i])
    scores = store_grounding(ds)
    assert scores.sizes["image"] == 2 and np.isfinite(scores["inbox_share"].values).all()
