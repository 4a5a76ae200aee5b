"""User-facing errors: every one of these is shown as a single line, never a traceback."""


class AttnstoreError(Exception):
    """A problem caused by the user's input (files, arguments, stores), explained in one line."""


class StoreError(AttnstoreError):
    """The store is missing, of another schema, or not a store at all."""


class InputImageError(AttnstoreError):
    """An input image is missing or cannot be decoded."""


class ModelLoadError(AttnstoreError):
    """Model weights or processor cannot be found or loaded."""
