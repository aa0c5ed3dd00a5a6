"""The e2e ramp's live load: requests restamped with the wall clock, nothing else changed."""

from __future__ import annotations

import time

import pytest

from bench.common import envelopes
from bench.scenarios import _LiveRequests
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch


def without_timestamp(env: Envelope) -> Envelope:
    copy = Envelope.FromString(env.SerializeToString())
    copy.ClearField("timestamp")
    return copy


def test_requests_are_the_envelopes_stamped_with_the_time_of_the_last_refresh() -> None:
    envs = envelopes(2_000, seed=4)
    live = _LiveRequests(envs, batch=500, refresh=60.0)
    before = time.time_ns()
    requests = live()
    after = time.time_ns()
    assert live() is requests  # not refreshed before 60 s
    assert [(n, logs) for _, n, logs in requests] == [
        (500, sum(e.HasField("log") for e in envs[i:i + 500])) for i in range(0, 2_000, 500)
    ]
    sent = [env for request, _, _ in requests for env in EnvelopeBatch.FromString(request).batch]
    assert len(sent) == 2_000
    assert len({env.timestamp for env in sent}) == 1 and before <= sent[0].timestamp <= after
    assert [without_timestamp(e) for e in sent] == [without_timestamp(e) for e in envs]


def test_refreshed_requests_carry_a_later_time() -> None:
    live = _LiveRequests(envelopes(500, seed=1), batch=500, refresh=0.01)
    first = EnvelopeBatch.FromString(live()[0][0]).batch[0].timestamp
    time.sleep(0.02)
    assert EnvelopeBatch.FromString(live()[0][0]).batch[0].timestamp > first


def test_envelopes_without_a_nine_byte_timestamp_are_refused() -> None:
    with pytest.raises(ValueError, match="timestamp of 9 varint bytes"):
        _LiveRequests([Envelope(timestamp=5, log={"payload": b"x"})], batch=1)
    with pytest.raises(ValueError, match="timestamp of 9 varint bytes"):
        _LiveRequests([Envelope(source_id="s", log={"payload": b"x"})], batch=1)
