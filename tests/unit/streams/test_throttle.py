"""The throttler: token buckets on record time, drop or sample, per key, never metrics."""

from __future__ import annotations

from pathlib import Path

from sluice.client import counter_envelope, event_envelope, log_envelope
from sluice.keys import AccessKeyConfig, Limits
from sluice.streams.pipeline import Record
from sluice.streams.throttle import Throttler
from sluice.v1.envelope_pb2 import EnvelopeBatch
from tests.unit.streams.test_pipeline import CT, FakeClickHouse, make

NS = 1_000_000_000
T = 1_700_000_000 * NS


def configs(**limits: object) -> dict[str, AccessKeyConfig]:
    return {"key": AccessKeyConfig(access_key="key", limits=Limits(**limits))}  # type: ignore[arg-type]


def test_a_full_bucket_passes_the_burst_then_refills_with_record_time() -> None:
    t = Throttler(configs(events_per_second=10, events_burst=5).get)
    assert t.admit("key", T, 7) == [True] * 5 + [False] * 2
    assert t.admit("key", T + NS // 10, 3) == [True, False, False]  # 0.1s refills one token
    assert t.admit("key", T, 1) == [False]  # an older record refills nothing
    assert t.admit("key", T + 10 * NS, 9) == [True] * 5 + [False] * 4  # never more than the burst
    assert t.as_dict() == {"key": {"passed": 11, "dropped": 9, "sampled": 0}}


def test_the_same_records_give_the_same_decisions() -> None:
    records = [(T + i * NS // 7, 1 + i % 4) for i in range(50)]
    runs = []
    for _ in range(2):
        t = Throttler(configs(events_per_second=10).get)
        runs.append([t.admit("key", at, n) for at, n in records])
    assert runs[0] == runs[1]
    # The burst (10) and 7s at 10/s (70), less 4/7 of a token left over after the last record.
    assert sum(m.count(True) for m in runs[0]) == 79


def test_sampling_keeps_one_in_n_over_the_limit() -> None:
    t = Throttler(configs(events_per_second=1, over_limit="sample", sample_one_in=3).get)
    assert t.admit("key", T, 8) == [True, True, False, False, True, False, False, True]
    assert t.as_dict() == {"key": {"passed": 1, "dropped": 4, "sampled": 3}}


def test_unlimited_and_unknown_keys_pass_and_shards_split_the_limit() -> None:
    keys = configs(events_per_second=0)
    keys["shk"] = AccessKeyConfig(access_key="shk", shards=2, limits=Limits(events_per_second=4))
    t = Throttler(keys.get)
    assert t.admit("key", T, 100) == [True] * 100
    assert t.admit("nobody", T, 3) == [True] * 3
    assert t.admit("shk:0", T, 3) == [True, True, False]
    assert t.admit("shk:1", T, 3) == [True, True, False]
    assert t.as_dict() == {"shk": {"passed": 4, "dropped": 2, "sampled": 0}}


async def test_the_pipeline_throttles_logs_and_events_in_batch_order_but_not_metrics(tmp_path: Path) -> None:
    fake = FakeClickHouse()
    config = AccessKeyConfig(access_key="key", limits=Limits(events_per_second=2))
    pipeline, _ = make(tmp_path, fake, routes=lambda key: config if key == "key" else None)
    envelopes = [
        event_envelope("e0", "", timestamp=T),
        counter_envelope("c", 1, timestamp=T),
        log_envelope("l0", timestamp=T),
        log_envelope("l1", timestamp=T),
        event_envelope("e1", "", timestamp=T),
    ] + [counter_envelope("c", 1, timestamp=T)] * 3
    value = EnvelopeBatch(batch=envelopes).SerializeToString()
    await pipeline.handle([Record("raw", 0, 0, b"key", value, CT, T)], [0])
    tables = {t: rows for t, rows, _ in fake.inserts}
    assert [r[5] for r in tables["logs"]] == ["l0"]
    assert [r[4] for r in tables["events"]] == ["e0"]
    assert tables["metrics_1s"][0][7] == 4
    assert (pipeline.counters.throttled, pipeline.counters.logs, pipeline.counters.events) == (2, 1, 1)
    assert pipeline.throttler.as_dict() == {"key": {"passed": 2, "dropped": 2, "sampled": 0}}
