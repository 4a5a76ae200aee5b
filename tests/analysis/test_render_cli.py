"""Rendering (arrays -> PNG), the heatmap / aggregate commands and the dataset-level aggregate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.colors as pc
import pytest
import xarray as xr
from PIL import Image

import attnstore.analysis as A
from attnstore import render
from attnstore.cli import main
from attnstore.errors import AttnstoreError
from attnstore.schema import TokenKind
from attnstore.store import open_dataset

REPO = Path(__file__).resolve().parents[2]

# -- render ------------------------------------------------------------------------------------------


def test_colormap_matches_plotly_endpoints_and_nan_is_transparent():
    lut = render.colormap_lut("viridis")
    assert lut.shape == (256, 3)
    first, last = pc.sequential.Viridis[0], pc.sequential.Viridis[-1]
    assert tuple(lut[0]) == tuple(int(first[i : i + 2], 16) for i in (1, 3, 5))
    assert tuple(lut[-1]) == tuple(int(last[i : i + 2], 16) for i in (1, 3, 5))
    rgba = render.colorize(np.array([[0.0, np.nan], [0.5, 1.0]]))
    assert rgba[0, 1, 3] == 0 and (rgba[[0, 1, 1], [0, 0, 1], 3] == 255).all()
    assert tuple(rgba[1, 1, :3]) == tuple(lut[-1])
    with pytest.raises(AttnstoreError, match="cmap 'nope' is unknown"):
        render.colormap_lut("nope")


def test_place_grid_matches_pixel_loop():
    """Every pixel takes the colour of the cell whose box holds its centre (a loop reference)."""
    rng = np.random.default_rng(3)
    rows, cols, width, height = 3, 5, 47, 29
    rgba = rng.integers(0, 255, (rows, cols, 4), dtype=np.uint8)
    boxes = render.uniform_boxes(rows, cols)
    got = render.place_grid(rgba, boxes, width, height)
    for y in range(height):
        for x in range(width):
            u, v = (x + 0.5) / width, (y + 0.5) / height
            cell = [(r, c) for r in range(rows) for c in range(cols)
                    if boxes[r, c, 0] <= u < boxes[r, c, 2] and boxes[r, c, 1] <= v < boxes[r, c, 3]]  # fmt: skip
            assert len(cell) == 1
            np.testing.assert_array_equal(got[y, x], rgba[cell[0]])


def test_overlay_blends_only_where_cells_are(synthetic_store):
    ds = open_dataset(synthetic_store)
    img = A.select_image(ds, 0)
    pixels = img["pixels"].values
    grid = np.full((int(img["grid_rows"]), int(img["grid_cols"])), np.nan)
    grid[5, 7] = 1.0  # one cell, the rest NaN: untouched pixels
    boxes = A.grid_boxes(img).values
    out = np.asarray(render.overlay(pixels, grid, boxes, alpha=1.0, cmap="magma", vmin=0.0, vmax=1.0))
    h, w = pixels.shape[:2]
    x0, y0, x1, y1 = boxes[5, 7]
    changed = np.any(out != pixels, axis=-1)
    ys, xs = np.nonzero(changed)
    assert xs.min() == round(x0 * w) and xs.max() == round(x1 * w) - 1
    assert ys.min() == round(y0 * h) and ys.max() == round(y1 * h) - 1
    assert tuple(out[ys[0], xs[0]]) == tuple(render.colormap_lut("magma")[-1])
    half = np.asarray(render.overlay(pixels, grid, boxes, alpha=0.5, vmin=0.0, vmax=1.0))
    expected = (pixels[ys[0], xs[0]].astype(int) + render.colormap_lut()[-1].astype(int)) / 2
    np.testing.assert_allclose(half[ys[0], xs[0]], expected, atol=1)
    with pytest.raises(AttnstoreError, match="overlay_alpha"):
        render.overlay(pixels, grid, boxes, alpha=1.5)


def test_heatmap_image_and_png_bytes():
    image = render.heatmap_image(np.arange(6, dtype=float).reshape(2, 3), cell_px=4)
    assert image.size == (12, 8)
    data = render.png_bytes(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


# -- heatmap CLI ------------------------------------------------------------------------------------


def test_heatmap_cli_outputs_match_library(synthetic_store, tmp_path, capsys):
    out, ov, csv = tmp_path / "h.png", tmp_path / "o.png", tmp_path / "g.csv"
    args = [
        "heatmap",
        synthetic_store,
        "--token",
        "jacket",
        "--image",
        "synthetic_00001.png",
        "--layers",
        "0-1",
        "--topk",
        "5",
        "--output",
        str(out),
        "--overlay",
        str(ov),
        "--overlay-alpha",
        "0.4",
        "--csv",
        str(csv),
    ]
    assert main(args) == 0  # fmt: skip
    ds = open_dataset(synthetic_store)
    expected = ds.attn.heatmap(token="jacket", image=1, layers=[0, 1], k=5).values
    table = pd.read_csv(csv)  # long format: one row per patch token of both grids
    tiles = table[table["view"] == "tiles"]
    got = np.full(expected.shape, np.nan)
    got[tiles["grid_row"], tiles["grid_col"]] = tiles["value"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert (table["view"] == "global").sum() == int(ds.global_rows[1] * ds.global_cols[1])
    assert Image.open(out).size == (expected.shape[1] * 16, expected.shape[0] * 16)
    assert Image.open(ov).size == (int(ds.image_width[1]), int(ds.image_height[1]))
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--token", "jackets"], "close matches: 'jacket'"),
        (["--token", "jacket", "--layers", "0-9"], "outside 0-1"),
        (["--token", "jacket", "--method", "median"], "method must be one of"),
        (["--token", "jacket", "--image", "nope.png"], "no image named"),
        (["--token", "jacket", "--output", "/no/such/dir/h.png"], "does not exist"),
    ],
)
def test_heatmap_cli_user_errors(synthetic_store, capsys, extra, message):
    assert main(["heatmap", synthetic_store, *extra]) == 1
    assert message in capsys.readouterr().err


def test_heatmap_user_error_prints_one_line_without_traceback(synthetic_store):
    attnstore = Path(sys.executable).parent / "attnstore"
    proc = subprocess.run([str(attnstore), "heatmap", synthetic_store, "--token", "zebra"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# -- dataset-level aggregate ---------------------------------------------------------------------------


def ref_density(grid: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Loop reference: the value / area of the cell whose box holds each target cell's centre."""
    out = np.full((size, size), np.nan)
    for i in range(size):
        for j in range(size):
            u, v = (j + 0.5) / size, (i + 0.5) / size
            for r in range(grid.shape[0]):
                for c in range(grid.shape[1]):
                    x0, y0, x1, y1 = boxes[r, c]
                    if x0 <= u < x1 and y0 <= v < y1:
                        out[i, j] = grid[r, c] / ((x1 - x0) * (y1 - y0))
    return out


