"""One writer per store: a run that writes holds the store's lock from planning to its last write.

Local stores: an OS lock (`filelock`, flock on Unix) on the file `STORE.lock` beside the store, which
records who holds it. The OS drops the lock when its process ends, however it ends (a SIGKILLed run
included), so a stale lock never blocks a rerun; the file itself stays (it is empty of meaning
without a holder). A second writer fails at once with one line naming the holder. Readers (serve,
info, heatmap, validate) never take it. A distributed run's coordinator holds it for all its
workers: only the coordinator creates, grows or flags the store.

Object stores (s3://) have no lock: S3 has no flock, and a lease needs conditional writes that
not every S3-compatible server offers. Run one writer per object store at a time (documented in the
README); write locally and copy the store up if several runs must share one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from attnstore.errors import StoreError
from attnstore.store.remote import is_url

LOCK_SUFFIX = ".lock"


def lock_path(path: str) -> Path:
    """The lock file of a local store: beside it, so creating or deleting the store never touches it."""
    store = Path(str(path).rstrip("/") or "/")
    return store.with_name(store.name + LOCK_SUFFIX)


def _holder() -> bytes:
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started,
                       "command": " ".join(sys.argv)[:200]}).encode()  # fmt: skip


def _write_holder(fd: int) -> None:
    """Record this process in the lock file: the holder is who a second writer is told about."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, _holder(), 0)


def _describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']} on {holder['host']}, since {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"see {path}"


@contextmanager
def writer_lock(path: str) -> Iterator[None]:
    """Hold the store's writer lock (local stores; object stores: none, see the module doc)."""
    if is_url(path):
        yield
        return
    target = lock_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(target, timeout=0, is_singleton=False, on_acquired=_write_holder)
        lock.acquire()
    except filelock.Timeout as err:
        raise StoreError(
            f"store '{path}' is being written by another run ({_describe_holder(target)}): wait for it to "
            "finish or write to another store"
        ) from err
    except OSError as err:
        raise StoreError(f"cannot lock '{path}' for writing ({target}: {err.strerror or err})") from err
    try:
        yield
    finally:
        lock.release()
