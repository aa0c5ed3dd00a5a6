-- Logs and events are keyed by their source position (Kafka partition, offset, index in the
-- batch): a replayed record replaces itself instead of adding a second row.
CREATE TABLE IF NOT EXISTS {db}.logs (
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
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (access_key, timestamp, kafka_partition, kafka_offset, batch_index)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.events (
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
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (access_key, timestamp, kafka_partition, kafka_offset, batch_index)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per (series, window) partial aggregate. Partials of the same window from several
-- shards, workers or late corrections merge: sum/count add, min/max combine, `last` keeps
-- the value with the highest timestamp. Read with GROUP BY (or FINAL).
CREATE TABLE IF NOT EXISTS {db}.metrics_1s (
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
) ENGINE = AggregatingMergeTree
PARTITION BY toDate(window_start)
ORDER BY (access_key, name, series_id, window_start)
SETTINGS non_replicated_deduplication_window = 1000;
