"""Fixtures of the scale-out tests: small wide images (few tiles: fast). The local S3 (moto) and
HTTP range servers are in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnstore.extraction.pipeline import run_extraction
from attnstore.extraction.synthetic import _gradient_image

PROMPT = "Can you describe this image?"
# Wide images split into 1 x 4 or 2 x 4 tiles instead of 4 x 4: the tiny model runs ~3x faster.
IMAGE_SIZES = [(400, 100), (300, 120), (500, 130), (420, 110), (380, 100), (460, 120)]


def make_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _gradient_image(*IMAGE_SIZES[i % len(IMAGE_SIZES)], seed=i).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture
def images(tmp_path):
    """Four small images in tmp_path/images."""
    return make_images(tmp_path / "images", 4)


@pytest.fixture(scope="module")
def shared_images(tmp_path_factory):
    """Four small images shared by a module's tests (read-only)."""
    return make_images(tmp_path_factory.mktemp("images"), 4)


@pytest.fixture(scope="module")
def serial_store(shared_images, tiny_adapter, tmp_path_factory) -> str:
    """The uninterrupted run over `shared_images` in this process (read-only): what a rerun after a
    crash or a distributed run must give."""
    out = str(tmp_path_factory.mktemp("serial") / "serial.zarr")
    folder = str(shared_images)
    paths = sorted(shared_images.glob("*.png"))
    run_extraction(tiny_adapter, paths, PROMPT, out, image_dir=folder, max_new_tokens=3, show_progress=False)
    return out
