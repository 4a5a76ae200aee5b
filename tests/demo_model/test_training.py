"""The training script runs end to end (a few steps) and saves a folder transformers loads."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnstore.scenes import COLORS, POSITIONS, QUESTION_TYPES, SHAPES

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_demo_model.py"


@pytest.mark.slow
def test_a_few_training_steps_save_a_loadable_model(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, str(SCRIPT), "--steps", "2", "--batch", "2", "--eval-every", "2", "--eval-size", "3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best held-out accuracy:" in done.stdout
    for kind in QUESTION_TYPES:
        assert f"{kind} " in done.stdout.splitlines()[-1]
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert [r["step"] for r in rows] == ["2"] and set(QUESTION_TYPES) <= set(rows[0])
    assert all(0.0 <= float(rows[0][k]) <= 1.0 for k in QUESTION_TYPES)

    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    model = Idefics3ForConditionalGeneration.from_pretrained(out / "best")
    processor = AutoProcessor.from_pretrained(out / "best")
    assert processor.image_processor.do_image_splitting
    assert model.config.vision_config.image_size == processor.image_processor.max_image_size["longest_edge"]
    for word in [*COLORS, *SHAPES, *POSITIONS, "yes", "no"]:  # every answer is one token
        assert len(processor.tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
