"""Qwen2.5-VL and Qwen3-VL adapters: every image token's box against the pixels the processor cut for it,
the image block's kinds, the tower's window attention (capture: tests/extraction; loading: test_families.py)."""

import numpy as np
import pytest
from support.vlm_family_checks import check_wrong_grid_mappings_fail, expected_colours, qwen_token_colours, run_layout

from attnstore.models.qwen2_vl import IMAGE_TOKEN, VISION_END, VISION_START
from attnstore.schema import TokenKind

FAMILIES = ("qwen2_5_vl", "qwen3_vl")
# (width, height): wide, tall, very wide, smaller than one token
SHAPES = [(640, 360), (300, 700), (1500, 400), (20, 12)]
TOLERANCE = 0.015  # max |colour error| as a fraction of the colour range


@pytest.fixture(scope="module")
def adapters(family_adapter):
    return {family: family_adapter(family) for family in FAMILIES}


@pytest.mark.parametrize("width,height", SHAPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_token_boxes_match_processed_pixels(adapters, family, width, height):
    adapter = adapters[family]
    inputs, layout = run_layout(adapter, width, height)
    _, h, w = inputs["image_grid_thw"][0].tolist()
    m = adapter.processor.image_processor.merge_size
    assert (layout.grid_rows, layout.grid_cols) == (h // m, w // m)  # the grid the processor chose
    colours = qwen_token_colours(adapter, inputs, layout)
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    error = np.abs(colours - expected_colours(boxes, width, height))
    assert error.max() < TOLERANCE, f"max colour error {error.max():.3f}"
    if width > 2 * height:  # the aspect ratio survives smart_resize: a wide grid
        assert layout.grid_cols > layout.grid_rows


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_mappings_fail_the_pixel_check(adapters, family):
    adapter, (width, height) = adapters[family], (640, 360)
    inputs, layout = run_layout(adapter, width, height)
    colours = qwen_token_colours(adapter, inputs, layout)
    check_wrong_grid_mappings_fail(colours, layout, width, height, TOLERANCE)


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


def test_qwen2_5_vl_tiny_tower_runs_window_attention(adapters):
    """The vision tower's window attention is active on a multi-window image (it must not move tokens)."""
    config = adapters["qwen2_5_vl"].model.config.vision_config
    assert list(config.fullatt_block_indexes) == [config.depth - 1] and config.depth > 1
    inputs, layout = run_layout(adapters["qwen2_5_vl"], 640, 360)
    window_tokens = config.window_size // config.patch_size // config.spatial_merge_size
    assert layout.grid_rows > window_tokens and layout.grid_cols > window_tokens
