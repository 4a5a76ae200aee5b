"""LLaVA-1.5 adapter: geometry against the processor's own pixels, kinds, refusals (loading: test_families.py)."""

import json

import numpy as np
import pytest
from support.vlm_family_checks import expected_colours, run_layout

from attnstore.errors import ModelLoadError
from attnstore.geometry import View, view_boxes
from attnstore.models import load_adapter
from attnstore.models.llava import LLAVA_CHAT_TEMPLATE, LlavaAdapter
from attnstore.schema import TokenKind

# (width, height): square, wide, tall, tiny, large
SHAPES = [(336, 336), (640, 360), (300, 700), (20, 12), (1500, 700)]
TOLERANCE = 0.015  # max |colour error| as a fraction of the colour range (measured <= 0.007)


@pytest.fixture(scope="module")
def adapter(family_adapter):
    return family_adapter("llava")


def with_image_processor(adapter: LlavaAdapter, image_processor) -> LlavaAdapter:
    """The same model behind a real LlavaProcessor with another image-processing policy."""
    from transformers import LlavaProcessor

    processor = LlavaProcessor(
        image_processor,
        adapter.tokenizer,
        patch_size=adapter.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return LlavaAdapter(adapter.model, processor, model_id=adapter.model_id)


def policy_adapter(adapter: LlavaAdapter, policy: str) -> LlavaAdapter:
    from transformers import CLIPImageProcessorPil, LlavaImageProcessorPil

    if policy == "tiny-crop":  # the tiny model's own processor: shortest edge 112, centre crop 112
        return adapter
    if policy == "real-crop":  # llava-1.5's CLIPImageProcessor: shortest edge 336, centre crop 336 -> 24 x 24
        ip = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    elif policy == "pad":  # LLaVA's pad-to-square ("pad" aspect mode), then resize and crop
        ip = LlavaImageProcessorPil(do_pad=True, size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112})
    elif policy == "stretch":  # squash to a square, no crop
        ip = CLIPImageProcessorPil(size={"height": 112, "width": 112}, do_center_crop=False)
    return with_image_processor(adapter, ip)


def token_colours(adapter: LlavaAdapter, inputs, layout) -> np.ndarray:
    """Mean (red, green) in [0, 1] of the processed pixels each image token covers  # [token, 2]."""
    ip = adapter.processor.image_processor
    mean, std = np.asarray(ip.image_mean)[:, None, None], np.asarray(ip.image_std)[:, None, None]
    rgb = inputs["pixel_values"][0].numpy() * std + mean  # [rgb, y, x]: undo normalisation
    p, rows, cols = adapter.patch_size, layout.grid_rows, layout.grid_cols
    cells = rgb[:2, : rows * p, : cols * p].reshape(2, rows, p, cols, p).mean((2, 4))  # [rg, row, col]
    pos = np.flatnonzero(layout.kind == TokenKind.IMAGE_TILE)
    return cells[:, layout.patch_row[pos], layout.patch_col[pos]].T


def full_cells(layout) -> np.ndarray:
    """Image tokens whose box was not clipped (the patch lies wholly on the picture)  # [token] bool."""
    x0, y0, x1, y1 = layout.views[0].region
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    full_w, full_h = (x1 - x0) / layout.grid_cols, (y1 - y0) / layout.grid_rows
    return np.isclose(boxes[:, 2] - boxes[:, 0], full_w) & np.isclose(boxes[:, 3] - boxes[:, 1], full_h)


# -- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["tiny-crop", "real-crop", "pad", "stretch"])
@pytest.mark.parametrize("width,height", SHAPES)
def test_token_boxes_match_processed_pixels(adapter, policy, width, height):
    adapter = policy_adapter(adapter, policy)
    inputs, layout = run_layout(adapter, width, height)
    colours = token_colours(adapter, inputs, layout)
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    inside = full_cells(layout)
    assert inside.sum() >= layout.grid_rows  # at least a column of whole patches to check
    error = np.abs(colours[inside] - expected_colours(boxes[inside], width, height))
    assert error.max() < TOLERANCE, f"max colour error {error.max():.3f}"
    # Patches wholly on the padding show the fill colour (the image mean).
    padding = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    fill = np.asarray(adapter.processor.image_processor.image_mean)[:2]
    np.testing.assert_allclose(colours[padding], np.broadcast_to(fill, colours[padding].shape), atol=1 / 255)
    assert padding.any() == (policy == "pad" and width != height)


