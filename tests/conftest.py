"""Shared fixtures. Everything is offline: HF_HUB_OFFLINE=1, models built with random weights."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def attnstore_cache(tmp_path_factory):
    """A private cache folder so tests never touch (or depend on) the user's ~/.cache/attnstore."""
    path = tmp_path_factory.mktemp("attnstore-cache")
    os.environ["ATTNSTORE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(attnstore_cache):
    """The tiny random-weight Idefics3 model (built once per session, offline)."""
    from attnstore.demo import tiny_model_dir
    from attnstore.quiet import quiet_transformers

    quiet_transformers()
    return tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_path):
    from attnstore.models import load_adapter

    return load_adapter(str(tiny_model_path))


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """A small complete synthetic store (3 images: 3x4, 4x3, 2x2 tiles; 2 layers, 4 heads). Read-only."""
    from attnstore.synthetic import make_synthetic_store

    return make_synthetic_store(str(tmp_path_factory.mktemp("stores") / "synthetic.zarr"), n_images=3)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, tiny_model_path):
    """The demo store (tiny model on the shipped sample images). Read-only."""
    from attnstore.demo import build_demo_store

    path = str(tmp_path_factory.mktemp("stores") / "demo.zarr")
    build_demo_store(path, show_progress=False)
    return path
