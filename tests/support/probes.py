"""Probes run as `python -c` in a fresh interpreter: what a process loads, or an install without some
packages, imitated."""

from __future__ import annotations

import subprocess
import sys


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


def probe_output(probe: str, *args: str, timeout: float = 120) -> str:
    """Run `probe` (Python source) with `args` in a fresh interpreter; its stdout, once it exited 0."""
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
