"""Qwen2-VL adapter: geometry against the processor's own pixels, capture against output_attentions, loading."""

import json

import numpy as np
import pytest
import torch

from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import load_adapter
from attnstore.models.capture import implementation_name
from attnstore.models.qwen2_vl import (
    IMAGE_TOKEN,
    QWEN2_VL_CHAT_TEMPLATE,
    Qwen2VLAdapter,
    images_only_processor_class,
)
from attnstore.models.tiny import build_random_qwen2_vl
from attnstore.schema import TokenKind

# (width, height): square, wide, tall, tiny, large
SHAPES = [(336, 336), (640, 360), (300, 700), (20, 12), (1500, 700)]
TOLERANCE = 0.015  # max |colour error| as a fraction of the colour range
PROMPT = "Can you describe this image?"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    return build_random_qwen2_vl(tmp_path_factory.mktemp("models") / "tiny-qwen2-vl")


@pytest.fixture(scope="module")
def adapter(model_path):
    return load_adapter(str(model_path))


def policy_adapter(adapter: Qwen2VLAdapter, policy: str) -> Qwen2VLAdapter:
    """The tiny model's processor (<= 64 tokens), or Qwen2-VL's real pixel budget (<= 1280 tokens)."""
    if policy == "tiny":
        return adapter
    from transformers import Qwen2VLImageProcessorPil

    ip = Qwen2VLImageProcessorPil()  # real defaults: min 56*56, max 28*28*1280 pixels
    processor = images_only_processor_class()(ip, adapter.tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return Qwen2VLAdapter(adapter.model, processor, model_id=adapter.model_id)


def processed_image(adapter: Qwen2VLAdapter, inputs) -> np.ndarray:
    """The resized picture rebuilt from the flat patches, as (red, green) in [0, 1]  # [rg, y, x]."""
    ip = adapter.processor.image_processor
    p, m, t_patch = ip.patch_size, ip.merge_size, ip.temporal_patch_size
    _, h, w = inputs["image_grid_thw"][0].tolist()
    # Qwen2VLImageProcessor.patchify order: (h/m, w/m, m, m) patches, each (channel, time, p, p).
    flat = inputs["pixel_values"].numpy().reshape(h // m, w // m, m, m, 3, t_patch, p, p)[..., 0, :, :]
    image = flat.transpose(4, 0, 2, 5, 1, 3, 6).reshape(3, h * p, w * p)  # [rgb, y, x]
    mean, std = np.asarray(ip.image_mean)[:, None, None], np.asarray(ip.image_std)[:, None, None]
    return (image * std + mean)[:2]  # undo normalisation


def token_colours(adapter: Qwen2VLAdapter, inputs, layout) -> np.ndarray:
    """Mean (red, green) of the processed pixels each image token covers  # [token, 2]."""
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


def run_layout(adapter: Qwen2VLAdapter, width: int, height: int):
    inputs = adapter.prepare(_gradient_image(width, height), PROMPT)
    return inputs, adapter.layout(inputs["input_ids"][0].numpy(), inputs)


# -- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["tiny", "real"])
@pytest.mark.parametrize("width,height", SHAPES)
def test_token_boxes_match_processed_pixels(adapter, policy, width, height):
    adapter = policy_adapter(adapter, policy)
    inputs, layout = run_layout(adapter, width, height)
    colours = token_colours(adapter, inputs, layout)
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    error = np.abs(colours - expected_colours(boxes, width, height))
    assert error.max() < TOLERANCE, f"max colour error {error.max():.3f}"


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
    """The colour check is tight: a transposed grid or one cell of offset is caught."""
    width, height = 640, 360
    inputs, layout = run_layout(policy_adapter(adapter, "real"), width, height)
    colours = token_colours(policy_adapter(adapter, "real"), inputs, layout)
    rows, cols = layout.grid_rows, layout.grid_cols
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    col, row = np.divmod(np.arange(rows * cols), rows)  # tokens read column-major
    transposed = np.stack([col / cols, row / rows, (col + 1) / cols, (row + 1) / rows], axis=1)
    shifted = boxes + [1 / cols, 0, 1 / cols, 0]
    for wrong in (transposed, shifted):
        assert np.abs(colours - expected_colours(wrong, width, height)).max() > 2 * TOLERANCE


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


def test_load_adapter_picks_qwen2_vl(adapter, model_path):
    assert isinstance(adapter, Qwen2VLAdapter) and adapter.family == "qwen2_vl"
    assert adapter.random_weights
    assert json.loads((model_path / "config.json").read_text())["model_type"] == "qwen2_vl"
    # A plain Qwen2VLProcessor folder; loaded without the video processor (no torchvision here).
    assert json.loads((model_path / "processor_config.json").read_text())["processor_class"] == "Qwen2VLProcessor"
    assert adapter.model.config.get_text_config()._attn_implementation == implementation_name("sdpa")
    settings = json.loads(json.dumps(adapter.processor_settings()))  # JSON-serialisable provenance
    assert (settings["merge_size"], settings["max_pixels"]) == (2, 28 * 28 * 64)
