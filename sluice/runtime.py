"""Process-wide tuning shared by the long-running commands (gateway, worker)."""

from __future__ import annotations

import gc

DEFAULT_GC_THRESHOLD = 50_000
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
