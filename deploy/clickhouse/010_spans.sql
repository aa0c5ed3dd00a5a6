-- Spans (OTLP traces), keyed like logs by their source position so a replay replaces itself.
-- trace_id / span_id are lowercase hex, parent_span_id is '' for a root span; timestamp is the start.
CREATE TABLE IF NOT EXISTS {db}.spans (
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
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (access_key, timestamp, kafka_partition, kafka_offset, batch_index)
SETTINGS non_replicated_deduplication_window = 1000;
