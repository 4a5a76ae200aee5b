"""The one export path (`attnstore.render.export_map`) on a real store: long CSV, SVG, PNGs.

Moved here from the explorer's tests when its own copies of these writers were deleted.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

import attnstore
from attnstore.analysis import MapSpec, compute_map
from attnstore.render import Style, colormap_lut, export_map, file_name
from attnstore.render.geometry import figure_geometry
from attnstore.schema import TokenKind

NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def ds(synthetic_store):
    return attnstore.open_dataset(synthetic_store)


@pytest.fixture(scope="module", params=[0, 1, 2], ids=["3x4", "4x3", "2x2"])
def result(request, ds):
    return compute_map(ds, MapSpec(image=request.param, token="jacket", layers=(1,), heads=(2,), method="mean"))


def test_csv_has_one_row_per_patch_with_its_value(result):
    rows = list(csv.DictReader(io.StringIO(export_map(result, "csv").decode())))
    kinds = np.asarray(result.img["token_kind"].values)
    assert len(rows) == int(np.isin(kinds, [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL]).sum())
    tiles, glob = result.grid("tiles").values, result.grid("global").values
    geom = figure_geometry(result.img, result.img.sizes["pixel_x"], result.img.sizes["pixel_y"])
    row = next(r for r in rows if r["view"] == "tiles" and r["grid_row"] == "2" and r["grid_col"] == "3")
    assert float(row["value"]) == pytest.approx(float(tiles[2, 3]), rel=1e-6)
    assert int(row["key"]) == geom.tiles.keys[2, 3]
    g = next(r for r in rows if r["view"] == "global" and r["grid_row"] == "1" and r["grid_col"] == "0")
    assert float(g["value"]) == pytest.approx(float(glob[1, 0]), rel=1e-6)
    # the value is the stored attention of that key (one head: the mean of one value)
    key = int(row["key"])
    stored = np.float32(result.img["attention"].isel(layer=1, head=2, query=result.row, key=key).values)
    assert float(row["value"]) == pytest.approx(float(stored), rel=1e-6)


def test_svg_is_valid_with_one_rect_per_value_and_a_full_title(result):
    svg = ET.fromstring(export_map(result, "svg", Style(cmap="magma")))
    cells = [r for r in svg.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    n_values = sum(int(np.isfinite(result.grid(v).values).sum()) for v in ("tiles", "global"))
    assert len(cells) == n_values
    top = max(cells, key=lambda r: float(r.find(f"{NS}title").text))
    assert top.get("fill") == "#{:02x}{:02x}{:02x}".format(*colormap_lut("magma")[-1])
    assert len(list(svg.iter(f"{NS}image"))) == 2  # the image and the global view's copy
    title = svg.find(f"{NS}text").text
    assert result.spec.describe() in title and "raw" in title  # normalisation included
    assert "token “ jacket”" in title and "Ġ" not in title  # the token as the explorer's strip shows it


def test_pngs(result):
    heat = Image.open(io.BytesIO(export_map(result, "png", Style(cell_px=4))))
    rows, cols = result.grid("tiles").shape
    assert heat.size == (cols * 4, rows * 4)
    pixels = np.asarray(result.img["pixels"].values)
    over = Image.open(io.BytesIO(export_map(result, "overlay")))
    assert over.size == (pixels.shape[1], pixels.shape[0])
    assert not np.array_equal(np.asarray(over), pixels)  # the heatmap is blended in
    assert file_name(result, "overlay", "x").endswith("_overlay.png")
