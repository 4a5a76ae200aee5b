"""The model adapter interface: what extraction needs from a VLM family.

A new model family is one module with one `ModelAdapter` subclass that says how
to build inputs for (image, prompt), which modules produce the text decoder's
attention, and where the image tokens of *this* processed image sit on the
original picture (`layout`). Loading, generation, capture and storage are
shared.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from attnstore.errors import InvalidArgument, ModelLoadError
from attnstore.geometry import ImageLayout
from attnstore.models.hub import (  # noqa: F401  (hub_offline: re-exported for older imports)
    RANDOM_WEIGHTS_KEY,
    canonical_model_id,
    hub_offline,
    hub_unavailable,
    missing_weights_message,
)


class SavesAsParent:
    """Mixin of a processor subclass that leaves out a sub-processor (the video processor, which needs
    torchvision): it saves as, and so loads from, a standard folder of its parent class."""

    def to_dict(self) -> dict:
        parent = next(c for c in type(self).__mro__[1:] if c is not SavesAsParent)
        return {**super().to_dict(), "processor_class": parent.__name__}


def auto_processor_class() -> type:
    from transformers import AutoProcessor

    return AutoProcessor


class ModelAdapter(ABC):
    """One VLM family. Instances hold a loaded model and its processor."""

    family: ClassVar[str]
    attn_kernel: str = "sdpa"  # set by `load`
    # The processor's class, from a function: transformers is imported when a model loads, not with the module.
    processor_class: ClassVar[Callable[[], type]] = staticmethod(auto_processor_class)
    # Processor outputs with one value per prompt token -> the value the answer's tokens get (forward_inputs).
    per_token_inputs: ClassVar[dict[str, int]] = {}

    def __init__(self, model: torch.nn.Module, processor, model_id: str, revision: str | None = None):
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.revision = revision

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(
        cls, model_id: str, device: str = "cpu", dtype: str | None = None, attn_kernel: str = "sdpa"
    ) -> ModelAdapter:
        """Load weights and processor from a local folder or the HF cache, then the hub if it can be reached.

        The cache comes first, so a cached model never waits on the network (HF_HUB_OFFLINE honoured).

        Parameters
        ----------
        model_id : hub id or local folder.
        device : "cpu", "cuda", "cuda:N" or "mps".
        dtype : weights' dtype ("float32", "bfloat16", "float16"); default float32 on CPU and MPS,
            bfloat16 on CUDA. Captured rows are computed in fp32 whatever it is.
        attn_kernel : the text model's attention kernel ("sdpa", "eager", "flash_attention_2"); rows
            are captured through it (`attnstore.models.capture`).
        """
        from attnstore.models import capture

        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        implementation = capture.register(attn_kernel)
        model_id = canonical_model_id(model_id)
        local = Path(model_id).expanduser()
        source = str(local) if local.is_dir() else model_id
        try:
            model, processor = cls._from_pretrained(source, True, implementation=implementation, dtype=torch_dtype)
        except (OSError, ValueError) as err:
            if local.is_dir():
                raise ModelLoadError(f"cannot load model from '{local}': {err}") from err
            reason = hub_unavailable()
            if reason is not None:
                raise ModelLoadError(missing_weights_message(model_id, reason), param="model") from err
            try:
                model, processor = cls._from_pretrained(source, False, implementation=implementation, dtype=torch_dtype)
            except (OSError, ValueError) as err:
                raise ModelLoadError(missing_weights_message(model_id), param="model") from err
        revision = getattr(model.config, "_commit_hash", None)
        adapter = cls(model.to(torch_device), processor, model_id=model_id, revision=revision)
        adapter.attn_kernel = attn_kernel
        return adapter

    @classmethod
    def _from_pretrained(cls, source: str, local_files_only: bool, implementation: str, dtype: torch.dtype):
        """Return (model, processor); the text model uses `implementation`, the vision tower SDPA."""
        from transformers import AutoModelForImageTextToText

        processor = cls._load_processor(source, local_files_only)
        model = AutoModelForImageTextToText.from_pretrained(
            source,
            local_files_only=local_files_only,
            attn_implementation={"text_config": implementation, "vision_config": "sdpa"},
            dtype=dtype,
        )
        return model, processor

    @classmethod
    def _load_processor(cls, source: str, local_files_only: bool):
        return cls.processor_class().from_pretrained(source, local_files_only=local_files_only)

    # -- what extraction asks -------------------------------------------------------------
    def prepare(self, image: Image.Image, prompt: str) -> dict:
        """Processor output (tensors) for one image and one user prompt, ready for generate."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return self.processor(text=text, images=[image], return_tensors="pt")

    def collate(self, inputs: list[dict]) -> dict:
        """One left-padded batch from `prepare` outputs (one image each), ready for generate.

        Per-token tensors (same shape as input_ids) are padded on the left; other tensors are
        concatenated on their first axis, zero-padded to the largest size first (e.g. Idefics3's
        image views: all-zero views are padding to the model). Adapters whose pixel tensors have
        no batch axis override this.
        """
        lengths = [int(x["input_ids"].shape[1]) for x in inputs]
        width = max(lengths)
        out = {}
        for key, first in inputs[0].items():
            values = [x[key] for x in inputs]
            if not isinstance(first, torch.Tensor):
                continue
            if tuple(first.shape) == tuple(inputs[0]["input_ids"].shape):
                fill = self.pad_token_id if key == "input_ids" else 0
                out[key] = torch.cat([_left_pad(v, width, fill) for v in values])
            else:
                out[key] = _cat_padded(values)
        return out

    @property
    def pad_token_id(self) -> int:
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.eos_token_ids[0]
        return int(pad[0] if isinstance(pad, (list, tuple)) else pad)

    @abstractmethod
    def layout(self, input_ids: np.ndarray, inputs: dict) -> ImageLayout:
        """Kinds and image geometry of the prompt positions, from what the processor produced."""

    def banned_token_ids(self) -> list[int]:
        """Token ids generation must never produce (image placeholders and markers)."""
        return []

    def known_token_ids(self, tokens: list[str]) -> list[int]:
        """Ids of those `tokens` the tokenizer knows (unknown ones map to unk and are dropped)."""
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        unk = self.tokenizer.unk_token_id
        return sorted({i for i in ids if i is not None and i != unk})

    def forward_inputs(self, inputs: dict, sequence: torch.Tensor) -> dict:
        """Model kwargs besides input_ids / attention_mask for one forward pass over `sequence`.

        `inputs` is `prepare`'s output (prompt only); `sequence` is prompt + answer ids  # [seq].
        Per-token processor outputs named in `per_token_inputs` (Qwen2-VL's mm_token_type_ids, Gemma 3's
        token_type_ids) are extended over the answer with the value declared there.
        """
        out = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        for key, fill in self.per_token_inputs.items():
            values = out.get(key)  # [batch, prompt]
            if values is not None:
                n_new = int(sequence.shape[-1]) - int(values.shape[-1])
                out[key] = torch.cat([values, values.new_full((values.shape[0], n_new), fill)], dim=-1)
        return out

    @property
    def image_token_id(self) -> int:
        """The image placeholder's token id (the model config's `image_token_id`)."""
        return int(self.model.config.image_token_id)

    # -- shared behaviour -----------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def random_weights(self) -> bool:
        return bool(getattr(self.model.config, RANDOM_WEIGHTS_KEY, False))

    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def n_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    def token_strings(self, ids: np.ndarray) -> list[str]:
        """Raw token text (BPE markers kept), one string per id."""
        return [t if t is not None else "" for t in self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])]

    def decode(self, ids: np.ndarray) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True).strip()

    def processor_settings(self) -> dict:
        """Processor settings worth recording as provenance (JSON-serialisable)."""
        ip = self.processor.image_processor
        keys = ("size", "max_image_size", "do_image_splitting", "resample", "image_mean", "image_std")
        out = {k: _jsonable(getattr(ip, k)) for k in keys if hasattr(ip, k)}
        out["processor_class"] = type(self.processor).__name__
        return out

    def max_image_tokens(self) -> int:
        """Upper bound of image-block length for any image (sizes the store's key axis)."""
        return 0

    def geometry_attrs(self) -> dict:
        """Store attrs about the image geometry; sequence-only mode says `geometry: none` and why."""
        return {}


