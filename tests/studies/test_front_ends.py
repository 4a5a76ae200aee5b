"""One registry, three front ends: `ds.attn.<analysis>`, `attnstore analyze`, and (listing) help;
tables and figures written; user mistakes are one line and write nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from attnstore.analysis.studies import ANALYSES, modality_allocation, register, save_table
from attnstore.cli import main
from attnstore.store import open_dataset


@pytest.fixture
def row_count_analysis():
    def plot(result):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.bar(result["image"].values, result["rows"].values)
        return fig

    @register("rows_test", "stored rows per image (a test analysis)", plot=plot)
    def rows(ds, images=None, num_workers=2, batch_size=32):
        n = ds["n_query"].values
        return xr.Dataset({"rows": ("image", n)}, coords={"image": np.arange(n.size)}, attrs={"analysis": "rows_test"})

    yield "rows_test"
    ANALYSES.unregister("rows_test")


def test_accessor_reads_the_registry(edge_store, row_count_analysis):
    ds = open_dataset(edge_store)
    xr.testing.assert_identical(ds.attn.modality(queries="prompt"), modality_allocation(ds, queries="prompt"))
    assert {"modality", "visual_ratio", "localisation", "sinks", "compare", row_count_analysis} <= set(dir(ds.attn))
    np.testing.assert_array_equal(ds.attn.rows_test()["rows"].values, ds["n_query"].values)
    with pytest.raises(AttributeError):
        ds.attn.no_such_analysis  # noqa: B018


def test_cli_lists_every_registered_analysis(row_count_analysis, capsys):
    assert main(["analyze"]) == 0
    out = capsys.readouterr().out
    for entry in ANALYSES.values():
        assert entry.name in out and entry.summary in out


def test_cli_writes_the_library_table_and_a_figure(edge_store, tmp_path, capsys):
    out, fig = tmp_path / "sinks.csv", tmp_path / "sinks.png"
    code = main(
        ["analyze", "sinks", edge_store, "--factor", "3", "--images", "0-4", "--out", str(out), "--plot", str(fig)]
    )
    assert code == 0, capsys.readouterr().err
    expected = open_dataset(edge_store).attn.sinks(factor=3.0, images=range(5))
    table = pd.read_csv(out)
    np.testing.assert_allclose(table["first_mass"], expected["first_mass"].values.reshape(-1), rtol=1e-6)
    per_image = pd.read_csv(tmp_path / "sinks_image.csv", keep_default_na=False)
    assert list(per_image["sink_positions"].astype(str)) == list(expected["sink_positions"].values)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_runtime_analysis_and_svg(edge_store, tmp_path, row_count_analysis):
    assert (
        main(
            [
                "analyze",
                row_count_analysis,
                edge_store,
                "--out",
                str(tmp_path / "r.parquet"),
                "--plot",
                str(tmp_path / "r.svg"),
            ]
        )
        == 0
    )
    assert list(pd.read_parquet(tmp_path / "r.parquet")["rows"]) == list(open_dataset(edge_store)["n_query"].values)
    assert b"<svg" in (tmp_path / "r.svg").read_bytes()[:400]


def test_cli_compare_with_other(edge_store, other_store, tmp_path):
    for plot in ("c.png", "c.svg"):
        args = ["analyze", "compare", edge_store, "--other", other_store, "--out", str(tmp_path / "c.nc")]
        assert main([*args, "--plot", str(tmp_path / plot)]) == 0
        assert (tmp_path / plot).stat().st_size > 1000
    saved = xr.open_dataset(tmp_path / "c.nc")
    expected = open_dataset(edge_store).attn.compare(other=other_store)
    np.testing.assert_allclose(saved["mean_jsd"].values, expected["mean_jsd"].values)


@pytest.mark.parametrize(
    "args,message",
    [
        (["analyze", "nope", "STORE", "--out", "OUT/t.csv"], "error: ANALYSIS must be one of"),  # positional
        (["analyze", "modality", "STORE", "--factor", "3", "--out", "OUT/t.csv"], "error: --factor does not apply"),
        (["analyze", "modality", "STORE", "--out", "OUT/t.csv", "--plot", "OUT/f.gif"], "error: --plot must end in"),
        (["analyze", "modality", "STORE", "--out", "OUT/t.txt"], "error: --out must end in"),
        (["analyze", "modality", "STORE", "--queries", "all", "--out", "OUT/t.csv"], "error: --queries must be one of"),
        (["analyze", "sinks", "STORE", "--images", "0-99", "--out", "OUT/t.csv"], "error: --images '0-99' is outside"),
        (["analyze", "compare", "STORE", "--out", "OUT/t.csv"], "error: --other is missing"),
        (["analyze", "visual_ratio", "STORE", "--label", "nope", "--out", "OUT/t.csv"], "error: --label 'nope'"),
    ],
)
def test_cli_mistakes_are_one_line_and_write_nothing(edge_store, tmp_path, capsys, args, message):
    args = [a.replace("STORE", edge_store).replace("OUT", str(tmp_path)) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and err.count("\n") == 0, err
    assert not list(tmp_path.iterdir())


def test_save_table_formats_round_trip(edge_store, tmp_path):
    result = open_dataset(edge_store).attn.localisation()
    files = save_table(result, tmp_path / "loc.parquet")
    assert [f.name for f in files] == ["loc.parquet", "loc_layer_head.parquet"]
    heads = pd.read_parquet(files[1])
    np.testing.assert_array_equal(heads["head_rank"], result["head_rank"].values.reshape(-1))
    save_table(result, tmp_path / "loc.zarr")
    xr.testing.assert_allclose(xr.open_zarr(tmp_path / "loc.zarr")["image_sum"], result["image_sum"])


@pytest.mark.parametrize(
    "name,options",
    [("modality", {}), ("visual_ratio", {"bootstrap": 20}), ("visual_ratio", {"label": None}), ("localisation", {})],
)
def test_every_figure_draws(edge_store, tmp_path, name, options):
    from attnstore.analysis.studies import plot_analysis

    result = open_dataset(edge_store).attn.__getattr__(name)(**options)
    path = plot_analysis(result, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000
