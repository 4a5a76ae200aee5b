"""Probes run as `python -c` in a child process: an install without some packages, imitated."""

from __future__ import annotations


def without(*packages: str) -> str:
    """Python source that makes importing any of `packages` (or their submodules) fail as it would
    were they not installed; the first lines of a probe."""
    return (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {packages!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
