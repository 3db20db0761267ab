"""Process-wide allocator tuning for moving large byte buffers.

Why: glibc serves allocations above its mmap threshold (128 KiB at start) with fresh mmap()ed
pages, so every 256 KiB record batch copied by protobuf or written to a log frame pays a page
fault per 4 KiB page and an munmap when freed. Measured here: building and serializing one
RaftBatch carrying a 256 KiB entry took ~700 µs; with large allocations kept on the heap it
takes ~60 µs (bench/README in docs/benchmarks.md). We raise the mmap threshold to 32 MiB (glibc's
maximum) and keep freed memory (trim threshold, top pad) so buffers are reused.

Only on Linux with glibc; elsewhere, or if mallopt refuses, this is a no-op that returns False.

``tune_gc`` does the same for pauses: the broker allocates many short-lived objects (messages,
futures) but few cycles, so the cyclic collector's default generation-0 threshold (700) runs it
thousands of times a second and its full collections stall the event loop; a higher threshold
and freezing the start-up heap keep collections rare and short.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def tune_malloc(
    mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20, top_pad: int = 64 << 20
) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok
    ok = mallopt(_M_TOP_PAD, top_pad) == 1 and ok
    return ok


def tune_gc(gen0_threshold: int = 50_000) -> None:
    gc.freeze()  # objects alive at start-up are never scanned again
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
