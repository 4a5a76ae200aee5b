"""Every model family goes through the same pipeline into the same schema: extract -> validate -> grids."""

import numpy as np
import pytest

from attnstore.cli import main
from attnstore.extraction.demo import tiny_model_dir
from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import FAMILIES, SEQUENCE_ONLY, tiny_builder
from attnstore.schema import TokenKind
from attnstore.store import open_dataset


@pytest.mark.parametrize("family", [f for f in FAMILIES if tiny_builder(f) is not None and f != SEQUENCE_ONLY])
def test_family_extracts_into_a_valid_store(family, tmp_path, attnstore_cache):
    for i, size in enumerate([(320, 200), (150, 260)]):
        _gradient_image(*size, seed=i).save(tmp_path / f"im{i}.png")
    out = tmp_path / f"{family}.zarr"
    args = ["extract", "--image-dir", str(tmp_path), "--model", str(tiny_model_dir(family))]
    assert main([*args, "--out", str(out), "--max-new-tokens", "3", "--no-progress"]) == 0
    assert main(["validate", str(out)]) == 0
    ds = open_dataset(str(out))
    assert ds.attrs["model_family"] == family and ds.attrs["random_weights"] is True
    for i in range(ds.sizes["image"]):
        img = ds.isel(image=i)
        kinds = img.token_kind.values[: int(img.n_key)]
        n_tile = int((kinds == TokenKind.IMAGE_TILE).sum())
        assert n_tile == int(img.grid_rows) * int(img.grid_cols) > 0
        rows = img.patch_row.values[: int(img.n_key)][kinds == TokenKind.IMAGE_TILE]
        cols = img.patch_col.values[: int(img.n_key)][kinds == TokenKind.IMAGE_TILE]
        assert rows.max() == int(img.grid_rows) - 1 and cols.max() == int(img.grid_cols) - 1
        boxes = img.patch_box.values[: int(img.n_key)][kinds == TokenKind.IMAGE_TILE]
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
