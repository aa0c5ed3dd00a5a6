"""EnvelopeBatch bytes at the wire level: split into envelope bytes, framed back, byte for byte."""

from __future__ import annotations

import pytest

from sluice.ingress.frames import Forwarded, Pending, envelope_bytes, frame_records, prefix, varint
from sluice.v1.envelope_pb2 import Envelope, EnvelopeBatch


def log(payload_bytes: int, **kw: object) -> Envelope:
    env = Envelope(timestamp=1, source_id="s", **kw)  # type: ignore[arg-type]
    env.log.payload = b"x" * payload_bytes
    return env


@pytest.mark.parametrize("n", [1, 127, 128, 2**56 - 1, 2**56, 1_800_000_000 * 10**9, 2**63 - 1])
def test_varint_is_what_protobuf_writes_for_an_int(n: int) -> None:
    assert b"\x08" + varint(n) == Envelope(timestamp=n).SerializeToString()


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16383, 16384, 2_097_151, 2_097_152])
def test_prefix_is_what_protobuf_writes_before_an_envelope(length: int) -> None:
    env = Envelope()
    env.log.payload = b"x" * length
    data = env.SerializeToString()
    assert prefix(len(data)) + data == EnvelopeBatch(batch=[env]).SerializeToString()


def test_envelope_bytes_are_the_serialized_envelopes() -> None:
    envelopes = [log(n, tags={"k": "v"}) for n in (0, 100, 200, 20_000)] + [Envelope()]
    data = EnvelopeBatch(batch=envelopes).SerializeToString()
    assert envelope_bytes(data) == [e.SerializeToString() for e in envelopes]
    assert envelope_bytes(b"") == []


def test_envelope_bytes_are_kept_as_sent() -> None:
    # Fields out of order and a duplicate: decodes like the canonical form, but is not it.
    sent = b"\x12\x01a" + b"\x08\x05" + b"\x08\x07"
    assert Envelope.FromString(sent) == Envelope(timestamp=7, source_id="a")
    assert Envelope.FromString(sent).SerializeToString() != sent
    assert envelope_bytes(prefix(len(sent)) + sent + b"\x0a\x00") == [sent, b""]


def test_one_record_is_the_serialized_batch() -> None:
    # Short (two-byte prefix) and long (three-byte prefix) envelopes in one record.
    envelopes = [log(n) for n in (0, 110, 130, 5, 300)]
    (record,) = frame_records([e.SerializeToString() for e in envelopes], 1 << 20)
    assert record == EnvelopeBatch(batch=envelopes).SerializeToString()
    (record,) = frame_records([e.SerializeToString() for e in envelopes[:2]], 1 << 20)
    assert record == EnvelopeBatch(batch=envelopes[:2]).SerializeToString()


def test_framing_is_the_inverse_of_splitting() -> None:
    encoded = [log(n).SerializeToString() for n in range(0, 400, 7)]
    records = frame_records(encoded, 1000)
    assert len(records) > 1
    assert [e for r in records for e in envelope_bytes(r)] == encoded


def batch_of(encoded: list[bytes]) -> bytes:
    return b"".join(prefix(len(e)) + e for e in encoded)


def forwarded(encoded: list[bytes], *, framed: bool = True) -> Forwarded:
    return Forwarded(batch_of(encoded), len(encoded), sum(map(len, encoded)), framed=framed)


def test_forwarded_envelopes_are_split_only_when_asked() -> None:
    encoded = [log(n).SerializeToString() for n in (1, 200, 3)]
    batch = forwarded(encoded)
    assert (len(batch), batch.nbytes, batch.batch) == (3, sum(map(len, encoded)), batch_of(encoded))
    assert batch._items is None
    assert list(batch) == encoded and batch[1] == encoded[1] and batch[1:] == encoded[1:]
    assert forwarded(encoded, framed=False).batch is None


def test_pending_envelopes_are_taken_framed_when_whole_batches() -> None:
    a, b, c = ([log(n + i).SerializeToString() for i in range(4)] for n in (0, 10, 200))
    pending = Pending()
    pending.add(forwarded(a))
    pending.add(forwarded(b))
    pending.add(c[:2])  # not forwarded: stamped and encoded by the gateway
    pending.add(c[2:])
    pending.add(forwarded(c))
    pending.add(forwarded(a, framed=False))  # forwarded, but not framed as the gateway frames
    pending.add([])
    assert len(pending) == 20
    taken, framed = pending.take(8)
    assert (list(taken), framed) == (a + b, frame_records(a + b, 1 << 30)[0])
    assert isinstance(taken, Forwarded) and taken.nbytes == sum(map(len, a + b))
    assert pending.take(5) == (c + c[:1], None)  # unframed ones, and a batch cut in two
    assert pending.take(2) == (c[1:3], None)  # the rest of a cut batch
    assert pending.take(3) == (c[3:] + a[:2], None)
    assert pending.take(10) == (a[2:], None)
    assert len(pending) == 0 and pending.take(3) == ([], None)
    one = forwarded(a)
    pending.add(one)
    assert pending.take(4) == (one, batch_of(a))  # a whole batch alone: taken as it came
    assert len(pending) == 0