def test_aggregate_rows_and_mean_map_match_per_image_reference(synthetic_store):
    ds = open_dataset(synthetic_store)
    result = A.aggregate_token(ds, "a", k=5, grid_size=8, batch_size=2)
    densities, n = [], 0
    for i in range(ds.sizes["image"]):
        img = A.select_image(ds, i)
        for occ, q in enumerate(A.token_occurrences(img, "a")):
            row = result.isel(occurrence=n)
            w = A.token_weights(img, q)
            m = A.reduce_heads(w, img, "entropy_topk", k=5)
            assert (int(row.image), int(row.occurrence_index), int(row["query"])) == (i, occ, q)
            assert float(row.image_share) == pytest.approx(float(A.image_share(w, img).mean()), rel=1e-5)
            assert float(row.entropy) == pytest.approx(float(A.entropy(w, img).mean()), rel=1e-5)
            peak = int(np.argmax(np.where(A.image_key_mask(img).values, m.values, -1)))
            assert int(row.peak_key) == peak and float(row.peak_value) == pytest.approx(float(m[peak]), rel=1e-5)
            assert (int(row.peak_row), int(row.peak_col)) == (int(img.patch_row[peak]), int(img.patch_col[peak]))
            assert str(row.peak_view.values) == ("global" if img.token_kind[peak] == TokenKind.IMAGE_GLOBAL else "tile")
            grid = A.patch_grid(m, img).values
            densities.append(ref_density(grid, A.grid_boxes(img).values, 8))
            n += 1
    assert result.sizes["occurrence"] == n == 6
    np.testing.assert_allclose(result["mean_map"].values, np.nanmean(densities, axis=0), rtol=1e-4)
    assert (result["count"].values == 6).all()


