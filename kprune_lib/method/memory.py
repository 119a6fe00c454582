"""Giving freed heap memory back to the operating system during the pruning loop (Linux, glibc).

The loop's per-batch tensors change shape from batch to batch (length-sorted batches of varying T), so glibc's heap
fragments: the blocks a batch frees rarely fit the next batch's tensors exactly, and the process grows by memory
that is free but never returned (about 400 MB of the 100 000-token MRPC run's peak RSS, README "Performance").
`HeapTrimmer` calls glibc's `malloc_trim(0)`; the loop calls it after every batch of every pass (measurement,
tuning, advance), so the resident set stays near the live tensors plus one batch's temporaries (MRPC 100 000 tokens:
peak 1236 MB against 1640 MB untrimmed; trimming after the measurement batches only: 1492 MB, the tuning and
advance passes fragment too). The price is that each batch faults its pages in again (+15–35 % time at 100 000
tokens on a 2-core VM), so the loop trims only when it runs lean (`schedules.Schedule.lean`). Elsewhere (macOS,
Windows, musl) it does nothing, and the peak is the allocator's.
"""
from __future__ import annotations

import ctypes
import ctypes.util


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None


class HeapTrimmer:
    """Call after each batch of a loop: freed heap memory goes back to the OS (`trims` counts the calls that could)."""

    def __init__(self):
        self._trim = _malloc_trim()
        self.trims = 0

    def __call__(self) -> None:
        if self._trim is not None:
            self._trim(0)
            self.trims += 1
