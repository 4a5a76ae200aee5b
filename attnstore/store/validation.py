"""`attnstore validate`: schema, shapes, completeness, geometry, attention sanity and chunk integrity.

The seed's `test_data.py` checked that the npy files load and have matching
shapes; this checks everything a reader relies on, image by image, and
returns a list of human-readable problems (empty = valid). The deep check
also reads every stored chunk of every array, so a chunk that fails its
crc32c checksum (a flipped byte on disk) is found and its image named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
import zarr

from attnstore.errors import StoreError
from attnstore.schema import (
    ATTENTION_DIMS,
    IMAGE,
    OBJECT_BOX,
    OBJECT_LABEL,
    QUERY,
    REQUIRED_ATTRS,
    REQUIRED_PER_IMAGE,
    TokenKind,
    is_fill,
)
from attnstore.store import open_dataset
from attnstore.store.integrity import is_checksum_error
from attnstore.store.reader import open_group
from attnstore.store.safety import declared_problems, store_declared

READ_BYTES = 64 * 2**20  # attention decoded per read (deep scan and row sums): memory stays bounded


@dataclass
class ValidationReport:
    n_images: int = 0
    n_complete: int = 0
    problems: list[str] = field(default_factory=list)
    damaged: dict[int, str] = field(default_factory=dict)  # image index -> name, for unreadable chunks

    @property
    def ok(self) -> bool:
        return not self.problems


def row_sum_tolerance(keep_bits: int) -> float:
    """fp16 rounding of each weight (plus mantissa rounding) bounds the row-sum error."""
    return 5e-3 + 2.0 ** -(int(keep_bits) + 1)


def validate_store(
    path: str,
    storage_options: dict | None = None,
    on_image: Callable[[], None] | None = None,
    deep: bool = False,
) -> ValidationReport:
    """Check a store; the report lists every problem found (empty: valid).

    Parameters
    ----------
    path : store path or fsspec URL.
    storage_options : fsspec options for remote stores.
    on_image : called after each complete image is checked.
    deep : also read every stored chunk of every array (incomplete images and padding included),
        naming each image whose data fails its checksum or cannot be decoded, or whose chunk is
        missing (a complete image's attention row below n_query, or its per-key variables or pixels).

    Every array's declared shape and dtype is checked against the schema first, reading nothing
    else: a store declaring 1e9 keys is one problem, not an allocation. Images are read one at a
    time (attention at most READ_BYTES at a time), so memory stays bounded at any store size.
    """
    report = ValidationReport()
    group = open_group(path, storage_options, use_consolidated=False, check=False)
    report.problems += list(declared_problems(store_declared(group)))
    if report.problems:
        return report  # reading arrays the schema does not allow could allocate without bound
    if deep:
        _scan_chunks(group, report)
    try:
        ds = open_dataset(path, storage_options=storage_options)
    except ValueError as err:
        if is_checksum_error(err):
            raise StoreError(f"store '{path}' is damaged: a coordinate array fails its checksum") from err
        raise
    report.n_images = int(ds.sizes["image"])
    report.problems += [f"missing store attribute '{a}'" for a in REQUIRED_ATTRS if a not in ds.attrs]
    if ds["attention"].dims != ATTENTION_DIMS or ds["attention"].dtype != np.float16:
        report.problems.append(
            f"attention has dims {ds['attention'].dims} {ds['attention'].dtype}, expected {ATTENTION_DIMS} float16"
        )
        return report
    try:
        complete = ds["complete"].values.astype(bool)
        names = ds["image_name"].values
    except Exception as err:  # damaged: listed by the deep scan, or said here
        report.problems.append(f"the image list cannot be read ({_first_line(err)})")
        return report
    report.n_complete = int(complete.sum())
    for i in np.flatnonzero(~complete):
        report.problems.append(f"image {i} ({names[i]}): incomplete (interrupted write); rerun extract to finish it")
    tol = row_sum_tolerance(ds.attrs.get("keep_bits", 10))
    for i in np.flatnonzero(complete):
        if i in report.damaged:
            continue  # already named by the deep scan
        try:
            problems = check_image(ds.isel(image=i), tol, mask=ds.attrs.get("attention_mask", "causal"))
            report.problems += [f"image {i} ({names[i]}): {p}" for p in problems]
        except Exception as err:  # a damaged chunk: name the image instead of failing the whole check
            report.damaged[int(i)] = str(names[i])
            report.problems.append(f"image {i} ({names[i]}): damaged, {_describe_read_error(err)}")
        if on_image:
            on_image()
    return report


# -- chunk integrity ---------------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _describe_read_error(err: BaseException) -> str:
    if isinstance(err, StoreError):  # already one line that says what is wrong (a missing chunk, a FIFO ...)
        return str(err)
    if is_checksum_error(err):
        return "a chunk fails its crc32c checksum (changed on disk since it was written)"
    return f"a chunk cannot be decoded ({_first_line(err)})"


def _scan_chunks(group: zarr.Group, report: ValidationReport) -> None:
    """Read every chunk of every array; record each image whose data cannot be read or whose
    expected chunk is missing."""
    damage: dict[int, list[str]] = {}
    required = _required_rows(group)
    for name in sorted(group.array_keys()):
        arr = group[name]
        dims = tuple(arr.metadata.dimension_names or ())
        if not dims or dims[0] != IMAGE:
            try:
                arr[...]
            except Exception as err:
                report.problems.append(f"array '{name}' is damaged: {_describe_read_error(err)}")
            continue
        for images, what in _damaged_blocks(arr, name, dims, required):
            if len(images) == 1:
                damage.setdefault(images[0], []).append(what)
            else:  # a chunk shared by many images (the image list): one problem, not thousands
                report.problems.append(f"images {images[0]}-{images[-1]}: damaged, {what}")
    names = _names_or_indices(group, report.n_images or group["complete"].shape[0])
    for i in sorted(damage):
        report.damaged[i] = names[i]
        report.problems.append(f"image {i} ({names[i]}): damaged, {'; '.join(damage[i])}")


MISSING = "its chunk is missing (deleted since it was written)"


def _required_rows(group: zarr.Group) -> np.ndarray:
    """Leading attention rows each image must have stored: n_query of a complete image, else 0  # [image]."""
    n = group["complete"].shape[0]
    out = np.zeros(n, np.int64)
    step = max(group["complete"].chunks[0], group["n_query"].chunks[0], 4096)
    for start in range(0, n, step):  # a block at a time: bounded memory at any image count
        stop = min(start + step, n)
        try:
            done = group["complete"][start:stop].astype(bool)
            out[start:stop] = np.where(done, group["n_query"][start:stop], 0)
        except Exception:  # damaged: named by the scan of those arrays
            continue
    return out


def _damaged_blocks(
    arr: zarr.Array, name: str, dims: tuple[str, ...], required: np.ndarray
) -> Iterator[tuple[range, str]]:
    """(images, description) for each unreadable or missing block of an array whose first axis is `image`."""
    step = arr.chunks[0]  # images per (inner) chunk: 1, or many for the single-writer arrays
    for start in range(0, arr.shape[0], step):
        images = range(start, min(start + step, arr.shape[0]))
        if QUERY in dims and arr.shards is not None:  # one inner chunk per query row: say which rows
            n_required = int(required[start]) if start < len(required) else 0
            rows = _damaged_rows(arr, start, dims.index(QUERY), n_required)
            if rows:
                yield images, f"'{name}' query row(s) {_compact(rows)}: {rows[min(rows)]}"
            continue
        try:
            values = arr[images.start : images.stop]
        except Exception as err:
            yield images, f"'{name}': {_describe_read_error(err)}"
            continue
        if name in REQUIRED_PER_IMAGE and step == 1 and start < len(required) and required[start]:
            if is_fill(name, values):
                yield images, f"'{name}': {MISSING}"


def _damaged_rows(arr: zarr.Array, image: int, axis: int, n_required: int) -> dict[int, str]:
    """Unreadable (or, below `n_required`, missing) query rows of one image -> why, reading at most
    READ_BYTES at a time."""
    bad: dict[int, str] = {}
    n = arr.shape[axis]
    block = _rows_per_read(arr, axis)
    for lo in range(0, n, block):
        rows = range(lo, min(lo + block, n))
        try:
            values = _read_rows(arr, image, axis, rows)
        except Exception:
            for row in rows:  # find the rows at fault
                try:
                    _read_rows(arr, image, axis, range(row, row + 1))
                except Exception as err:
                    bad[row] = _describe_read_error(err)
            continue
        stored = np.moveaxis(values, axis - 1, 0).reshape(len(rows), -1).view(np.uint16).any(axis=1)  # [row]
        bad |= {row: MISSING for row, ok in zip(rows, stored) if not ok and row < n_required}
    return bad


def _rows_per_read(arr: zarr.Array, axis: int) -> int:
    """Query rows of `arr` that fit READ_BYTES (at least one)."""
    row_bytes = arr.dtype.itemsize * int(np.prod([s for i, s in enumerate(arr.shape) if i not in (0, axis)]))
    return max(1, READ_BYTES // max(row_bytes, 1))


def _read_rows(arr: zarr.Array, image: int, axis: int, rows: range) -> np.ndarray:
    index = [slice(None)] * arr.ndim
    index[0], index[axis] = image, slice(rows.start, rows.stop)
    return arr[tuple(index)]


def _compact(rows: dict[int, str]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    keys, parts, start = sorted(rows), [], None
    for a, b in zip(keys, [*keys[1:], None]):
        start = a if start is None else start
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}")
            start = None
    return ", ".join(parts)


def _names_or_indices(group: zarr.Group, n: int) -> list[str]:
    """Image names, or 'name unreadable' for those whose chunk is damaged."""
    names = ["name unreadable"] * n
    arr = group["image_name"]
    for start in range(0, n, arr.chunks[0]):
        stop = min(start + arr.chunks[0], n)
        try:
            names[start:stop] = [str(v) for v in arr[start:stop]]
        except Exception:
            continue
    return names


def check_image(img: xr.Dataset, tol: float, mask: str = "causal") -> list[str]:
    """Problems of one complete image (a Dataset without the image dim).

    mask : the text model's attention mask (store attr `attention_mask`, see `bidirectional_keys`).
    """
    nq, nk = int(img["n_query"]), int(img["n_key"])
    Q, K = img.sizes["query"], img.sizes["key"]
    if not (0 < nq <= Q and 0 < nk <= K):
        return [f"n_query={nq}, n_key={nk} outside the store's {Q} x {K}"]
    problems = []
    qpos = img["query_position"].values[:nq]
    if (qpos < 0).any() or (qpos >= nk).any() or (np.diff(qpos) <= 0).any():
        problems.append("query_position is not an increasing list of positions below n_key")
        return problems
    problems += _check_geometry(img, nk)
    problems += _check_objects(img)
    allowed = None if mask == "causal" else bidirectional_keys(img["token_kind"].values[:nk], mask)
    problems += _check_attention(img, qpos, tol, allowed)
    return problems


def _check_attention(img: xr.Dataset, qpos: np.ndarray, tol: float, allowed: np.ndarray | None) -> list[str]:
    """Row sums, causality and NaN of the stored rows, READ_BYTES of rows at a time (bounded memory).

    allowed : [key, key] True where a position may attend to a later one (the model's bidirectional
    blocks, `bidirectional_keys`; None: causal, nowhere); only the stored keys (n_key) can be allowed.
    """
    att = img["attention"]  # [layer, head, query, key], lazy
    n_layer, n_head, _, n_key = att.shape
    block = max(1, READ_BYTES // (4 * n_layer * n_head * n_key))
    worst, causal, nan = 0.0, True, False
    for lo in range(0, len(qpos), block):  # the stored rows: query[:n_query]
        stop = min(lo + block, len(qpos))
        rows = att.isel(query=slice(lo, stop)).values.astype(np.float32)  # [layer, head, row, key]
        worst = max(worst, float(np.nan_to_num(np.abs(rows.sum(-1) - 1), nan=0).max(initial=0)))
        future = np.arange(n_key)[None, :] > qpos[lo : lo + block, None]  # [row, key]: positions after the query
        if allowed is not None:
            future[:, : allowed.shape[1]] &= ~allowed[qpos[lo : lo + block]]
        causal &= not np.abs(rows[:, :, future]).max(initial=0) > 0
        nan |= bool(np.isnan(rows).any())
    problems = []
    if worst > tol:
        problems.append(f"attention rows do not sum to 1 (worst off by {worst:.3g}, tolerance {tol:.3g})")
    if not causal:
        problems.append("attention on positions after the query token (not causal)")
    if nan:
        problems.append("attention contains NaN")
    return problems


def bidirectional_keys(kinds: np.ndarray, mask: str) -> np.ndarray:
    """Where a query may see a later key  # [query, key] bool, over the positions of `kinds`.

    "causal": nowhere; "image_blocks" (Gemma 3): within one contiguous run of image patch tokens
    (a view); "prefix" (PaliGemma): within the prompt (everything before the answer).
    """
    n = kinds.shape[0]
    if mask == "prefix":
        prompt = kinds != int(TokenKind.GENERATED)
        return prompt[:, None] & prompt[None, :]
    if mask == "image_blocks":
        patch = np.isin(kinds, [int(TokenKind.IMAGE_TILE), int(TokenKind.IMAGE_GLOBAL)])
        block = np.cumsum(np.diff(np.concatenate([[0], patch.astype(np.int8)])) == 1)  # run number of each patch
        return patch[:, None] & patch[None, :] & (block[:, None] == block[None, :])
    return np.zeros((n, n), bool)


def _check_geometry(img: xr.Dataset, nk: int) -> list[str]:
    kinds = img["token_kind"].values[:nk]
    problems = []
    valid = {int(k) for k in TokenKind} - {int(TokenKind.PAD)}
    if not np.isin(kinds, list(valid)).all():
        problems.append("token_kind has values outside the TokenKind flags")
    if img.attrs.get("geometry") == "none":  # sequence-only mode: image tokens have no cell and no box
        boxes = img["patch_box"].values[:nk]
        if not np.isnan(boxes).all() or int(img["grid_rows"]) or int(img["global_rows"]):
            problems.append("the store says geometry: none but holds patch boxes or grids")
        return problems
    grid = int(img["grid_rows"]) * int(img["grid_cols"])
    glob = int(img["global_rows"]) * int(img["global_cols"])
    n_tile, n_global = int((kinds == TokenKind.IMAGE_TILE).sum()), int((kinds == TokenKind.IMAGE_GLOBAL).sum())
    if n_tile != grid or n_global != glob:
        problems.append(f"{n_tile} tile / {n_global} global tokens but grids of {grid} / {glob} cells")
    patches = np.isin(kinds, [TokenKind.IMAGE_TILE, TokenKind.IMAGE_GLOBAL])
    boxes = img["patch_box"].values[:nk][patches]
    if boxes.size and (
        np.isnan(boxes).any()
        or (boxes < 0).any()
        or (boxes > 1).any()
        or (boxes[:, 2] <= boxes[:, 0]).any()
        or (boxes[:, 3] <= boxes[:, 1]).any()
    ):
        problems.append("patch boxes missing, outside [0, 1] or empty")
    return problems


def _check_objects(img: xr.Dataset) -> list[str]:
    """Optional object boxes: a labelled slot has a box inside [0, 1]; an empty slot has none."""
    if OBJECT_BOX not in img:
        return []
    boxes = img[OBJECT_BOX].values  # [object, 4]
    labelled = np.array([bool(str(v)) for v in img[OBJECT_LABEL].values])
    given = ~np.isnan(boxes).any(-1)
    if (given != labelled).any():
        return ["object boxes and labels do not pair up"]
    b = boxes[given]
    if b.size and ((b < 0).any() or (b > 1).any() or (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any()):
        return ["object boxes outside [0, 1] or empty"]
    return []
