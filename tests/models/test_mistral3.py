"""Mistral 3 adapter: variable-resolution geometry against the processor's
pixels and the model's patch-merge order, [IMG_BREAK] / [IMG_END] kinds, loading without torchvision."""

import numpy as np
import pytest
import torch
from support.vlm_family_checks import COLOUR_TOLERANCE, cell_colours, expected_colours, unnormalise

from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import load_adapter
from attnstore.models.mistral3 import BREAK_TOKEN, END_TOKEN, IMAGE_TOKEN
from attnstore.schema import TokenKind


@pytest.fixture(scope="module")
def mistral3_runs(family_runs):
    return family_runs("mistral3")


# -- geometry (capture, batch, generate, mask, store: test_families.py) ----------------------


def test_patch_merger_keeps_row_major_order(mistral3_runs):
    """The model's own m x m merge: token j covers the patches of merged cell (j // C, j % C)."""
    merger = mistral3_runs.adapter().model.model.multi_modal_projector.patch_merger
    patch, m = merger.patch_size, merger.spatial_merge_size
    rows, cols = 3, 5  # merged cells of a 3 x 5 token image
    y, x = torch.meshgrid(torch.arange(rows * m), torch.arange(cols * m), indexing="ij")
    positions = torch.stack([y, x], -1).reshape(-1, 2).float()  # [patch, (y, x)] row-major
    d = merger.merging_layer.in_features // m**2
    features = torch.zeros(positions.shape[0], d)
    features[:, :2] = positions
    captured = []
    hook = merger.merging_layer.register_forward_hook(lambda mod, args, out: captured.append(args[0]) and None)
    try:
        merger(features, torch.tensor([[rows * m * patch, cols * m * patch]]))
    finally:
        hook.remove()  # the session's model is shared
    merged = captured[0].reshape(rows * cols, d, m * m)[:, :2]  # [token, (y, x), patch in the cell]
    token = torch.arange(rows * cols)
    assert torch.equal(merged[:, 0].min(1).values // m, token // cols)
    assert torch.equal(merged[:, 1].min(1).values // m, token % cols)


def token_check(adapter, width, height):
    """(colour of each image token's cell in pixel_values, colour at its box centre)  # [token, 2] each.

    [IMG] token j is merged cell j row-major (`test_patch_merger_keeps_row_major_order`) over the
    `image_sizes` part of the pixels.
    """
    inputs = adapter.prepare(_gradient_image(width, height), "Describe.")
    ids = inputs["input_ids"][0].numpy()
    layout = adapter.layout(ids, inputs)
    h, w = inputs["image_sizes"][0].tolist()
    rgb = unnormalise(inputs["pixel_values"][0].numpy(), adapter.processor.image_processor)[:, :h, :w]
    step = adapter.processor.patch_size * adapter.processor.spatial_merge_size
    positions = np.flatnonzero(ids == adapter.model.config.image_token_id)
    seen = cell_colours(rgb, h // step, w // step)
    return seen, expected_colours(layout.patch_box[positions], width, height), layout


@pytest.mark.parametrize(
    "width,height,grid", [(200, 80, (4, 8)), (80, 170, (8, 4)), (100, 90, (6, 7)), (640, 110, (2, 8)), (20, 12, (1, 2))]
)
def test_token_boxes_match_processed_pixels(mistral3_runs, width, height, grid):
    seen, wanted, layout = token_check(mistral3_runs.adapter(), width, height)
    assert np.abs(seen - wanted).max() < COLOUR_TOLERANCE
    assert (layout.grid_rows, layout.grid_cols) == grid and (layout.tile_rows, layout.tile_cols) == (1, 1)


def test_wrong_mappings_fail_the_pixel_check(mistral3_runs):
    """Counting the [IMG_BREAK]s as grid cells, or a transposed grid, is caught."""
    seen, wanted, layout = token_check(mistral3_runs.adapter(), 200, 80)
    rows, cols = layout.grid_rows, layout.grid_cols
    transposed = wanted.reshape(rows, cols, 2).transpose(1, 0, 2).reshape(-1, 2)
    with_breaks = np.concatenate([wanted, wanted[-rows:]]).reshape(rows, cols + 1, 2)[:, :cols].reshape(-1, 2)
    for wrong in (transposed, with_breaks):
        assert np.abs(seen - wrong).max() > 2 * COLOUR_TOLERANCE


def test_grid_follows_the_processor_settings(mistral3_runs):
    """A smaller longest edge gives a smaller grid: read from image_sizes, not from constants."""
    adapter = load_adapter(mistral3_runs.path)
    adapter.processor.image_processor.size = {"longest_edge": 64}
    seen, wanted, layout = token_check(adapter, 200, 80)
    assert np.abs(seen - wanted).max() < COLOUR_TOLERANCE
    assert (layout.grid_rows, layout.grid_cols) == (2, 4)


# -- layout and loading ---------------------------------------------------------------------------


def test_layout_kinds(mistral3_runs):
    adapter = mistral3_runs.adapter()
    inputs = adapter.prepare(_gradient_image(200, 80), "What?")
    ids = inputs["input_ids"][0].numpy()
    tokens = adapter.token_strings(ids)
    layout = adapter.layout(ids, inputs)
    kinds = layout.kind
    image = np.flatnonzero(kinds == TokenKind.IMAGE_TILE)
    assert image.size == 32 and all(tokens[p] == IMAGE_TOKEN for p in image)
    block = tokens[image[0] : image[-1] + 2]
    assert block == ([IMAGE_TOKEN] * 8 + [BREAK_TOKEN]) * 3 + [IMAGE_TOKEN] * 8 + [END_TOKEN]
    assert all(kinds[p] == TokenKind.IMAGE_SPECIAL for p, t in enumerate(tokens) if t in (BREAK_TOKEN, END_TOKEN))
    assert [tokens[p] for p in np.flatnonzero(kinds == TokenKind.SPECIAL)] == ["<s>", "[INST]", "[/INST]"]
    # each row's tokens share patch_row, the row ends in a break / end token
    assert np.array_equal(layout.patch_row[image], np.repeat(np.arange(4), 8))
    assert image.size + 4 <= adapter.max_image_tokens()
    with pytest.raises(ValueError, match="4 x 8 image block"):
        adapter.layout(ids[: image[-1]], inputs)
