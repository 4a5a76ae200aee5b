"""A small thread-safe LRU cache: the only state analysis keeps, and it lives on a Dataset's
accessor (`ds.attn.cached`), never in a module."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class LRU:
    """Least-recently-used values. A value is made once: a thread asking for a key another thread is
    making waits for it (two browser tabs, or a warm-up and the first visitor, share one computation)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._making: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        while True:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    self.hits += 1
                    return self._data[key]
                made = self._making.get(key)
                if made is None:
                    self.misses += 1
                    made = self._making[key] = threading.Event()
                    break
            made.wait()  # then read it (or, if making it failed or it was evicted at once, make it here)
        try:
            value = make()  # outside the lock: other keys are served meanwhile
        except BaseException:
            with self._lock:
                self._making.pop(key).set()
            raise
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
            self._making.pop(key).set()
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
