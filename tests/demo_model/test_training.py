"""The training script runs end to end (a few steps) and saves a folder transformers loads."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnstore.inputs.scenes import COLORS, POSITIONS, QUESTION_TYPES, SHAPES

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_demo_model.py"


@pytest.mark.slow
def test_a_few_training_steps_save_a_loadable_model(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, str(SCRIPT), "--steps", "2", "--batch", "2", "--eval-every", "2", "--eval-size", "3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best held-out accuracy:" in done.stdout
    held_out = [f"{kind}_2to4" for kind in QUESTION_TYPES]  # every type, on scenes of 2-4 objects
    for kind in held_out:
        assert f"{kind} " in done.stdout.splitlines()[-1]
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert [r["step"] for r in rows] == ["2"] and set(held_out) <= set(rows[0])
    assert all(0.0 <= float(rows[0][k]) <= 1.0 for k in held_out)

    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    model = Idefics3ForConditionalGeneration.from_pretrained(out / "best")
    processor = AutoProcessor.from_pretrained(out / "best")
    assert processor.image_processor.do_image_splitting
    assert model.config.vision_config.image_size == processor.image_processor.max_image_size["longest_edge"]
    for word in [*COLORS, *SHAPES, *POSITIONS, "yes", "no"]:  # every answer is one token
        assert len(processor.tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1, word


@pytest.mark.slow
def test_init_continues_from_every_weight_of_a_saved_model():
    """--init starts a run from a saved model's weights (the shipped model was trained in five runs,
    each from the last one's best): with a zero learning rate the saved checkpoint is the same
    model, and a fresh run (no --init) is not."""
    import tempfile

    from safetensors.numpy import load_file

    from attnstore.extraction.demo import DEMO_MODEL_DIR

    if not (DEMO_MODEL_DIR / "model.safetensors").is_file():
        pytest.skip("no trained demo model shipped")
    shipped = load_file(DEMO_MODEL_DIR / "model.safetensors")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, str(SCRIPT), "--steps", "1", "--batch", "2", "--eval-every", "1", "--eval-size", "2"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("continued", ["--init", str(DEMO_MODEL_DIR)]), ("fresh", [])):
            done = subprocess.run([*args, *extra, "--lr", "0", "--out", f"{tmp}/{name}"],
                                  capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
            assert done.returncode == 0, done.stderr[-2000:]
        continued = load_file(f"{tmp}/continued/best/model.safetensors")
        fresh = load_file(f"{tmp}/fresh/best/model.safetensors")
    assert continued.keys() == shipped.keys()
    assert all((continued[k] == shipped[k]).all() for k in shipped)
    assert not all((fresh[k] == shipped[k]).all() for k in shipped)


@pytest.mark.slow
def test_a_vision_stage_then_the_language_model_on_a_frozen_tower(tmp_path):
    """--vision-steps trains the tower + connector alone first (its own curve), then the language
    model starts from that tower; with --tower-lr-scale 0 the saved tower is exactly the stage's."""
    out = tmp_path / "run"
    args = [sys.executable, str(SCRIPT), "--vision-steps", "2", "--steps", "2", "--batch", "2", "--eval-every", "2"]
    args += ["--eval-size", "2", "--tower-lr-scale", "0", "--procs", "1", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "vision_curve.csv")))
    assert [r["step"] for r in rows] == ["2"] and 0.0 <= float(rows[0]["object_shape"]) <= 1.0
    import torch
    from safetensors.torch import load_file

    stage = torch.load(out / "vision_stage.pt")
    saved = load_file(out / "best" / "model.safetensors")
    assert stage and all(name.startswith(("model.vision_model.", "model.connector.")) for name in stage)
    for name, value in stage.items():
        assert torch.equal(saved[name], value), name


@pytest.mark.slow
def test_eval_only_measures_a_saved_model(tmp_path):
    from attnstore.extraction.demo import DEMO_MODEL_DIR

    if not (DEMO_MODEL_DIR / "config.json").is_file():
        pytest.skip("no trained demo model shipped")
    args = [sys.executable, str(SCRIPT), "--eval-only", str(DEMO_MODEL_DIR), "--eval-size", "2", "--scenes", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*args, "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    figures = json.loads((tmp_path / "eval.json").read_text())
    assert {f"{k}_2to4" for k in QUESTION_TYPES} <= set(figures)
    assert figures["scenes"] == 2 and figures["best_lift"] > 0 and figures["twin_best_lift"] > 0
    assert "random twin" in done.stdout
