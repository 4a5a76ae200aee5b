"""The analysis cache (`ds.attn.cached`'s LRU): least-recently-used eviction, and a value made once
when several threads ask for it together."""

from __future__ import annotations

import threading
import time

import pytest

from attnstore.analysis.cache import LRU


def test_threads_asking_together_share_one_computation():
    cache, calls = LRU(4), []

    def make():
        calls.append(1)
        time.sleep(0.2)  # long enough for every thread to ask while it runs
        return "value"

    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", make))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["value"] * 4 and len(calls) == 1
    assert (cache.misses, cache.hits) == (1, 3)


def test_a_failed_computation_is_made_again_by_the_next_caller():
    cache, started = LRU(4), threading.Event()

    def fail():
        started.set()
        time.sleep(0.1)
        raise OSError("disk")

    errors: list[Exception] = []

    def first():
        try:
            cache.get("k", fail)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    started.wait()
    assert cache.get("k", lambda: "made here") == "made here"  # waited, then made it itself
    t.join()
    assert len(errors) == 1
    with pytest.raises(ValueError):
        cache.get("other", lambda: (_ for _ in ()).throw(ValueError("x")))
    assert cache.get("other", lambda: 2) == 2  # nothing left waiting on the failed key


def test_least_recently_used_goes_first():
    cache = LRU(2)
    cache.get("a", lambda: 1)
    cache.get("b", lambda: 2)
    cache.get("a", lambda: 0)  # a is now the most recent
    cache.get("c", lambda: 3)  # evicts b
    assert cache.get("a", lambda: -1) == 1 and cache.get("b", lambda: -2) == -2
