"""Saving a tiny random-weight model with its processor: the one step every family's tiny builder
shares, in a module below them all (`tiny` registers the builders, so they cannot import it)."""

from __future__ import annotations

from pathlib import Path

import torch

from attnstore.models.base import RANDOM_WEIGHTS_KEY


def save_random_model(model_class, config, processor, out_dir: str | Path, seed: int, eos, pad) -> Path:
    """Instantiate `model_class(config)` with seeded random weights, mark it random, save it with its processor."""
    setattr(config, RANDOM_WEIGHTS_KEY, True)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
