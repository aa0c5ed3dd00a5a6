"""Process-wide tuning of the long-running commands."""

from __future__ import annotations

import gc

from sluice.runtime import tune_gc


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
