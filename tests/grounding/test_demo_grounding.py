"""The trained demo model answers with words of the asked kind, mostly right, unlike a random
twin, and looks at the object it answers about; the twin does not.

Both models (same architecture and processor; the twin's weights are freshly initialised) answer
one colour or shape question on each of the same held-out scenes of 2-4 objects (a seed training
never draws from). The trained model answers mostly right, and its best head puts at least 3x the
chance share (the box's area share) of the image attention of the row that chose the answer word
(`@answer-step`) inside the asked object's box; the random twin's heads stay at chance. The
figures come from `attnstore.extraction.demo.scene_check`, as `scripts/train_demo_model.py
--eval-only` measures them.
"""

from __future__ import annotations

import pytest

from attnstore.extraction.demo import DEMO_MODEL_DIR, random_twin, scene_check
from attnstore.inputs.scenes import COLORS, SHAPES
from attnstore.store import open_dataset

N_SCENES = 16
SEED = 77  # held out: training draws scenes from other seeds
# The shipped model (docs/demo-model.md) was measured at 32 of 32 right on 32 scenes of this seed,
# best head 9-10x; the floors sit well below (a stable test), and far above the random twin (0-4, 1x).
MIN_RIGHT = 12
MIN_LIFT = 3.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEMO_MODEL_DIR / "config.json").is_file(), reason="no trained demo model shipped"),
]


def test_trained_model_answers_right_and_grounds_its_answer_and_a_random_twin_does_not(tmp_path):
    trained = scene_check(DEMO_MODEL_DIR, tmp_path, N_SCENES, SEED)
    twin = scene_check(random_twin(DEMO_MODEL_DIR, tmp_path / "twin"), tmp_path, N_SCENES, SEED)
    assert trained["judged"] == twin["judged"] == N_SCENES
    assert trained["right"] >= MIN_RIGHT, trained
    assert trained["best_lift"] >= MIN_LIFT, trained
    # Every random head stays at chance (measured: 0.98-1.02).
    assert twin["best_lift"] < 1.3 and abs(twin["mean_lift"] - 1.0) < 0.1, twin
    assert twin["right"] <= 4, twin
    # The trained model answers with a word of the asked kind.
    ds = open_dataset(trained["store"])
    kinds = [str(k) for k in ds["question_type"].values]
    answers = [str(a).strip() for a in ds["answer"].values]
    words = {"color": set(COLORS), "shape": set(SHAPES)}
    assert all(a in words[k] for a, k in zip(answers, kinds)), answers
