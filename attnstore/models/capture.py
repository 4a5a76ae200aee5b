"""Attention rows captured inside `generate`, through transformers' attention interface.

The text model is loaded with an attention implementation registered here (`register`): each
call returns the output of a fast kernel (SDPA, eager or flash-attention-2: the model's own
function for it) and, for the query rows a `RowCapture` asks for only, computes
softmax(q·kᵀ·scale + mask) in fp32 from the query and key it was given (after rotary
embeddings, grouped-query heads repeated, soft-capping and the model's own mask, sliding
window included), written as fp16 into preallocated arrays. No `[layer, head, seq, seq]`
tensor is ever built: rows are computed in chunks.

Calls are counted per layer, so the prefill (all prompt positions), every decode step (one
position) and any chunked prefill map to absolute sequence positions without help from the
model. With no capture active the function is the plain kernel.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from attnstore.errors import InvalidArgument

KERNELS = ("sdpa", "eager", "flash_attention_2")
NAME_PREFIX = "attnstore_"
CHUNK_BYTES = 32 * 2**20  # fp32 scores computed at once per image: bounds memory with every row kept

_ACTIVE = threading.local()  # the RowCapture of the generate running in this thread, if any


def implementation_name(kernel: str) -> str:
    """The attention implementation name the text model is loaded with for `kernel`."""
    return NAME_PREFIX + kernel


def register(kernel: str) -> str:
    """Register the capture implementation for `kernel` (and its mask); returns its name.

    The mask function is the kernel's own, so the kernel gets exactly what it expects.
    """
    check_kernel(kernel)
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = implementation_name(kernel)

    def attention(module, query, key, value, attention_mask, **kwargs):
        output = kernel_forward(kernel, module)(module, query, key, value, attention_mask, **kwargs)[0]
        capture = getattr(_ACTIVE, "capture", None)
        layer = getattr(module, "layer_idx", None)
        if capture is not None and layer is not None:
            capture.record(int(layer), query, key, attention_mask, kwargs)
        return output, None

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[kernel])
    return name


def check_kernel(kernel: str) -> None:
    """A one-line error for an unknown kernel or one this machine cannot run."""
    if kernel not in KERNELS:
        raise InvalidArgument("attn_kernel", f"must be one of {', '.join(KERNELS)}, not '{kernel}'")
    if kernel == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
            raise InvalidArgument(
                "attn_kernel", "flash_attention_2 needs a CUDA GPU and the flash-attn package; use sdpa"
            )


def kernel_forward(kernel: str, module: torch.nn.Module):
    """The attention function computing the layer's output: the family's own eager, or the shared ones."""
    if kernel == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[kernel]


@contextmanager
def capturing(capture: RowCapture):
    """Make the registered attention functions of this thread fill `capture`."""
    _ACTIVE.capture = capture
    try:
        yield capture
    finally:
        _ACTIVE.capture = None


@dataclass
class ImageRows:
    """What to keep of one batch entry, and where it goes."""

    pad: int  # left padding of this entry in the batch
    row_of: np.ndarray  # [position] int64: row of `out` each (unpadded) sequence position fills; -1 = not kept
    out: np.ndarray  # [layer, head, row, key] float16, zeros where nothing was written


class RowCapture:
    """Rows to keep for each entry of a generate batch, filled layer by layer as the model runs.

    Parameters
    ----------
    n_layers, n_heads : the text model's.
    pads : left padding of every batch entry.
    rows : per entry, the sequence positions (unpadded) whose rows are kept, in storage order.
    n_keys : per entry, the key capacity (prompt length + answer budget).
    """

    def __init__(self, n_layers: int, n_heads: int, pads: list[int], rows: list[np.ndarray], n_keys: list[int]):
        self.seen = np.zeros(n_layers, dtype=np.int64)  # positions each layer has been called with so far
        self.images = []
        for pad, positions, n_key in zip(pads, rows, n_keys):
            row_of = np.full(n_key, -1, dtype=np.int64)
            row_of[positions] = np.arange(positions.size)
            out = np.zeros((n_layers, n_heads, positions.size, n_key), np.float16)  # pages untouched stay free
            self.images.append(ImageRows(int(pad), row_of, out))

    def record(self, layer: int, query: torch.Tensor, key: torch.Tensor, mask, kwargs: dict) -> None:
        """Keep the wanted rows of one attention call.

        query # [batch, head, n_q, dim] after rotary; key # [batch, kv_head, n_k, dim], past included.
        """
        n_q, n_k = query.shape[2], key.shape[2]
        start = int(self.seen[layer])
        self.seen[layer] += n_q
        q_abs = np.arange(start, start + n_q)  # padded positions of these queries
        k_abs = np.arange(start + n_q - n_k, start + n_q)  # a sliding-window cache may hold only the last keys
        settings = RowSettings.of(query, kwargs)
        for b, image in enumerate(self.images):
            positions = q_abs - image.pad
            inside = np.flatnonzero((positions >= 0) & (positions < image.row_of.size))
            wanted = inside[image.row_of[positions[inside]] >= 0]
            if wanted.size == 0:
                continue
            keys = k_abs - image.pad
            k_lo = int(np.searchsorted(keys, 0))
            k_hi = int(np.searchsorted(keys, image.out.shape[-1]))
            step = max(1, CHUNK_BYTES // (query.shape[1] * n_k * 4))
            for lo in range(0, wanted.size, step):
                sel = wanted[lo : lo + step]
                bias = row_bias(mask, b, sel, q_abs, k_abs, settings.window, query.device)
                weights = row_weights(query[b, :, sel], key[b], bias, settings)  # [head, row, key] fp32
                rows = image.row_of[positions[sel]]
                image.out[layer][:, rows, keys[k_lo] : keys[k_lo] + (k_hi - k_lo)] = (
                    weights[:, :, k_lo:k_hi].to(torch.float16).cpu().numpy()
                )


@dataclass(frozen=True)
class RowSettings:
    scaling: float
    softcap: float | None
    window: int | None

    @classmethod
    def of(cls, query: torch.Tensor, kwargs: dict) -> RowSettings:
        scaling = kwargs.get("scaling")
        return cls(
            scaling=float(query.shape[-1] ** -0.5 if scaling is None else scaling),
            softcap=kwargs.get("softcap"),
            window=kwargs.get("sliding_window"),
        )


def row_weights(query: torch.Tensor, key: torch.Tensor, bias: torch.Tensor, settings: RowSettings) -> torch.Tensor:
    """softmax(q·kᵀ·scale [soft-capped] + bias) in fp32.

    query # [head, row, dim]; key # [kv_head, key, dim]; bias # [row, key] additive. Returns # [head, row, key].
    """
    n_heads, n_rows, dim = query.shape
    n_kv = key.shape[0]
    # Head h uses kv head h // groups (transformers' repeat_kv): group the queries instead of copying keys.
    grouped = query.float().reshape(n_kv, -1, dim)  # [kv_head, group * row, dim]
    scores = torch.matmul(grouped, key.float().transpose(1, 2)).reshape(n_heads, n_rows, -1) * settings.scaling
    if settings.softcap is not None:
        scores = torch.tanh(scores / settings.softcap) * settings.softcap
    return torch.softmax(scores + bias, dim=-1)


def row_bias(mask, b: int, sel: np.ndarray, q_abs: np.ndarray, k_abs: np.ndarray, window, device) -> torch.Tensor:
    """Additive fp32 mask # [row, key] of the selected queries of entry `b`, from the kernel's own mask.

    SDPA's mask is boolean [batch, 1, q, k] or None when plain causal (no padding) lets it use
    `is_causal`; eager's is additive float; flash-attention's is a [batch, k] padding mask or None.
    """
    if mask is not None and mask.dim() == 4:
        rows = mask[b if mask.shape[0] > 1 else 0, 0][torch.as_tensor(sel, device=mask.device)]
        if rows.dtype == torch.bool:
            return torch.zeros(rows.shape, device=rows.device).masked_fill(~rows, float("-inf"))
        return rows.float()
    q = torch.as_tensor(q_abs[sel], device=device)[:, None]
    k = torch.as_tensor(k_abs, device=device)[None, :]
    allowed = k <= q
    if window is not None:
        allowed &= k > q - window
    if mask is not None:  # [batch, k] padding of flash-attention
        allowed &= mask[b].bool()[None, -k_abs.size :]
    return torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))
