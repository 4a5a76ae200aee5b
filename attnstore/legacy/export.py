"""One image of a store written back in the seed formats, so the seed tools keep working."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from attnstore.errors import AttnstoreError
from attnstore.legacy.formats import ARRAY_FILE, NPZ_DIR, NPZ_NAME, TOKENS_FILE


def export_legacy(
    ds,
    image: int,
    out_dir: str | Path,
    formats: tuple[str, ...] = ("array", "npz", "image"),
    npz_key: str = "attention",
) -> list[Path]:
    """Write one image of a store in the seed formats; returns the files written.

    "array": attention_array.npy, fp32 [layers, heads, seq, seq]: rows the store does not
    hold (image tokens unless extracted with --queries all) are zeros. "npz": attentions_5/
    attention_fp16_rounded_layer_{i}.npz, fp16 [heads, seq, seq] under `npz_key`, same zeros.
    "image": image.png, the store's display copy (longest edge <= 1024 px). decoded_tokens.npy
    (unicode array, token text with BPE markers) is always written.
    """
    from attnstore.analysis import select_image

    unknown = set(formats) - {"array", "npz", "image"}
    if unknown:
        raise AttnstoreError(f"unknown export format(s) {sorted(unknown)}; use array, npz, image")
    img = select_image(ds, image)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = img.sizes["key"]
    positions = np.asarray(img["query_position"].values)
    written = [out / TOKENS_FILE]
    np.save(written[0], np.array([str(t) for t in img["token_text"].values], dtype=str), allow_pickle=False)
    attention = img["attention"]  # [layer, head, query, key], read one layer at a time
    n_layers, n_heads = attention.sizes["layer"], attention.sizes["head"]
    if "array" in formats:
        path = out / ARRAY_FILE
        full = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_layers, n_heads, n, n))
        for layer in range(n_layers):  # one layer in memory at a time (the fp32 square is ~1.4 GB)
            full[layer][:, positions, :] = attention.isel(layer=layer).values
        full.flush()
        del full
        written.append(path)
    if "npz" in formats:
        (out / NPZ_DIR).mkdir(exist_ok=True)
        for layer in range(n_layers):
            square = np.zeros((n_heads, n, n), np.float16)
            square[:, positions, :] = attention.isel(layer=layer).values
            path = out / NPZ_DIR / NPZ_NAME.format(layer)
            np.savez_compressed(path, **{npz_key: square})
            written.append(path)
    if "image" in formats:
        path = out / "image.png"
        Image.fromarray(np.asarray(img["pixels"].values, np.uint8)).save(path)
        written.append(path)
    return written