@pytest.mark.parametrize("policy,grid", [("tiny-crop", 8), ("real-crop", 24), ("pad", 8), ("stretch", 8)])
def test_grid_is_read_from_the_processed_pixels(adapter, policy, grid):
    adapter = policy_adapter(adapter, policy)
    _, layout = run_layout(adapter, 640, 360)
    assert (layout.grid_rows, layout.grid_cols) == (grid, grid)
    assert (layout.tile_rows, layout.tile_cols, layout.global_rows, layout.global_cols) == (1, 1, 0, 0)
    assert [(v.kind, v.tile, v.grid_offset) for v in layout.views] == [(TokenKind.IMAGE_TILE, 0, (0, 0))]


@pytest.mark.parametrize("width,height,region", [(640, 360, (0.21875, 0, 0.78125, 1)), (300, 600, (0, 0.25, 1, 0.75))])
def test_centre_crop_region(adapter, width, height, region):
    """The single tile is the central square of the picture (up to the processor's integer rounding)."""
    _, layout = run_layout(adapter, width, height)
    assert layout.views[0].region == pytest.approx(region, abs=5e-3)


def test_unknown_processing_policy_is_refused(adapter):
    """A bottom/right pad after the crop adds patches that show no picture: refuse rather than guess."""
    from transformers import CLIPImageProcessorPil

    ip = CLIPImageProcessorPil(
        size={"shortest_edge": 112},
        crop_size={"height": 112, "width": 112},
        do_pad=True,
        pad_size={"height": 126, "width": 126},
    )
    with pytest.raises(RuntimeError, match="126x126 pixels"):
        run_layout(with_image_processor(adapter, ip), 640, 360)


def test_wrong_mappings_fail_the_pixel_check(adapter):
    """The colour check is tight: ignoring the crop, shifting it by one cell, or transposing is caught."""
    width, height = 640, 360
    inputs, layout = run_layout(adapter, width, height)
    colours = token_colours(adapter, inputs, layout)
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    n = layout.grid_cols
    uncropped = view_boxes(View(TokenKind.IMAGE_TILE, (0.0, 0.0, 1.0, 1.0), n, n))
    shifted = boxes + [(boxes[0, 2] - boxes[0, 0]), 0, (boxes[0, 2] - boxes[0, 0]), 0]
    transposed = boxes.reshape(n, n, 4).transpose(1, 0, 2).reshape(-1, 4)
    for wrong in (uncropped, shifted, transposed):
        assert np.abs(colours - expected_colours(wrong, width, height)).max() > 2 * TOLERANCE


# -- layout -------------------------------------------------------------------------------------


def test_layout_kinds(adapter):
    inputs, layout = run_layout(adapter, 640, 360)
    tokens = adapter.token_strings(inputs["input_ids"][0].numpy())
    kinds = layout.kind
    assert tokens[0] == "<s>" and kinds[0] == TokenKind.SPECIAL
    image = np.flatnonzero(kinds == TokenKind.IMAGE_TILE)
    assert image.size == layout.grid_rows * layout.grid_cols
    assert np.array_equal(image, np.arange(image[0], image[0] + image.size))  # one contiguous block
    assert all(tokens[p] == "<image>" for p in image)
    assert set(kinds.tolist()) == {TokenKind.SPECIAL, TokenKind.PROMPT_TEXT, TokenKind.IMAGE_TILE}
    assert image.size <= adapter.max_image_tokens()
    assert adapter.banned_token_ids() == [adapter.tokenizer.convert_tokens_to_ids("<image>")]


def test_layout_needs_prepare_output(adapter):
    inputs, _ = run_layout(adapter, 64, 64)
    with pytest.raises(RuntimeError, match="LlavaAdapter.prepare"):
        adapter.layout(inputs["input_ids"][0].numpy(), dict(inputs))


# -- loading ------------------------------------------------------------------------------------


def test_unsupported_model_type_is_a_clear_error(tmp_path):
    # (blip-2, an image-text-to-text type without an adapter, runs in sequence-only mode: test_sequence_only.py)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match=r"unsupported model type 'bert'.*llava.*qwen2_vl"):
        load_adapter(str(tmp_path))
