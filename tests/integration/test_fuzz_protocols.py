"""Hypothesis-generated and random input against the statsd and Influx UDP listeners and the HTTP
writes (Influx ``/api/v2/write`` and ``/write``, Prometheus ``/api/v1/write``) of a real
``sluice gateway`` process: garbage, truncated and corrupt snappy, invalid UTF-8, huge lines and
bodies, empty bodies, wrong content types and encodings.

Every HTTP answer is 204 or a 4xx naming the problem, never a 5xx or a hang, and every refusal is
counted; every datagram is parsed (no parser failure drops one) and its malformed lines counted by
reason. Afterwards the process still serves: good requests and datagrams are published exactly,
and its log holds no traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cramjam
import pytest
from hypothesis import given, settings as hypothesis_settings
from hypothesis import strategies as st
from opentelemetry.exporter.prometheus_remote_write.gen import remote_pb2

from sluice.ingress import issue_token
from sluice.keys import AccessKeyConfig, JsonKeyStore
from sluice.settings import Settings
from sluice.tansu import Tansu, free_port, wait_for_port
from sluice.v1.envelope_pb2 import Envelope
from tests.integration.gateway_helpers import MetricSamples, batch_of, read_topic, scrape
from tests.unit.ingress.protocols.test_fuzz_parsers import datagrams, lines

NS = 1_000_000_000
T0 = (time.time_ns() // NS - 120) * NS
MAX_BODY = 256 * 1024
KEYS = {"statsd": "ak_fuzz_statsd", "influx_udp": "ak_fuzz_influx", "http": "ak_fuzz_http", "good": "ak_fuzz_good"}
PATHS = {"/api/v2/write": "Influx.HTTP", "/write": "Influx.HTTP", "/api/v1/write": "RemoteWrite"}


class FuzzedGateway:
    """A ``sluice gateway`` process with every protocol listener on, and how to reach it."""

    def __init__(self, settings: Settings, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.settings, self.proc, self.log = settings, proc, log
        self.http = f"http://{settings.protocols.http_listen}"
        self.statsd = port_of(settings.protocols.statsd_listen)
        self.influx_udp = port_of(settings.protocols.influx_udp_listen)
        self.metrics = port_of(settings.gateway.metrics_listen)

    def token(self, key: str) -> str:
        return issue_token(self.settings.auth, key, 600)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(self.http + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:  # a hang fails the test
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def samples(self) -> MetricSamples:
        return scrape(self.metrics)

    def envelopes_of(self, key: str) -> list[Envelope]:
        records = asyncio.run(read_topic(self.settings.kafka.bootstrap, self.settings.kafka.raw_topic))
        return [env for r in records if r.key == key.encode() for env in batch_of(r)]


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def gateway(tansu: Tansu, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedGateway]:
    unique = os.urandom(5).hex()
    data = tmp_path_factory.mktemp("fuzz")
    settings = Settings(
        data_dir=data,
        kafka={"bootstrap": tansu.bootstrap, "raw_topic": f"sluice.raw.{unique}",
               "config_topic": f"sluice.config.{unique}", "partitions": 2},
        auth={"jwt_secret": "fuzz-secret-" + os.urandom(32).hex()},
        gateway={"listen": f"127.0.0.1:{free_port()}", "metrics_listen": f"127.0.0.1:{free_port()}"},
        protocols={
            "statsd_listen": f"127.0.0.1:{free_port()}", "statsd_access_key": KEYS["statsd"],
            "influx_udp_listen": f"127.0.0.1:{free_port()}", "influx_udp_access_key": KEYS["influx_udp"],
            "http_listen": f"127.0.0.1:{free_port()}", "max_http_body_bytes": MAX_BODY,
        },
        metrics_key_labels=True,  # the tests account per key
    )
    store = JsonKeyStore(settings.access_keys_path)
    for key in KEYS.values():
        store.put(AccessKeyConfig(access_key=key))
    log_path = data / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sluice.cli.main", "gateway"],
                                env=dict(os.environ) | settings.to_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for_port("127.0.0.1", port_of(settings.protocols.http_listen), 30), log_path.read_text()
        yield FuzzedGateway(settings, proc, log_path)
        assert proc.poll() is None, "the gateway died"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "Traceback" not in log_path.read_text(errors="replace"), log_path.read_text(errors="replace")[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()


# --- HTTP ------------------------------------------------------------------------------------


def remote_write_request(*samples: tuple[str, float, int]) -> bytes:
    request = remote_pb2.WriteRequest()
    for name, value, millis in samples:
        series = request.timeseries.add()
        series.labels.add(name="__name__", value=name)
        series.labels.add(name="job", value="fuzz")
        series.samples.add(value=value, timestamp=millis)
    return request.SerializeToString()


GOOD_WRITE = remote_write_request(("up", 1.0, T0 // 1_000_000), ("temp", -3.5, T0 // 1_000_000 + 1))
snappy = st.builds(lambda b: bytes(cramjam.snappy.compress_raw(b)), st.binary(max_size=300))
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=2000),
    datagrams,  # line protocol and statsd near their grammars
    lines.map(lambda line: b"m,t=\xff\xfe " + line),  # invalid UTF-8
    st.integers(1, 200_000).map(lambda n: b"m f=" + b"9" * n),  # huge lines
    st.just(b"m f=1\n" * (MAX_BODY // 6 + 1)),  # over the body limit
    snappy,  # snappy of garbage
    st.integers(0, len(GOOD_WRITE)).map(lambda n: bytes(cramjam.snappy.compress_raw(GOOD_WRITE[:n]))),  # truncated protobuf
    st.integers(0, 40).map(lambda n: bytes(cramjam.snappy.compress_raw(GOOD_WRITE))[:n]),  # truncated snappy
    st.builds(lambda a, b: a + b, snappy, st.binary(min_size=1, max_size=20)),  # trailing garbage
)
content_types = st.sampled_from([None, "text/plain; charset=utf-8", "application/x-protobuf", "application/json",
                                 "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"])
encodings = st.sampled_from([None, "identity", "snappy", "gzip", "deflate", "br", "zstd", "nonsense"])
queries = st.sampled_from(["", "?precision=s", "?precision=ms&org=o&bucket=b", "?precision=fortnight", "?db=x"])


def test_http_writes_answer_any_body_with_a_status_that_names_the_problem(gateway: FuzzedGateway) -> None:
    answers: Counter[tuple[str, int]] = Counter()
    auth = {"Authorization": f"Bearer {gateway.token(KEYS['http'])}", "x-access-key": KEYS["http"]}
    before = gateway.samples()

    @hypothesis_settings(max_examples=150, deadline=None, database=None)
    @given(st.sampled_from(sorted(PATHS)), queries, bodies, content_types, encodings)
    def write(path: str, query: str, body: bytes, content_type: str | None, encoding: str | None) -> None:
        headers = dict(auth)
        if content_type:
            headers["Content-Type"] = content_type
        if encoding:
            headers["Content-Encoding"] = encoding
        status, text = gateway.post(path + query, body, headers)
        assert status in (204, 400, 413), (status, text[:500])
        if status != 204:
            # The message names the problem: JSON ``message`` from Sluice, plain text from the HTTP layer.
            message = json.loads(text)["message"] if text.startswith(b"{") else text.decode()
            assert len(message) > 10, message
        answers[(PATHS[path], status)] += 1

    write()
    after = gateway.samples()
    for entry_point in ("Influx.HTTP", "RemoteWrite"):  # every refusal counted, by code
        refused = {
            dict(labels)["code"]: v - before.get((name, labels), 0) for (name, labels), v in after.items()
            if name == "sluice_gateway_rejected_calls_total" and dict(labels)["entry_point"] == entry_point
        }
        assert sum(refused.values()) == answers[(entry_point, 400)] + answers[(entry_point, 413)], (refused, answers)
        assert refused.get("RESOURCE_EXHAUSTED", 0) == answers[(entry_point, 413)]
    assert answers[("Influx.HTTP", 400)] and answers[("RemoteWrite", 400)], answers
    print(f"\nHTTP answers: {dict(answers)}")
    assert_good_http_requests_are_published_exactly(gateway)


def assert_good_http_requests_are_published_exactly(gateway: FuzzedGateway) -> None:
    key = KEYS["good"]
    headers = {"Authorization": f"Token {gateway.token(key)}", "x-access-key": key}
    influx = f"good,run=1 v=1.5,n=2i {T0}\ngood,run=1 v=2.5,n=3i {T0 + 1}".encode()
    assert gateway.post("/api/v2/write", influx, headers) == (204, b"")
    prometheus = headers | {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
    assert gateway.post("/api/v1/write", bytes(cramjam.snappy.compress_raw(GOOD_WRITE)), prometheus) == (204, b"")
    stored = [(e.timestamp, dict(e.tags), {k: v.value for k, v in e.gauge.metrics.items()}, e.source_id)
              for e in gateway.envelopes_of(key)]
    assert stored == [
        (T0, {"run": "1"}, {"good.v": 1.5, "good.n": 2.0}, key),
        (T0 + 1, {"run": "1"}, {"good.v": 2.5, "good.n": 3.0}, key),
        (T0, {"job": "fuzz"}, {"up": 1.0}, key),
        (T0 + 1_000_000, {"job": "fuzz"}, {"temp": -3.5}, key),
    ]


# --- UDP -------------------------------------------------------------------------------------


def send_udp(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("127.0.0.1", port))


def wait_for_envelopes(gateway: FuzzedGateway, key: str, named: str, count: int) -> list[Envelope]:
    """The envelopes of ``key`` with a metric named ``named``, once there are ``count`` of them."""
    deadline = time.monotonic() + 20
    while True:
        found = [e for e in gateway.envelopes_of(key)
                 if e.counter.name == named or named in e.gauge.metrics]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} {named!r} envelope(s) published"
        time.sleep(0.1)


def malformed(samples: MetricSamples, protocol: str) -> Counter[str]:
    return Counter({dict(labels)["reason"]: int(v) for (name, labels), v in samples.items()
                    if name == "sluice_gateway_malformed_lines_total" and dict(labels)["protocol"] == protocol})


UDP_PROBES: dict[str, tuple[bytes, str, list[float], dict[str, int]]] = {
    # protocol: (a datagram of good and bad lines, the metric its good lines carry, their values, bad lines by reason)
    "statsd": (
        b"probe:1|c\nbad line\nprobe:2|c|@0.5\nx:1|zz\ny:1e400|g\nz:1|c|@1e-300\nprobe:3|c|T99999999999999999999\n"
        b"\xff\xfe:1|c\nprobe:7|c",
        "probe", [1.0, 4.0, 7.0], {"syntax": 1, "type": 1, "value": 2, "timestamp": 1, "encoding": 1},
    ),
    "influx_udp": (
        f"probe v=1 {T0}\nno_fields\nprobe v=2 99999999999999999999\nprobe v=3 {T0 + 1}\nprobe,t=\xff v=4\n"
        f"probe v=1_0\nprobe v=5 {T0 + 2}".encode("latin-1"),
        "probe.v", [1.0, 3.0, 5.0], {"field": 2, "timestamp": 1, "encoding": 1},
    ),
}


@pytest.mark.parametrize("protocol", sorted(UDP_PROBES))
def test_udp_listeners_parse_any_datagram_and_keep_the_good_lines(gateway: FuzzedGateway, protocol: str) -> None:
    port = gateway.statsd if protocol == "statsd" else gateway.influx_udp
    key = KEYS[protocol]
    sent = 0

    @hypothesis_settings(max_examples=300, deadline=None, database=None)
    @given(st.one_of(datagrams, st.binary(max_size=1500), st.integers(1, 60_000).map(lambda n: b"a" * n)))
    def datagram(data: bytes) -> None:
        nonlocal sent
        send_udp(port, data)
        sent += 1

    datagram()
    # Datagrams are handled in order: once a sentinel is published, every fuzzed one was parsed.
    sentinel = b"sentinel:1|c" if protocol == "statsd" else f"sentinel v=1 {T0}".encode()
    send_udp(port, sentinel)
    wait_for_envelopes(gateway, key, "sentinel" if protocol == "statsd" else "sentinel.v", 1)
    before = gateway.samples()
    probe, name, values, bad = UDP_PROBES[protocol]
    send_udp(port, probe)
    found = wait_for_envelopes(gateway, key, name, len(values))
    after = gateway.samples()
    got = [e.counter.delta for e in found] if protocol == "statsd" else [e.gauge.metrics[name].value for e in found]
    assert got == values  # the good lines of the datagram, exactly, in order
    assert malformed(after, protocol) - malformed(before, protocol) == Counter(bad)
    dropped = {dict(labels)["reason"]: v for (n, labels), v in after.items()
               if n == "sluice_gateway_udp_dropped_datagrams_total" and dict(labels)["protocol"] == protocol}
    assert dropped.get("error", 0) == 0, dropped  # no parser failure, no publish failure
    print(f"\n{protocol}: {sent} fuzzed datagrams, malformed lines by reason {dict(malformed(after, protocol))}, "
          f"dropped {dropped}")
