"""Bounded reads of damaged or hostile stores: declared shapes within the schema's limits before any
allocation, no read of a FIFO or device, no chunk followed outside the store, one line for damaged
metadata and shards. Memory is bounded with RLIMIT_AS and hangs with a subprocess timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.damage import declare_size

from attnstore.cli import main
from attnstore.store.readers.choice import BACKEND_ENV

MEMORY_LIMIT = 3 * 2**30  # bytes of address space the CLI gets: a read of 1e9 keys needs 2-15 GB
CLI_UNDER_LIMIT = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
from attnstore.cli import main
sys.exit(main(sys.argv[1:]))
"""
SHARD_1 = Path("attention", "c", "1", "0", "0", "0", "0")


@pytest.fixture
def store(tmp_path, synthetic_store) -> Path:
    return Path(shutil.copytree(synthetic_store, tmp_path / "s.zarr"))


def run_cli(*args: str, backend: str = "auto") -> subprocess.CompletedProcess:
    """The CLI in a subprocess with bounded memory; a hang fails the test (TimeoutExpired)."""
    env = {**os.environ, BACKEND_ENV: backend}
    return subprocess.run(
        [sys.executable, "-c", CLI_UNDER_LIMIT, *args], capture_output=True, text=True, timeout=120, env=env
    )


def heatmap_args(store: Path) -> list[str]:
    return ["heatmap", str(store), "--token", "Ġdog", "--image", "1", "--output", str(store.parent / "h.png")]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


@pytest.mark.slow  # CLI subprocesses under a memory limit
@pytest.mark.parametrize(("dim", "size"), [("key", 10**9), ("image", 10**12), ("layer", 10**7)])
def test_a_huge_declared_axis_is_one_problem_not_an_allocation(store, dim, size):
    declare_size(store, dim, size)
    result = run_cli("validate", str(store), "--deep")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"declares {dim} of {size:,}, outside the schema's limit" in result.stdout
    assert "allocate" not in result.stdout and "MemoryError" not in result.stdout
    assert f"declares {dim} of {size:,}" in one_line_error(run_cli(*heatmap_args(store)))


@pytest.mark.slow  # CLI subprocesses under a memory limit
@pytest.mark.parametrize("backend", ["tensorstore", "zarr"])
def test_a_fifo_chunk_does_not_hang_any_reader(store, backend):
    for chunk in (SHARD_1, Path("token_kind", "c", "1", "0")):
        (store / chunk).unlink()
        os.mkfifo(store / chunk)
    assert "is not a regular file" in one_line_error(run_cli(*heatmap_args(store), backend=backend))
    result = run_cli("validate", str(store), "--deep", backend=backend)
    assert result.returncode == 1 and "is not a regular file" in result.stdout
    assert "damaged image(s): 1 (synthetic_00001.png)" in result.stdout


@pytest.mark.slow  # CLI subprocesses under a memory limit
@pytest.mark.parametrize("backend", ["tensorstore", "zarr"])
@pytest.mark.parametrize("chunk", [SHARD_1, Path("token_text", "c", "1", "0")])
def test_a_chunk_linked_outside_the_store_is_not_followed(store, backend, chunk):
    (store / chunk).unlink()
    (store / chunk).symlink_to("/dev/zero")
    assert "links outside the store (to /dev/zero)" in one_line_error(run_cli(*heatmap_args(store), backend=backend))
    result = run_cli("validate", str(store), "--deep", backend=backend)
    assert result.returncode == 1 and "links outside the store" in result.stdout
    outside = store.parent / "elsewhere"  # a regular file, but not the store's
    shutil.copy(store / str(chunk).replace("/1/", "/0/"), outside)
    (store / chunk).unlink()
    (store / chunk).symlink_to(outside)
    assert "links outside the store" in one_line_error(run_cli(*heatmap_args(store), backend=backend))


def test_a_link_inside_the_store_still_reads(store, capsys):
    shutil.move(store / SHARD_1, store / "moved")
    (store / SHARD_1).symlink_to(store / "moved")
    assert main(heatmap_args(store)) == 0


@pytest.mark.parametrize("backend", ["tensorstore", "zarr"])
@pytest.mark.parametrize("damage", ["zero-length", "looping"])
def test_a_zero_length_or_looping_shard_is_one_line(store, backend, damage, monkeypatch, capsys):
    monkeypatch.setenv(BACKEND_ENV, backend)
    if damage == "zero-length":
        (store / SHARD_1).write_bytes(b"")
    else:
        (store / SHARD_1).unlink()
        (store / SHARD_1).symlink_to(SHARD_1.name)  # links to itself
    assert main(heatmap_args(store)) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["validate", str(store), "--deep"]) == 1
    assert "damaged image(s): 1 (synthetic_00001.png)" in capsys.readouterr().out


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("damage", ["truncated", "empty", "nested", "not-an-object"])
@pytest.mark.parametrize("command", ["info", "validate", "heatmap"])
def test_damaged_metadata_is_one_line(store, damage, command, capsys):
    meta = store / "zarr.json"
    text = {"truncated": meta.read_text()[:500], "empty": "", "nested": nested(100_000), "not-an-object": "[1]"}
    meta.write_text(text[damage])
    args = heatmap_args(store) if command == "heatmap" else [command, str(store)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "is damaged" in err or "no attnstore store" in err


def test_damaged_array_metadata_is_one_line(store, capsys):
    root = json.loads((store / "zarr.json").read_text())
    root["consolidated_metadata"]["metadata"]["attention"]["shape"] = "many"
    (store / "zarr.json").write_text(json.dumps(root))
    assert main(["info", str(store)]) == 1
    assert capsys.readouterr().err.startswith(f"error: store '{store}' is damaged")


def test_check_local_file_refuses_what_would_block_or_never_end(tmp_path):
    from attnstore.errors import StoreError
    from attnstore.store.safety import check_local_file

    root = tmp_path / "s.zarr"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok").write_bytes(b"x")
    (root / "a" / "inside").symlink_to(root / "a" / "ok")
    os.mkfifo(root / "a" / "fifo")
    (root / "a" / "zero").symlink_to("/dev/zero")
    (root / "a" / "loop").symlink_to("loop")
    for key in ("a/ok", "a/inside", "a/absent", "a/ok/below-a-file"):
        check_local_file(root, key)  # regular files inside the store, or nothing there: fine
    for key, why in [("a/fifo", "not a regular file"), ("a/zero", "links outside"), ("a/loop", "cannot be read")]:
        with pytest.raises(StoreError, match=why):
            check_local_file(root, key)
