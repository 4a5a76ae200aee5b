"""The trained demo model looks at the object it answers about; a random twin does not.

Both models (same architecture and processor; the twin's weights are freshly initialised) answer
one colour or shape question on each of the same held-out scenes. Grounding of the first answer
token on the asked object's box: the trained model's best head puts a multiple of the chance share
of its image attention inside the box; the random twin's heads stay near chance.
"""

from __future__ import annotations

import numpy as np
import pytest

from attnstore.analysis.grounding import rank_heads, store_grounding
from attnstore.demo import DEMO_MODEL_DIR, build_scene_store
from attnstore.store import open_dataset

N_SCENES = 16
SEED = 77  # held out: training draws scenes from other seeds

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEMO_MODEL_DIR / "config.json").is_file(), reason="no trained demo model shipped"),
]


def random_twin(folder):
    """The demo model's architecture and processor with freshly initialised weights."""
    import torch
    from transformers import AutoProcessor, Idefics3Config, Idefics3ForConditionalGeneration

    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(Idefics3Config.from_pretrained(DEMO_MODEL_DIR))
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(DEMO_MODEL_DIR).save_pretrained(folder)
    return folder


def best_head(path):
    scores = store_grounding(open_dataset(str(path)))
    return scores, rank_heads(scores)


def test_trained_model_grounds_its_answer_and_a_random_twin_does_not(tmp_path):
    build_scene_store(str(tmp_path / "trained.zarr"), DEMO_MODEL_DIR, N_SCENES, SEED, show_progress=False)
    build_scene_store(
        str(tmp_path / "random.zarr"), random_twin(tmp_path / "twin"), N_SCENES, SEED, show_progress=False
    )
    trained, trained_rank = best_head(tmp_path / "trained.zarr")
    random, random_rank = best_head(tmp_path / "random.zarr")
    assert trained.sizes["image"] == random.sizes["image"] == N_SCENES
    assert float(trained_rank["inbox_lift"][0]) >= 3.0
    # Every random head stays near chance; the mean over heads is at chance.
    assert float(random_rank["inbox_lift"].max()) < 1.6
    assert abs(float(random["inbox_lift"].mean()) - 1.0) < 0.25
    # The trained model mostly answers right.
    ds = open_dataset(str(tmp_path / "trained.zarr"))
    answers = np.array([str(a).strip() for a in ds["answer"].values])
    expected = np.array([str(a) for a in ds["expected_answer"].values])
    assert (answers == expected).mean() >= 0.75
