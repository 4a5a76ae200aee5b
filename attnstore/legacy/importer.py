"""Seed folders -> a new store: planned from the tokens, rows read and checked, renamed into place."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnstore.errors import InvalidArgument, StoreError
from attnstore.geometry import ImageLayout
from attnstore.inputs.images import load_image
from attnstore.legacy.discover import LegacySource, find_sources
from attnstore.legacy.files import load_npy, load_npz
from attnstore.legacy.formats import TOKENS_FILE, LegacyFormatError
from attnstore.legacy.layout import DEFAULT_TILE_TOKENS, clean, legacy_layout, prompt_length
from attnstore.records import Extraction, extend_layout, query_positions
from attnstore.schema import TokenKind
from attnstore.store import AttnStore, StoreShape

ROW_SUM_TOLERANCE = 1e-2  # fp16 softmax rows: off by more and the import warns


def read_rows(src: LegacySource, rows: np.ndarray) -> np.ndarray:
    """Attention rows at sequence positions `rows`  # [layer, head, query, key] float16.

    A token the files hold no key for (the last, never fed back) gets a zero column.
    """
    n = src.n_att
    if src.format == "seed000":
        full = load_npy(src.files[0], mmap=True).reshape(src.n_layers, src.n_heads, n, n)
        att = np.asarray(full[:, :, rows, :], dtype=np.float16)  # memmap: reads only these rows
    else:
        local = rows - src.first_row
        att = np.stack([load_npz(p, src.npz_key).reshape(src.n_heads, -1, n)[:, local, :] for p in src.files])
    check_weights(src.folder, att)
    out = np.zeros((*att.shape[:3], src.n_key), np.float16)
    out[..., :n] = att
    return out


def check_weights(folder: Path, att: np.ndarray) -> None:
    """Softmax weights are finite and non-negative (a LegacyFormatError, one line, otherwise)."""
    if not np.isfinite(att).all():
        raise LegacyFormatError(f"{folder}: the attention holds NaN or infinite values; not softmax weights")
    if (att < 0).any():
        raise LegacyFormatError(f"{folder}: the attention holds negative values; not softmax weights")


def row_sum_error(att: np.ndarray) -> float:
    """How far the worst row of `att` ([..., key]) is from summing to 1."""
    return float(np.abs(att.astype(np.float32).sum(-1) - 1).max(initial=0))


@dataclass
class LegacyImage:
    """One folder, planned: layout and rows known, attention not loaded yet."""

    src: LegacySource
    layout: ImageLayout
    rows: np.ndarray  # [query] sequence positions to store
    n_prompt: int


def plan_image(
    src: LegacySource,
    grid: tuple[int, int] | None = None,
    prompt_tokens: int | None = None,
    queries: str = "text",
    tile_tokens: int = DEFAULT_TILE_TOKENS,
) -> LegacyImage:
    """Token layout and the rows to store for one folder (cheap: tokens only)."""
    tokens = src.tokens
    n_prompt = prompt_tokens if prompt_tokens is not None else prompt_length(tokens)
    n_prompt = len(tokens) if n_prompt is None else n_prompt
    if not 0 < n_prompt <= len(tokens):
        raise InvalidArgument("prompt_tokens", f"{n_prompt} is outside 1-{len(tokens)} ({src.folder / TOKENS_FILE})")
    try:
        layout = legacy_layout(tokens[:n_prompt], grid, tile_tokens)
    except ValueError as err:
        raise LegacyFormatError(f"{src.folder / TOKENS_FILE}: {err}") from err
    layout = extend_layout(layout, len(tokens) - n_prompt)
    rows = query_positions(layout.kind, queries)
    # npz files may hold only the last rows (the answer); the last token may have no row at all
    rows = rows[(rows >= src.first_row) & (rows < src.n_att)]
    if rows.size == 0:
        raise LegacyFormatError(f"{src.folder}: no stored attention rows for the text tokens")
    return LegacyImage(src, layout, rows.astype(np.int32), n_prompt)


def to_extraction(item: LegacyImage) -> Extraction:
    """One planned folder as an `Extraction` (what `AttnStore.write_image` takes); reads the attention."""
    tokens, n_prompt = item.src.tokens, item.n_prompt
    return Extraction(
        attention=read_rows(item.src, item.rows),
        query_position=item.rows,
        token_id=np.full(len(tokens), -1, np.int32),  # the seed formats keep no token ids
        token_text=list(tokens),
        layout=item.layout,
        prompt=_prompt_text(tokens[:n_prompt], item.layout.kind[:n_prompt]),
        answer="".join(clean(t) for t in tokens[n_prompt:]).strip(),
    )


def _prompt_text(tokens: list[str], kinds: np.ndarray) -> str:
    """The user's prompt: text tokens after the image block, without the template's 'Assistant:'."""
    image = np.flatnonzero(kinds == int(TokenKind.IMAGE_SPECIAL))
    start = int(image[-1]) + 1 if image.size else 0
    text = "".join(clean(t) for t, k in zip(tokens[start:], kinds[start:]) if k == TokenKind.PROMPT_TEXT)
    return text.strip().removesuffix("Assistant:").strip()


def import_legacy(
    path: str | Path,
    out: str | Path,
    grid: tuple[int, int] | None = None,
    prompt_tokens: int | None = None,
    queries: str = "text",
    model_id: str = "HuggingFaceTB/SmolVLM-256M-Instruct",
    image_dir: str | Path | None = None,
    tile_tokens: int = DEFAULT_TILE_TOKENS,
    on_image: Callable[[str], None] | None = None,
    attn_dir: str | Path | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> list[str]:
    """Import seed folders into a new store at `out`; returns the image names written.

    Every folder is checked from headers first; the store is written to a temporary folder
    beside `out` and renamed to `out` only when every image is complete.

    Parameters
    ----------
    path : a seed folder, or a batch root with one seed folder per image.
    out : the new store (must not exist).
    grid : (rows, cols) tile grid for token files without `<row_r_col_c>` markers.
    prompt_tokens : number of prompt tokens (default: up to the last 'Assistant:').
    queries : "text" (prompt + answer rows) or "all" (every stored row).
    model_id : recorded as the store's model.
    image_dir : where `<folder name>.<png|jpg>` is found when a folder holds no image.
    tile_tokens : patch tokens per tile, with `grid`.
    on_image : called with each image name once it is written.
    attn_dir : the folder of per-layer .npz files inside each seed folder (default: found,
        see `layer_dir`).
    on_warning : called with a line for each folder whose attention rows do not sum to 1
        (imported as given). NaN, infinite, negative or non-float attention is refused.
    """
    out = Path(out)
    if "://" in str(out):
        raise StoreError("import-legacy writes a local store; copy it to remote storage afterwards")
    if out.exists():
        raise StoreError(f"'{out}' already exists: the import creates a new store", param="out")
    sources = find_sources(path, image_dir, attn_dir)
    _check_same_model(sources)
    items = [plan_image(src, grid, prompt_tokens, queries, tile_tokens) for src in sources]
    names = _unique_names(sources)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        first = to_extraction(items[0])
        rounding = detected_rounding(first.attention)
        attrs = {**_attrs(sources, model_id, queries), **rounding}
        store = AttnStore.create(str(tmp), _shape(items), attrs, first=first)
        for index, item, name in zip(store.allocate(names, [str(s.folder) for s in sources]), items, names):
            extraction = first if item is items[0] else to_extraction(item)
            _check_rounding(extraction, rounding, item.src.folder)
            worst = row_sum_error(extraction.attention)
            if worst > ROW_SUM_TOLERANCE and on_warning:
                off = f"worst off by {worst:.3g}"
                on_warning(f"{item.src.folder}: attention rows do not sum to 1 ({off}); imported as given")
            store.write_image(index, extraction, load_image(item.src.image))
            if on_image:
                on_image(name)
        store.consolidate()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names


def detected_rounding(attention: np.ndarray) -> dict:
    """Store attrs recording that the seed rounded its values (seed 004 keeps fp16 rounded to 3 decimals):
    the store then keeps them as integer codes where that is smallest (`attnstore.store.codecs`)."""
    from attnstore.store.codecs import grid_decimals

    decimals = grid_decimals(attention)
    return {} if decimals is None else {"round_decimals": decimals, "round_source": "detected on import"}


def _check_rounding(extraction, rounding: dict, folder) -> None:
    """Every folder of one import rounded alike: the store would otherwise round the others silently."""
    from attnstore.store.codecs import on_grid

    decimals = rounding.get("round_decimals")
    if decimals is not None and not on_grid(extraction.attention, decimals):
        raise LegacyFormatError(
            f"{folder}: its attention is not rounded to {decimals} decimals like the first folder's: import the "
            "rounded and the unrounded folders into two stores"
        )


def _check_same_model(sources: list[LegacySource]) -> None:
    first = sources[0]
    for src in sources[1:]:
        if (src.n_layers, src.n_heads) != (first.n_layers, first.n_heads):
            raise LegacyFormatError(
                f"{src.folder} has {src.n_layers} layers x {src.n_heads} heads but {first.folder} has "
                f"{first.n_layers} x {first.n_heads}: one store holds one model"
            )


def _unique_names(sources: list[LegacySource]) -> list[str]:
    names = [s.folder.name for s in sources]
    return names if len(set(names)) == len(names) else [str(s.folder) for s in sources]


def _shape(items: list[LegacyImage]) -> StoreShape:
    return StoreShape(
        items[0].src.n_layers,
        items[0].src.n_heads,
        query_capacity=max(int(i.rows.size) for i in items),
        key_capacity=max(i.src.n_key for i in items),
    )


def _attrs(sources: list[LegacySource], model_id: str, queries: str) -> dict:
    return {
        "model_id": model_id,
        "model_family": "idefics3",
        "random_weights": False,
        "queries": queries,
        "imported_from": sorted({s.format for s in sources}),
        "token_ids": "unknown (seed formats keep only token text; token_id = -1)",
    }
