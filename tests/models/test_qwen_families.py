"""Qwen2.5-VL and Qwen3-VL adapters: every image token's box against the pixels the processor cut for it,
the image block's kinds, loading without a video processor (capture, batch and generate: tests/extraction)."""

import json

import numpy as np
import pytest

from attnstore.extraction.demo import tiny_model_dir
from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import load_adapter
from attnstore.models.qwen2_5_vl import Qwen2_5_VLAdapter
from attnstore.models.qwen2_vl import IMAGE_TOKEN, VISION_END, VISION_START
from attnstore.models.qwen3_vl import Qwen3VLAdapter
from attnstore.schema import TokenKind

FAMILIES = {"qwen2_5_vl": Qwen2_5_VLAdapter, "qwen3_vl": Qwen3VLAdapter}
PROCESSORS = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}
# (width, height): wide, tall, very wide, smaller than one token
SHAPES = [(640, 360), (300, 700), (1500, 400), (20, 12)]
TOLERANCE = 0.015  # max |colour error| as a fraction of the colour range
PROMPT = "Can you describe this image?"


@pytest.fixture(scope="module")
def adapters(attnstore_cache):
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    return {family: load_adapter(str(tiny_model_dir(family))) for family in FAMILIES}


def processed_image(adapter, inputs) -> np.ndarray:
    """The resized picture rebuilt from the processor's flat patches, as (red, green) in [0, 1]  # [rg, y, x]."""
    ip = adapter.processor.image_processor
    p, m, t_patch = ip.patch_size, ip.merge_size, ip.temporal_patch_size
    _, h, w = inputs["image_grid_thw"][0].tolist()
    # The image processor's patchify order: (h/m, w/m, m, m) patches, each (channel, time, p, p).
    flat = inputs["pixel_values"].numpy().reshape(h // m, w // m, m, m, 3, t_patch, p, p)[..., 0, :, :]
    image = flat.transpose(4, 0, 2, 5, 1, 3, 6).reshape(3, h * p, w * p)  # [rgb, y, x]
    mean, std = np.asarray(ip.image_mean)[:, None, None], np.asarray(ip.image_std)[:, None, None]
    return (image * std + mean)[:2]  # normalisation undone


def token_colours(adapter, inputs, layout) -> np.ndarray:
    """Mean (red, green) of the processed pixels under each image token's merged patch  # [token, 2]."""
    rg = processed_image(adapter, inputs)
    rows, cols = layout.grid_rows, layout.grid_cols
    cells = rg.reshape(2, rows, rg.shape[1] // rows, cols, rg.shape[2] // cols).mean((2, 4))  # [rg, row, col]
    pos = np.flatnonzero(layout.kind == TokenKind.IMAGE_TILE)
    return cells[:, layout.patch_row[pos], layout.patch_col[pos]].T


def expected_colours(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(red, green) of the gradient image at each box centre  # [token, 2]."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # normalised (x, y)
    size = np.array([width, height])
    # _gradient_image: pixel i of n has value i / (n - 1); normalised u falls on pixel u * n - 0.5.
    return np.clip((centre * size - 0.5) / (size - 1), 0, 1)


def run_layout(adapter, width: int, height: int):
    inputs = adapter.prepare(_gradient_image(width, height), PROMPT)
    return inputs, adapter.layout(inputs["input_ids"][0].numpy(), inputs)


@pytest.mark.parametrize("width,height", SHAPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_token_boxes_match_processed_pixels(adapters, family, width, height):
    adapter = adapters[family]
    inputs, layout = run_layout(adapter, width, height)
    _, h, w = inputs["image_grid_thw"][0].tolist()
    m = adapter.processor.image_processor.merge_size
    assert (layout.grid_rows, layout.grid_cols) == (h // m, w // m)  # the grid the processor chose
    colours = token_colours(adapter, inputs, layout)
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    error = np.abs(colours - expected_colours(boxes, width, height))
    assert error.max() < TOLERANCE, f"max colour error {error.max():.3f}"
    if width > 2 * height:  # the aspect ratio survives smart_resize: a wide grid
        assert layout.grid_cols > layout.grid_rows


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_mappings_fail_the_pixel_check(adapters, family):
    """The colour check is tight: a transposed grid or one cell of offset is caught."""
    adapter, (width, height) = adapters[family], (640, 360)
    inputs, layout = run_layout(adapter, width, height)
    colours = token_colours(adapter, inputs, layout)
    rows, cols = layout.grid_rows, layout.grid_cols
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    col, row = np.divmod(np.arange(rows * cols), rows)  # tokens read column-major
    transposed = np.stack([col / cols, row / rows, (col + 1) / cols, (row + 1) / rows], axis=1)
    shifted = boxes + [1 / cols, 0, 1 / cols, 0]
    for wrong in (transposed, shifted):
        assert np.abs(colours - expected_colours(wrong, width, height)).max() > 2 * TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_kinds_agree_with_the_processor(adapters, family):
    adapter = adapters[family]
    inputs, layout = run_layout(adapter, 640, 360)
    tokens = adapter.token_strings(inputs["input_ids"][0].numpy())
    image = np.flatnonzero(layout.kind == TokenKind.IMAGE_TILE)
    # The processor's own image mask and image token id agree with the layout.
    assert np.array_equal(np.flatnonzero(inputs["mm_token_type_ids"][0].numpy() == 1), image)
    ids = inputs["input_ids"][0].numpy()
    assert np.array_equal(np.flatnonzero(ids == adapter.processor.image_token_id), image)
    assert tokens[image[0] - 1] == VISION_START and tokens[image[-1] + 1] == VISION_END
    assert np.flatnonzero(layout.kind == TokenKind.IMAGE_SPECIAL).tolist() == [image[0] - 1, image[-1] + 1]
    assert image.size <= adapter.max_image_tokens() - 2
    banned = set(adapter.tokenizer.convert_ids_to_tokens(adapter.banned_token_ids()))
    assert {IMAGE_TOKEN, VISION_START, VISION_END} <= banned


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_as_its_own_family_without_a_video_processor(adapters, family):
    adapter, folder = adapters[family], tiny_model_dir(family)
    assert type(adapter) is FAMILIES[family] and adapter.family == family and adapter.random_weights
    assert json.loads((folder / "config.json").read_text())["model_type"] == family
    assert json.loads((folder / "processor_config.json").read_text())["processor_class"] == PROCESSORS[family]
    assert getattr(adapter.processor, "video_processor", None) is None  # torchvision is not needed
    assert type(adapter.model).__name__ == {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                                            "qwen3_vl": "Qwen3VLForConditionalGeneration"}[family]  # fmt: skip
    settings = json.loads(json.dumps(adapter.processor_settings()))
    assert settings["patch_size"] == {"qwen2_5_vl": 14, "qwen3_vl": 16}[family]


def test_qwen2_5_vl_tiny_tower_runs_window_attention(adapters):
    """The vision tower's window attention is active on a multi-window image (it must not move tokens)."""
    config = adapters["qwen2_5_vl"].model.config.vision_config
    assert list(config.fullatt_block_indexes) == [config.depth - 1] and config.depth > 1
    inputs, layout = run_layout(adapters["qwen2_5_vl"], 640, 360)
    window_tokens = config.window_size // config.patch_size // config.spatial_merge_size
    assert layout.grid_rows > window_tokens and layout.grid_cols > window_tokens
