"""Concurrent reads that only wait on storage; below both the read backends and the store reader."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def read_concurrently(read, items) -> list:
    """`[read(item) for item in items]`, the reads issued at once on a few threads (each only waits
    on storage: several small variables or rows of one image). Threads live for this call only."""
    items = list(items)
    if len(items) <= 1:
        return [read(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(8, len(items)), thread_name_prefix="attnstore-read") as pool:
        return list(pool.map(read, items))
