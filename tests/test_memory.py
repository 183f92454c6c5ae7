"""Streaming stages hand freed heap memory back to the OS (lib/core/memory.py)."""
import numpy as np
import psutil
import pytest

from lib.core.memory import release_freed_memory


def test_freed_chunks_go_back_to_the_os():
    """The pattern of a stream: after one multi-MB chunk is freed, glibc serves the next ones from its
    heap; freed while a later small block pins the heap's top, they stay in the process until released."""
    if not release_freed_memory():
        pytest.skip("the C library has no malloc_trim (not glibc)")
    rss = lambda: psutil.Process().memory_info().rss  # noqa: E731
    first = np.ones(3 << 20, dtype=np.uint8)   # mmapped, and its free raises the mmap threshold
    del first
    chunks, pins = [], []
    for _ in range(60):                         # 60 chunks of 2.5 MB from the heap, each pinned above
        chunks.append(np.ones(5 << 19, dtype=np.uint8))
        pins.append(np.ones(64, dtype=np.uint8).tobytes() * 100)
    before = rss()
    chunks.clear()                              # freed, but held by the heap under the pins
    held = rss()
    release_freed_memory()
    released = rss()
    assert before - held < 30 << 20             # free() alone returns little of the 150 MB
    assert held - released > 100 << 20         # the release returns most of it
