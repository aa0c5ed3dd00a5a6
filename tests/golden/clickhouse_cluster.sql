CREATE DATABASE IF NOT EXISTS sluice ON CLUSTER 'sluice';

CREATE TABLE IF NOT EXISTS sluice.schema_migrations ON CLUSTER 'sluice' (version UInt32, name String, applied_at DateTime DEFAULT now()) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/sluice/schema_migrations', '{replica}') ORDER BY version;

CREATE TABLE IF NOT EXISTS sluice.logs_local ON CLUSTER 'sluice' (
    access_key LowCardinality(String),
    timestamp DateTime64(9, 'UTC'),
    source_id LowCardinality(String),
    instance_id String,
    type Enum8('OUT' = 0, 'ERR' = 1),
    payload String,
    tags Map(LowCardinality(String), String),
    kafka_partition UInt32,
    kafka_offset UInt64,
    batch_index UInt32
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/sluice/logs_local', '{replica}')
PARTITION BY toDate(timestamp)
ORDER BY (access_key, timestamp, kafka_partition, kafka_offset, batch_index)
SETTINGS replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS sluice.logs ON CLUSTER 'sluice' AS sluice.logs_local
ENGINE = Distributed('sluice', 'sluice', 'logs_local');

CREATE TABLE IF NOT EXISTS sluice.events_local ON CLUSTER 'sluice' (
    access_key LowCardinality(String),
    timestamp DateTime64(9, 'UTC'),
    source_id LowCardinality(String),
    instance_id String,
    title String,
    body String,
    tags Map(LowCardinality(String), String),
    kafka_partition UInt32,
    kafka_offset UInt64,
    batch_index UInt32
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/sluice/events_local', '{replica}')
PARTITION BY toDate(timestamp)
ORDER BY (access_key, timestamp, kafka_partition, kafka_offset, batch_index)
SETTINGS replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS sluice.events ON CLUSTER 'sluice' AS sluice.events_local
ENGINE = Distributed('sluice', 'sluice', 'events_local');

CREATE TABLE IF NOT EXISTS sluice.metrics_1s_local ON CLUSTER 'sluice' (
    access_key LowCardinality(String),
    name LowCardinality(String),
    series_id UInt64,
    window_start DateTime('UTC'),
    kind SimpleAggregateFunction(any, LowCardinality(String)),
    unit SimpleAggregateFunction(any, String),
    tags SimpleAggregateFunction(any, Map(String, String)),
    count SimpleAggregateFunction(sum, UInt64),
    sum SimpleAggregateFunction(sum, Float64),
    min SimpleAggregateFunction(min, Float64),
    max SimpleAggregateFunction(max, Float64),
    last SimpleAggregateFunction(max, Tuple(Int64, Float64))
) ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/sluice/metrics_1s_local', '{replica}')
PARTITION BY toDate(window_start)
ORDER BY (access_key, name, series_id, window_start)
SETTINGS replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS sluice.metrics_1s ON CLUSTER 'sluice' AS sluice.metrics_1s_local
ENGINE = Distributed('sluice', 'sluice', 'metrics_1s_local');

ALTER TABLE sluice.metrics_1s_local ON CLUSTER 'sluice' ADD COLUMN IF NOT EXISTS sketch SimpleAggregateFunction(sumMap, Map(Int32, UInt64));

ALTER TABLE sluice.metrics_1s ON CLUSTER 'sluice' ADD COLUMN IF NOT EXISTS sketch SimpleAggregateFunction(sumMap, Map(Int32, UInt64));

CREATE TABLE IF NOT EXISTS sluice.metrics_1m_local ON CLUSTER 'sluice' (
    access_key LowCardinality(String),
    name LowCardinality(String),
    series_id UInt64,
    window_start DateTime('UTC'),
    kind SimpleAggregateFunction(any, LowCardinality(String)),
    unit SimpleAggregateFunction(any, String),
    tags SimpleAggregateFunction(any, Map(String, String)),
    count SimpleAggregateFunction(sum, UInt64),
    sum SimpleAggregateFunction(sum, Float64),
    min SimpleAggregateFunction(min, Float64),
    max SimpleAggregateFunction(max, Float64),
    last SimpleAggregateFunction(max, Tuple(Int64, Float64)),
    sketch SimpleAggregateFunction(sumMap, Map(Int32, UInt64))
) ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/sluice/metrics_1m_local', '{replica}')
PARTITION BY toYYYYMM(window_start)
ORDER BY (access_key, name, series_id, window_start)
SETTINGS replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS sluice.metrics_1m ON CLUSTER 'sluice' AS sluice.metrics_1m_local
ENGINE = Distributed('sluice', 'sluice', 'metrics_1m_local');

CREATE TABLE IF NOT EXISTS sluice.spans_local ON CLUSTER 'sluice' (
    access_key LowCardinality(String),
    timestamp DateTime64(9, 'UTC'),
    source_id LowCardinality(String),
    instance_id String,
    trace_id String,
    span_id String,
    parent_span_id String,
    name LowCardinality(String),
    kind LowCardinality(String),
    end_time DateTime64(9, 'UTC'),
    duration_ns UInt64,
    status LowCardinality(String),
    status_message String,
    tags Map(LowCardinality(String), String),
    kafka_partition UInt32,
    kafka_offset UInt64,
    batch_index UInt32,
    INDEX trace_idx trace_id TYPE bloom_filter GRANULARITY 4
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/sluice/spans_local', '{replica}')
PARTITION BY toDate(timestamp)
ORDER BY (access_key, timestamp, kafka_partition, kafka_offset, batch_index)
SETTINGS replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS sluice.spans ON CLUSTER 'sluice' AS sluice.spans_local
ENGINE = Distributed('sluice', 'sluice', 'spans_local');

