"""`attnstore demo --queries`: the rows kept, as extract's option; a wrong mode fails before any building."""

from __future__ import annotations

from attnstore.cli import main


def test_a_wrong_queries_mode_is_one_line_before_building(tmp_path, capsys):
    out = tmp_path / "demo.zarr"
    assert main(["demo", "--out", str(out), "--no-serve", "--queries", "patches"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--queries must be one of text, text+image, all, not 'patches'" in err
    assert not out.exists()


def test_the_demo_store_keeps_the_rows_asked_for(tmp_path, monkeypatch):
    """The option reaches the extraction (the build itself is the pipeline's, tested there)."""
    import attnstore.extraction.demo as demo

    seen = {}

    def fake_build(out, model=None, queries="text", show_progress=True):
        seen.update(out=out, queries=queries)
        raise SystemExit(0)  # stop before the summary: only the arguments matter here

    monkeypatch.setattr(demo, "build_demo_store", fake_build)
    main(["demo", "--out", str(tmp_path / "d.zarr"), "--no-serve", "--queries", "text+image"])
    assert seen == {"out": str(tmp_path / "d.zarr"), "queries": "text+image"}
