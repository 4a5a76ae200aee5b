"""Seed folders found and checked from their headers: one LegacySource each, no attention loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attnstore.errors import InvalidArgument
from attnstore.inputs.images import IMAGE_SUFFIXES
from attnstore.legacy.files import load_npy, npz_header, read_tokens
from attnstore.legacy.formats import (
    ARRAY_FILE,
    NPZ_DIRS,
    NPZ_NAME,
    NPZ_PATTERN,
    TOKENS_FILE,
    LegacyFormatError,
    check_attention_header,
)


@dataclass
class LegacySource:
    """One seed-format folder, checked from headers (no attention loaded yet)."""

    folder: Path
    format: str  # "seed000" (attention_array.npy) or "seed004" (a folder of per-layer .npz)
    tokens: list[str]
    n_layers: int
    n_heads: int
    first_row: int  # attention rows cover positions first_row .. n_att-1
    n_att: int  # keys in the files: len(tokens), or one less when the last token was never fed back
    files: list[Path]
    npz_key: str | None
    image: Path

    @property
    def n_key(self) -> int:
        return len(self.tokens)


def layer_dir(folder: Path, attn_dir: str | Path | None = None) -> Path | None:
    """The folder of per-layer .npz files inside `folder`, or None.

    `attn_dir` names it (relative to `folder`); otherwise `attentions_5/`, then `attentions/`
    (the seed's current and older names), then the one sub-folder (or `folder` itself) that
    holds files named like `attention_fp16_rounded_layer_0.npz`.
    """
    if attn_dir is not None:
        chosen = folder / attn_dir
        if not chosen.is_dir():
            raise InvalidArgument("attn_dir", f"'{attn_dir}' is not a folder inside {folder}")
        return chosen
    for name in NPZ_DIRS:
        if (folder / name).is_dir():
            return folder / name
    found = [d for d in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())) if _holds_layer_files(d)]
    if len(found) > 1:
        names = ", ".join(f"'{d.relative_to(folder)}'" for d in found)
        raise InvalidArgument("attn_dir", f"names the layer folder to read: {folder} has several ({names})")
    return found[0] if found else None


def _holds_layer_files(folder: Path) -> bool:
    return any(NPZ_PATTERN.match(p.name) for p in folder.iterdir())


def is_legacy_folder(folder: Path, attn_dir: str | Path | None = None) -> bool:
    """Whether `folder` holds a seed 000 array or a folder of per-layer .npz files."""
    if not folder.is_dir():
        return False
    if (folder / ARRAY_FILE).is_file():
        return True
    if attn_dir is not None:
        return (folder / attn_dir).is_dir()
    try:
        return layer_dir(folder) is not None
    except InvalidArgument:
        return True  # ambiguous, but seed-shaped: inspect_folder reports it


def find_sources(
    path: str | Path, image_dir: str | Path | None = None, attn_dir: str | Path | None = None
) -> list[LegacySource]:
    """A seed folder, or a batch root whose sub-folders are seed folders (sorted by name).

    `attn_dir` names the folder of per-layer .npz files inside each seed folder (default: found).
    """
    root = Path(path)
    if not root.is_dir():
        raise LegacyFormatError(f"{root} is not a folder")
    if is_legacy_folder(root, attn_dir):
        return [inspect_folder(root, image_dir, attn_dir)]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and is_legacy_folder(p, attn_dir))
    if not folders:
        where = f"'{attn_dir}'" if attn_dir is not None else f"a folder of {NPZ_NAME.format('{i}')} files"
        raise LegacyFormatError(
            f"{root} holds neither {ARRAY_FILE} nor {where} (seed formats), nor sub-folders that do"
        )
    return [inspect_folder(f, image_dir, attn_dir) for f in folders]


def inspect_folder(
    folder: Path, image_dir: str | Path | None = None, attn_dir: str | Path | None = None
) -> LegacySource:
    """Check one folder's files and shapes from their headers."""
    tokens = read_tokens(folder / TOKENS_FILE)
    n = len(tokens)
    if (folder / ARRAY_FILE).is_file() and attn_dir is None:
        path = folder / ARRAY_FILE
        full = load_npy(path, mmap=True)  # memory-mapped: only the header is read
        check_attention_header(path, full.shape, full.dtype, None)
        shape = _squeeze_batch(full.shape, 4)
        if len(shape) != 4 or shape[2] != shape[3] or not _keys_fit(shape[3], n):
            raise LegacyFormatError(
                f"{path} has shape {shape}; expected [layers, heads, {n}, {n}] (or {n - 1}, {n - 1}: the last "
                f"token without attention) to match the {n} tokens of {TOKENS_FILE}"
            )
        image = find_image(folder, image_dir)
        return LegacySource(folder, "seed000", tokens, shape[0], shape[1], 0, shape[3], [path], None, image)
    files, key, shape = _layer_files(layer_dir(folder, attn_dir), n)
    image = find_image(folder, image_dir)
    return LegacySource(
        folder, "seed004", tokens, len(files), shape[0], shape[2] - shape[1], shape[2], files, key, image
    )


def _keys_fit(n_att: int, n_tokens: int) -> bool:
    """The attention covers every token, or all but the last (generated, never fed back)."""
    return n_att in (n_tokens, n_tokens - 1) and n_att > 0


def _squeeze_batch(shape: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """Drop batch axes of size 1 beyond the expected rank ([1, heads, q, k] -> [heads, q, k])."""
    shape = tuple(shape)
    while len(shape) > ndim and 1 in shape[: len(shape) - 2]:
        i = shape.index(1)
        shape = shape[:i] + shape[i + 1 :]
    return shape


def _layer_files(npz_dir: Path, n: int) -> tuple[list[Path], str, tuple[int, int, int]]:
    """Layer files 0..L-1 (no gaps), their array key and the common [heads, rows, seq] shape."""
    found = {int(m[1]): p for p in npz_dir.iterdir() if (m := NPZ_PATTERN.match(p.name))}
    if not found:
        raise LegacyFormatError(f"{npz_dir} holds no {NPZ_NAME.format('{i}')} files")
    n_layers = max(found) + 1
    missing = [i for i in range(n_layers) if i not in found]
    if missing:
        raise LegacyFormatError(
            f"missing layer file {npz_dir / NPZ_NAME.format(missing[0])} (layers 0-{n_layers - 1} expected, "
            f"{len(missing)} missing)"
        )
    files = [found[i] for i in range(n_layers)]
    key, first, _ = npz_header(files[0])
    shape = _squeeze_batch(first, 3)
    for path in files:
        _, other, _ = npz_header(path)
        other = _squeeze_batch(other, 3)
        if len(other) != 3 or not _keys_fit(other[2], n) or not 0 < other[1] <= other[2] or other != shape:
            raise LegacyFormatError(
                f"{path} has shape {other}; expected [heads, rows <= {n}, {n}] (or {n - 1} keys: the last token "
                f"without attention) like layer 0 {shape}, to match the {n} tokens of {TOKENS_FILE}"
            )
    return files, key, shape


def find_image(folder: Path, image_dir: str | Path | None = None) -> Path:
    """image.png (or static/image.png, or the folder's only image), else <image_dir>/<folder name>.*"""
    for candidate in (folder / "image.png", folder / "static" / "image.png"):
        if candidate.is_file():
            return candidate
    images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if len(images) == 1:
        return images[0]
    if image_dir is not None:
        matches = [p for p in Path(image_dir).glob(folder.name + ".*") if p.suffix.lower() in IMAGE_SUFFIXES]
        if matches:
            return sorted(matches)[0]
    where = f" or {Path(image_dir) / folder.name}.<png|jpg>" if image_dir else " (or pass --image-dir DIR)"
    raise LegacyFormatError(f"no image for {folder}: expected {folder / 'image.png'}{where}")
