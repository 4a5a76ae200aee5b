"""Every object a writer puts into a store passes through `JournalStore`: a zarr store wrapper that

- undoes a failed unit of work (`journal()`): the old bytes of each object it overwrites or deletes are
  kept, so a write error (disk full, read-only store) puts the store back byte for byte instead of
  leaving one image half-written; and
- counts store operations, so tests can stop a run at operation N deterministically (`ATTNSTORE_FAULT`).

Fault injection (tests only): ATTNSTORE_FAULT="kill:N" SIGKILLs this process just before its Nth store
operation (object write or delete, `fault_point` in pack included); "enospc:N", "eacces:N" or "erofs:N"
raise that OSError there instead. The variable is read once and removed from the environment, so dask
workers started by this process never count: only the process that read it is stopped. While a fault is
armed zarr writes one object at a time, so operation N is the same operation on every run.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import zarr
from zarr.abc.store import Store
from zarr.storage import WrapperStore

from attnstore.errors import StoreError

FAULT_ENV = "ATTNSTORE_FAULT"
FAULT_ERRORS = {"enospc": errno.ENOSPC, "eacces": errno.EACCES, "erofs": errno.EROFS}


class _Faults:
    """The armed fault (kind, operation number) and this process's count of store operations."""

    def __init__(self):
        self.count = 0
        self.kind, self.at = None, 0

    def arm(self, spec: str | None) -> None:
        self.count = 0
        self.kind, self.at = None, 0
        if spec:
            kind, _, at = spec.partition(":")
            if kind != "kill" and kind not in FAULT_ERRORS or not at.isdigit():
                raise ValueError(f"{FAULT_ENV} must be kill:N, enospc:N, eacces:N or erofs:N, not {spec!r}")
            self.kind, self.at = kind, int(at)
            zarr.config.set({"async.concurrency": 1})  # one object at a time: operation N is always the same

    def step(self, what: str) -> None:
        self.count += 1
        if self.kind is None or self.count != self.at:
            return
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        code = FAULT_ERRORS[self.kind]
        raise OSError(code, os.strerror(code), what)


FAULTS = _Faults()
FAULTS.arm(os.environ.pop(FAULT_ENV, None))


def fault_point(what: str) -> None:
    """One store operation outside zarr (e.g. a member of a zip being packed): counted like the others."""
    FAULTS.step(what)


class JournalStore(WrapperStore):
    """A writable store that counts its operations and can undo those of the open journal."""

    def __init__(self, store: Store):
        super().__init__(store)
        self._undo: dict[str, bytes | None] | None = None  # key -> its bytes before the journal (None: absent)

    async def _remember(self, key: str) -> None:
        if self._undo is None or key in self._undo:
            return
        old = await self._store.get(key, zarr.core.buffer.default_buffer_prototype())
        self._undo[key] = None if old is None else old.to_bytes()

    async def set(self, key, value) -> None:
        FAULTS.step(key)
        await self._remember(key)
        await self._store.set(key, value)

    async def set_if_not_exists(self, key, value) -> None:
        FAULTS.step(key)
        await self._remember(key)
        await self._store.set_if_not_exists(key, value)

    async def delete(self, key) -> None:
        FAULTS.step(key)
        await self._remember(key)
        await self._store.delete(key)

    async def delete_dir(self, prefix) -> None:
        FAULTS.step(prefix)
        keys = [key async for key in self._store.list_prefix(prefix)]
        for key in keys:
            await self._remember(key)
        await self._store.delete_dir(prefix)

    @contextmanager
    def journal(self):
        """Undo every change made inside should it raise (a kill or a second Ctrl-C leaves them to `repair`)."""
        if self._undo is not None:  # nested: the outer journal undoes it all
            yield
            return
        self._undo = {}
        try:
            yield
        except Exception:  # not KeyboardInterrupt: like a kill, it leaves the store to `repair`
            undo, self._undo = self._undo, None
            zarr.core.sync.sync(self._restore(undo))
            raise
        self._undo = None

    async def _restore(self, undo: dict[str, bytes | None]) -> None:
        # New objects go first: that frees the space the old bytes need on a full disk.
        for key, old in undo.items():
            if old is None:
                await self._store.delete(key)
        proto = zarr.core.buffer.default_buffer_prototype()
        for key, old in undo.items():
            if old is not None:
                await self._store.set(key, proto.buffer.from_bytes(old))


def write_error_message(path: str, err: OSError) -> str:
    """One line for an OSError of the write path (disk full, read-only store, ...)."""
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied (a read-only store?)",
        errno.EPERM: "permission denied (a read-only store?)",
        errno.EROFS: "the file system is read-only",
    }.get(err.errno, err.strerror or str(err))
    return f"cannot write to '{path}': {reason}"


@contextmanager
def write_errors(path: str) -> Iterator[None]:
    """An OSError of the writes inside (disk full, read-only store ...) as one line (StoreError)."""
    try:
        yield
    except OSError as err:
        raise StoreError(write_error_message(path, err)) from err
