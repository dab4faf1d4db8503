"""Freed memory kept for training's next step instead of handed back to the system (glibc only).

A training step allocates its batch-sized arrays afresh and frees them at its end. At batch 1000 of
the 784-500-20 model one (B, D) float32 array is 3.1 MB, and a step's arrays add up to about 25 MB.
glibc's malloc hands free memory at the top of its heap back to the system as soon as more than
``M_TRIM_THRESHOLD`` of it is free (by default twice the largest block it has seen freed: about
6 MB here), so the next step's arrays land on pages that the system must map and zero again: about
6,400 page faults a step, and an epoch at batch 1000 took 2.8 s where it takes 2.2 s with the
memory kept (on the machine of benchmarks/README.md).

Inside ``keep_freed_memory()`` the heap keeps up to ``KEEP`` bytes free, and blocks up to
``FROM_HEAP`` bytes come from the heap rather than from a fresh mapping of their own, so each step
reuses the pages of the one before: a few page faults a step instead of thousands. On exit at most
``AFTER`` stays free and the rest goes back to the system (``malloc_trim``): a run does not hold on
to its memory after it ends. (glibc has no way to read its thresholds back; the values left on exit
are the ones its own rule reaches after it has freed a block of ``FROM_HEAP`` bytes.)

No number changes: where an array lives does not change its arithmetic. With any other C library
(macOS, Windows, musl) this does nothing: their allocators follow rules of their own.
"""

from __future__ import annotations

import ctypes
import platform
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt's parameter numbers (glibc's malloc.h)
KEEP = 1 << 30                # free bytes the heap may keep while training runs
FROM_HEAP = 32 << 20          # blocks up to this size come from the heap (glibc's largest allowed)
AFTER = 2 * FROM_HEAP         # free bytes the heap may keep after training


def _glibc():
    """The running C library's functions when it is glibc, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)  # the process's own symbols, glibc's mallopt and malloc_trim among them
    except OSError:
        return None


@contextmanager
def keep_freed_memory():
    """``with keep_freed_memory():`` the heap keeps what a step frees for the next step (see above)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, FROM_HEAP)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_TRIM_THRESHOLD, AFTER)
            libc.malloc_trim(0)
