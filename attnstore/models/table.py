"""The family table `attnstore models` prints, generated from the family catalogue.

Each row comes from the family catalogue (`families.toml`), so a family added with one module and
one catalogue table appears here without more work, and no adapter is imported to print it.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnstore.models import FAMILIES, SEQUENCE_ONLY, image_text_to_text_model_types


@dataclass(frozen=True)
class FamilyRow:
    family: str
    name: str
    model_types: str
    geometry: str
    tests: str


def family_rows() -> list[FamilyRow]:
    """One row per registered family (sequence-only mode last: it takes every other type)."""
    rows = [_row(family) for family in FAMILIES if family != SEQUENCE_ONLY]
    if SEQUENCE_ONLY in FAMILIES:
        rows.append(_row(SEQUENCE_ONLY))
    return rows


def _row(family: str) -> FamilyRow:
    info = FAMILIES[family].info
    types = ", ".join(FAMILIES[family].model_types)
    if family == SEQUENCE_ONLY:
        handled = {t for f in FAMILIES.values() for t in f.model_types}
        types = f"the {len(image_text_to_text_model_types() - handled)} other image-text-to-text types"
    return FamilyRow(family, info.name, types, info.geometry, info.tests)
