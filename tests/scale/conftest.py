"""Fixtures of the scale-out tests: small wide images (few tiles: fast). The local S3 (moto) and
HTTP range servers are in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnstore.extraction.synthetic import _gradient_image

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
