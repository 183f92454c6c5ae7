"""Handing freed heap memory back to the operating system while a stage streams (stage-level policy).

glibc's malloc raises its mmap threshold to the size of the largest block freed, so after the first
few chunks of a few MB (HDF5 reads, bootstrap weight blocks) later ones come from the heap, and the
heap keeps what they free: a stage that streams chunk after chunk grows with the number of chunks,
not with their size. Measured on evaluate's `predict` (TorchScript backbone, 2 cores): peak RSS
+127 MB over 40,000 windows vs +92 MB over 8,000; with `release_freed_memory` after every chunk of
512 windows, +21 MB vs +13 MB, at the same windows/s. A fixed low mmap threshold bounds it too, but
made every backbone call mmap its buffers (1,674 -> 602 windows/s).

The policy is the stages' to set, never the library's: a stage that streams calls
`keep_heap_bounded()` once at its start (a background thread trims the heap whenever the process has
grown by 16 MB, so no library function calls the allocator), and evaluate calls
`map_large_blocks()` once its inference is done. These calls move memory, never values.
"""
import ctypes
import ctypes.util
import os
import sys
import threading
import time


def _glibc():
    """The C library when it is glibc (the one with malloc_trim and mallopt), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None   # glibc only (not musl)


_LIBC = _glibc()
_MALLOC_TRIM = _LIBC and _LIBC.malloc_trim
_MALLOPT = _LIBC and getattr(_LIBC, "mallopt", None)


M_MMAP_THRESHOLD = -3          # glibc's mallopt parameter
LARGE_BLOCK_BYTES = 4 << 20    # map_large_blocks: blocks from 4 MiB up are mmapped


def map_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """From now on, serve every block of `threshold` bytes or more with its own mmap, so that freeing
    it hands it back to the OS at once (glibc `mallopt(M_MMAP_THRESHOLD)`; it also stops glibc from
    raising the threshold as large blocks are freed, which is what sends them into the heap).

    For a process's statistics phase, where arrays of a few MB per window set come and go: evaluate's
    statistics on 200,000 / 800,000 synthetic test windows (bench/memory_per_window.py) peaked at
    588 / 965 MB (659 bytes per window) and 585 / 766 MB (316 bytes per window) with it; the cost
    is fresh pages for each large block: the whole evaluate stage on the default demo (39,865 test
    windows, 2 cores) took 95-100 s without it and 105-108 s with it, at the same peak RSS. Not for
    model inference: every backbone call would mmap its buffers (3x slower, see above). False where
    the C library has no mallopt."""
    if not _MALLOPT:
        return False
    return bool(_MALLOPT(M_MMAP_THRESHOLD, int(threshold)))


CHECK_INTERVAL_S = 0.1          # keep_heap_bounded: how often the process's RSS is read
TRIM_GROWTH_BYTES = 16 << 20    # ... and the growth since the last trim that triggers one
_trimmer = None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def keep_heap_bounded(growth: int = TRIM_GROWTH_BYTES, interval_s: float = CHECK_INTERVAL_S) -> bool:
    """For the rest of the process, hand the heap's freed pages back to the OS whenever the process
    has grown by `growth` bytes since the last time (`release_freed_memory` on a daemon thread that
    reads the RSS every `interval_s` seconds; called again, it keeps the running one), so a stage
    that streams chunk after chunk stays near what one chunk holds, whatever the library frees when,
    and a stage that does not grow pays nothing. A stage calls it once at its start. False where the
    C library has no malloc_trim."""
    global _trimmer
    if not _MALLOC_TRIM:
        return False
    if _trimmer is None:
        def trim():
            last = _rss_bytes()
            while True:
                time.sleep(interval_s)
                rss = _rss_bytes()
                if rss - last >= growth:
                    _MALLOC_TRIM(0)   # ctypes releases the GIL: the stage's threads run on meanwhile
                    last = _rss_bytes()   # what is left is live: the next trim waits for growth beyond it
                else:
                    last = min(last, rss)
        _trimmer = threading.Thread(target=trim, name="keep_heap_bounded", daemon=True)
        _trimmer.start()
    return True


def release_freed_memory() -> bool:
    """Return the heap's free pages to the OS (glibc `malloc_trim(0)`, about a millisecond); False
    where the C library has no such call (macOS, musl), where memory is left as it is."""
    if not _MALLOC_TRIM:
        return False
    _MALLOC_TRIM(0)
    return True


def after_inference() -> None:
    """A stage's switch from inference to statistics (evaluate): freed inference memory goes back to the OS,
    and from here on arrays per window and bootstrap blocks come and go mmapped, so memory per window stays
    at what they hold."""
    release_freed_memory()
    map_large_blocks()
