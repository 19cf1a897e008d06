"""Keep freed memory in the process so kernels do not pay page faults on every call.

Indicator and simulation kernels allocate and free temporary arrays of T floats. With
glibc's defaults, freeing a few megabytes at the top of the heap returns them to the
operating system, and the next call faults every page back in; on virtual machines that
costs more than the computation (measured here: RSI 18.7 -> 8.2 ns per bar). Raising the
trim and mmap thresholds keeps those pages mapped. Memory is still bounded by the peak
working set, which the Evaluator's chunking bounds.

This is process-wide, so it is applied once, by the Evaluator (the only heavy user), and
can be turned off with EVOLVE_NO_MALLOC_TUNING=1.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_BYTES = 128 << 20  # keep up to 128 MiB of freed heap at the top of the heap
MMAP_BYTES = 32 << 20  # glibc's maximum: allocations below this come from the heap

_state = {"done": False}


def tune_allocator() -> bool:
    """Apply the thresholds once; returns whether glibc accepted them."""
    if _state["done"]:
        return True
    _state["done"] = True
    if os.environ.get("EVOLVE_NO_MALLOC_TUNING") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)) and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
