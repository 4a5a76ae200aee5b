"""`attnstore demo --queries`: the rows kept, as extract's option; a wrong mode fails before any building."""

from __future__ import annotations

from attnstore.cli import main


def test_a_wrong_queries_mode_is_one_line_before_building(tmp_path, capsys):
    out = tmp_path / "demo.zarr"
    assert main(["demo", "--out", str(out), "--no-serve", "--queries", "patches"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--queries must be one of text, text+image, all, not 'patches'" in err
    assert not out.exists()
