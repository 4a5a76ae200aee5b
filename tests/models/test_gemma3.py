"""Gemma 3 adapter: the bidirectional image mask, pixel geometry
with and without pan-and-scan, token kinds, loading."""

import json

import numpy as np
import pytest
from support.vlm_family_checks import COLOUR_TOLERANCE, cell_colours, expected_colours, image_blocks, unnormalise

from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import load_adapter
from attnstore.models.gemma3 import BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN
from attnstore.schema import TokenKind


@pytest.fixture(scope="module")
def gemma3_runs(family_runs):
    return family_runs("gemma3")  # pan-and-scan on


@pytest.fixture(scope="module")
def plain_adapter(gemma3_runs):
    """The same model with pan-and-scan off (the processor's default): one view per image."""
    adapter = load_adapter(gemma3_runs.path)
    adapter.processor.image_processor.do_pan_and_scan = None
    return adapter


# -- the image-block mask (capture, batch, generate, the mask rule, store: test_families.py) --


def test_image_blocks_are_bidirectional_in_the_captured_rows(gemma3_runs):
    """Several image blocks, each really bidirectional (the whole rule: test_families.py)."""
    config = gemma3_runs.adapter().model.config
    first = gemma3_runs.results()[0]
    blocks = image_blocks(first.token_id, config.image_token_id)
    assert len(blocks) == 4  # the full view and 3 crops: a real test of several blocks
    rows = first.attention.astype(np.float32)
    start, last = blocks[1][0], blocks[1][-1]
    assert rows[:, :, start, start + 1 : last + 1].min() > 0  # later image tokens of its block
    assert rows[:, :, start, last + 1 :].max() == 0  # later text and later blocks


# -- geometry -----------------------------------------------------------------------------------


def token_check(adapter, width, height):
    """(colour of each image token's pooled cell in pixel_values, colour at its box centre)  # [token, 2] each.

    Block i of image tokens is pixel view i; token j of a block is pooled cell j row-major
    (the model's scatter and pooling order), read independently of the adapter.
    """
    inputs = adapter.prepare(_gradient_image(width, height), "Describe.")
    ids = inputs["input_ids"][0].numpy()
    layout = adapter.layout(ids, inputs)
    pixels = unnormalise(inputs["pixel_values"].numpy(), adapter.processor.image_processor)  # [view, rgb, y, x]
    blocks = image_blocks(ids, adapter.model.config.image_token_id)
    assert len(blocks) == pixels.shape[0]
    seen, wanted = [], []
    for view, positions in zip(pixels, blocks):
        side = int(np.sqrt(positions.size))
        seen.append(cell_colours(view, side, side))
        wanted.append(expected_colours(layout.patch_box[positions], width, height))
    return np.concatenate(seen), np.concatenate(wanted), layout


@pytest.mark.parametrize("width,height", [(200, 80), (80, 170), (640, 110), (100, 90), (20, 12)])
def test_pan_and_scan_boxes_match_processed_pixels(gemma3_runs, width, height):
    seen, wanted, layout = token_check(gemma3_runs.adapter(), width, height)
    error = np.abs(seen - wanted).max()
    assert error < COLOUR_TOLERANCE, f"max colour error {error:.3f}"
    crops = len(layout.views) - 1
    if max(width, height) / min(width, height) >= 1.2 and min(width, height) >= 32:
        assert crops >= 2 and layout.global_rows == 4
        assert (layout.tile_rows, layout.tile_cols) == ((1, crops) if width >= height else (crops, 1))
    else:
        assert crops == 0 and (layout.tile_rows, layout.tile_cols, layout.grid_rows) == (1, 1, 4)


@pytest.mark.parametrize("width,height", [(200, 80), (80, 170), (100, 90)])
def test_fixed_square_boxes_match_processed_pixels(plain_adapter, width, height):
    seen, wanted, layout = token_check(plain_adapter, width, height)
    assert np.abs(seen - wanted).max() < COLOUR_TOLERANCE
    assert len(layout.views) == 1 and (layout.grid_rows, layout.grid_cols) == (4, 4)
    assert layout.views[0].region == (0.0, 0.0, 1.0, 1.0)  # squashed, not cropped


def test_wrong_mappings_fail_the_pixel_check(gemma3_runs):
    """The colour check is tight: crops in the wrong order or a transposed grid are caught."""
    adapter = gemma3_runs.adapter()
    seen, wanted, layout = token_check(adapter, 200, 80)
    n = 16  # tokens per view
    reversed_crops = np.concatenate([wanted[:n], wanted[n:].reshape(3, n, 2)[::-1].reshape(-1, 2)])
    transposed = wanted.reshape(-1, 4, 4, 2).transpose(0, 2, 1, 3).reshape(-1, 2)
    for wrong in (reversed_crops, transposed):
        assert np.abs(seen - wrong).max() > 2 * COLOUR_TOLERANCE


