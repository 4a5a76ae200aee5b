"""InternVL adapter: tile + thumbnail geometry against the processor's
pixels and the model's pixel-shuffle order, kinds, loading without torchvision."""

import json
import shutil

import numpy as np
import pytest
import torch
from support.vlm_family_checks import COLOUR_TOLERANCE, cell_colours, expected_colours, unnormalise

from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import load_adapter
from attnstore.models.internvl import END_IMAGE, IMAGE_TOKEN, START_IMAGE, InternVLAdapter
from attnstore.schema import TokenKind


@pytest.fixture(scope="module")
def internvl_runs(family_runs):
    return family_runs("internvl")


# -- geometry (capture, batch, generate, mask, store: test_families.py) ----------------------


def test_pixel_shuffle_keeps_row_major_order(internvl_runs):
    """The model's own pixel shuffle: token j of a view covers the 2 x 2 patches of cell (j // n, j % n)."""
    model = internvl_runs.adapter().model.model
    p = 8  # patches per side of the tiny tile
    y, x = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    features = torch.stack([y, x], -1).float()[None]  # [1, row, col, (y, x)]: each patch holds its position
    shuffled = model.pixel_shuffle(features, scale_factor=0.5).reshape(p * p // 4, -1, 2)  # [token, patch, (y, x)]
    token = torch.arange(p * p // 4)
    assert torch.equal(shuffled[..., 0].min(1).values // 2, token // (p // 2))  # row of the cell
    assert torch.equal(shuffled[..., 1].min(1).values // 2, token % (p // 2))  # column of the cell
    assert torch.equal(shuffled.max(1).values - shuffled.min(1).values, torch.ones(token.size(0), 2))  # 2 x 2


def token_check(adapter, width, height):
    """(colour of each image token's cell in pixel_values, colour at its box centre)  # [token, 2] each.

    View i of `pixel_values` is tokens [i * S, (i + 1) * S) of the prompt (the model scatters views in
    order); token j of a view is cell j row-major (`test_pixel_shuffle_keeps_row_major_order`).
    """
    inputs = adapter.prepare(_gradient_image(width, height), "Describe.")
    ids = inputs["input_ids"][0].numpy()
    layout = adapter.layout(ids, inputs)
    views = unnormalise(inputs["pixel_values"].numpy(), adapter.processor.image_processor)  # [view, rgb, y, x]
    positions = np.flatnonzero(ids == adapter.model.config.image_token_id).reshape(views.shape[0], -1)
    side = int(np.sqrt(positions.shape[1]))
    seen = np.concatenate([cell_colours(view, side, side) for view in views])
    return seen, expected_colours(layout.patch_box[positions.ravel()], width, height), layout


@pytest.mark.parametrize(
    "width,height,tiles",
    [(200, 80, (1, 3)), (80, 170, (2, 1)), (640, 110, (1, 6)), (100, 90, (2, 2)), (20, 12, (2, 3))],
)
def test_token_boxes_match_processed_pixels(internvl_runs, width, height, tiles):
    seen, wanted, layout = token_check(internvl_runs.adapter(), width, height)
    assert np.abs(seen - wanted).max() < COLOUR_TOLERANCE
    assert (layout.tile_rows, layout.tile_cols) == tiles
    assert (layout.global_rows, layout.global_cols) == (4, 4)  # the thumbnail, last view
    assert (layout.grid_rows, layout.grid_cols) == (4 * tiles[0], 4 * tiles[1])


def test_one_view_when_one_tile(internvl_runs):
    seen, wanted, layout = token_check(internvl_runs.adapter(), 64, 64)
    assert np.abs(seen - wanted).max() < COLOUR_TOLERANCE
    assert len(layout.views) == 1 and layout.global_rows == 0 and (layout.grid_rows, layout.grid_cols) == (4, 4)


def test_wrong_mappings_fail_the_pixel_check(internvl_runs):
    """Thumbnail first instead of last, or tiles column-major, are caught."""
    seen, wanted, _ = token_check(internvl_runs.adapter(), 100, 90)  # 2 x 2 tiles + thumbnail
    views = wanted.reshape(5, 16, 2)
    thumbnail_first = np.concatenate([views[4:], views[:4]]).reshape(-1, 2)
    column_major = views[[0, 2, 1, 3, 4]].reshape(-1, 2)
    for wrong in (thumbnail_first, column_major):
        assert np.abs(seen - wrong).max() > 2 * COLOUR_TOLERANCE


def test_grid_follows_the_processor_settings(internvl_runs):
    """At most 2 tiles: the wide picture gets 2 x 1 instead of 3 x 1, read from the processor's choice."""
    adapter = load_adapter(internvl_runs.path)
    adapter.processor.image_processor.max_patches = 2
    _, _, layout = token_check(adapter, 200, 80)
    assert (layout.tile_rows, layout.tile_cols) == (1, 2)
    inputs = adapter.prepare(_gradient_image(200, 80), "Describe.")
    with pytest.raises(ValueError, match="not 3 views x 16"):  # a truncated prompt
        adapter.layout(inputs["input_ids"][0].numpy()[:-20], inputs)
    adapter.processor.image_processor.max_patches = 3
    with pytest.raises(RuntimeError, match="not 3 x 1 tiles"):  # pixels made under other settings
        adapter.layout(inputs["input_ids"][0].numpy(), inputs)


# -- layout and loading ---------------------------------------------------------------------------


def test_layout_kinds(internvl_runs):
    adapter = internvl_runs.adapter()
    inputs = adapter.prepare(_gradient_image(200, 80), "What?")
    ids = inputs["input_ids"][0].numpy()
    tokens = adapter.token_strings(ids)
    kinds = adapter.layout(ids, inputs).kind
    patches = np.flatnonzero(np.isin(kinds, [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL]))
    assert np.array_equal(patches, np.arange(patches[0], patches[0] + 64))  # 3 tiles + thumbnail, 16 each
    assert all(tokens[p] == IMAGE_TOKEN for p in patches) and (kinds == TokenKind.IMAGE_GLOBAL).sum() == 16
    assert tokens[patches[0] - 1] == START_IMAGE and tokens[patches[-1] + 1] == END_IMAGE
    assert kinds[patches[0] - 1] == kinds[patches[-1] + 1] == TokenKind.IMAGE_SPECIAL
    assert [tokens[p] for p in np.flatnonzero(kinds == TokenKind.SPECIAL)] == ["<|im_start|>", "<|im_end|>"] + [
        "<|im_start|>"
    ]
    assert patches.size <= adapter.max_image_tokens()
    with pytest.raises(RuntimeError, match="InternVLAdapter.prepare"):
        adapter.layout(ids, dict(inputs))


def test_loads_without_torchvision_from_a_checkpoint_layout(internvl_runs, tmp_path):
    """Real InternVL-hf folders carry a video_preprocessor_config.json; images need no torchvision."""
    folder = tmp_path / "internvl"
    shutil.copytree(internvl_runs.path, folder)
    (folder / "video_preprocessor_config.json").write_text(
        json.dumps({"video_processor_type": "InternVLVideoProcessor"})
    )
    adapter = load_adapter(str(folder))
    assert isinstance(adapter, InternVLAdapter) and adapter.family == "internvl" and adapter.random_weights
    assert json.loads((folder / "config.json").read_text())["model_type"] == "internvl"
    assert json.loads((folder / "processor_config.json").read_text())["processor_class"] == "InternVLProcessor"
    settings = json.loads(json.dumps(adapter.processor_settings()))
    assert (settings["max_patches"], settings["image_seq_length"]) == (6, 16)
