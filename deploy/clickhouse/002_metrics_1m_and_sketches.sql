-- Timers carry a quantile sketch (sluice.streams.sketch: log buckets, 1% relative error):
-- bucket -> count, merged across partials by sumMap. Other kinds leave it empty.
ALTER TABLE {db}.metrics_1s ADD COLUMN IF NOT EXISTS sketch SimpleAggregateFunction(sumMap, Map(Int32, UInt64));

-- The same partial aggregates over one-minute windows.
CREATE TABLE IF NOT EXISTS {db}.metrics_1m (
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
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (access_key, name, series_id, window_start)
SETTINGS non_replicated_deduplication_window = 1000;
