"""The demo: a tiny random-weight SmolVLM-shaped model, built offline and cached, run on the
sample images shipped with the package. Every output says it comes from random weights."""

from __future__ import annotations

import os
from pathlib import Path

from attnstore.images import sample_images

DEMO_PROMPT = "Can you describe this image?"
DEMO_MAX_NEW_TOKENS = 12
TINY_MODEL_VERSION = "1"  # bump when the builder changes, so caches are rebuilt
RANDOM_WEIGHTS_NOTICE = "RANDOM-WEIGHT DEMO MODEL: answers and attention are meaningless, geometry is real"


def cache_dir() -> Path:
    """User cache folder (ATTNSTORE_CACHE overrides ~/.cache/attnstore)."""
    root = os.environ.get("ATTNSTORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "attnstore")
    return Path(root)


def tiny_model_dir(family: str = "idefics3") -> Path:
    """Path of the tiny random-weight model of `family`, built on first use."""
    from attnstore.models.tiny import BUILDERS as builders

    path = cache_dir() / f"tiny-{family}-v{TINY_MODEL_VERSION}"
    if not (path / "config.json").is_file() or not (path / "processor_config.json").is_file():
        tmp = path.with_name(path.name + ".partial")
        builders[family](tmp)
        tmp.rename(path) if not path.exists() else None
    return path


def build_demo_store(out: str, show_progress: bool = True):
    """Extract the sample images with the tiny model into `out` (skips what is already there)."""
    from attnstore.models import load_adapter
    from attnstore.pipeline import run_extraction

    adapter = load_adapter(str(tiny_model_dir()))
    return run_extraction(
        adapter,
        sample_images(),
        DEMO_PROMPT,
        out,
        max_new_tokens=DEMO_MAX_NEW_TOKENS,
        show_progress=show_progress,
    )
