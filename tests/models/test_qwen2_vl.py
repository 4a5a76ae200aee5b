"""Qwen2-VL adapter: geometry against the processor's own pixels, kinds, token types (loading: test_families.py)."""

import numpy as np
import pytest
import torch
from support.vlm_family_checks import check_wrong_grid_mappings_fail, expected_colours, qwen_token_colours, run_layout

from attnstore.extraction.synthetic import _gradient_image
from attnstore.models.qwen2_vl import (
    IMAGE_TOKEN,
    QWEN2_VL_CHAT_TEMPLATE,
    Qwen2VLAdapter,
    images_only_processor_class,
)
from attnstore.schema import TokenKind

# (width, height): square, wide, tall, tiny, large
SHAPES = [(336, 336), (640, 360), (300, 700), (20, 12), (1500, 700)]
TOLERANCE = 0.015  # max |colour error| as a fraction of the colour range
PROMPT = "Can you describe this image?"


@pytest.fixture(scope="module")
def adapter(family_adapter):
    return family_adapter("qwen2_vl")


def policy_adapter(adapter: Qwen2VLAdapter, policy: str) -> Qwen2VLAdapter:
    """The tiny model's processor (<= 64 tokens), or Qwen2-VL's real pixel budget (<= 1280 tokens)."""
    if policy == "tiny":
        return adapter
    from transformers import Qwen2VLImageProcessorPil

    ip = Qwen2VLImageProcessorPil()  # real defaults: min 56*56, max 28*28*1280 pixels
    processor = images_only_processor_class()(ip, adapter.tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return Qwen2VLAdapter(adapter.model, processor, model_id=adapter.model_id)


# -- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["tiny", "real"])
@pytest.mark.parametrize("width,height", SHAPES)
def test_token_boxes_match_processed_pixels(adapter, policy, width, height):
    adapter = policy_adapter(adapter, policy)
    inputs, layout = run_layout(adapter, width, height)
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    error = np.abs(qwen_token_colours(adapter, inputs, layout) - expected_colours(boxes, width, height)).max()
    assert error < TOLERANCE, f"max colour error {error:.3f}"


@pytest.mark.parametrize("policy", ["tiny", "real"])
@pytest.mark.parametrize("width,height", SHAPES)
def test_grid_comes_from_image_grid_thw(adapter, policy, width, height):
    adapter = policy_adapter(adapter, policy)
    inputs, layout = run_layout(adapter, width, height)
    _, h, w = inputs["image_grid_thw"][0].tolist()
    m = adapter.processor.image_processor.merge_size
    assert (layout.grid_rows, layout.grid_cols) == (h // m, w // m)
    assert (layout.tile_rows, layout.tile_cols, layout.global_rows, layout.global_cols) == (1, 1, 0, 0)
    assert layout.views[0].region == (0.0, 0.0, 1.0, 1.0)  # smart_resize stretches the whole picture
    assert int((layout.kind == TokenKind.IMAGE_TILE).sum()) <= adapter.max_image_tokens()
    if (width, height) == (1500, 700):  # the aspect ratio survives the resize: a wide grid
        assert layout.grid_cols > 2 * layout.grid_rows - 2


def test_wrong_mappings_fail_the_pixel_check(adapter):
    width, height = 640, 360
    adapter = policy_adapter(adapter, "real")
    inputs, layout = run_layout(adapter, width, height)
    colours = qwen_token_colours(adapter, inputs, layout)
    check_wrong_grid_mappings_fail(colours, layout, width, height, TOLERANCE)


# -- layout -------------------------------------------------------------------------------------


def test_layout_kinds(adapter):
    inputs, layout = run_layout(adapter, 640, 360)
    tokens = adapter.token_strings(inputs["input_ids"][0].numpy())
    kinds = layout.kind
    image = np.flatnonzero(kinds == TokenKind.IMAGE_TILE)
    assert np.array_equal(image, np.arange(image[0], image[0] + image.size))  # one contiguous block
    assert all(tokens[p] == IMAGE_TOKEN for p in image)
    assert tokens[image[0] - 1] == "<|vision_start|>" and tokens[image[-1] + 1] == "<|vision_end|>"
    assert kinds[image[0] - 1] == kinds[image[-1] + 1] == TokenKind.IMAGE_SPECIAL
    assert (kinds == TokenKind.IMAGE_SPECIAL).sum() == 2
    specials = [tokens[p] for p in np.flatnonzero(kinds == TokenKind.SPECIAL)]
    assert specials == ["<|im_start|>", "<|im_end|>", "<|im_start|>", "<|im_end|>", "<|im_start|>"]
    # The processor's own image mask agrees with the layout.
    assert np.array_equal(np.flatnonzero(inputs["mm_token_type_ids"][0].numpy() == 1), image)
    banned = set(adapter.tokenizer.convert_ids_to_tokens(adapter.banned_token_ids()))
    assert {IMAGE_TOKEN, "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"} <= banned


def test_truncated_image_block_is_an_error(adapter):
    inputs, _ = run_layout(adapter, 640, 360)
    ids = inputs["input_ids"][0].numpy()
    first_image = int(np.flatnonzero(inputs["mm_token_type_ids"][0].numpy())[0])
    with pytest.raises(ValueError, match="image tokens"):
        adapter.layout(ids[: first_image + 3], inputs)


def test_forward_inputs_extend_token_types_to_the_answer(adapter):
    inputs = adapter.prepare(_gradient_image(100, 80), PROMPT)
    n = inputs["input_ids"].shape[1]
    sequence = torch.cat([inputs["input_ids"][0], torch.tensor([11, 12, 13])])
    extra = adapter.forward_inputs(inputs, sequence)
    assert "input_ids" not in extra and "attention_mask" not in extra
    types = extra["mm_token_type_ids"]
    assert types.shape == (1, n + 3)
    assert torch.equal(types[:, :n], inputs["mm_token_type_ids"]) and not types[:, n:].any()


# -- loading ------------------------------------------------------------------------------------
