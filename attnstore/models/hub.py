"""Where model weights come from: a local folder or the Hugging Face cache (no torch).

Nothing here downloads: with HF_HUB_OFFLINE set, transformers only looks in the cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from attnstore.errors import ModelLoadError

# The seed scripts spell the hub id differently from the hub; both work.
MODEL_ALIASES = {
    "HuggingFaceTB/SmolVLM-Instruct-256M": "HuggingFaceTB/SmolVLM-256M-Instruct",
}
# Custom config key set by attnstore's own builders so every output can say so.
RANDOM_WEIGHTS_KEY = "attnstore_random_weights"


def canonical_model_id(model_id: str) -> str:
    """Map known alternative spellings to the hub id."""
    return MODEL_ALIASES.get(model_id, model_id)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def missing_weights_message(model_id: str) -> str:
    return (
        f"model '{model_id}' is neither a local directory nor in the Hugging Face cache. "
        f"On a machine with internet run `hf download {model_id}` (then copy the cache or the folder here), "
        "or pass --model PATH to a folder saved with save_pretrained. "
        "`attnstore demo` uses a tiny random-weight model built offline."
    )


def read_model_type(model_id: str) -> str:
    """The config's model_type, from a local folder or the HF cache (never downloads when offline)."""
    model_id = canonical_model_id(model_id)
    local = Path(model_id).expanduser()
    if local.is_dir():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"'{local}' has no config.json: not a saved model folder")
        return json.loads(config_file.read_text()).get("model_type", "")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id, local_files_only=hub_offline()).model_type
    except (OSError, ValueError) as err:
        raise ModelLoadError(missing_weights_message(model_id)) from err