def _left_pad(values: torch.Tensor, width: int, fill) -> torch.Tensor:
    """# [1, n] -> [1, width], `fill` on the left."""
    pad = values.new_full((values.shape[0], width - values.shape[1]), fill)
    return torch.cat([pad, values], dim=1)


def _cat_padded(values: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate on axis 0 after zero-padding every other axis to the largest size."""
    shape = [max(v.shape[d] for v in values) for d in range(1, values[0].dim())]
    padded = []
    for v in values:
        full = v.new_zeros((v.shape[0], *shape))
        full[(slice(None), *(slice(0, n) for n in v.shape[1:]))] = v
        padded.append(full)
    return torch.cat(padded)


def resolve_device(device: str) -> torch.device:
    """`device` as a torch device this machine has; a one-line error otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidArgument("device", f"must be cpu, cuda, cuda:N or mps, not '{device}'") from err
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise InvalidArgument("device", f"'{device}' asked, but torch sees no CUDA GPU here")
        if parsed.index is not None and parsed.index >= count:
            raise InvalidArgument("device", f"'{device}' asked, but torch sees {count} CUDA GPU(s)")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise InvalidArgument("device", "'mps' asked, but this machine has no Metal GPU")
    elif parsed.type != "cpu":
        raise InvalidArgument("device", f"must be cpu, cuda, cuda:N or mps, not '{device}'")
    return parsed


DTYPES = ("float32", "bfloat16", "float16")


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """The weights' dtype: as asked, else float32 (bfloat16 on CUDA)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InvalidArgument("dtype", f"must be one of {', '.join(DTYPES)}, not '{dtype}'")
    return getattr(torch, dtype)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in value.items() if v is not None}
    if dataclasses.is_dataclass(value):  # transformers' SizeDict
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items() if v is not None}
    return str(value)
