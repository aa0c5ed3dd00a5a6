"""``sluice plan``: the gateways, workers, partitions, Kafka brokers and ClickHouse shards a load
needs, from the per-core figures measured in bench/RESULTS.md (read each time, so the plan
follows the measurements) and from published Kafka sizing.

Measured here (bench/RESULTS.md):
- gateway: CPU µs per envelope of ``sluice gateway`` under ``Send`` (500 envelopes per call);
- worker: CPU µs per envelope of ``sluice worker`` on the live mix, and of the worker holding
  100,000 series; between the two, the cost per envelope grows linearly with the series a worker
  holds (the one-worker measurements, at either end); its peak RSS likewise;
- ClickHouse rows per envelope (the worker scenario's rows written) and CPU µs per inserted row
  (the ClickHouse sink, chDB in process).

Sluice's own processes are planned at half a core each (docs/OPERATIONS.md: "plan at half").

Published (cited in docs/OPERATIONS.md, "Planning for a load"):
- Kafka: Google Cloud's Managed Service for Apache Kafka sizing: write bandwidth = produce ×
  replicas, read bandwidth = consume + produce × (replicas − 1), read counts a quarter of write,
  20 MBps of write-equivalent per vCPU at 50% utilization, 4 GiB of RAM per vCPU; partitions =
  max(producer-side, consumer-side need) (Cloudera's Kafka sizing), with 10 MB/s per partition.
- ClickHouse: about one insert query per second per table is what its docs recommend for
  synchronous inserts; the plan prints the insert queries per shard so they can be compared.

Assumed (options, with defaults): envelope bytes, a broker's and a shard's vCPUs, bytes per row
on disk, disk per replica, replicas per shard, a worker's memory limit.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sluice.exceptions import SluiceError
from sluice.settings import Settings

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "RESULTS.md"
HEADROOM = 0.5  # of a core, for the gateway and the worker
SERIES_MEASURED = 100_000  # series of the "memory: 100k series" scenario
KAFKA_REPLICAS = 3
KAFKA_MBPS_PER_VCPU = 20.0
KAFKA_UTILIZATION = 0.5
KAFKA_READ_WEIGHT = 0.25
KAFKA_GIB_PER_VCPU = 4
PARTITION_MBPS = 10.0
CLICKHOUSE_UTILIZATION = 0.5  # of a shard's cores for inserts; the rest merges and answers queries
REPLAY_HORIZON = 600.0  # seconds a replayed block may come after its first insert
STEPS_PER_SECOND = 2.0  # a worker's processing steps per second (SLUICE_WORKER_BATCH_INTERVAL 0.5 s)
METRIC_TABLES = 2  # metrics_1s and metrics_1m: one block per partition and step each
RAW_TABLES = 3  # logs, events and spans: one block per worker, step and shard each


@dataclass(frozen=True, slots=True)
class Measured:
    """The per-core figures the plan assumes, as bench/RESULTS.md states them."""

    generated: str
    gateway_us: float
    worker_us: float
    worker_rss_mib: float
    series_us: float
    series_rss_mib: float
    rows_per_envelope: float
    insert_us_per_row: float


@dataclass(frozen=True, slots=True)
class Assumptions:
    """What the plan takes as given beyond the measurements (the command's options)."""

    envelope_bytes: int = 200
    broker_vcpus: int = 8
    shard_vcpus: int = 16
    row_bytes_on_disk: float = 30.0
    disk_tib_per_replica: float = 10.0
    replicas: int = 2
    worker_memory_mib: int = 1024


@dataclass(frozen=True, slots=True)
class Plan:
    gateways: int
    workers: int
    series_per_worker: int
    worker_us: float
    worker_rss_mib: float
    partitions: int
    kafka_mbps: float
    kafka_vcpus: int
    kafka_brokers: int
    rows_per_second: float
    shards: int
    shards_for_inserts: int
    shards_for_disk: int
    replicas: int
    stored_tib: float
    inserts_per_shard: float
    deduplication_window: int


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(text: str) -> float:
    m = re.search(r"-?[\d,]+(?:\.\d+)?", text)
    if not m:
        raise ValueError(f"no number in {text!r}")
    return float(m.group(0).replace(",", ""))


def measured(text: str) -> Measured:
    """The figures of a bench/RESULTS.md; an error naming the row or column that is missing."""
    lines = text.splitlines()
    try:
        header = _cells(next(l for l in lines if l.startswith("| scenario |")))
    except StopIteration:
        raise SluiceError("bench/RESULTS.md has no results table (| scenario | system | ...)") from None
    rows = {(c[0], c[1]): dict(zip(header, c)) for c in map(_cells, lines) if len(c) == len(header)}

    def cell(scenario: str, system: str, column: str) -> str:
        try:
            return rows[(scenario, system)][column]
        except KeyError:
            raise SluiceError(f"bench/RESULTS.md has no {column!r} for {scenario} / {system}") from None

    note = cell("worker", "sluice worker", "note")
    written = re.search(r"rows written \{([^}]*)\}", note)
    envelopes = re.search(r"([\d,]+) envelopes", note)
    if not written or not envelopes:
        raise SluiceError("bench/RESULTS.md's worker row does not say its envelopes and rows written")
    rows_written = sum(int(n) for n in re.findall(r":\s*(\d+)", written.group(1)))
    generated = re.search(r" on (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", text)
    return Measured(
        generated=generated.group(1) if generated else "an unknown date",
        gateway_us=_number(cell("gateway Send", "sluice gateway", "CPU µs/unit")),
        worker_us=_number(cell("worker", "sluice worker", "CPU µs/unit")),
        worker_rss_mib=_number(cell("worker", "sluice worker", "peak RSS MiB")),
        series_us=_number(cell("memory: 100k series", "sluice worker", "CPU µs/unit")),
        series_rss_mib=_number(cell("memory: 100k series", "sluice worker", "peak RSS MiB")),
        rows_per_envelope=rows_written / _number(envelopes.group(1)),
        insert_us_per_row=_number(cell("clickhouse sink", "sluice ClickHouseSink", "CPU µs/unit")),
    )


def plan(envelopes: float, series: int, retention_days: float, m: Measured, a: Assumptions = Assumptions()) -> Plan:
    """The plan for ``envelopes`` per second over ``series`` active series kept ``retention_days``."""
    if envelopes <= 0 or series < 0 or retention_days <= 0:
        raise SluiceError("need envelopes/s > 0, series >= 0 and a retention > 0")
    gateways = max(2, math.ceil(envelopes * m.gateway_us / 1e6 / HEADROOM))
    # A worker's µs per envelope: worker_us + slope × series/worker. Cores = workers × HEADROOM must
    # cover envelopes × that, i.e. w² - c·worker_us·w - c·slope·series >= 0 with c = envelopes/1e6/HEADROOM.
    slope = (m.series_us - m.worker_us) / SERIES_MEASURED
    c = envelopes / 1e6 / HEADROOM
    b = c * m.worker_us
    for_cpu = (b + math.sqrt(b * b + 4 * c * slope * series)) / 2
    rss_per_series = max(0.0, (m.series_rss_mib - m.worker_rss_mib) / SERIES_MEASURED)
    room = a.worker_memory_mib - m.worker_rss_mib
    if room <= 0:
        raise SluiceError(f"a worker measured {m.worker_rss_mib:.0f} MiB: give it more than that (--worker-memory-mib)")
    for_memory = series * rss_per_series / room
    workers = max(1, math.ceil(round(max(for_cpu, for_memory), 9)))
    per_worker = math.ceil(series / workers)

    mbps = envelopes * a.envelope_bytes / 1e6
    write = mbps * KAFKA_REPLICAS
    read = mbps + mbps * (KAFKA_REPLICAS - 1)  # the workers' one consumer group, and the followers
    vcpus = max(KAFKA_REPLICAS, math.ceil(round((write + read * KAFKA_READ_WEIGHT) / KAFKA_MBPS_PER_VCPU / KAFKA_UTILIZATION, 9)))
    brokers = max(KAFKA_REPLICAS, math.ceil(vcpus / a.broker_vcpus))
    # Room to double the workers without adding partitions (which moves keys), an even spread,
    # and no partition over PARTITION_MBPS.
    wanted = max(2 * workers, math.ceil(round(mbps / PARTITION_MBPS, 9)))
    partitions = workers * math.ceil(wanted / workers)

    rows = envelopes * m.rows_per_envelope
    for_inserts = math.ceil(round(rows * m.insert_us_per_row / 1e6 / (a.shard_vcpus * CLICKHOUSE_UTILIZATION), 9))
    stored = rows * 86400 * retention_days * a.row_bytes_on_disk / 2**40
    for_disk = math.ceil(round(stored / a.disk_tib_per_replica, 9))
    shards = max(1, for_inserts, for_disk)
    # Insert queries per shard each second: every step writes one block per partition to each
    # metric table (on the shard its token names, so spread evenly), and splits its logs, events
    # and spans blocks by shard (a worker's partitions reach min(shards, its partitions) of them).
    reached = min(shards, partitions // workers)
    metric_blocks = partitions / shards * STEPS_PER_SECOND  # per metric table
    raw_blocks = workers * reached / shards * STEPS_PER_SECOND  # per logs, events or spans table
    inserts = METRIC_TABLES * metric_blocks + RAW_TABLES * raw_blocks
    # The replicated deduplication window must hold a table's blocks on a shard over the horizon.
    window = max(10_000, math.ceil(max(metric_blocks, raw_blocks) * REPLAY_HORIZON / 1000) * 1000)
    return Plan(
        gateways=gateways, workers=workers, series_per_worker=per_worker,
        worker_us=m.worker_us + slope * per_worker,
        worker_rss_mib=m.worker_rss_mib + rss_per_series * per_worker,
        partitions=partitions, kafka_mbps=mbps, kafka_vcpus=vcpus, kafka_brokers=brokers,
        rows_per_second=rows, shards=shards, shards_for_inserts=for_inserts, shards_for_disk=for_disk,
        replicas=a.replicas, stored_tib=stored, inserts_per_shard=inserts,
        deduplication_window=window,
    )


def render(envelopes: float, series: int, retention_days: float, m: Measured, a: Assumptions, p: Plan) -> str:
    """The plan as the command prints it."""
    return f"""\
Plan for {envelopes:,.0f} envelopes/s over {series:,} active series, kept {retention_days:g} days:
  gateways           {p.gateways:>6}   1 core each, HPA on CPU (at least 2)
  workers            {p.workers:>6}   1 core each; {p.series_per_worker:,} series each, ~{p.worker_us:.2f} CPU µs/envelope, ~{p.worker_rss_mib:,.0f} MiB
  partitions         {p.partitions:>6}   of sluice.raw: {p.partitions // p.workers} per worker, room to double the workers
  Kafka brokers      {p.kafka_brokers:>6}   {a.broker_vcpus} vCPUs, {a.broker_vcpus * KAFKA_GIB_PER_VCPU} GiB each; {p.kafka_mbps:,.1f} MB/s produced, {p.kafka_vcpus} vCPUs in all, replication {KAFKA_REPLICAS}
  ClickHouse shards  {p.shards:>6}   x {p.replicas} replicas, {a.shard_vcpus} vCPUs each (inserts need {p.shards_for_inserts}, {p.stored_tib:,.1f} TiB stored needs {p.shards_for_disk})
                              {p.rows_per_second:,.0f} rows/s; ~{p.inserts_per_shard:,.0f} insert queries/s per shard; clickhouse.deduplication_window >= {p.deduplication_window:,}
Measured here (bench/RESULTS.md, {m.generated}), Sluice's processes planned at {HEADROOM:.0%} of a core:
  gateway {m.gateway_us} CPU µs/envelope (Send); worker {m.worker_us} µs/envelope and {m.worker_rss_mib:.0f} MiB on the live mix,
  {m.series_us} µs and {m.series_rss_mib:.0f} MiB holding {SERIES_MEASURED:,} series (linear in between);
  {m.rows_per_envelope:.3f} ClickHouse rows per envelope; {m.insert_us_per_row} CPU µs per inserted row (chDB)
Published: Kafka {KAFKA_MBPS_PER_VCPU:g} MBps write-equivalent per vCPU at {KAFKA_UTILIZATION:.0%}, reads at {KAFKA_READ_WEIGHT:g} of writes,
  {KAFKA_GIB_PER_VCPU} GiB per vCPU (Google Cloud's Managed Service for Apache Kafka sizing); {PARTITION_MBPS:g} MB/s per partition;
  ClickHouse: about one insert query per second per table (its bulk-insert guidance): raise
  SLUICE_WORKER_BATCH_INTERVAL when the insert queries per shard are many more
Assumed (options): {a.envelope_bytes} bytes/envelope, {a.row_bytes_on_disk:g} bytes/row on disk, {a.disk_tib_per_replica:g} TiB per replica,
  ClickHouse inserts on {CLICKHOUSE_UTILIZATION:.0%} of a shard's cores, a worker's memory limit {a.worker_memory_mib} MiB
"""


def add_arguments(parser: argparse.ArgumentParser, duration: Callable[[str], float]) -> None:
    """The options of ``sluice plan``."""
    defaults = Assumptions()
    parser.add_argument("--envelopes-per-second", type=float, required=True, metavar="N")
    parser.add_argument("--series", type=int, required=True, metavar="S", help="active metric series")
    parser.add_argument("--retention", type=duration, required=True, metavar="D", help="how long rows are kept, e.g. 30d")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the measurements (default: bench/RESULTS.md)")
    parser.add_argument("--envelope-bytes", type=int, default=defaults.envelope_bytes, help="mean envelope size on the wire")
    parser.add_argument("--broker-vcpus", type=int, default=defaults.broker_vcpus)
    parser.add_argument("--shard-vcpus", type=int, default=defaults.shard_vcpus, help="vCPUs of a ClickHouse replica")
    parser.add_argument("--row-bytes-on-disk", type=float, default=defaults.row_bytes_on_disk,
                        help="compressed bytes per row (see system.parts: bytes_on_disk / rows)")
    parser.add_argument("--disk-tib-per-replica", type=float, default=defaults.disk_tib_per_replica)
    parser.add_argument("--replicas", type=int, default=defaults.replicas, help="ClickHouse replicas per shard")
    parser.add_argument("--worker-memory-mib", type=int, default=defaults.worker_memory_mib,
                        help="a worker's memory limit (the Helm chart's default: 1024)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Print the plan; the settings are not used (the plan is for a deployment, not this one)."""
    try:
        text = args.results.read_text()
    except OSError as exc:
        raise SluiceError(f"cannot read the measurements: {exc}", hint="pass --results bench/RESULTS.md") from exc
    m = measured(text)
    a = Assumptions(args.envelope_bytes, args.broker_vcpus, args.shard_vcpus, args.row_bytes_on_disk,
                    args.disk_tib_per_replica, args.replicas, args.worker_memory_mib)
    days = args.retention / 86400
    p = plan(args.envelopes_per_second, args.series, days, m, a)
    print(render(args.envelopes_per_second, args.series, days, m, a, p), end="")
    return 0
