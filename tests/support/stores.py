"""Comparing whole stores (crash and write-error tests): every file's bytes, every array's values."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

# What two runs of one command may write differently: the creation time (group attribute), and the
# timings of the codec measurement (the codec chosen and every candidate's size must agree).
VOLATILE_ATTRS = ("created",)
CODEC_TIMINGS = ("decode_gbps", "row_ms")


def tree_hashes(root: Path) -> dict[str, str] | None:
    """sha256 of every file under `root`, by relative path (None: no such folder)."""
    root = Path(root)
    if not root.exists():
        return None
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _root_metadata(root: Path) -> dict:
    meta = json.loads((root / "zarr.json").read_text())
    attrs = meta.get("attributes", {})
    for name in VOLATILE_ATTRS:
        attrs.pop(name, None)
    for figures in (attrs.get("attention_codec") or {}).get("candidates", {}).values():
        for name in CODEC_TIMINGS:
            figures.pop(name, None)
    return meta


def assert_same_store(path: Path, reference: Path) -> None:
    """`path` holds exactly the store `reference` holds: the same files with the same bytes (the root
    metadata compared without its creation time), and the same values in every array."""
    path, reference = Path(path), Path(reference)
    got, want = tree_hashes(path), tree_hashes(reference)
    assert got is not None, f"no store at {path}"
    got.pop("zarr.json"), want.pop("zarr.json")
    assert sorted(got) == sorted(want), f"files differ: extra {set(got) - set(want)}, missing {set(want) - set(got)}"
    assert got == want, f"bytes differ: {[k for k in got if got[k] != want[k]]}"
    assert _root_metadata(path) == _root_metadata(reference)
    a, b = zarr.open_group(str(path), mode="r"), zarr.open_group(str(reference), mode="r")
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for name in b.array_keys():  # every array, every value (NaN padding compares equal)
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)


def run_forked(work: Callable[[], object], fault: str | None = None, count_file: Path | None = None) -> int:
    """`work()` in a forked child with the fault `fault` armed (attnstore.store.journal); returns the child's
    exit code as `subprocess` gives it (-9: killed by SIGKILL). Forking keeps the loaded model: each run
    costs its writes, not a Python start. `count_file` receives the child's count of store operations."""
    return wait_forked(start_forked(work, fault, count_file))


def start_forked(work: Callable[[], object], fault: str | None = None, count_file: Path | None = None) -> int:
    """Start `work()` in a forked child (see run_forked); returns its pid."""
    threads = _one_torch_thread()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            if fault is not None:
                from attnstore.store.journal import FAULTS

                FAULTS.arm(fault)
            work()
            code = 0
            if count_file is not None:
                Path(count_file).write_text(str(FAULTS.count))
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return pid


def wait_forked(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _one_torch_thread() -> int | None:
    """Forking while torch's OpenMP pool exists hangs the child's first parallel op: one thread (no pool
    used) across the fork. Returns the setting to restore in the parent (None: torch not loaded)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads
