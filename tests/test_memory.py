"""Returning freed heap memory to the OS (kprune_lib.method.memory) and when the pruning loop does it."""
import os
import platform

import pytest

from conftest import random_batches, tiny_model
from kprune_lib.method import memory
from kprune_lib.method import schedules
from kprune_lib.encoder.arch import Arch
from kprune_lib.method.schedules import CachedSchedule


def resident_mb() -> float:
    """This process's resident set in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_trim_gives_freed_heap_memory_back():
    trim = memory.HeapTrimmer()
    blocks = [bytearray(100_000) for _ in range(4000)]  # ~400 MB of heap blocks (below glibc's mmap threshold)
    high = resident_mb()
    del blocks[::2]  # every other block freed: ~200 MB of holes that glibc keeps
    assert resident_mb() > high - 50
    trim()
    assert trim.trims == 1
    assert resident_mb() < high - 150
    del blocks


def test_does_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    trim = memory.HeapTrimmer()
    trim()
    assert trim.trims == 0


@pytest.mark.parametrize("lean", [False, True])
def test_the_loop_trims_only_when_lean(lean, monkeypatch):
    """Lean (the teacher's sums over TEACHER_SUMS_MAX_MB): teacher streamed, inputs recomputed, heap trimmed."""
    if lean:
        monkeypatch.setattr(schedules, "TEACHER_SUMS_MAX_MB", 0)
    model = tiny_model("bert")
    sched = CachedSchedule(Arch(model), random_batches(2), "classification", 2.0, None, clock=None)
    assert sched.lean is lean and sched.hold_all_sums is not lean
    assert isinstance(sched.trim, memory.HeapTrimmer) is lean
