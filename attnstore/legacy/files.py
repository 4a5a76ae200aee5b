"""Reading the seed's .npy and .npz files safely: headers checked first, allow_pickle=False."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from attnstore.legacy.formats import (
    MAX_TOKEN_CHARS,
    NPZ_KEYS,
    LegacyFormatError,
    check_attention_header,
    check_token_count,
)
from attnstore.legacy.unpickle import load_pickled_tokens


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
        check_token_count(path, shape)
        arr = load_npy(path)
    if arr.ndim != 1 or arr.dtype.kind not in "USO":
        raise LegacyFormatError(
            f"{path} should be a 1-D array of token strings, got shape {arr.shape} dtype {arr.dtype}"
        )
    tokens = arr.tolist()
    if sum(len(t) for t in tokens) > MAX_TOKEN_CHARS:  # a pickle may repeat one long string by reference
        raise LegacyFormatError(f"{path}: the tokens hold more than {MAX_TOKEN_CHARS:,} characters; not a token list")
    return [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in tokens]


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
