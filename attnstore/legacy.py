"""Read and write the seed prototypes' file formats.

Seed 000 folder: `attention_array.npy` [layers, heads, seq, seq] (fp32, full square)
                 + `decoded_tokens.npy` [seq] str + `image.png`.
Seed 004 folder: `attentions_5/` (or `attentions/`, or any folder) of
                 `attention_fp16_rounded_layer_{i}.npz` (one array per layer, [heads, rows, seq])
                 + `decoded_tokens.npy` + the image.
Batch root:      one such folder per image (seed 004's extract_smolvlm_batch.py output).

`decoded_tokens.npy` may hold one token more than the attention has keys (the seeds never fed
the last generated token back): that token keeps its text and gets no attention row or column.

Import checks every header before anything is written (shapes, layer files, image), loads
arrays with `allow_pickle=False` only (the one exception: a token file saved as an object
array is read by a restricted unpickler that can build nothing but an array of strings), and
builds the store in a temporary folder that is renamed into place at the end, so a failed
import leaves nothing behind.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from attnstore.errors import AttnstoreError, InvalidArgument, StoreError
from attnstore.geometry import ImageLayout, finish_grids, global_view, place_view, tile_views
from attnstore.inputs.images import IMAGE_SUFFIXES, load_image
from attnstore.models.idefics3_layout import GLOBAL_TOKEN, IMAGE_TOKEN, parse_idefics3_layout
from attnstore.records import Extraction, extend_layout, query_positions
from attnstore.schema import DIM_LIMITS, KEY, TokenKind
from attnstore.store import AttnStore, StoreShape

ARRAY_FILE = "attention_array.npy"
TOKENS_FILE = "decoded_tokens.npy"
NPZ_DIR = "attentions_5"  # what the seed viewer reads
NPZ_DIRS = (NPZ_DIR, "attentions")  # preferred, in order, when a folder holds several layer folders
NPZ_NAME = "attention_fp16_rounded_layer_{}.npz"
NPZ_PATTERN = re.compile(r"^attention_fp16_rounded_layer_(\d+)\.npz$")
NPZ_KEYS = ("attention", "attn", "attentions", "arr_0", "weights")  # preferred when an npz holds several
DEFAULT_GRID = (3, 4)  # the seeds' fixed grid, used only when the tokens carry no tile markers
DEFAULT_TILE_TOKENS = 64  # 8 x 8 patch tokens per 512 px tile (SmolVLM)
_ROW_COL = re.compile(r"^<row_\d+_col_\d+>$")
# Bounds checked from headers before anything is loaded: small files must not load huge arrays.
MAX_ARRAY_BYTES = 4 * 2**30  # one attention array (a layer file, or the seed000 square) as declared
MAX_INFLATION = 200  # declared bytes per compressed byte of an npz member (real attention: < 10; zeros: ~1000)
INFLATION_FROM = 64 * 2**20  # ... checked for members declaring more than this (small ones cost nothing)
MAX_TOKEN_CHARS = 64 * 2**20  # characters of all tokens of one folder
ROW_SUM_TOLERANCE = 1e-2  # fp16 softmax rows: off by more and the import warns


class LegacyFormatError(AttnstoreError):
    """A seed-format file is missing, pickled, or has the wrong shape."""


# -- reading arrays safely ---------------------------------------------------------------------


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """np.load with allow_pickle=False; a pickled or non-npy file is a clear error, never loaded."""
    _check_npy_magic(path)
    try:
        with open(path, "rb") as fh:
            if _read_npy_header(fh)[1].hasobject:
                raise LegacyFormatError(
                    f"{path} holds pickled data (an object array); attnstore never loads pickles. "
                    "Re-save it as a plain array, e.g. np.save(path, np.asarray(values))"
                )
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as err:
        raise LegacyFormatError(f"{path} is not a NumPy .npy array ({err})") from err
    except (OSError, EOFError) as err:
        raise LegacyFormatError(f"{path} is not a readable NumPy .npy array ({err})") from err
    if not isinstance(arr, np.ndarray):
        raise LegacyFormatError(f"{path} is not a single NumPy array (an .npz archive?)")
    return arr


def _check_npy_magic(path: Path) -> None:
    if not path.is_file():
        raise LegacyFormatError(f"missing file: {path}")
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head != b"\x93NUMPY":  # numpy would call any other file "pickled data"
        kind = "holds pickled data" if head[:1] == b"\x80" else "is not a NumPy .npy array"
        raise LegacyFormatError(f"{path} {kind}; expected an .npy file written by np.save (pickles are never loaded)")


def _read_npy_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an open .npy file, leaving `fh` at the start of the data."""
    major, _ = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(fh)
    return tuple(shape), dtype


