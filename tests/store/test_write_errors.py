"""Errors of the write path: disk full during `extract` and `pack`, a read-only store for `extract`.
Each is one line on stderr and exit 1, the store byte-identical after it, no partial file left behind.

The faults are injected deterministically (`ATTNSTORE_FAULT=enospc:N`, attnstore.store.journal): the
Nth store operation of the run raises OSError(ENOSPC) (or EACCES, EROFS: the test runs as root, which
ignores file permissions, so a read-only store is the error its first write would get)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.stores import tree_hashes

CLI = "from attnstore.cli import run; run()"


def attnstore(*args, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if fault:
        env["ATTNSTORE_FAULT"] = fault
    argv = [sys.executable, "-c", CLI, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def assert_one_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]


def partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if "partial" in p.name or "creating" in p.name]


@pytest.fixture(scope="module")
def one_image_store(tmp_path_factory, tiny_model_path):
    """A store with one image, and a second image to append."""
    from attnstore.extraction.synthetic import _gradient_image

    folder = tmp_path_factory.mktemp("write-errors")
    first, second = folder / "a.png", folder / "b.png"
    _gradient_image(400, 100, seed=0).save(first)
    _gradient_image(300, 120, seed=1).save(second)
    out = folder / "s.zarr"
    proc = append(out, first, tiny_model_path, fault=None)
    assert proc.returncode == 0, proc.stderr
    return out, second, tiny_model_path


def append(store: Path, image: Path, model, fault: str | None) -> subprocess.CompletedProcess:
    return attnstore("extract", image, "--out", store, "--model", model, "--max-new-tokens", "2", "--no-progress",
                     fault=fault)  # fmt: skip


# An append of one image is 56 store operations here: 1 grows the first array, 25 is among the image's
# own arrays, 56 is the complete flag (the last).
@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("enospc:1", ["the disk is full"]),
        ("enospc:25", ["the disk is full"]),
        ("enospc:56", ["the disk is full"]),
        ("eacces:1", ["permission denied"]),
        ("erofs:1", ["read-only"]),
    ],
)
def test_extract_write_error_is_one_line_and_the_store_is_byte_identical(tmp_path, one_image_store, fault, words):
    source, image, model = one_image_store
    store = tmp_path / "s.zarr"
    shutil.copytree(source, store)
    before = tree_hashes(store)
    proc = append(store, image, model, fault)
    assert_one_line(proc, f"cannot write to '{store}'", *words)
    assert tree_hashes(store) == before
    assert partial_files(tmp_path) == []


def test_extract_disk_full_into_a_new_store_leaves_no_store(tmp_path, one_image_store):
    _, image, model = one_image_store
    for fault in ("enospc:3", "enospc:120"):  # while creating the store (82 operations); while writing its image
        store = tmp_path / fault.replace(":", "") / "s.zarr"
        proc = append(store, image, model, fault)
        assert_one_line(proc, "the disk is full")
        assert not store.exists(), f"{fault} left a store behind"
        assert partial_files(store.parent) == []


@pytest.mark.parametrize("fault", ["enospc:1", "enospc:20", "enospc:last"])
def test_pack_disk_full_is_one_line_and_leaves_no_partial_zip(tmp_path, one_image_store, fault):
    store, _, _ = one_image_store
    out = tmp_path / "s.zip"
    if fault == "enospc:last":  # the rename, after every member
        fault = f"enospc:{len(tree_hashes(store)) + 1}"
    proc = attnstore("pack", store, out, fault=fault)
    assert_one_line(proc, f"cannot write to '{out}'", "the disk is full")
    assert list(tmp_path.iterdir()) == [], "pack left a file behind"


# -- the same faults injected by patching the libraries (so these run on any version of the writer) ---------


def test_disk_full_in_zarr_during_an_append_is_a_store_error_and_undone(tmp_path, one_image_store, tiny_adapter,
                                                                        monkeypatch):  # fmt: skip
    import errno

    import zarr

    from attnstore.errors import AttnstoreError
    from attnstore.extraction.pipeline import run_extraction

    source, image, _ = one_image_store
    store = tmp_path / "s.zarr"
    shutil.copytree(source, store)
    before = tree_hashes(store)
    real, calls = zarr.storage.LocalStore.set, []

    async def full_disk(self, key, value):
        calls.append(key)
        if len(calls) == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full_disk)
    with pytest.raises(AttnstoreError, match="the disk is full"):
        run_extraction(tiny_adapter, [image], "Can you describe this image?", str(store), max_new_tokens=2,
                       show_progress=False)  # fmt: skip
    monkeypatch.undo()
    assert tree_hashes(store) == before
    assert partial_files(tmp_path) == []


def test_disk_full_while_packing_is_a_store_error_and_leaves_no_partial(tmp_path, one_image_store, monkeypatch):
    import errno

    from attnstore.errors import AttnstoreError
    from attnstore.store import pack

    store, _, _ = one_image_store
    copies = []

    def full_disk(src, dst, length=0):
        copies.append(1)
        if len(copies) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return REAL_COPY(src, dst, length)

    monkeypatch.setattr(pack.shutil, "copyfileobj", full_disk)
    with pytest.raises(AttnstoreError, match="the disk is full"):
        pack.pack_store(str(store), str(tmp_path / "s.zip"))
    assert list(tmp_path.iterdir()) == []


REAL_COPY = shutil.copyfileobj
