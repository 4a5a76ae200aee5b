"""Model adapters: one module per VLM family, found through a lazy registry.

`FAMILIES` maps a family name to its adapter ("module:Class"), the config `model_type`s it
handles and what `attnstore models` says of it, read from the catalogue `families.toml`, so nothing
here imports torch or transformers until a model is loaded (like xarray's backend entry points).
To add a family, write a `ModelAdapter` subclass (see `base.py`, `idefics3.py`,
docs/adding-a-model.md) and add its table to `families.toml`.
"""

from __future__ import annotations

import dataclasses
import importlib
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from attnstore.errors import ModelLoadError
from attnstore.models.hub import read_model_type

if TYPE_CHECKING:
    from attnstore.models.base import ModelAdapter


@dataclasses.dataclass(frozen=True)
class FamilyInfo:
    """What `attnstore models` says about a family.

    Parameters
    ----------
    name : the models people know it by ("Qwen2.5-VL").
    geometry : how image tokens map to the picture ("dynamic grid, 2 x 2 merge"), or "none".
    tests : what the tests check for it.
    tiny : "module:function" building its tiny random-weight model (tests, demo, device check), or "".
    """

    name: str
    geometry: str
    tests: str
    tiny: str = ""


class Family(NamedTuple):
    adapter: str  # "module:Class"
    model_types: tuple[str, ...]  # config.model_type values this adapter handles
    info: FamilyInfo


SEQUENCE_ONLY = "sequence_only"  # every other type AutoModelForImageTextToText loads: rows and token kinds, no patches
CATALOGUE = Path(__file__).with_name("families.toml")


def read_families(path: Path = CATALOGUE) -> dict[str, Family]:
    """The family catalogue at `path`, in its order (sequence-only mode last)."""
    with path.open("rb") as f:
        tables = tomllib.load(f)
    return {name: _family(table) for name, table in tables.items()}


def _family(t: dict) -> Family:
    info = FamilyInfo(t["name"], t["geometry"], t["tests"], t.get("tiny", ""))
    return Family(t["adapter"], tuple(t["model_types"]), info)


FAMILIES: dict[str, Family] = read_families()


def supported_model_types() -> list[str]:
    return sorted(t for family in FAMILIES.values() for t in family.model_types)


def image_text_to_text_model_types() -> set[str]:
    """The config model_types `AutoModelForImageTextToText` loads (sequence-only mode takes them)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def adapter_class(family: str) -> type[ModelAdapter]:
    """Import the adapter class of `family` (this is where torch and transformers get imported)."""
    module, _, name = FAMILIES[family].adapter.partition(":")
    return getattr(importlib.import_module(module), name)


def adapter_for_model_type(model_type: str) -> type[ModelAdapter]:
    """The family adapter of `model_type`; sequence-only mode for other image-text-to-text models."""
    for name, family in FAMILIES.items():
        if model_type in family.model_types:
            return adapter_class(name)
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
    (the catalogue's `tiny`)."""
    tiny = FAMILIES[family].info.tiny
    if not tiny:
        return None
    module, _, name = tiny.partition(":")
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
