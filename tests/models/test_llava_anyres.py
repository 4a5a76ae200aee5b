"""LLaVA-NeXT and LLaVA-OneVision (any-resolution): geometry against the processor's own pixels arranged by
transformers' own `pack_image_features`, stores, loading (capture and generate: tests/extraction/test_extract.py)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from support.vlm_family_checks import expected_colours
from support.vlm_family_checks import run_layout as shared_run_layout

from attnstore.cli import main
from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import load_adapter
from attnstore.models.llava_anyres import (
    LlavaNextAdapter,
    LlavaOnevisionAdapter,
    anyres_grid,
    crop_side,
    onevision_images_processor_class,
)
from attnstore.schema import TokenKind
from attnstore.store import open_dataset

FAMILIES = ("llava_next", "llava_onevision")
ADAPTERS = {"llava_next": LlavaNextAdapter, "llava_onevision": LlavaOnevisionAdapter}
# (width, height): square, wide, tall, tiny, large
SHAPES = [(336, 336), (640, 360), (300, 700), (20, 12), (1500, 700)]
TOLERANCE = 0.015  # max |colour error| as a fraction of the colour range


@pytest.fixture(scope="module")
def anyres_adapters(family_adapter):
    return family_adapter  # (family, kernel) -> the tiny model, loaded once per session


# -- geometry -----------------------------------------------------------------------------------


def policy_adapter(adapter, policy: str):
    """The tiny model's processor (56 px crops, scaled pinpoints), or the real checkpoint's image processing."""
    if policy == "tiny":
        return adapter
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor, LlavaOnevisionImageProcessorPil

    p = adapter.processor
    if isinstance(adapter, LlavaOnevisionAdapter):  # llava-onevision-qwen2-*-ov-hf: 384 px, 6 x 6 pinpoints
        ip = LlavaOnevisionImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)
        processor = onevision_images_processor_class()(
            ip, p.tokenizer, num_image_tokens=(384 // 14) ** 2, vision_feature_select_strategy="full"
        )
        processor.chat_template = p.chat_template
    else:  # llava-v1.6-*-hf: 336 px crops, 5 pinpoints
        ip = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        processor = LlavaNextProcessor(
            ip, p.tokenizer, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1
        )
        processor.chat_template = p.chat_template
    return type(adapter)(adapter.model, processor, model_id=adapter.model_id)


def packed_colours(adapter, inputs, vision_aspect_ratio: str | None = None) -> np.ndarray:
    """Mean (red, green) of the processed pixels behind each image-block position, in token order  # [token, 2].

    Each patch of `pixel_values` (normalisation undone) becomes a 2-channel feature, and transformers'
    own `pack_image_features` orders, unpads, resamples and adds newlines exactly as the model does
    (newline positions come out NaN). Nothing here uses the adapter's arithmetic.
    """
    from transformers import LlavaNextModel, LlavaOnevisionModel

    ip = adapter.processor.image_processor
    mean, std = np.asarray(ip.image_mean)[:, None, None], np.asarray(ip.image_std)[:, None, None]
    pixels = inputs["pixel_values"][0].numpy()  # [view, rgb, y, x]
    views, _, side, _ = pixels.shape
    p = adapter.patch_size
    n = side // p
    rg = (pixels * std + mean)[:, :2, : n * p, : n * p]  # the last side % p pixels reach no patch
    cells = rg.reshape(views, 2, n, p, n, p).mean((3, 5)).reshape(views, 2, n * n)  # [view, rg, patch]
    config = SimpleNamespace(
        vision_config=SimpleNamespace(image_size=side, patch_size=p), image_grid_pinpoints=ip.image_grid_pinpoints
    )
    features, sizes = [torch.as_tensor(cells.transpose(0, 2, 1))], inputs["image_sizes"]  # [view, patch, rg]
    model = SimpleNamespace(config=config)
    newline = torch.full((2,), float("nan"), dtype=features[0].dtype)
    if isinstance(adapter, LlavaOnevisionAdapter):
        ratio = vision_aspect_ratio or adapter.processor.vision_aspect_ratio
        packed, _ = LlavaOnevisionModel.pack_image_features(model, features, sizes, newline, ratio)
    else:
        packed, _ = LlavaNextModel.pack_image_features(model, features, sizes, "default", newline)
    return packed[0].numpy()


def run_layout(adapter, width: int, height: int):
    """(inputs, layout, the image placeholder's positions)."""
    inputs, layout = shared_run_layout(adapter, width, height)
    return inputs, layout, np.flatnonzero(inputs["input_ids"][0].numpy() == adapter.image_token_id)


def nominal_cells(boxes: np.ndarray) -> tuple[float, float]:
    """(width, height) of an unclipped crop-grid patch: the largest box (all whole patches are equal)."""
    return float((boxes[:, 2] - boxes[:, 0]).max()), float((boxes[:, 3] - boxes[:, 1]).max())


def resampled(adapter, inputs) -> bool:
    """True when OneVision resampled the crop grid: without its `anyres_max_N` limit the block is longer."""
    if not isinstance(adapter, LlavaOnevisionAdapter):
        return False
    unlimited = packed_colours(adapter, inputs, vision_aspect_ratio="anyres_max_1000000")
    return unlimited.shape[0] != packed_colours(adapter, inputs).shape[0]


@pytest.mark.parametrize("policy", ["tiny", "real"])
@pytest.mark.parametrize("width,height", SHAPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_token_boxes_match_processed_pixels(anyres_adapters, family, policy, width, height):
    adapter = policy_adapter(anyres_adapters(family), policy)
    inputs, layout, positions = run_layout(adapter, width, height)
    colours = packed_colours(adapter, inputs)
    assert colours.shape[0] == positions.size  # the model fills exactly the prompt's image block
    kinds = layout.kind[positions]
    # Newline tokens: exactly where the model puts image_newline; image specials without a box.
    newline = np.isnan(colours).all(1)
    assert np.array_equal(kinds == TokenKind.IMAGE_SPECIAL, newline) and newline.sum() == layout.grid_rows
    assert np.isnan(layout.patch_box[positions[newline]]).all()
    boxes = layout.patch_box[positions]
    # Base view: the whole picture squashed to one crop, every patch inside it.
    base = kinds == TokenKind.IMAGE_GLOBAL
    assert base.sum() == layout.global_rows * layout.global_cols and np.flatnonzero(base)[-1] == base.sum() - 1
    error = np.abs(colours[base] - expected_colours(boxes[base], width, height))
    assert error.max() < TOLERANCE, f"base view: max colour error {error.max():.3f}"
    # Crop grid: a patch partly on the zero padding shows the picture's colour times its share of the cell.
    crop = kinds == TokenKind.IMAGE_TILE
    cell_w, cell_h = nominal_cells(boxes[crop])
    share = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (cell_w * cell_h)
    expected = expected_colours(boxes, width, height) * share[:, None]
    if resampled(adapter, inputs):  # resampled: edge cells blend in padded neighbours
        margin = np.array([-cell_w, -cell_h, cell_w, cell_h])
        crop &= ((boxes + margin >= 0) & (boxes + margin <= 1)).all(1)
    assert crop.sum() >= layout.grid_rows
    error = np.abs(colours[crop] - expected[crop])
    assert error.max() < TOLERANCE, f"crop grid: max colour error {error.max():.3f}"


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_mappings_fail_the_pixel_check(anyres_adapters, family):
    """The colour check is tight: the crop grid one row or one column off, or transposed, is caught."""
    width, height = 640, 360
    adapter = anyres_adapters(family)
    inputs, layout, positions = run_layout(adapter, width, height)
    colours = packed_colours(adapter, inputs)[layout.kind[positions] == TokenKind.IMAGE_TILE]
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    rows, cols = layout.grid_rows, layout.grid_cols
    inner = (boxes[:, 0] > 0.1) & (boxes[:, 2] < 0.9) & (boxes[:, 1] > 0.1) & (boxes[:, 3] < 0.9)
    cell_w, cell_h = nominal_cells(boxes)
    one_row_off, one_col_off = boxes + [0, cell_h, 0, cell_h], boxes + [cell_w, 0, cell_w, 0]
    col, row = np.divmod(np.arange(rows * cols), rows)  # tokens read column-major
    transposed = np.stack([col / cols, row / rows, (col + 1) / cols, (row + 1) / rows], axis=1)
    for wrong in (one_row_off, one_col_off, transposed):
        assert np.abs(colours[inner] - expected_colours(wrong[inner], width, height)).max() > 2 * TOLERANCE


@pytest.mark.parametrize(
    "family,width,height,crops,tiles",
    [
        ("llava_next", 640, 360, (2, 2), (1, 1)),  # unpadded rows: one crop-grid tile
        ("llava_next", 112, 56, (1, 2), (1, 2)),  # the picture fills the pinpoint: each crop a tile
        ("llava_onevision", 640, 360, (4, 6), (1, 1)),  # resampled down from 16 x 24 patches
        ("llava_onevision", 112, 56, (1, 2), (1, 2)),
    ],
)
def test_crop_grid_and_tiles(anyres_adapters, family, width, height, crops, tiles):
    adapter = anyres_adapters(family)
    inputs, layout, positions = run_layout(adapter, width, height)
    n = int(inputs["pixel_values"].shape[-1]) // adapter.patch_size
    assert int(inputs["pixel_values"].shape[1]) == crops[0] * crops[1] + 1  # base view + the chosen crops
    assert (layout.global_rows, layout.global_cols) == (n, n)
    assert (layout.tile_rows, layout.tile_cols) == tiles
    tile = layout.patch_tile[layout.kind == TokenKind.IMAGE_TILE]
    assert sorted(set(tile.tolist())) == list(range(tiles[0] * tiles[1]))
    if tiles != (1, 1):  # crops are tiles of n x n patches, in row-major order
        assert (layout.grid_rows, layout.grid_cols) == (crops[0] * n, crops[1] * n)
        crop = layout.kind == TokenKind.IMAGE_TILE
        rows, cols = layout.patch_row[crop], layout.patch_col[crop]
        assert np.array_equal(tile, rows // n * tiles[1] + cols // n)
    assert resampled(adapter, inputs) == (family == "llava_onevision" and crops == (4, 6))
    assert positions.size <= adapter.max_image_tokens()


@pytest.mark.parametrize("policy", ["tiny", "real"])
@pytest.mark.parametrize("family", FAMILIES)
def test_block_length_matches_the_processor_for_any_aspect(anyres_adapters, family, policy):
    """Over extreme and ordinary sizes, the grid gives the processor's own token count, within the bound."""
    adapter = policy_adapter(anyres_adapters(family), policy)
    ip = adapter.processor.image_processor
    side = crop_side(ip)
    views = 1 + max(h // side * (w // side) for h, w in ip.image_grid_pinpoints)
    sizes = [(h, w) for h in (7, 60, 333, 1000, 4000) for w in (9, 100, 480, 1777, 6000)]
    counts = adapter.processor._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"]
    for (height, width), count in zip(sizes, counts):
        grid = anyres_grid((height, width), (1, views, 3, side, side), 14, ip.image_grid_pinpoints, adapter.max_crops)
        assert grid.n_tokens == count, (height, width)
    assert max(counts) <= adapter.max_image_tokens()


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_kinds(anyres_adapters, family):
    adapter = anyres_adapters(family)
    inputs, layout, positions = run_layout(adapter, 640, 360)
    tokens = adapter.token_strings(inputs["input_ids"][0].numpy())
    assert np.array_equal(positions, np.arange(positions[0], positions[0] + positions.size))  # one block
    block = layout.kind[positions]
    assert set(block.tolist()) == {TokenKind.IMAGE_GLOBAL, TokenKind.IMAGE_TILE, TokenKind.IMAGE_SPECIAL}
    # Each crop-grid row ends with its newline token.
    rows = block[layout.global_rows * layout.global_cols :].reshape(layout.grid_rows, layout.grid_cols + 1)
    assert (rows[:, -1] == TokenKind.IMAGE_SPECIAL).all() and (rows[:, :-1] == TokenKind.IMAGE_TILE).all()
    outside = np.delete(layout.kind, positions)
    specials = {tokens[p] for p in np.flatnonzero(layout.kind == TokenKind.SPECIAL)}
    assert set(outside.tolist()) == {TokenKind.SPECIAL, TokenKind.PROMPT_TEXT}
    assert specials == ({"<s>"} if family == "llava_next" else {"<|im_start|>", "<|im_end|>"})
    assert set(adapter.tokenizer.convert_ids_to_tokens(adapter.banned_token_ids())) >= {"<image>"}


@pytest.mark.parametrize("family", FAMILIES)
def test_outputs_the_geometry_cannot_explain_are_refused(anyres_adapters, family):
    """A truncated image block, or pixels holding fewer crops than the chosen grid, raise instead of guessing."""
    adapter = anyres_adapters(family)
    inputs, _, positions = run_layout(adapter, 640, 360)
    with pytest.raises(RuntimeError, match="image tokens"):
        adapter.layout(inputs["input_ids"][0].numpy()[: positions[0] + 10], inputs)
    fewer = {**inputs, "pixel_values": inputs["pixel_values"][:, :2]}
    with pytest.raises(RuntimeError, match="views, expected a base view"):
        adapter.layout(inputs["input_ids"][0].numpy(), fewer)
    # A base view squashed to 70 px then centre-cropped to 56 px shows only the middle of the picture.
    ip = adapter.processor.image_processor
    saved = ip.size, ip.crop_size, ip.do_center_crop
    try:
        ip.size, ip.crop_size, ip.do_center_crop = {"shortest_edge": 70}, {"height": 56, "width": 56}, True
        with pytest.raises(RuntimeError, match="squashes the base view to 70 px but its views are 56 px"):
            run_layout(adapter, 640, 360)
    finally:
        ip.size, ip.crop_size, ip.do_center_crop = saved


# -- store and loading -------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_extracts_into_a_valid_store(family, anyres_adapters, tmp_path):
    from attnstore.extraction.demo import tiny_model_dir

    anyres_adapters(family)  # builds the model once
    for i, size in enumerate([(320, 200), (150, 260)]):
        _gradient_image(*size, seed=i).save(tmp_path / f"im{i}.png")
    out = tmp_path / f"{family}.zarr"
    args = ["extract", "--image-dir", str(tmp_path), "--model", str(tiny_model_dir(family)), "--out", str(out)]
    assert main([*args, "--max-new-tokens", "2", "--no-progress"]) == 0
    assert main(["validate", str(out)]) == 0
    ds = open_dataset(str(out))
    assert ds.attrs["model_family"] == family and ds.attrs["random_weights"] is True
    img = ds.isel(image=0)
    kinds = img.token_kind.values[: int(img.n_key)]
    assert int((kinds == TokenKind.IMAGE_SPECIAL).sum()) == int(img.grid_rows)  # one newline per row
    assert int((kinds == TokenKind.IMAGE_GLOBAL).sum()) == int(img.global_rows) * int(img.global_cols) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_and_model_share_the_pinpoints(anyres_adapters, family):
    adapter = anyres_adapters(family)
    assert adapter.processor.image_processor.image_grid_pinpoints == adapter.model.config.image_grid_pinpoints
    settings = json.loads(json.dumps(adapter.processor_settings()))  # JSON-serialisable provenance
    assert settings["image_grid_pinpoints"][0][0] % 56 == 0


def test_onevision_loads_without_torchvision(anyres_adapters, tmp_path):
    """A OneVision folder names the real LlavaOnevisionProcessor and, like every real checkpoint, has a
    video processor config; plain AutoProcessor then needs torchvision, the adapter loads images only."""
    import shutil

    from transformers import AutoProcessor

    from attnstore.extraction.demo import tiny_model_dir

    folder = tmp_path / "tiny-onevision"
    shutil.copytree(tiny_model_dir("llava_onevision"), folder)
    saved = json.loads((folder / "processor_config.json").read_text())
    assert saved["processor_class"] == "LlavaOnevisionProcessor" and saved["vision_aspect_ratio"] == "anyres_max_9"
    video = {"video_processor_type": "LlavaOnevisionVideoProcessor", "processor_class": "LlavaOnevisionProcessor"}
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video))
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="Torchvision"):
            AutoProcessor.from_pretrained(folder)
    processor = load_adapter(str(folder)).processor
    assert getattr(processor, "video_processor", None) is None and processor.vision_aspect_ratio == "anyres_max_9"
    assert (
        processor.image_processor.image_grid_pinpoints
        == anyres_adapters("llava_onevision").model.config.image_grid_pinpoints
    )
