"""Geometry: token position -> box on the original image, checked against the processor's own pixels."""

import numpy as np
import pytest

from attnstore.extraction.synthetic import _gradient_image, idefics3_tokens
from attnstore.geometry import View, box_to_pixels, text_layout, tile_views, view_boxes
from attnstore.models.idefics3_layout import parse_idefics3_layout
from attnstore.schema import TokenKind


def test_view_boxes_cover_region_row_major():
    view = View(kind=TokenKind.IMAGE_TILE, region=(0.5, 0.0, 1.0, 0.5), patch_rows=2, patch_cols=4)
    boxes = view_boxes(view)
    assert boxes.shape == (8, 4)
    np.testing.assert_allclose(boxes[0], [0.5, 0.0, 0.625, 0.25])
    np.testing.assert_allclose(boxes[3], [0.875, 0.0, 1.0, 0.25])  # end of first row
    np.testing.assert_allclose(boxes[4], [0.5, 0.25, 0.625, 0.5])  # second row starts left


def test_view_boxes_clip_padding_outside_image():
    view = View(kind=TokenKind.IMAGE_GLOBAL, region=(-0.25, 0.0, 1.25, 1.0), patch_rows=1, patch_cols=3)
    boxes = view_boxes(view)
    assert boxes.min() >= 0 and boxes.max() <= 1
    np.testing.assert_allclose(boxes[0, [0, 2]], [0.0, 0.25])


def test_text_layout_kinds_before_any_view():
    """Chat specials first (a token both special and marker is special), then image markers, else prompt text."""
    layout = text_layout(["<s>", "<img>", "Hi", "<brk>", "<s>"], {"<s>"}, image_markers=("<img>", "<brk>", "<s>"))
    special, marker, text = TokenKind.SPECIAL, TokenKind.IMAGE_SPECIAL, TokenKind.PROMPT_TEXT
    assert layout.kind.tolist() == [special, marker, text, marker, special] and layout.kind.dtype == np.int8
    assert np.isnan(layout.patch_box).all() and (layout.patch_row == -1).all() and layout.views == []


def test_tile_views_offsets_on_stitched_grid():
    views = tile_views(2, 3, 8, 8)
    assert [v.tile for v in views] == list(range(6))
    assert views[4].grid_offset == (8, 8)
    assert views[4].region == pytest.approx((1 / 3, 0.5, 2 / 3, 1.0))


@pytest.mark.parametrize("rows,cols", [(3, 4), (1, 1), (4, 2), (0, 0)])
def test_parse_layout_grids_and_counts(rows, cols):
    tokens, n_prompt = idefics3_tokens(rows, cols, n_answer=0)
    layout = parse_idefics3_layout(tokens, image_seq_len=64)
    assert (layout.tile_rows, layout.tile_cols) == (rows, cols)
    assert (layout.grid_rows, layout.grid_cols) == (rows * 8, cols * 8)
    assert (layout.global_rows, layout.global_cols) == (8, 8)
    assert (layout.kind == TokenKind.IMAGE_TILE).sum() == rows * cols * 64
    assert (layout.kind == TokenKind.IMAGE_GLOBAL).sum() == 64
    # every tile cell of the stitched grid is hit exactly once
    tile = layout.kind == TokenKind.IMAGE_TILE
    cells = layout.patch_row[tile].astype(int) * max(cols * 8, 1) + layout.patch_col[tile]
    assert len(set(cells.tolist())) == rows * cols * 64
    # text around the image keeps its kind; newlines inside the image block do not count as text
    texts = [tokens[i] for i in np.flatnonzero(layout.kind == TokenKind.PROMPT_TEXT)]
    assert texts[:2] == ["User", ":"] and "Ċ" not in texts[:3]


def test_parse_layout_rejects_truncated_block():
    tokens, _ = idefics3_tokens(1, 2, n_answer=0)
    cut = tokens.index("<row_1_col_2>") + 10
    with pytest.raises(ValueError, match="truncated"):
        parse_idefics3_layout(tokens[:cut], image_seq_len=64)


def test_box_to_pixels():
    assert box_to_pixels(np.array([0.25, 0.5, 0.5, 1.0]), 640, 480) == (160, 240, 320, 480)


# Images of several shapes: the colour of each pixel encodes its position on the original
# (red = x, green = y), so the mean colour of the processor's pixels under a token tells where
# on the original that token looks. A transposed, shifted or mis-scaled mapping fails by far.
SHAPES = [(640, 480), (480, 640), (512, 512), (3000, 900), (100, 2000), (20, 12)]


@pytest.mark.parametrize("width,height", SHAPES)
def test_geometry_matches_processor_pixels(tiny_adapter, width, height):
    image = _gradient_image(width, height)
    inputs = tiny_adapter.prepare(image, "Describe.")
    layout = tiny_adapter.layout(inputs["input_ids"][0].numpy(), inputs)
    pixels = (inputs["pixel_values"][0].numpy() * 0.5 + 0.5) * 255  # [view, rgb, y, x], mean/std 0.5
    n_views, _, tile_h, tile_w = pixels.shape
    assert n_views == layout.tile_rows * layout.tile_cols + 1
    side_r, side_c = tile_h // 8, tile_w // 8
    patches = np.flatnonzero(np.isin(layout.kind, [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL]))
    errors = []
    for pos in patches:
        view = layout.patch_tile[pos] if layout.patch_tile[pos] >= 0 else n_views - 1  # global is last
        sub_r, sub_c = layout.patch_row[pos] % 8, layout.patch_col[pos] % 8
        patch = pixels[view, :2, sub_r * side_r : (sub_r + 1) * side_r, sub_c * side_c : (sub_c + 1) * side_c]
        x0, y0, x1, y1 = layout.patch_box[pos]
        errors.append([patch[0].mean() - (x0 + x1) / 2 * 255, patch[1].mean() - (y0 + y1) / 2 * 255])
    errors = np.abs(np.array(errors))
    # Resampling blurs a tiny source: allow a tolerance that grows with source-pixel size.
    tolerance = 2 + 255 / min(width, height)
    assert errors.max() < tolerance, errors.max(0)
