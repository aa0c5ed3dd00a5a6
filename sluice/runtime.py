"""Process-wide tuning shared by the long-running commands (gateway, worker)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluice.settings import Settings

# Young collections between two collections of the middle generation in the worker (Python's
# default is 10). A processing step's rows and window values live until the step is written;
# at 10 the middle generation was collected while they were all still alive and traversed
# them again (0.66 s of 1,000,000 envelopes, 7% of the worker). At 100 it is collected about
# once per 5,000,000 allocations, by when most of what it holds was freed by its step.
WORKER_GC_MIDDLE = 100
# With the middle generation collected 10x less often, a full collection comes 10x later too:
# about every 500 s at a light 2,000 envelopes/s, and the reference cycles aiokafka and Faust
# leave meanwhile grew a worker's RSS by a tenth over ten minutes. The worker runs one at least
# this often (it takes milliseconds on a light worker, about a second on one holding millions of
# objects).
WORKER_FULL_COLLECTION_SECONDS = 60.0

# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_gc(threshold: int, *, middle: int = 0) -> None:
    """Collect the young generation every ``threshold`` allocations and the middle one every
    ``middle`` young collections (0: leave Python's defaults; ``middle`` only applies with a
    ``threshold``), and move what start-up created out of the collector's way.

    A worker holds millions of objects (open windows, a batch's rows) and allocates as many per
    batch; at Python's default of 700 the collector ran about 1,800 times on a 200,000-envelope
    batch and took a third of the time. Only reference cycles wait longer to be freed.
    """
    if threshold:
        _, current, old = gc.get_threshold()
        gc.set_threshold(threshold, middle or current, old)
    gc.freeze()


def tune_malloc(trim_threshold: int, mmap_threshold: int) -> bool:
    """Have glibc keep up to ``trim_threshold`` bytes of free heap instead of returning it to the
    OS, and serve allocations below ``mmap_threshold`` from the heap (0 and 0: leave glibc's
    adaptive defaults). Whether the thresholds were set: False where the C library is not glibc.

    By default glibc gives the heap's free top back as soon as it passes twice the largest block
    it has freed, and maps blocks of a few hundred KiB (a Kafka produce request) fresh each time.
    The gateway then touched every page of its records anew: 600,000 page faults and a third of
    its CPU time in the kernel in a 50-second run, against 17,000 with 64 MiB and 4 MiB.
    """
    if not (trim_threshold or mmap_threshold) or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = True
    if trim_threshold:
        ok &= mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    if mmap_threshold:
        ok &= mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    return ok


def tune_process(settings: Settings, *, middle: int = 0) -> None:
    """:func:`tune_gc` and :func:`tune_malloc` with ``settings``' values, as a long-running command
    (or a benchmark's reference, to run under the same conditions) starts."""
    tune_gc(settings.gc_threshold, middle=middle)
    tune_malloc(settings.malloc_trim_threshold, settings.malloc_mmap_threshold)