@pytest.mark.parametrize("mode", ["raw", "image", "no_sinks"])
def test_summarise_rows_fast_path_equals_reduce_heads(synthetic_store, mode):
    img = A.select_image(open_dataset(synthetic_store), 0)
    rows = A.token_occurrences(img, "a")
    got = A.summarise_rows(img, rows, k=4, normalise_mode=mode, layers=[1])
    for occ, q in enumerate(rows):
        w = A.normalise(A.token_weights(img, q).isel(layer=[1]), img, mode)
        m = A.reduce_heads(w, img, "entropy_topk", k=4)
        assert float(got["map_entropy"][occ]) == pytest.approx(float(A.entropy(m, img)), abs=1e-5)
        assert int(got["peak_key"][occ]) == int(np.argmax(np.where(A.image_key_mask(img).values, m.values, -1)))


def test_aggregate_cli_csv_and_zarr(synthetic_store, tmp_path, capsys):
    out = tmp_path / "dog.csv"
    assert main(["aggregate", synthetic_store, "--token", "dog", "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 3 and list(table["image"]) == [0, 1, 2]
    assert {"image_share", "entropy", "peak_row", "peak_col", "peak_x0", "image_name"} <= set(table.columns)
    mean = pd.read_csv(tmp_path / "dog_mean_map.csv", index_col=0)
    assert mean.shape == (32, 32)
    assert "3 occurrence(s) in 3 of 3 images" in capsys.readouterr().out
    assert main(["aggregate", synthetic_store, "--token", "dog", "--out", str(tmp_path / "d.zarr"),
                 "--method", "mean", "--no-progress"]) == 0  # fmt: skip
    stored = xr.open_zarr(tmp_path / "d.zarr")
    assert stored.attrs["method"] == "mean" and stored["mean_map"].shape == (32, 32)


def test_aggregate_cli_errors(synthetic_store, tmp_path, capsys):
    assert main(["aggregate", synthetic_store, "--token", "zebra", "--out", str(tmp_path / "z.csv")]) == 1
    assert "occurs in none of the 3 complete images" in capsys.readouterr().err
    assert main(["aggregate", synthetic_store, "--token", "dog", "--out", str(tmp_path / "z.xlsx")]) == 1
    assert "--out must end in" in capsys.readouterr().err


def test_parquet_needs_pyarrow_or_writes(synthetic_store, tmp_path, capsys):
    out = tmp_path / "dog.parquet"
    code = main(["aggregate", synthetic_store, "--token", "dog", "--out", str(out), "--no-progress"])
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert code == 1 and "needs pyarrow" in capsys.readouterr().err and not out.exists()
    else:
        assert code == 0 and len(pd.read_parquet(out)) == 3


# -- seed script ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compute_token_heatmap_script_on_seed_files_equals_store(synthetic_store, tmp_path):
    seed = tmp_path / "seed"
    assert main(["export-legacy", synthetic_store, "--image", "2", "--out", str(seed), "--formats", "npz,image"]) == 0
    script = str(REPO / "scripts" / "compute_token_heatmap.py")
    common = ["--token", "jacket", "--layers", "0-1", "--topk", "10", "--overlay-alpha", "0.5"]
    from_seed = [sys.executable, script, "--decoded-tokens", str(seed / "decoded_tokens.npy"),
                 "--attn-dir", str(seed / "attentions_5"), "--output", str(tmp_path / "a.png"),
                 "--overlay", str(tmp_path / "ao.png"), *common]  # fmt: skip
    from_store = [sys.executable, script, "--store", synthetic_store, "--image", "2",
                  "--output", str(tmp_path / "b.png"), "--overlay", str(tmp_path / "bo.png"), *common]  # fmt: skip
    for cmd in (from_seed, from_store):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "ao.png").read_bytes() == (tmp_path / "bo.png").read_bytes()
