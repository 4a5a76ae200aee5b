"""Adding a method is one function and one registration: the CLI, the accessor and the export path
find it at once (the explorer and REST halves are in tests/explorer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnstore.analysis import METHODS, MapSpec, compute_map, select_layers_heads
from attnstore.cli import main
from attnstore.render import Style, export_map
from attnstore.store import open_dataset


@pytest.fixture
def median_method():
    @METHODS.register("median_test", "median over the selected layers and heads")
    def median(weights, img, *, layers, heads, k, keys):
        return select_layers_heads(weights, layers, heads).median(("layer", "head"))

    yield "median_test"
    METHODS.unregister("median_test")


def test_a_method_registered_at_run_time_reaches_cli_and_accessor(synthetic_store, tmp_path, median_method, capsys):
    csv = tmp_path / "m.csv"
    args = ["heatmap", synthetic_store, "--token", "dog", "--image", "1", "--method", median_method,
            "--output", str(tmp_path / "m.png"), "--csv", str(csv)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    ds = open_dataset(synthetic_store)
    grid = ds.attn.heatmap(token="dog", image=1, method=median_method).values
    weights = ds.attn.token("dog", image=1).values  # [layer, head, key]
    expected = np.median(weights.reshape(-1, weights.shape[-1]), axis=0)  # [key]
    tiles = pd.read_csv(csv).query("view == 'tiles'")
    keys = tiles["key"].to_numpy()
    np.testing.assert_allclose(tiles["value"].to_numpy(), expected[keys], rtol=1e-6)
    assert np.nanmax(grid) == pytest.approx(np.nanmax(tiles["value"]), rel=1e-6)
    assert main(["methods"]) == 0 and median_method in capsys.readouterr().out


def test_unknown_method_is_one_line_naming_the_flag_and_the_choices(synthetic_store, tmp_path, capsys):
    code = main(["heatmap", synthetic_store, "--token", "dog", "--method", "nope", "--output", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert err.startswith("error: --method must be one of") and "entropy_topk" in err
    assert not (tmp_path / "x.png").exists()


def test_cli_export_equals_library_export_byte_for_byte(synthetic_store, tmp_path):
    """The CLI writes exactly what export_map gives for the same spec (the explorer/REST side is in
    tests/explorer)."""
    files = {fmt: tmp_path / f"out.{fmt}" for fmt in ("png", "overlay", "csv", "svg", "json")}
    args = ["heatmap", synthetic_store, "--token", "jacket", "--image", "2", "--layers", "0-1", "--heads", "1,3",
            "--method", "max", "--normalise", "image", "--cmap", "magma", "--overlay-alpha", "0.3",
            "--output", str(files["png"]), "--overlay", str(files["overlay"]), "--csv", str(files["csv"]),
            "--svg", str(files["svg"]), "--json", str(files["json"])]  # fmt: skip
    assert main(args) == 0
    ds = open_dataset(synthetic_store)
    spec = MapSpec(image=2, token="jacket", layers=(0, 1), heads=(1, 3), method="max", normalise="image")
    result = compute_map(ds, spec)
    style = Style(cmap="magma", opacity=0.3)
    for fmt, path in files.items():
        assert path.read_bytes() == export_map(result, fmt, style), fmt


def test_analyze_options_are_the_ones_the_analyses_declare(synthetic_store, capsys):
    """`attnstore analyze` offers exactly what the registered analyses declare (`Option`), and
    refuses an option the named analysis does not declare."""
    import typer.main

    from attnstore.analysis.studies import ANALYSES
    from attnstore.cli import app

    command = typer.main.get_command(app).commands["analyze"]
    offered = {p.name for p in command.params} - {"analysis", "store", "out", "plot", "images", "workers"}
    assert offered == {o.name for entry in ANALYSES.values() for o in entry.options}
    assert {o.name for o in ANALYSES["sinks"].options} == {"queries", "factor"}
    assert main(["analyze", "sinks", synthetic_store, "--top", "3"]) == 1
    assert capsys.readouterr().err.strip() == "error: --top does not apply to sinks"
