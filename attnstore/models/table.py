"""The family table `attnstore models` prints, generated from the adapter registry.

Each row comes from an adapter class's declarative `info` (`FamilyInfo`) and its registry line,
so a family added with one module and one registry line appears here without more work.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnstore.models import FAMILIES, SEQUENCE_ONLY, adapter_class


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
    adapter = adapter_class(family)
    info = adapter.info
    types = ", ".join(FAMILIES[family].model_types)
    if family == SEQUENCE_ONLY:
        from attnstore.models.sequence_only import image_text_to_text_model_types

        handled = {t for f in FAMILIES.values() for t in f.model_types}
        types = f"the {len(image_text_to_text_model_types() - handled)} other image-text-to-text types"
    if info is None:  # an adapter that does not describe itself yet
        return FamilyRow(family, adapter.__name__, types, "?", "?")
    return FamilyRow(family, info.name, types, info.geometry, info.tests)
