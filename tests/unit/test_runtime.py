"""Process-wide tuning of the long-running commands."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from sluice.runtime import tune_gc, tune_malloc


def test_tune_gc_sets_the_young_threshold_and_freezes_what_exists() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
        tune_gc(0)  # 0 leaves the thresholds as they are
        assert gc.get_threshold()[0] == 12_345
        tune_gc(23_456, middle=77)
        assert gc.get_threshold() == (23_456, 77, before[2])
        tune_gc(34_567)  # no middle: the middle threshold stays
        assert gc.get_threshold() == (34_567, 77, before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# Page faults of freeing and allocating again 200 times eight 256 KiB blocks (102,400 pages), in a
# fresh interpreter: glibc gives the freed heap top back each time unless told to keep it.
_CHURN = """
import resource, sys
from sluice.runtime import tune_malloc
if sys.argv[1:] == ["tuned"]:
    assert tune_malloc(64 << 20, 4 << 20)
def churn():
    for _ in range(200):
        blocks = [bytearray(256 * 1024) for _ in range(8)]
        del blocks
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _churn_faults(*args: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHURN, *args], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tune_malloc_keeps_freed_heap_instead_of_faulting_it_in_again() -> None:
    pages = 200 * 8 * 256 * 1024 // 4096
    assert _churn_faults() > pages // 2  # glibc's default: the churn faults in most pages anew
    assert _churn_faults("tuned") < pages // 100


def test_tune_malloc_with_zeros_leaves_glibc_alone() -> None:
    assert tune_malloc(0, 0) is False
