"""Typed user-facing errors: each is shown as one line, never a traceback.

Library messages never name a front end's spelling of a parameter: an error about a
parameter carries its name (`param`, the library's keyword), and each front end maps it
(the CLI to its flag, the REST API to its JSON field and a status code, the explorer to
its notice).
"""

from __future__ import annotations

from pathlib import Path


class AttnstoreError(Exception):
    """A problem caused by the user's input (files, arguments, stores), explained in one line.

    `param` names the library parameter at fault (None when no single one is).
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class InvalidArgument(AttnstoreError, ValueError):
    """A parameter has a value the library cannot use (wrong type, out of range, unknown choice).

    str(err) reads "<param> <detail>", e.g. "layers 40 is outside 0-29".
    """

    def __init__(self, param: str, detail: str):
        super().__init__(f"{param} {detail}", param=param)
        self.detail = detail


class NotFound(AttnstoreError, LookupError):
    """Something named by a parameter does not exist (a token, an image, a file)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message, param=param)


class StoreError(AttnstoreError):
    """The store is missing, of another schema, damaged, or not a store at all."""


class InputImageError(AttnstoreError):
    """An input image is missing or cannot be decoded."""


class ModelLoadError(AttnstoreError):
    """Model weights or processor cannot be found or loaded."""


class NoGeometry(AttnstoreError):
    """A patch map was asked of a store without patch geometry (extracted in sequence-only mode)."""


def check_output_file(path: str | Path, param: str, formats: tuple[str, ...]) -> str:
    """The format (lower-case suffix) of an output file given as `param`, after checking it is one of
    `formats` and that its folder exists: before any work is done, not after."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in formats:
        raise InvalidArgument(param, f"must end in {', '.join(formats)}, not '{path.name}'")
    if not path.parent.is_dir():
        raise InvalidArgument(param, f"{path}: folder {path.parent} does not exist")
    return suffix