def read_tokens(path: Path) -> list[str]:
    """`decoded_tokens.npy`: a 1-D array of strings (unicode, utf-8 bytes, or an object array of str)."""
    _check_npy_magic(path)
    try:
        with open(path, "rb") as fh:
            shape, dtype = _read_npy_header(fh)
            arr = load_pickled_tokens(fh, path, shape) if dtype.hasobject else None
    except ValueError as err:
        raise LegacyFormatError(f"{path} is not a NumPy .npy array ({err})") from err
    if arr is None:
        _check_token_count(path, shape)
        arr = load_npy(path)
    if arr.ndim != 1 or arr.dtype.kind not in "USO":
        raise LegacyFormatError(
            f"{path} should be a 1-D array of token strings, got shape {arr.shape} dtype {arr.dtype}"
        )
    tokens = arr.tolist()
    if sum(len(t) for t in tokens) > MAX_TOKEN_CHARS:  # a pickle may repeat one long string by reference
        raise LegacyFormatError(f"{path}: the tokens hold more than {MAX_TOKEN_CHARS:,} characters; not a token list")
    return [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in tokens]


def _check_token_count(path: Path, shape: tuple[int, ...]) -> None:
    """Before loading: at most as many tokens as a store has keys (`DIM_LIMITS`)."""
    if len(shape) == 1 and shape[0] > DIM_LIMITS[KEY]:
        raise LegacyFormatError(f"{path} declares {shape[0]:,} tokens, more than a store holds ({DIM_LIMITS[KEY]:,})")


def check_attention_header(path: Path, shape: tuple[int, ...], dtype: np.dtype, stored_bytes: int | None) -> None:
    """Before loading: floating-point weights, of a declared size within MAX_ARRAY_BYTES and, for a
    compressed member (`stored_bytes`), within MAX_INFLATION of what the file holds."""
    if dtype.kind != "f":
        raise LegacyFormatError(f"{path}: attention is {dtype}, expected floating-point weights (softmax outputs)")
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    inflated = stored_bytes is not None and declared > max(INFLATION_FROM, MAX_INFLATION * stored_bytes)
    if declared > MAX_ARRAY_BYTES or inflated:
        held = f" from {stored_bytes:,} stored bytes" if stored_bytes is not None else ""
        raise LegacyFormatError(f"{path}: declares a {shape} array ({declared:,} bytes{held}); refusing to load it")


# -- the one pickle attnstore reads: np.save(path, np.array(tokens, dtype=object)) ----------------

_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array-unpickling entry point
_ARRAY_MODULES = ("numpy._core.multiarray", "numpy.core.multiarray")  # numpy 2 / numpy 1 spelling


class _NdarrayName:
    """Stands for `numpy.ndarray` in the stream: usable only as _reconstruct's first argument, not callable."""


_NDARRAY = _NdarrayName()


def _empty_array(cls, shape, typecode) -> np.ndarray:
    """The only array construction allowed: the empty shell that numpy then fills from plain data."""
    if cls is not _NDARRAY or shape != (0,) or typecode != b"b":
        raise pickle.UnpicklingError("an array built with unexpected arguments")
    return _RECONSTRUCT(np.ndarray, (0,), b"b")


def _object_dtype(spec, align=False, copy=True) -> np.dtype:
    """The only dtype allowed: numpy's object dtype ('O8')."""
    if spec != "O8" or not isinstance(align, bool) or not isinstance(copy, bool):
        raise pickle.UnpicklingError(f"a dtype other than object ({spec!r})")
    return np.dtype("O8", align, copy)


class TokenUnpickler(pickle.Unpickler):
    """Builds nothing but a numpy object array of plain values: every other global is refused.

    An object-array .npy holds, after its header, a pickle that calls numpy's `_reconstruct`
    and `dtype` and fills the array from plain strings. Those two names map to checked
    wrappers; any other class or callable (`os.system`, `builtins.open`, ...) is refused
    before it is looked up, so nothing named in the file is ever imported or called.
    """

    def find_class(self, module: str, name: str):
        if module in _ARRAY_MODULES and name == "_reconstruct":
            return _empty_array
        if module == "numpy" and name == "ndarray":
            return _NDARRAY
        if module == "numpy" and name == "dtype":
            return _object_dtype
        raise pickle.UnpicklingError(f"refused {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id")


