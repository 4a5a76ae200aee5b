"""Run a VLM on (image, prompt), generate an answer, capture its attention.

Generation runs without capture. Then one forward pass over prompt + answer
gives every attention row of the answer (identical to per-step generate with
`output_attentions`, DESIGN.md §3). Forward hooks on each layer's self-attention
module keep only the query rows we store and cast them to fp16 at once, so the
full fp32 `[layer, head, seq, seq]` tensor never exists.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from attnstore.errors import InvalidArgument
from attnstore.models.base import ModelAdapter
from attnstore.records import Extraction, extend_layout, query_positions


@torch.inference_mode()
def generate_answer(adapter: ModelAdapter, inputs: dict, max_new_tokens: int) -> torch.Tensor:
    """Greedy generation; returns the full sequence (prompt + answer) as ids  # [seq]."""
    output = adapter.model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        suppress_tokens=adapter.banned_token_ids() or None,
        eos_token_id=adapter.eos_token_ids or None,
    )
    return output[0]


@contextmanager
def capture_rows(modules: list[torch.nn.Module], rows: torch.Tensor, out: np.ndarray):
    """Fill `out[layer]` with the fp16 attention rows `rows` of each module's weights.

    out: # [layer, head, query, key] float16, preallocated.
    """

    def hook_for(layer: int):
        def hook(module, args, output):
            weights = output[1]  # [batch, head, query, key]; None unless attention is eager
            if weights is None:
                raise RuntimeError("attention weights are None: the text model must use eager attention")
            out[layer] = weights[0].index_select(1, rows).to(torch.float16).cpu().numpy()

        return hook

    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def capture_attention(adapter: ModelAdapter, inputs: dict, sequence: torch.Tensor, rows: np.ndarray) -> np.ndarray:
    """One forward pass over `sequence` with pixel inputs; returns # [layer, head, query, key] float16."""
    out = np.zeros((adapter.n_layers, adapter.n_heads, rows.shape[0], sequence.shape[0]), np.float16)
    model_inputs = adapter.forward_inputs(inputs, sequence)
    with capture_rows(adapter.attention_modules(), torch.as_tensor(rows, dtype=torch.long), out):
        adapter.model(
            input_ids=sequence[None],
            attention_mask=torch.ones_like(sequence)[None],
            use_cache=False,
            **model_inputs,
        )
    return out


def extract(
    adapter: ModelAdapter,
    image: Image.Image,
    prompt: str,
    max_new_tokens: int = 32,
    queries: str = "text",
) -> Extraction:
    """Generate an answer for (image, prompt) and capture every layer's and head's attention."""
    if not prompt.strip():
        raise InvalidArgument("prompt", "is empty")
    inputs = adapter.prepare(image, prompt)
    prompt_ids = inputs["input_ids"][0]
    layout = adapter.layout(prompt_ids.numpy(), inputs)
    sequence = generate_answer(adapter, inputs, max_new_tokens)
    generated = sequence[prompt_ids.shape[0] :].numpy()
    layout = extend_layout(layout, generated.shape[0])
    rows = query_positions(layout.kind, queries)
    attention = capture_attention(adapter, inputs, sequence, rows)
    ids = sequence.numpy().astype(np.int32)
    return Extraction(
        attention=attention,
        query_position=rows,
        token_id=ids,
        token_text=adapter.token_strings(ids),
        layout=layout,
        prompt=prompt,
        answer=adapter.decode(generated),
    )
