"""PaliGemma adapter: the bidirectional prefix, pixel geometry, kinds, loading."""

import numpy as np
import pytest
from support.vlm_family_checks import COLOUR_TOLERANCE, cell_colours, expected_colours, unnormalise

from attnstore.extraction.synthetic import _gradient_image
from attnstore.models.paligemma import IMAGE_TOKEN, PaliGemmaAdapter
from attnstore.schema import TokenKind


@pytest.fixture(scope="module")
def paligemma_runs(family_runs):
    return family_runs("paligemma")


# -- the prefix mask (capture, batch, generate, the mask rule, store: test_families.py) -----


def test_prefix_is_bidirectional_in_the_captured_rows(paligemma_runs):
    """The prefix is really bidirectional (the whole rule: test_families.py)."""
    result = paligemma_runs.results()[0]
    rows = result.attention.astype(np.float32)
    n_prompt = int((result.layout.kind != TokenKind.GENERATED).sum())
    assert rows[:, :, 0, 1:n_prompt].min() > 0  # the first image token sees the prompt's last token
    assert rows[:, :, :n_prompt, n_prompt:].max() == 0  # and no answer token


# -- geometry -----------------------------------------------------------------------------------


def token_check(adapter, width, height):
    """(colour of each image token's patch in pixel_values, colour at its box centre)  # [token, 2] each.

    Token j of the image block is SigLIP patch j, row-major (the vision tower's order)."""
    inputs = adapter.prepare(_gradient_image(width, height), "Describe.")
    ids = inputs["input_ids"][0].numpy()
    layout = adapter.layout(ids, inputs)
    rgb = unnormalise(inputs["pixel_values"][0].numpy(), adapter.processor.image_processor)  # [rgb, y, x]
    positions = np.flatnonzero(ids == adapter.model.config.image_token_id)
    side = rgb.shape[-1] // adapter.model.config.vision_config.patch_size
    return cell_colours(rgb, side, side), expected_colours(layout.patch_box[positions], width, height), layout


@pytest.mark.parametrize("width,height", [(200, 80), (80, 170), (100, 90), (20, 12)])
def test_token_boxes_match_processed_pixels(paligemma_runs, width, height):
    seen, wanted, layout = token_check(paligemma_runs.adapter(), width, height)
    assert np.abs(seen - wanted).max() < COLOUR_TOLERANCE
    assert (layout.grid_rows, layout.grid_cols, layout.tile_rows, layout.tile_cols) == (8, 8, 1, 1)
    assert layout.views[0].region == (0.0, 0.0, 1.0, 1.0)  # squashed, not cropped


def test_wrong_mappings_fail_the_pixel_check(paligemma_runs):
    seen, wanted, _ = token_check(paligemma_runs.adapter(), 200, 80)
    transposed = wanted.reshape(8, 8, 2).transpose(1, 0, 2).reshape(-1, 2)
    shifted = np.roll(wanted.reshape(8, 8, 2), 1, axis=1).reshape(-1, 2)
    for wrong in (transposed, shifted):
        assert np.abs(seen - wrong).max() > 2 * COLOUR_TOLERANCE


def test_grid_follows_the_processor_settings(paligemma_runs):
    """A 128 px processor (PaliGemma's 224 / 448 / 896 variants differ the same way): a 16 x 16 grid."""
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    adapter = paligemma_runs.adapter()
    ip = SiglipImageProcessorPil(size={"height": 128, "width": 128}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ip.image_seq_length = 256
    wider = PaliGemmaAdapter(adapter.model, PaliGemmaProcessor(ip, adapter.tokenizer), model_id=adapter.model_id)
    inputs = wider.prepare(_gradient_image(200, 80), "Describe.")
    layout = wider.layout(inputs["input_ids"][0].numpy(), inputs)
    assert (layout.grid_rows, layout.grid_cols) == (16, 16)


# -- layout and loading ---------------------------------------------------------------------------


def test_layout_kinds(paligemma_runs):
    adapter = paligemma_runs.adapter()
    inputs = adapter.prepare(_gradient_image(200, 80), "What?")
    assert "labels" not in inputs  # the processor's training targets are not a generate input
    ids = inputs["input_ids"][0].numpy()
    tokens = adapter.token_strings(ids)
    kinds = adapter.layout(ids, inputs).kind
    image = np.flatnonzero(kinds == TokenKind.IMAGE_TILE)
    assert np.array_equal(image, np.arange(64)) and all(tokens[p] == IMAGE_TOKEN for p in image)
    assert tokens[64] == "<bos>" and kinds[64] == TokenKind.SPECIAL
    assert "".join(tokens[65:]) == "What?Ċ" and (kinds[65:] == TokenKind.PROMPT_TEXT).all()
    assert not inputs["token_type_ids"].any()  # the whole prompt is the bidirectional prefix
    assert image.size <= adapter.max_image_tokens()
    assert adapter.banned_token_ids() == [adapter.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)]
