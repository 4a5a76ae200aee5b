"""`attnstore demo-model DIR` writes the shipped model as a save_pretrained folder."""

from __future__ import annotations

import pytest

from attnstore.cli import main
from attnstore.extraction.demo import DEMO_MODEL_DIR

shipped = pytest.mark.skipif(not (DEMO_MODEL_DIR / "config.json").is_file(), reason="no trained demo model shipped")


@shipped
def test_demo_model_folder_loads_with_plain_transformers(tmp_path, capsys):
    out = tmp_path / "demo-model"
    assert main(["demo-model", str(out)]) == 0
    assert "demo model written" in capsys.readouterr().out
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    model = Idefics3ForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert not getattr(model.config, "attnstore_random_weights", False)
    assert processor.image_processor.do_image_splitting and (out / "MODEL_CARD.md").is_file()
    # A second write into the now non-empty folder is refused and changes nothing.
    before = sorted(p.name for p in out.iterdir())
    assert main(["demo-model", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import attnstore.extraction.demo as demo

    monkeypatch.setattr(demo, "DEMO_MODEL_DIR", tmp_path / "nothing")
    assert main(["demo-model", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not in this installation" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
