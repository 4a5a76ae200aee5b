"""`attnstore models`: the family table is generated from the family catalogue (families.toml)."""

import subprocess
import sys

import pytest

from attnstore import models
from attnstore.cli import main
from attnstore.models import FAMILIES, Family, FamilyInfo, read_families
from attnstore.models.qwen2_vl import Qwen2VLAdapter
from attnstore.models.table import family_rows


class _NewAdapter(Qwen2VLAdapter):
    family = "newvl"


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


def test_a_family_added_by_one_catalogue_table_appears(monkeypatch, capsys, tmp_path):
    catalogue = tmp_path / "families.toml"
    catalogue.write_text(
        f'[newvl]\nadapter = "{__name__}:_NewAdapter"\nmodel_types = ["newvl", "newvl_moe"]\n'
        'name = "NewVL-7B"\ngeometry = "a test grid"\ntests = "none yet"\ntiny = ""\n'
    )
    (added,) = read_families(catalogue).items()
    assert added == (
        "newvl",
        Family(
            f"{__name__}:_NewAdapter", ("newvl", "newvl_moe"), FamilyInfo("NewVL-7B", "a test grid", "none yet", "")
        ),
    )
    monkeypatch.setitem(FAMILIES, *added)
    assert models.adapter_for_model_type("newvl_moe") is _NewAdapter
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "NewVL-7B" in out and "newvl_moe" in out and "a test grid" in out


@pytest.mark.parametrize("family", [f for f in FAMILIES])
def test_each_catalogue_entry_names_its_adapter_and_describes_it(family):
    info = FAMILIES[family].info
    assert info.name and info.geometry and info.tests
    assert models.adapter_class(family).family == family  # the table's name is the adapter's store attr


def test_the_table_imports_no_adapter():
    """The catalogue is data: listing the families loads none of their modules (each imports torch)."""
    code = (
        "import sys\nfrom attnstore.models import FAMILIES\nfrom attnstore.models.table import family_rows\n"
        "family_rows()\nprint(sorted({f.adapter.partition(':')[0] for f in FAMILIES.values()} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
