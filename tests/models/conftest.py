"""Fixtures shared by the per-family tests: each family's tiny model and its extractions, built once."""

import pytest
from support.vlm_family_checks import BUILD_OPTIONS, RUN_IMAGES, FamilyRuns


@pytest.fixture(scope="session")
def family_runs(tmp_path_factory):
    """`family -> FamilyRuns`: its tiny model (the builder its adapter declares), extractions cached."""
    from attnstore.models import tiny_builder
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    runs = {}

    def get(family: str) -> FamilyRuns:
        if family not in runs:
            folder = tmp_path_factory.mktemp("models") / f"tiny-{family}"
            runs[family] = FamilyRuns(tiny_builder(family)(folder, **BUILD_OPTIONS.get(family, {})), RUN_IMAGES[family])
        return runs[family]

    return get
