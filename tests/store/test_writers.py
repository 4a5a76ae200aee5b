"""One writer per store: a second run into a store being written fails at once with one line naming the
holder (never a silent loss); the lock of a killed writer never blocks the rerun; readers never lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.stores import run_forked, start_forked, tree_hashes, wait_forked

from attnstore.errors import StoreError
from attnstore.extraction.pipeline import run_extraction
from attnstore.store import AttnStore, open_dataset

PROMPT = "Describe."


@pytest.fixture(scope="module")
def four_images(tmp_path_factory):
    from attnstore.extraction.synthetic import _gradient_image

    folder = tmp_path_factory.mktemp("writers-images")
    paths = []
    for i, size in enumerate([(400, 100), (300, 120), (420, 110), (380, 100)]):
        paths.append(folder / f"img{i}.png")
        _gradient_image(*size, seed=i).save(paths[-1])
    return paths


def extraction(adapter, paths, out):
    return lambda: run_extraction(adapter, paths, PROMPT, str(out), max_new_tokens=2, show_progress=False)


def test_a_second_writer_fails_naming_the_first_and_nothing_is_lost(tmp_path, tiny_adapter, four_images):
    """The finding: two runs with different images into one store both exited 0 and the store lost images.
    Run A is held inside its first image write while run B starts; B must not write (and must say who
    holds the store), A must keep every image it wrote, and B's rerun afterwards adds its own."""
    out = tmp_path / "s.zarr"
    a_images, b_images = four_images[:2], four_images[2:]
    go, waiting, b_error = tmp_path / "go", tmp_path / "waiting", tmp_path / "b-error"
    real_write = AttnStore.write_image

    def held_write(self, *args, **kwargs):
        waiting.touch()
        while not go.exists():  # A holds the store (and, with a lock, its lock) here
            time.sleep(0.01)
        return real_write(self, *args, **kwargs)

    def run_a():
        AttnStore.write_image = held_write  # in the forked child only
        extraction(tiny_adapter, a_images, out)()

    def run_b():
        try:
            extraction(tiny_adapter, b_images, out)()
        except StoreError as err:
            b_error.write_text(str(err))
            raise

    a_pid = start_forked(run_a)
    try:
        while not waiting.exists():
            assert os.waitpid(a_pid, os.WNOHANG)[0] == 0, "run A ended before writing"
            time.sleep(0.01)
        b_code = run_forked(run_b)
    finally:
        go.touch()
        a_code = wait_forked(a_pid)
    assert a_code == 0, "run A failed"
    ds = open_dataset(str(out))
    kept = {str(n) for n, done in zip(ds.image_name.values, ds.complete.values) if done}
    if b_code == 0:  # both "succeeded": every image of both must be there
        assert kept == {"img0.png", "img1.png", "img2.png", "img3.png"}, f"images lost: {kept}"
    assert b_code == 1 and kept == {"img0.png", "img1.png"}
    message = b_error.read_text()
    assert "\n" not in message and "being written by another run" in message and f"pid {a_pid}" in message
    assert run_forked(extraction(tiny_adapter, b_images, out)) == 0  # once A is done, B goes through
    ds = open_dataset(str(out))
    assert sorted(map(str, ds.image_name.values)) == [p.name for p in four_images] and ds.complete.values.all()


def test_second_writer_cli_is_one_line_and_leaves_the_store_byte_identical(tmp_path, tiny_model_path, four_images):
    from attnstore.store.lock import writer_lock

    out = tmp_path / "s.zarr"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def extract(image: Path) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-c", "from attnstore.cli import run; run()", "extract", str(image), "--out", str(out),
                "--model", str(tiny_model_path), "--max-new-tokens", "2", "--no-progress"]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)

    first = extract(four_images[0])
    assert first.returncode == 0, first.stderr
    before = tree_hashes(out)
    with writer_lock(str(out)):  # this test process is "the other run"
        second = extract(four_images[1])
    assert second.returncode == 1, second.stdout
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "being written by another run" in lines[0] and f"pid {os.getpid()}" in lines[0]
    assert tree_hashes(out) == before


def test_a_killed_writer_never_blocks_the_rerun(tmp_path):
    """flock locks belong to the process: SIGKILL drops them (the lock file stays, empty of meaning)."""
    from attnstore.store.lock import lock_path, writer_lock

    out = tmp_path / "s.zarr"

    def hold_and_die():
        with writer_lock(str(out)):
            os.kill(os.getpid(), signal.SIGKILL)

    assert run_forked(hold_and_die) == -signal.SIGKILL
    assert lock_path(str(out)).exists()  # what the killed writer left
    with writer_lock(str(out)):  # taken at once: no wait, no error
        pass


def test_readers_never_take_the_lock(tmp_path, tiny_adapter, four_images):
    from attnstore.store.lock import writer_lock
    from attnstore.store.validation import validate_store

    out = tmp_path / "s.zarr"
    extraction(tiny_adapter, four_images[:1], out)()
    with writer_lock(str(out)):
        assert open_dataset(str(out)).sizes["image"] == 1
        assert validate_store(str(out)).problems == []
        assert np.isfinite(open_dataset(str(out)).attention.values[0]).all()


def test_the_lock_lives_beside_the_store(tmp_path):
    from attnstore.store.lock import lock_path

    assert lock_path(str(tmp_path / "s.zarr/")) == Path(tmp_path / "s.zarr.lock")
