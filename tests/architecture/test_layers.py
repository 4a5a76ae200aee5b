"""What may import what (docs/architecture.md): read from the source, so a violating import fails
here even if no test happens to run the code path."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL_SIDE = ("torch", "transformers", "tokenizers", "safetensors", "attnstore.models.base", "attnstore.extraction")
FRONT_ENDS = ("attnstore.cli", "explorer")
LIGHT_CORE = (
    *("attnstore/store", "attnstore/analysis", "attnstore/render", "attnstore/inputs", "attnstore/legacy"),
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


def all_imports(path: Path) -> set[str]:
    """Modules `path` imports anywhere (function-level imports too: they hide cycles); a
    `from package import name` where `name` is a module counts as importing that module."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if module_file(sub) else node.module)
    return names


def module_file(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def registers(importer: Path, imported: Path) -> bool:
    """A package's face importing its own modules so that they register (the CLI's commands take
    `app` from `attnstore.cli`): an import for its side effect, not a dependency on them."""
    return importer.name == "__init__.py" and imported.parent == importer.parent and importer.parent.name == "cli"


def test_no_import_cycles():
    """No module of the package or the explorer imports itself back through others (the store's
    reader once did through `attnstore.__version__`, the read backend through `read_concurrently`)."""
    files = sources(["attnstore", "explorer"])
    graph = {p: {f for m in all_imports(p) if (f := module_file(m)) and f != p and not registers(p, f)} for p in files}
    state: dict[Path, int] = {}  # 1: on the current path, 2: done
    path: list[Path] = []

    def visit(node: Path) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                loop = [str(p.relative_to(REPO)) for p in path[path.index(nxt) :]]
                pytest.fail("import cycle: " + " -> ".join(loop))
            if nxt not in state:
                visit(nxt)
        state[node] = 2
        path.pop()

    for node in files:
        if node not in state:
            visit(node)


def test_the_version_module_agrees_with_pyproject():
    import tomllib

    from attnstore._version import __version__

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == __version__


def test_architecture_doc_lists_every_module():
    doc = (REPO / "docs" / "architecture.md").read_text()
    modules = [str(p.relative_to(REPO)) for p in sources(["attnstore", "explorer"])]
    missing = [m for m in modules if f"`{m}`" not in doc]
    assert not missing, f"docs/architecture.md ('Every module') does not list {missing}"