def load_pickled_tokens(fh: io.BufferedIOBase, path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The object array of token strings after an .npy header; anything else is a LegacyFormatError."""
    _check_token_count(path, shape)
    try:
        arr = TokenUnpickler(fh).load()
    except Exception as err:  # a hostile or broken stream may fail in any way: all mean "refused"
        raise _refused(path, str(err) or type(err).__name__) from err
    if type(arr) is not np.ndarray or arr.dtype != object or arr.shape != shape or arr.ndim != 1:
        raise _refused(path, f"not a 1-D object array of shape {shape}")
    kinds = {type(t).__name__ for t in arr.tolist() if type(t) is not str}
    if kinds:
        raise _refused(path, f"elements of type {', '.join(sorted(kinds))}")
    return arr


def _refused(path: Path, what: str) -> LegacyFormatError:
    return LegacyFormatError(
        f"{path} holds pickled data other than an array of token strings ({what}); attnstore builds nothing "
        "else from a pickle. Re-save the tokens as a plain array, e.g. np.save(path, np.asarray(tokens, dtype=str))"
    )


def npz_header(path: Path) -> tuple[str, tuple[int, ...], np.dtype]:
    """(array key, shape, dtype) of a one-layer npz, read from its header (the data stays on disk)."""
    if not path.is_file():
        raise LegacyFormatError(f"missing layer file: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            keys = [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]
            key = _pick_npz_key(path, keys)
            stored = zf.getinfo(key + ".npy").compress_size
            with zf.open(key + ".npy") as fh:
                shape, dtype = _read_npy_header(fh)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise LegacyFormatError(f"{path} is not a NumPy .npz archive ({err})") from err
    if dtype.hasobject:
        raise LegacyFormatError(f"{path}: array '{key}' is a pickled object array; attnstore never loads pickles")
    check_attention_header(path, tuple(shape), dtype, stored)
    return key, tuple(shape), dtype


def _pick_npz_key(path: Path, keys: list[str]) -> str:
    if len(keys) == 1:
        return keys[0]
    for key in NPZ_KEYS:
        if key in keys:
            return key
    raise LegacyFormatError(f"{path} holds arrays {keys or 'none'}; expected one attention array")


def load_npz(path: Path, key: str) -> np.ndarray:
    """Array `key` of an npz whose header `npz_header` checked; a truncated member is a LegacyFormatError."""
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as err:
        why = f"{path}: array '{key}' cannot be read, the file is truncated or damaged ({err})"
        raise LegacyFormatError(why) from err


# -- discovering folders ---------------------------------------------------------------------


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


# -- tokens -> layout --------------------------------------------------------------------------


def parse_grid(spec: str | None) -> tuple[int, int] | None:
    """'3x4' -> (3, 4)."""
    if spec is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", spec)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise InvalidArgument("grid", f"'{spec}' should look like ROWSxCOLS, e.g. 3x4")
    return int(match[1]), int(match[2])


def clean(token: str) -> str:
    return token.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ")


def prompt_length(tokens: list[str]) -> int | None:
    """Number of prompt tokens: everything up to the last 'Assistant:' of the chat template."""
    ends = np.cumsum([len(clean(t)) for t in tokens])
    at = "".join(clean(t) for t in tokens).rfind("Assistant:")
    if at < 0:
        return None
    return int(np.searchsorted(ends, at + len("Assistant:"))) + 1


def legacy_layout(
    tokens: list[str], grid: tuple[int, int] | None = None, tile_tokens: int = DEFAULT_TILE_TOKENS
) -> ImageLayout:
    """Kinds and geometry from the `<row_r_col_c>` / `<global-img>` markers, else from `grid`.

    Without markers, the `<image>` tokens are taken in order: grid rows x cols tiles of
    `tile_tokens` each (row-major), then one global view of `tile_tokens` if tokens remain.
    """
    has_markers = any(_ROW_COL.match(t) or t == GLOBAL_TOKEN for t in tokens)
    if has_markers:
        return parse_idefics3_layout(tokens, image_seq_len=_image_run(tokens))
    layout = parse_idefics3_layout(tokens, image_seq_len=tile_tokens)  # kinds only: no markers, no views
    rows, cols = grid or DEFAULT_GRID
    positions = np.flatnonzero(np.array(tokens) == IMAGE_TOKEN)
    n_tiles = rows * cols * tile_tokens
    if positions.size not in (n_tiles, n_tiles + tile_tokens):
        raise AttnstoreError(
            f"the tokens hold {positions.size} {IMAGE_TOKEN} tokens and no tile markers; a {rows}x{cols} grid of "
            f"{tile_tokens}-token tiles needs {n_tiles} (+{tile_tokens} global): pass the right --grid ROWSxCOLS"
        )
    side = int(np.sqrt(tile_tokens))
    views = tile_views(rows, cols, side, side)
    if positions.size > n_tiles:
        views.append(global_view(side, side))
    for i, view in enumerate(views):
        place_view(layout, view, positions[i * tile_tokens : (i + 1) * tile_tokens])
    return finish_grids(layout)


def _image_run(tokens: list[str]) -> int:
    """Length of the `<image>` run after the first view marker (the image_seq_len)."""
    start = next(i for i, t in enumerate(tokens) if _ROW_COL.match(t) or t == GLOBAL_TOKEN) + 1
    end = start
    while end < len(tokens) and tokens[end] == IMAGE_TOKEN:
        end += 1
    return end - start


# -- building the Extraction -----------------------------------------------------------------


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


# -- import / export ----------------------------------------------------------------------------


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
