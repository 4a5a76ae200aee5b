"""Token files saved as object arrays, read by an unpickler that builds nothing but an array of strings."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from attnstore.legacy.formats import LegacyFormatError, check_token_count

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
    check_token_count(path, shape)
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
