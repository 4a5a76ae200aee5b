"""What may import what (docs/architecture.md): read from the source, so a violating import fails
here even if no test happens to run the code path."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL_SIDE = ("torch", "transformers", "tokenizers", "safetensors", "attnstore.models.base", "attnstore.extract",
              "attnstore.pipeline", "attnstore.distributed", "attnstore.pope", "attnstore.demo")  # fmt: skip
FRONT_ENDS = ("attnstore.cli", "explorer")
LIGHT_CORE = (
    *("attnstore/store", "attnstore/analysis", "attnstore/render"),
    *("attnstore/records.py", "attnstore/geometry.py", "attnstore/schema.py", "attnstore/errors.py"),
    "attnstore/__init__.py",
)


def top_level_imports(path: Path) -> set[str]:
    """Modules imported when `path` is imported (module level, not inside functions)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources(entries) -> list[Path]:
    files = []
    for entry in entries:
        path = REPO / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


@pytest.mark.parametrize("path", sources(LIGHT_CORE), ids=lambda p: str(p.relative_to(REPO)))
def test_light_core_imports_no_model_side_and_no_front_end(path):
    bad = {m for m in top_level_imports(path) if m.startswith(MODEL_SIDE + FRONT_ENDS)}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sources(["explorer"]), ids=lambda p: str(p.relative_to(REPO)))
def test_explorer_imports_no_model_side(path):
    bad = {m for m in top_level_imports(path) if m.startswith(MODEL_SIDE + ("attnstore.cli",))}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_store_does_not_import_analysis_or_render():
    for path in sources(["attnstore/store"]):
        bad = {m for m in top_level_imports(path) if m.startswith(("attnstore.analysis", "attnstore.render"))}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
