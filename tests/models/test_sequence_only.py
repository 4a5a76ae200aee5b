"""Sequence-only mode: a model without a geometry adapter (here Idefics2, perceiver latents on purpose)
extracts rows, tokens and kinds; the store says `geometry: none` and why; nothing draws a patch map.
(Rows vs eager, batch and generate for it: tests/extraction/test_extract.py, family "sequence_only".)"""

import json

import numpy as np
import pytest

from attnstore.cli import main
from attnstore.errors import ModelLoadError, NoGeometry
from attnstore.extraction.demo import tiny_model_dir
from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import SEQUENCE_ONLY, adapter_for_model_type, load_adapter
from attnstore.models.sequence_only import SequenceOnlyAdapter
from attnstore.schema import TokenKind
from attnstore.store import open_dataset


@pytest.fixture(scope="module")
def adapter(attnstore_cache):
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    return load_adapter(str(tiny_model_dir(SEQUENCE_ONLY)))


@pytest.fixture(scope="module")
def store(adapter, tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq-images")
    for i, size in enumerate([(320, 200), (150, 260)]):
        _gradient_image(*size, seed=i).save(folder / f"im{i}.png")
    out = folder.parent / "seq.zarr"
    args = ["extract", "--image-dir", str(folder), "--model", adapter.model_id, "--out", str(out)]
    assert main([*args, "--max-new-tokens", "3", "--no-progress"]) == 0
    return str(out)


def test_image_text_to_text_types_without_adapter_fall_back_to_sequence_only():
    assert adapter_for_model_type("idefics2") is SequenceOnlyAdapter
    assert adapter_for_model_type("blip-2") is SequenceOnlyAdapter
    with pytest.raises(ModelLoadError, match="not an image-text-to-text model"):
        adapter_for_model_type("bert")


def test_kinds_come_from_the_processors_image_token_id(adapter):
    inputs = adapter.prepare(_gradient_image(300, 200), "Can you describe this image?")
    ids = inputs["input_ids"][0].numpy()
    layout = adapter.layout(ids, inputs)
    image = np.flatnonzero(ids == adapter.processor.image_token_id)
    assert image.size == adapter.model.config.perceiver_config.resampler_n_latents  # one block of latents
    assert np.array_equal(np.flatnonzero(layout.kind == TokenKind.IMAGE_TILE), image)
    tokens = adapter.token_strings(ids)
    assert {tokens[p] for p in np.flatnonzero(layout.kind == TokenKind.SPECIAL)} >= {"<fake_token_around_image>"}
    assert np.isnan(layout.patch_box).all() and (layout.patch_row == -1).all()
    assert layout.grid_rows == layout.grid_cols == layout.global_rows == 0
    assert adapter.max_image_tokens() >= image.size


def test_store_says_geometry_none_and_why(store, capsys):
    ds = open_dataset(store)
    assert ds.attrs["model_family"] == SEQUENCE_ONLY and ds.attrs["geometry"] == "none"
    assert ds.attrs["model_type"] == "idefics2" and "perceiver" in ds.attrs["geometry_note"]
    kinds = ds.token_kind.values[0, : int(ds.n_key[0])]
    assert (kinds == TokenKind.IMAGE_TILE).sum() > 0 and np.isnan(ds.patch_box.values).all()
    assert main(["validate", store]) == 0
    capsys.readouterr()
    assert main(["info", store]) == 0
    assert "geometry: none, model type 'idefics2'" in " ".join(capsys.readouterr().out.split())
    assert main(["heatmap", store, "--token", "@answer", "--image", "0", "--output", store + ".png"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no patch map" in err and "perceiver" in err


def test_library_refuses_a_patch_map_instead_of_drawing_a_wrong_one(store):
    ds = open_dataset(store)
    with pytest.raises(NoGeometry, match="sequence-only"):
        ds.attn.heatmap(token=int(ds.query_position[0, 0]), image=0)
    # What needs no geometry works: image share per layer and head, modality mass.
    share = ds.attn.image_share(int(ds.n_query[0]) - 1, 0).values  # [layer, head] of the last answer token
    assert share.shape == (ds.sizes["layer"], ds.sizes["head"]) and np.all((share > 0) & (share < 1))


def test_explorer_shows_tokens_and_charts_and_says_why_no_patch_map(store):
    from explorer import create_app, views
    from explorer.panels import heatmap, modality
    from explorer.state import StoreState
    from explorer.tokens import chip_label, strip_items

    state = StoreState(store)
    params = views.default_params(state)
    drawn = heatmap.draw(state, params, heatmap.DEFAULT_STYLE, None, lambda i: f"/img/{i}.png")
    assert "no patch map" in str(drawn.status) and "perceiver" in str(drawn.status) and not drawn.message
    view = json.loads(drawn.view_json)
    assert view["tiles"] is None and view["global"] is None  # no heatmap values at all
    assert not [t for t in drawn.figure["data"] if t.get("type") == "heatmap" and t.get("visible", True)]
    stats = views.layer_head_stats(state, params)
    assert stats["share"].shape == (state.n_layers, state.n_heads) and np.isfinite(stats["entropy"]).all()
    assert np.isfinite(modality.allocation(state, params)).all()
    assert chip_label(-1, int(TokenKind.IMAGE_TILE), 0) == "image tokens"
    meta = state.image(0)
    img = meta.img
    n = int(img.n_key)
    chips = [item for item in strip_items(
        list(img.token_text.values[:n]), img.token_kind.values[:n], img.patch_tile.values[:n],
        img.patch_row.values[:n], img.patch_col.values[:n], img.query_position.values[: int(img.n_query)], 0,
    ) if item["t"] == "chip"]  # fmt: skip
    assert len(chips) == 1 and chips[0]["label"] == "image tokens"
    cells = np.array(chips[0]["cells"])  # [token, (key, row, col)]: in sequence order, one cell each
    assert len({(r, c) for _, r, c in cells}) == len(cells) and (cells[:, 1:] >= 0).all()
    page = create_app(state).server.test_client().get("/")
    assert page.status_code == 200


def test_validate_catches_boxes_in_a_store_that_says_none(store, tmp_path):
    import shutil

    import zarr

    copy = tmp_path / "bad.zarr"
    shutil.copytree(store, copy)
    boxes = zarr.open_group(str(copy))["patch_box"]
    boxes[0, 0] = [0, 0, 0.5, 0.5]
    assert main(["validate", str(copy)]) == 1


def test_a_layer_outside_the_attention_interface_is_an_error_not_zero_rows(adapter, monkeypatch):
    """Sequence-only mode takes any model: one whose attention bypasses the interface must not store zeros."""
    from attnstore.extraction.extract import extract
    from attnstore.models import capture

    record = capture.RowCapture.record

    def skip_layer_one(self, layer, *args):
        if layer != 1:
            record(self, layer, *args)

    monkeypatch.setattr(capture.RowCapture, "record", skip_layer_one)
    with pytest.raises(ModelLoadError, match="layers 1 never called"):
        extract(adapter, _gradient_image(120, 80), "Describe.", max_new_tokens=2)
