"""Record framing: encoded envelopes packed into EnvelopeBatch values under a size limit."""

from __future__ import annotations

import pytest

from sluice.ingress.publisher import frame_records
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch


def envelope(i: int, payload_bytes: int) -> Envelope:
    env = Envelope(timestamp=i + 1, source_id=f"s{i}")
    env.log.payload = b"x" * payload_bytes
    return env


@pytest.mark.parametrize("payload_bytes", [0, 100, 126, 127, 128, 300, 20_000])
def test_records_decode_to_the_same_envelopes_in_order(payload_bytes: int) -> None:
    envelopes = [envelope(i, payload_bytes) for i in range(25)]
    encoded = [e.SerializeToString() for e in envelopes]
    records = frame_records(encoded, 4096)
    decoded = [env for record in records for env in EnvelopeBatch.FromString(record).batch]
    assert decoded == envelopes
    for record in records:
        batch = EnvelopeBatch.FromString(record)
        assert record == batch.SerializeToString()
        assert len(record) <= 4096 or len(batch.batch) == 1


def test_records_are_filled_up_to_the_limit() -> None:
    encoded = [envelope(i, 95).SerializeToString() for i in range(10)]
    framed = 2 + len(encoded[0])  # tag + one-byte length
    assert len(encoded[0]) < 128
    records = frame_records(encoded, 3 * framed)
    assert [len(EnvelopeBatch.FromString(r).batch) for r in records] == [3, 3, 3, 1]
    assert [len(r) for r in records] == [3 * framed] * 3 + [framed]


def test_nothing_to_frame() -> None:
    assert frame_records([], 1024) == []
    with pytest.raises(ValueError, match=r"^max_record_bytes must be >= 1, got 0$"):
        frame_records([b""], 0)
