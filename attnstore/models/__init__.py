"""Model adapters: one module per VLM family, picked from the model's config.

To add a family, write a `ModelAdapter` subclass (see `base.py` and
`idefics3.py`) and list it in `ADAPTERS`.
"""

from __future__ import annotations

import json
from pathlib import Path

from attnstore.errors import ModelLoadError
from attnstore.models.base import ModelAdapter, canonical_model_id, hub_offline, missing_weights_message
from attnstore.models.idefics3 import Idefics3Adapter
from attnstore.models.llava import LlavaAdapter
from attnstore.models.qwen2_vl import Qwen2VLAdapter

ADAPTERS: tuple[type[ModelAdapter], ...] = (Idefics3Adapter, LlavaAdapter, Qwen2VLAdapter)


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for_model_type(model_type: str) -> type[ModelAdapter]:
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise ModelLoadError(
        f"unsupported model type '{model_type}'; supported: {', '.join(supported_model_types())}. "
        "A new family is one ModelAdapter subclass in attnstore/models/ (see README, 'Adding a model')."
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


def load_adapter(model_id: str, device: str = "cpu") -> ModelAdapter:
    """Pick the adapter from the model's config and load the model."""
    return adapter_for_model_type(read_model_type(model_id)).load(model_id, device=device)


__all__ = ["ADAPTERS", "ModelAdapter", "load_adapter", "adapter_for_model_type", "supported_model_types"]
