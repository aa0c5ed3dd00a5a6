"""The Loki push API's parsing: stream labels, JSON and protobuf bodies, and what is refused."""

from __future__ import annotations

import pytest

from sluice.ingress.protocols.lines import Malformed
from sluice.ingress.protocols.loki import PushRequest, parse_json, parse_labels, parse_protobuf


@pytest.mark.parametrize(("text", "labels"), [
    ("{}", {}),
    (' { job = "api" , env="prod",} ', {"job": "api", "env": "prod"}),
    (r'{path="C:\\tmp", q="say \"hi\"", nl="a\nb", comma="x,y}"}', {"path": "C:\\tmp", "q": 'say "hi"', "nl": "a\nb", "comma": "x,y}"}),
])
def test_stream_labels_parse(text: str, labels: dict[str, str]) -> None:
    assert parse_labels(text) == labels


@pytest.mark.parametrize(("text", "message"), [
    ("job=api", "stream labels 'job=api' are not {name=\"value\", ...}"),
    ('{job="api" env="x"}', "stream labels '{job=\"api\" env=\"x\"}' do not parse at 'job=\"api\" env=\"x\"'"),
    ('{1job="x"}', "stream labels '{1job=\"x\"}' do not parse at '1job=\"x\"'"),
    ('{job="unterminated}', "stream labels '{job=\"unterminated}' do not parse at 'job=\"unterminated'"),
])
def test_bad_stream_labels_are_malformed(text: str, message: str) -> None:
    with pytest.raises(Malformed) as raised:
        parse_labels(text)
    assert (str(raised.value), raised.value.reason) == (message, "labels")


def test_protobuf_entries_become_log_envelopes() -> None:
    request = PushRequest()
    stream = request.streams.add(labels='{service_name="api", instance="i-1"}')
    entry = stream.entries.add(line="hello")
    entry.timestamp.seconds, entry.timestamp.nanos = 1_700_000_000, 5
    entry.structuredMetadata.add(name="trace_id", value="abc")
    [env] = parse_protobuf(request.SerializeToString())
    assert (env.timestamp, env.source_id, env.instance_id, dict(env.tags), env.log.payload) == (
        1_700_000_000_000_000_005, "api", "i-1", {"service_name": "api", "instance": "i-1", "trace_id": "abc"}, b"hello")


@pytest.mark.parametrize(("body", "message"), [
    (b"[]", 'the body is not a Loki push request: expected {"streams": [...]}'),
    (b'{"streams": [{"stream": {}, "values": [[1, "x"]]}]}', 'a value [1, \'x\'] is not ["<unix ns>", "<line>"(, {metadata})]'),
    (b'{"streams": [{"stream": {}, "values": [["99999999999999999999", "x"]]}]}', "timestamp 99999999999999999999 is out of range"),
    (b'{"streams": [{"stream": {}, "values": [["1", "x", {"k": 1}]]}]}', "structured metadata must be an object of strings"),
    ('{"streams": [{"stream": {}, "values": [["\u00b2", "x"]]}]}'.encode(), 'a value [\'²\', \'x\'] is not ["<unix ns>", "<line>"(, {metadata})]'),
    (b'{"streams": [{"stream": {}, "values": [["' + b"1" * 5000 + b'", "x"]]}]}', f"timestamp {'1' * 30} is out of range"),
])
def test_bad_json_bodies_are_malformed_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(Malformed) as raised:
        parse_json(body)
    assert str(raised.value) == message
