"""Checks shared by the per-family tests (tests/models/test_*.py and test_families.py).

Capture is checked against plain transformers (eager `output_attentions`, greedy `generate`),
geometry against the pixels the processor produced for a colour-coded picture, the mask
against the family's own rule written out here (not read from the adapter).
"""

from __future__ import annotations

import numpy as np

from attnstore.extraction.extract import extract, extract_batch
from attnstore.extraction.synthetic import _gradient_image
from attnstore.models import load_adapter
from attnstore.schema import TokenKind

PROMPTS = ["Can you describe this image?", "What?", "Is there a dog on the left side of the picture?"]
NEW_TOKENS = 4
ATOL = 2e-3  # fp16 rounding of values in [0, 1]
COLOUR_TOLERANCE = 0.02  # max |colour error| as a fraction of the colour range

# (width, height) of the pictures each family's capture runs use, one per prompt
RUN_IMAGES = {
    "gemma3": [(200, 80), (80, 170), (100, 90)],  # wide (3 pan-and-scan crops), tall (2 crops), near-square (one view)
    "paligemma": [(200, 80), (80, 170), (100, 90)],  # wide, tall, near-square
    "internvl": [(200, 80), (80, 170), (64, 64)],  # wide (3 x 1 tiles), tall (1 x 2), square (one view)
    "mistral3": [(200, 80), (80, 170), (100, 90)],  # wide, tall, near-square: three grid shapes in one batch
}
BUILD_OPTIONS = {"gemma3": {"pan_and_scan": True}}  # the tiny builder's options, where not its defaults


class FamilyRuns:
    """One tiny model's extractions (every row kept), cached per (kernel, batch size).

    images : (width, height) of the pictures, one per prompt of PROMPTS.
    """

    def __init__(self, path, images: list[tuple[int, int]]):
        self.path = str(path)
        self.images = [_gradient_image(w, h, seed=i) for i, (w, h) in enumerate(images)]
        self._adapters, self._results, self._eager = {}, {}, {}

    def adapter(self, kernel: str = "sdpa"):
        if kernel not in self._adapters:
            self._adapters[kernel] = load_adapter(self.path, attn_kernel=kernel)
        return self._adapters[kernel]

    def eager_attention(self, reference, i: int, token_ids: np.ndarray) -> np.ndarray:
        """transformers' eager output_attentions over image i + `token_ids`, computed once per sequence."""
        key = (i, tuple(int(t) for t in token_ids))
        if key not in self._eager:
            self._eager[key] = reference.attention(self.adapter(), self.images[i], PROMPTS[i], token_ids)
        return self._eager[key]

    def results(self, kernel: str = "sdpa", batch_size: int = 1):
        key = (kernel, batch_size)
        if key not in self._results:
            adapter, prompts = self.adapter(kernel), PROMPTS[: len(self.images)]
            if batch_size == 1:
                out = [extract(adapter, im, p, NEW_TOKENS, queries="all") for im, p in zip(self.images, prompts)]
            else:
                out = extract_batch(adapter, self.images, prompts, NEW_TOKENS, queries="all")
            self._results[key] = out
        return self._results[key]


def check_rows_equal_eager(runs: FamilyRuns, reference, kernel: str, batch_size: int) -> None:
    adapter = runs.adapter(kernel)
    for i, result in enumerate(runs.results(kernel, batch_size)):
        expected = runs.eager_attention(reference, i, result.token_id)  # [layer, head, seq, seq]
        assert result.attention.shape == (adapter.n_layers, adapter.n_heads, result.n_key, result.n_key)
        np.testing.assert_allclose(result.attention.astype(np.float32), expected, rtol=0, atol=ATOL)


def check_batch_equals_one(runs: FamilyRuns) -> None:
    for one, many in zip(runs.results("sdpa", 1), runs.results("sdpa", 3)):
        assert np.array_equal(one.token_id, many.token_id)
        np.testing.assert_allclose(many.attention.astype(np.float32), one.attention.astype(np.float32), atol=ATOL)


def check_answer_is_plain_generate(runs: FamilyRuns, reference, batch_size: int) -> None:
    adapter = runs.adapter("sdpa")
    for image, prompt, result in zip(runs.images, PROMPTS, runs.results("sdpa", batch_size)):
        plain = reference.generate(adapter, image, prompt, NEW_TOKENS)
        generated = result.token_id[result.layout.kind == TokenKind.GENERATED]
        assert generated.tolist() == plain.tolist() and len(generated) >= 1
        assert result.answer == adapter.decode(plain)


def check_mask(runs: FamilyRuns, allowed_of) -> None:
    """Rows sum to 1, are > 0 exactly where the family's mask allows, 0 elsewhere.

    allowed_of(result, layer) -> # [query, key] bool, the family's rule for that layer.
    """
    for result in runs.results("sdpa", 1):
        rows = result.attention.astype(np.float32)  # [layer, head, query, key]
        np.testing.assert_allclose(rows.sum(-1), 1.0, atol=5e-3)
        for layer in range(rows.shape[0]):
            allowed = allowed_of(result, layer)
            assert rows[layer][:, ~allowed].max(initial=0) == 0
            assert rows[layer][:, allowed].min() > 0


