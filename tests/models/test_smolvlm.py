"""SmolVLM2 as its own model type: a SmolVLM2-layout folder (video config included) loads and extracts
without torchvision, and every image token's box matches the pixels of the view the processor cut for it."""

import importlib.util
import json
import math

import numpy as np
import pytest

from attnstore.cli import main
from attnstore.extraction.demo import tiny_model_dir
from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import load_adapter
from attnstore.models.smolvlm import SmolVLMAdapter
from attnstore.schema import TokenKind
from attnstore.store import open_dataset


@pytest.fixture(scope="module")
def folder(attnstore_cache):
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    return tiny_model_dir("smolvlm")


@pytest.fixture(scope="module")
def adapter(folder):
    return load_adapter(str(folder))


def test_folder_is_laid_out_like_smolvlm2(folder, adapter):
    assert json.loads((folder / "config.json").read_text())["model_type"] == "smolvlm"
    assert json.loads((folder / "processor_config.json").read_text())["processor_class"] == "SmolVLMProcessor"
    video = json.loads((folder / "video_preprocessor_config.json").read_text())
    assert video["video_processor_type"] == "SmolVLMVideoProcessor"
    assert type(adapter) is SmolVLMAdapter and adapter.family == "smolvlm"
    assert type(adapter.model).__name__ == "SmolVLMForConditionalGeneration"
    assert getattr(adapter.processor, "video_processor", None) is None


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here")
def test_plain_auto_processor_needs_torchvision(folder):
    """What the adapter avoids: transformers' own loading builds the video processor."""
    from transformers import AutoProcessor

    with pytest.raises(ImportError):
        AutoProcessor.from_pretrained(str(folder), local_files_only=True)


def test_extract_runs_on_a_smolvlm2_folder(folder, tmp_path, capsys):
    """Before: a 72-line ImportError traceback (the video processor needs torchvision)."""
    _gradient_image(300, 200).save(tmp_path / "a.png")
    out = tmp_path / "s.zarr"
    args = ["extract", "--image-dir", str(tmp_path), "--model", str(folder), "--out", str(out)]
    assert main([*args, "--max-new-tokens", "2", "--no-progress"]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err
    ds = open_dataset(str(out))
    assert ds.attrs["model_family"] == "smolvlm" and int(ds.tile_rows[0]) * int(ds.tile_cols[0]) > 1


@pytest.mark.parametrize("width,height", [(640, 360), (300, 700)])
def test_token_boxes_match_the_views_pixels(adapter, width, height):
    """Each token's patch in its view (tile, or the global thumbnail last) has the colour of its box centre."""
    inputs = adapter.prepare(_gradient_image(width, height), "Describe.")
    layout = adapter.layout(inputs["input_ids"][0].numpy(), inputs)
    pixels = inputs["pixel_values"][0].numpy() * 0.5 + 0.5  # [view, rgb, y, x] in [0, 1], mean/std 0.5
    n_views, _, tile_h, tile_w = pixels.shape
    assert n_views == layout.tile_rows * layout.tile_cols + 1 and n_views > 2
    assert (layout.tile_rows > layout.tile_cols) == (height > width)
    side = math.isqrt(adapter.processor.image_seq_len)  # tokens per view side
    step_r, step_c = tile_h // side, tile_w // side
    patches = np.flatnonzero(np.isin(layout.kind, [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL]))
    assert patches.size == n_views * side * side
    errors = []
    for pos in patches:
        view = layout.patch_tile[pos] if layout.patch_tile[pos] >= 0 else n_views - 1
        r, c = layout.patch_row[pos] % side, layout.patch_col[pos] % side
        patch = pixels[view, :2, r * step_r : (r + 1) * step_r, c * step_c : (c + 1) * step_c]
        x0, y0, x1, y1 = layout.patch_box[pos]
        errors.append([patch[0].mean() - (x0 + x1) / 2, patch[1].mean() - (y0 + y1) / 2])
    assert np.abs(errors).max() < 0.02