def test_grid_follows_the_processor_settings(gemma3_runs):
    """A larger square (more patches) with the same pooled grid, read from what the processor made."""
    from transformers import Gemma3ImageProcessorPil

    adapter = load_adapter(gemma3_runs.path)
    ip = adapter.processor.image_processor
    adapter.processor.image_processor = Gemma3ImageProcessorPil(
        size={"height": 128, "width": 128},
        image_mean=ip.image_mean,
        image_std=ip.image_std,
        do_pan_and_scan=True,
        pan_and_scan_min_crop_size=100,
        pan_and_scan_max_num_crops=2,
    )
    inputs = adapter.prepare(_gradient_image(640, 110), "Describe.")
    assert inputs["pixel_values"].shape[-1] == 128
    layout = adapter.layout(inputs["input_ids"][0].numpy(), inputs)
    assert (layout.tile_rows, layout.tile_cols) == (1, 2)  # max 2 crops, not the tiny model's 4


# -- layout and loading ---------------------------------------------------------------------------


def test_layout_kinds(gemma3_runs):
    adapter = gemma3_runs.adapter()
    inputs = adapter.prepare(_gradient_image(200, 80), "What?")
    tokens = adapter.token_strings(inputs["input_ids"][0].numpy())
    layout = adapter.layout(inputs["input_ids"][0].numpy(), inputs)
    kinds = layout.kind
    patches = np.flatnonzero(np.isin(kinds, [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL]))
    assert [tokens[p] for p in patches] == [IMAGE_TOKEN] * patches.size == [IMAGE_TOKEN] * 64
    assert (kinds == TokenKind.IMAGE_GLOBAL).sum() == 16 and (kinds == TokenKind.IMAGE_TILE).sum() == 48
    markers = [
        tokens[p] for p in np.flatnonzero(kinds == TokenKind.IMAGE_SPECIAL) if tokens[p] in (BOI_TOKEN, EOI_TOKEN)
    ]
    assert markers == [BOI_TOKEN, EOI_TOKEN] * 4
    # The processor's words between the blocks ("and here are some crops ...") are image specials.
    first, last = tokens.index(BOI_TOKEN), len(tokens) - 1 - tokens[::-1].index(EOI_TOKEN)
    assert not (kinds[first : last + 1] == TokenKind.PROMPT_TEXT).any()
    assert [tokens[p] for p in np.flatnonzero(kinds == TokenKind.SPECIAL)][:2] == ["<bos>", "<start_of_turn>"]
    assert "What" in "".join(tokens[p] for p in np.flatnonzero(kinds == TokenKind.PROMPT_TEXT))
    # token_type_ids (the model's bidirectional blocks) mark exactly the patch tokens
    assert np.array_equal(np.flatnonzero(inputs["token_type_ids"][0].numpy() == 1), patches)
    assert patches.size + 16 <= adapter.max_image_tokens()
    banned = set(adapter.tokenizer.convert_ids_to_tokens(adapter.banned_token_ids()))
    assert banned == {IMAGE_TOKEN, BOI_TOKEN, EOI_TOKEN}


def test_crops_need_the_original_size(gemma3_runs):
    adapter = gemma3_runs.adapter()
    inputs = adapter.prepare(_gradient_image(200, 80), "What?")
    with pytest.raises(RuntimeError, match="Gemma3Adapter.prepare"):
        adapter.layout(inputs["input_ids"][0].numpy(), dict(inputs))
    with pytest.raises(RuntimeError, match="4 image views but the prompt holds 3"):
        adapter.layout(inputs["input_ids"][0].numpy()[:-40], inputs)


def test_pan_and_scan_settings_are_provenance(gemma3_runs):
    settings = json.loads(json.dumps(gemma3_runs.adapter().processor_settings()))
    assert settings["do_pan_and_scan"] is True and settings["image_seq_length"] == 16
    assert settings["pan_and_scan_max_num_crops"] == 4 and settings["pan_and_scan_min_crop_size"] == 32


def test_pan_and_scan_on_with_the_processor_defaults(gemma3_runs):
    """A checkpoint that only turns pan-and-scan on gets the processor's defaults (crops >= 256 px, at
    most 4): a 1200 x 300 picture is cut in 4, and the block bound covers them."""
    adapter = load_adapter(gemma3_runs.path)
    ip = adapter.processor.image_processor
    ip.pan_and_scan_min_crop_size = ip.pan_and_scan_max_num_crops = None
    assert adapter.pan_and_scan_settings()["pan_and_scan_min_crop_size"] == 256
    seen, wanted, layout = token_check(adapter, 1200, 300)
    assert np.abs(seen - wanted).max() < COLOUR_TOLERANCE and (layout.tile_rows, layout.tile_cols) == (1, 4)
    assert int(np.isin(layout.kind, [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL]).sum()) == 5 * 16
    assert adapter.max_image_tokens() >= 5 * 18
    ip.do_pan_and_scan = None
    assert adapter.processor_settings()["do_pan_and_scan"] is False
    assert adapter.max_image_tokens() == 16 + 2 + 4  # one block: "\n\n", <start_of_image>, 16, <end_of_image>, "\n\n"