def image_blocks(token_ids: np.ndarray, image_token_id: int) -> list[np.ndarray]:
    """Positions of each contiguous run of the image placeholder token, in order."""
    is_image = np.concatenate([[False], np.asarray(token_ids) == image_token_id, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(is_image))
    return [np.arange(a, b) for a, b in zip(edges[::2], edges[1::2])]


def causal(n: int) -> np.ndarray:
    return np.tril(np.ones((n, n), bool))  # [query, key]


def cell_colours(rgb: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Mean (red, green) of each cell of a rows x cols grid over a [rgb, y, x] picture  # [cell, 2] row-major."""
    _, h, w = rgb.shape
    cells = rgb[:2, : h - h % rows, : w - w % cols].reshape(2, rows, h // rows, cols, w // cols).mean((2, 4))
    return cells.reshape(2, -1).T


def unnormalise(pixels: np.ndarray, image_processor) -> np.ndarray:
    """# [..., rgb, y, x] normalised -> [0, 1] colours."""
    mean = np.asarray(image_processor.image_mean)[:, None, None]
    std = np.asarray(image_processor.image_std)[:, None, None]
    return pixels * std + mean


def expected_colours(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(red, green) of `_gradient_image` at each box centre  # [token, 2]."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # normalised (x, y)
    size = np.array([width, height])
    # pixel i of n has value i / (n - 1); normalised u falls on pixel u * n - 0.5
    return np.clip((centre * size - 0.5) / (size - 1), 0, 1)


def check_store_validates(runs: FamilyRuns, folder, mask: str) -> None:
    """Every row kept, into a store: it records the family's mask and validates; for a bidirectional
    mask, the same rows read as causal would be refused (the bidirectional part is really there)."""
    from attnstore.extraction.pipeline import run_extraction
    from attnstore.store import open_dataset
    from attnstore.store.validation import check_image, row_sum_tolerance, validate_store

    paths = []
    for i, image in enumerate(runs.images[:2]):
        paths.append(folder / f"im{i}.png")
        image.save(paths[-1])
    out = str(folder / "store.zarr")
    run_extraction(runs.adapter(), paths, "What?", out, max_new_tokens=3, queries="all", show_progress=False)
    assert validate_store(out).problems == []
    ds = open_dataset(out)
    assert ds.attrs["attention_mask"] == mask
    tol = row_sum_tolerance(ds.attrs["keep_bits"])
    as_causal = check_image(ds.isel(image=0), tol, mask="causal")
    assert ("attention on positions after the query token (not causal)" in as_causal) == (mask != "causal")


def run_layout(adapter, width: int, height: int, prompt: str = PROMPTS[0]):
    """(the processor's inputs, the adapter's layout) for a `_gradient_image` of that size."""
    inputs = adapter.prepare(_gradient_image(width, height), prompt)
    return inputs, adapter.layout(inputs["input_ids"][0].numpy(), inputs)


def qwen_token_colours(adapter, inputs, layout) -> np.ndarray:
    """Mean (red, green) of the processed pixels under each image token's merged patch  # [token, 2].

    The picture is rebuilt from the Qwen-VL processor's flat patches, independently of the adapter.
    """
    ip = adapter.processor.image_processor
    p, m, t_patch = ip.patch_size, ip.merge_size, ip.temporal_patch_size
    _, h, w = inputs["image_grid_thw"][0].tolist()
    # The image processor's patchify order: (h/m, w/m, m, m) patches, each (channel, time, p, p).
    flat = inputs["pixel_values"].numpy().reshape(h // m, w // m, m, m, 3, t_patch, p, p)[..., 0, :, :]
    rgb = unnormalise(flat.transpose(4, 0, 2, 5, 1, 3, 6).reshape(3, h * p, w * p), ip)  # [rgb, y, x]
    rows, cols = layout.grid_rows, layout.grid_cols
    cells = rgb[:2].reshape(2, rows, rgb.shape[1] // rows, cols, rgb.shape[2] // cols).mean((2, 4))  # [rg, row, col]
    pos = np.flatnonzero(layout.kind == TokenKind.IMAGE_TILE)
    return cells[:, layout.patch_row[pos], layout.patch_col[pos]].T


def check_wrong_grid_mappings_fail(colours: np.ndarray, layout, width: int, height: int, tolerance: float) -> None:
    """The colour check is tight: a transposed grid or one cell of offset is caught (one-view layouts)."""
    rows, cols = layout.grid_rows, layout.grid_cols
    boxes = layout.patch_box[layout.kind == TokenKind.IMAGE_TILE]
    col, row = np.divmod(np.arange(rows * cols), rows)  # tokens read column-major
    transposed = np.stack([col / cols, row / rows, (col + 1) / cols, (row + 1) / rows], axis=1)
    shifted = boxes + [1 / cols, 0, 1 / cols, 0]
    for wrong in (transposed, shifted):
        assert np.abs(colours - expected_colours(wrong, width, height)).max() > 2 * tolerance
