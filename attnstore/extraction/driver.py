"""What every extraction run shares, serial or distributed: its report, Ctrl-C handling, progress,
and the store it writes to, created or grown only once an image is ready to be written.

`attnstore.extraction.pipeline` (one process) and `attnstore.extraction.distributed` (a dask cluster) both drive a
run through `RunDriver` and `RunStore`, so a failed run leaves an existing store byte-identical
and a run that wrote nothing leaves no store behind.
"""

from __future__ import annotations

import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from attnstore.progress import progress_bar
from attnstore.store import AttnStore, StoreShape
from attnstore.store.journal import write_errors
from attnstore.store.reader import exists
from attnstore.store.remote import is_url
from attnstore.store.writer import remove_leftovers


@dataclass
class RunReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False


class RunDriver:
    """Progress bar and Ctrl-C for one run: the first Ctrl-C asks to stop after the current
    entries (`stop_requested`), a second one gives up at once."""

    def __init__(self, description: str, total: int, show_progress: bool = True):
        self.stop_requested = False
        self._previous = None
        self._progress = progress_bar(total, show_progress)
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> RunDriver:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        self._progress.__exit__(*exc)
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _on_interrupt(self, signum, frame):
        if self.stop_requested:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.stop_requested = True

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


class RunStore:
    """The run's store: an existing one is opened and checked at once (a mismatch fails before any
    work) but changed only by `ready`; a new one is created by `ready`, never before.

    Parameters
    ----------
    out, storage_options : where the store is.
    shape : capacities this run plans for (a new store gets them; an existing one grows to them
        only when an image does not fit, so small appends never resize).
    attrs : store attributes of this run (checked against an existing store).
    extras : extra per-image variables (name -> (kind, description)) added when first writing.
    n_objects : room for this many object boxes per image (`object_box`), added when first writing.
    """

    def __init__(
        self,
        out: str,
        shape: StoreShape,
        attrs: dict,
        storage_options: dict | None = None,
        extras: dict | None = None,
        n_objects: int = 0,
    ):
        self.out, self.shape, self.attrs = out, shape, attrs
        self.storage_options, self.extras, self.n_objects = storage_options, extras, n_objects
        self.store: AttnStore | None = None
        self._ready = False
        self._created = False  # this run created the store (and has completed no write unit yet)
        if exists(out, storage_options):
            self.store = AttnStore.open(out, storage_options=storage_options)
            self.store.check_compatible(shape, attrs)

    def ready(self, first=None) -> AttnStore:
        """The store, created (or given its extra variables) now if not yet: an image is about to be written.

        `first`: the Extraction about to be written (a new store measures its codec on it)."""
        if self.store is None:
            remove_leftovers(self.out)  # a creation a killed run left half-done
            self.store = AttnStore.create(self.out, self.shape, self.attrs, self.storage_options, first=first)
            self._created = True
            if first is not None:  # a lossy store measures its maps' error on the first image (attrs, `info`)
                from attnstore.analysis.fidelity import record_fidelity
                from attnstore.store.writer import stored_values

                record_fidelity(self.store, first, stored_values(first, dict(self.store.group.attrs)))
        elif not self._ready:
            remove_leftovers(self.out)
            self.store.repair()  # a run killed while growing the store left its arrays disagreeing
        if not self._ready and self.extras:
            self.store.ensure_extras(self.extras)
        if not self._ready and self.n_objects:
            self.store.ensure_objects(self.n_objects)
        self._ready = True
        return self.store

    @contextmanager
    def writing(self, first=None) -> Iterator[AttnStore]:
        """The ready store, for one unit of writes (one image, or a distributed run's set-up) that is all or
        nothing: a write error (disk full, read-only store) undoes the unit, leaving the store byte-identical
        to before it (a store this run created and never finished a unit in is removed), and is one line.

        `first`: the Extraction about to be written (a new store measures its codec on it)."""
        with write_errors(self.out):
            if self.store is None:
                self.ready(first)  # the creation is atomic by itself (AttnStore.create)
            try:
                with self.store.journal():
                    yield self.ready()
            except Exception:
                self._ready = False  # repair / extras / objects may have been undone
                if self._created:
                    self._discard()
                raise
            self._created = False

    def _discard(self) -> None:
        """Remove the store this run created: it failed before holding any image."""
        if not is_url(self.out):
            shutil.rmtree(self.out, ignore_errors=True)
            self.store = None

    def fit(self, n_query: int, n_key: int) -> None:
        """Grow the ready store so an image of n_query x n_key fits (to at least the planned capacity)."""
        store = self.ready()
        if n_query > store.query_capacity or n_key > store.key_capacity:
            store.ensure_capacity(max(n_query, self.shape.query_capacity), max(n_key, self.shape.key_capacity))
