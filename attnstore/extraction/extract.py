"""Run a VLM on (image, prompt) pairs, generate answers, capture their attention in the same pass.

The text model's attention goes through `attnstore.models.capture` (loaded by `ModelAdapter.load`):
while `generate` runs, the prefill gives the prompt's rows and each decode step the new
token's row, computed in fp32 for the kept rows only. The last answer token is never fed
back by a plain `generate`, so generation runs one cached step more and drops the token that
step produces. The vision tower runs once; many images run as one left-padded batch.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from PIL import Image

from attnstore.errors import InvalidArgument, ModelLoadError
from attnstore.models.base import ModelAdapter
from attnstore.models.capture import RowCapture, capturing
from attnstore.records import Extraction, extend_layout, query_positions


@torch.inference_mode()
def generate_answer(adapter: ModelAdapter, inputs: dict, max_new_tokens: int) -> torch.Tensor:
    """Plain greedy generation, no capture; returns the full sequence (prompt + answer) as ids  # [seq]."""
    output = adapter.model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        suppress_tokens=adapter.banned_token_ids() or None,
        eos_token_id=adapter.eos_token_ids or None,
    )
    return output[0]


def extract(
    adapter: ModelAdapter,
    image: Image.Image,
    prompt: str,
    max_new_tokens: int = 32,
    queries: str = "text",
) -> Extraction:
    """Generate an answer for (image, prompt) and capture every layer's and head's attention."""
    return extract_batch(adapter, [image], [prompt], max_new_tokens=max_new_tokens, queries=queries)[0]


@torch.inference_mode()
def extract_batch(
    adapter: ModelAdapter,
    images: list[Image.Image],
    prompts: list[str],
    max_new_tokens: int = 32,
    queries: str = "text",
) -> list[Extraction]:
    """Answer every (image, prompt) in one `generate` and capture the attention rows of each.

    Parameters
    ----------
    adapter : a loaded model (`attnstore.models.load_adapter`).
    images, prompts : one prompt per image.
    max_new_tokens : answer budget (greedy decoding; generation stops at the end-of-turn token).
    queries : "text" keeps the prompt's text rows and the answer's; "text+image" those and the image
        patch tokens' rows; "all" every row.

    Returns
    -------
    list of Extraction
        One per image, equal to what a batch of one gives within fp16 rounding.
    """
    if any(not p.strip() for p in prompts):
        raise InvalidArgument("prompt", "is empty")
    query_positions(np.zeros(0, np.int8), queries)  # checks the mode before any work
    prepared = [adapter.prepare(image, prompt) for image, prompt in zip(images, prompts)]
    prompt_ids = [x["input_ids"][0].numpy() for x in prepared]
    layouts = [adapter.layout(ids, x) for ids, x in zip(prompt_ids, prepared)]
    batch = _to_model(adapter, adapter.collate(prepared))
    width = int(batch["input_ids"].shape[1])
    kept = [_kept_positions(layout.kind, max_new_tokens, queries) for layout in layouts]
    capture = RowCapture(
        adapter.n_layers,
        adapter.n_heads,
        pads=[width - ids.size for ids in prompt_ids],
        rows=kept,
        n_keys=[ids.size + max_new_tokens for ids in prompt_ids],
    )
    with capturing(capture):
        output = _generate_fed_back(adapter, batch, max_new_tokens).cpu().numpy()
    _check_every_layer_captured(adapter, capture)
    results = []
    for b, (ids, layout) in enumerate(zip(prompt_ids, layouts)):
        generated = _answer_ids(output[b, width:], adapter.eos_token_ids, max_new_tokens)
        sequence = np.concatenate([ids, generated]).astype(np.int32)
        layout = extend_layout(layout, generated.size)
        rows = query_positions(layout.kind, queries)
        results.append(
            Extraction(
                attention=capture.images[b].out[:, :, : rows.size, : sequence.size],
                query_position=rows,
                token_id=sequence,
                token_text=adapter.token_strings(sequence),
                layout=layout,
                prompt=prompts[b],
                answer=adapter.decode(generated),
            )
        )
    return results


def _check_every_layer_captured(adapter: ModelAdapter, capture: RowCapture) -> None:
    """Rows of a layer whose attention bypassed transformers' attention interface would stay all zero."""
    missed = np.flatnonzero(capture.seen == 0)
    if missed.size:
        raise ModelLoadError(
            f"{type(adapter.model).__name__}: text layers {', '.join(map(str, missed))} never called transformers' "
            "attention interface with a layer index, so their attention cannot be captured",
            param="model",
        )


def _kept_positions(prompt_kinds: np.ndarray, max_new_tokens: int, queries: str) -> np.ndarray:
    """Positions whose rows are kept if the answer uses its whole budget: the prompt's, then the answer's."""
    prompt_rows = query_positions(prompt_kinds, queries)
    return np.concatenate([prompt_rows, prompt_kinds.size + np.arange(max_new_tokens)]).astype(np.int64)


def _to_model(adapter: ModelAdapter, batch: dict) -> dict:
    """Tensors on the model's device; floating ones (pixels) in its dtype."""
    model = adapter.model
    return {k: v.to(model.device, dtype=model.dtype if v.is_floating_point() else None) for k, v in batch.items()}


class _StopOnceFedBack:
    """Stops an entry one step after it produced an end token, so that token is fed back (its row
    computed) too. `eos_token_id` makes generate pad entries that stopped while others go on."""

    def __init__(self, eos_token_ids: list[int], prompt_width: int, device):
        self.eos_token_id = torch.as_tensor(eos_token_ids, dtype=torch.long, device=device)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        fed = input_ids[:, self.prompt_width : -1]  # answer tokens already fed back
        return torch.isin(fed, self.eos_token_id).any(dim=-1)


def _generate_fed_back(adapter: ModelAdapter, batch: dict, max_new_tokens: int) -> torch.Tensor:
    """Greedy generate, each entry running one step past its last answer token  # [batch, seq]."""
    from transformers import StoppingCriteriaList

    config = copy.deepcopy(adapter.model.generation_config)
    # The stop below replaces the end-token stop (one step later). Not None: generate would take the
    # model's own end token back from its defaults and stop before the end token's row is computed.
    config.eos_token_id = []
    config.pad_token_id = adapter.pad_token_id
    config.do_sample = False
    config.max_new_tokens = max_new_tokens + 1
    config.suppress_tokens = adapter.banned_token_ids() or None
    stops = []
    if adapter.eos_token_ids:
        stops.append(_StopOnceFedBack(adapter.eos_token_ids, int(batch["input_ids"].shape[1]), adapter.model.device))
    return adapter.model.generate(**batch, generation_config=config, stopping_criteria=StoppingCriteriaList(stops))


def _answer_ids(tail: np.ndarray, eos_token_ids: list[int], max_new_tokens: int) -> np.ndarray:
    """The answer within generate's output after the prompt: up to the first end token (kept), within budget."""
    tail = tail[:max_new_tokens]
    ends = np.flatnonzero(np.isin(tail, eos_token_ids))
    return tail[: ends[0] + 1] if ends.size else tail
