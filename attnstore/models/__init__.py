"""Model adapters: one module per VLM family, found through a lazy registry.

`FAMILIES` maps a family name to its adapter ("module:Class") and the config `model_type`s it
handles, so nothing here imports torch or transformers until a model is loaded (like xarray's
backend entrypoints). To add a family, write a `ModelAdapter` subclass (see `base.py`,
`idefics3.py`, docs/adding-a-model.md) and add one line to `FAMILIES`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple

from attnstore.errors import ModelLoadError
from attnstore.models.hub import read_model_type

if TYPE_CHECKING:
    from attnstore.models.base import ModelAdapter


class Family(NamedTuple):
    adapter: str  # "module:Class"
    model_types: tuple[str, ...]  # config.model_type values this adapter handles


SEQUENCE_ONLY = "sequence_only"
FAMILIES: dict[str, Family] = {
    "idefics3": Family("attnstore.models.idefics3:Idefics3Adapter", ("idefics3",)),
    "llava": Family("attnstore.models.llava:LlavaAdapter", ("llava",)),
    "llava_next": Family("attnstore.models.llava_anyres:LlavaNextAdapter", ("llava_next",)),
    "llava_onevision": Family("attnstore.models.llava_anyres:LlavaOnevisionAdapter", ("llava_onevision",)),
    "qwen2_vl": Family("attnstore.models.qwen2_vl:Qwen2VLAdapter", ("qwen2_vl",)),
    "gemma3": Family("attnstore.models.gemma3:Gemma3Adapter", ("gemma3",)),
    "paligemma": Family("attnstore.models.paligemma:PaliGemmaAdapter", ("paligemma",)),
    "internvl": Family("attnstore.models.internvl:InternVLAdapter", ("internvl",)),
    "mistral3": Family("attnstore.models.mistral3:Mistral3Adapter", ("mistral3",)),
    "qwen2_5_vl": Family("attnstore.models.qwen2_5_vl:Qwen2_5_VLAdapter", ("qwen2_5_vl",)),
    "qwen3_vl": Family("attnstore.models.qwen3_vl:Qwen3VLAdapter", ("qwen3_vl",)),
    "smolvlm": Family("attnstore.models.smolvlm:SmolVLMAdapter", ("smolvlm",)),
    # Every other type AutoModelForImageTextToText loads: rows and token kinds, no patch geometry.
    SEQUENCE_ONLY: Family("attnstore.models.sequence_only:SequenceOnlyAdapter", ()),
}


def supported_model_types() -> list[str]:
    return sorted(t for family in FAMILIES.values() for t in family.model_types)


def adapter_class(family: str) -> type[ModelAdapter]:
    """Import the adapter class of `family` (this is where torch and transformers get imported)."""
    module, _, name = FAMILIES[family].adapter.partition(":")
    return getattr(importlib.import_module(module), name)


def adapter_for_model_type(model_type: str) -> type[ModelAdapter]:
    """The family adapter of `model_type`; sequence-only mode for other image-text-to-text models."""
    for name, family in FAMILIES.items():
        if model_type in family.model_types:
            return adapter_class(name)
    from attnstore.models.sequence_only import image_text_to_text_model_types

    if model_type in image_text_to_text_model_types():
        return adapter_class(SEQUENCE_ONLY)
    raise ModelLoadError(
        f"unsupported model type '{model_type}' (not an image-text-to-text model transformers loads); "
        f"supported: {', '.join(supported_model_types())} (with patch geometry) and, in sequence-only mode, "
        "every image-text-to-text type. "
        "A new family is one ModelAdapter subclass in attnstore/models/ (see docs/adding-a-model.md).",
        param="model",
    )


def tiny_builder(family: str):
    """The function building `family`'s tiny random-weight model (`out_dir -> Path`), or None
    (declared by the adapter: `FamilyInfo.tiny`)."""
    info = adapter_class(family).info
    if info is None or not info.tiny:
        return None
    module, _, name = info.tiny.partition(":")
    return getattr(importlib.import_module(module), name)


def load_adapter(
    model_id: str, device: str = "cpu", dtype: str | None = None, attn_kernel: str = "sdpa"
) -> ModelAdapter:
    """Pick the adapter from the model's config and load the model (see `ModelAdapter.load`)."""
    adapter = adapter_for_model_type(read_model_type(model_id))
    return adapter.load(model_id, device=device, dtype=dtype, attn_kernel=attn_kernel)


__all__ = [
    "FAMILIES",
    "SEQUENCE_ONLY",
    "adapter_class",
    "adapter_for_model_type",
    "load_adapter",
    "supported_model_types",
    "tiny_builder",
]
