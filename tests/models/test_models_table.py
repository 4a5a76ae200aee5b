"""`attnstore models`: the family table is generated from the adapter registry."""

import pytest

from attnstore import models
from attnstore.cli import main
from attnstore.models import FAMILIES, Family
from attnstore.models.base import FamilyInfo
from attnstore.models.qwen2_vl import Qwen2VLAdapter
from attnstore.models.table import family_rows


class _NewAdapter(Qwen2VLAdapter):
    family = "newvl"
    info = FamilyInfo(name="NewVL-7B", geometry="a test grid", tests="none yet")


def test_every_registered_family_is_listed(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for family, entry in FAMILIES.items():
        assert family in out and all(t in out for t in entry.model_types)
    for name in ("Qwen2.5-VL", "Qwen3-VL", "SmolVLM2", "any other image-text-to-text"):
        assert name in out
    rows = {row.family: row for row in family_rows()}
    assert rows["sequence_only"].geometry.startswith("none") and rows["qwen3_vl"].model_types == "qwen3_vl"
    assert list(rows)[-1] == "sequence_only"  # the fallback comes last


def test_a_family_added_by_one_registry_line_appears(monkeypatch, capsys):
    monkeypatch.setitem(FAMILIES, "newvl", Family(f"{__name__}:_NewAdapter", ("newvl", "newvl_moe")))
    assert models.adapter_for_model_type("newvl_moe") is _NewAdapter
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "NewVL-7B" in out and "newvl_moe" in out and "a test grid" in out


@pytest.mark.parametrize("family", [f for f in FAMILIES])
def test_each_family_describes_itself(family):
    info = models.adapter_class(family).info
    assert info is not None and info.name and info.geometry and info.tests
