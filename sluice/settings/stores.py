"""Where Sluice keeps its data: the Kafka broker and ClickHouse."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, SecretStr, model_validator


class KafkaSettings(BaseModel):
    """Where the broker is and how Sluice uses its topics."""

    bootstrap: str = Field(
        "", description="host:port[,host:port]; empty in `sluice dev` means the embedded broker"
    )
    raw_topic: str = "sluice.raw"
    dlq_topic: str = Field("sluice.dlq", description="undecodable records, with the reason in headers")
    config_topic: str = Field(
        "sluice.config", description="compacted topic of access-key configurations (the source of truth)"
    )
    partitions: int = Field(4, ge=1, description="partitions of topics Sluice creates")
    replication_factor: int = Field(1, ge=1)
    publish_timeout: float = Field(10.0, gt=0, description="seconds to wait for Kafka's acks")
    max_record_bytes: int = Field(
        900_000, ge=1024, description="a batch larger than this is split into several records"
    )
    linger_ms: int = Field(
        0, ge=0, description="how long the gateway's producer waits to fill a request: every call waits "
        "for Kafka's acknowledgement, so this adds to each call's latency (records still share requests "
        "while one is in flight)",
    )


class ClickHouseSettings(BaseModel):
    """Where aggregated rows go. Without a URL the worker embeds chDB in <data_dir>/clickhouse."""

    url: str = Field("", description="http(s)://host:8123 of a ClickHouse server; empty = chDB")
    username: str = "default"
    password: SecretStr = SecretStr("")
    database: str = "sluice"
    ttl_days_raw: int = Field(30, ge=0, description="days logs and events are kept; 0 = forever")
    ttl_days_1s: int = Field(7, ge=0, description="days 1s metric windows are kept; 0 = forever")
    ttl_days_1m: int = Field(90, ge=0, description="days 1m metric windows are kept; 0 = forever")
    cluster: str = Field(
        "", description="name of the ClickHouse cluster (remote_servers) the schema is created on, with "
        "ON CLUSTER, Replicated* tables named <table>_local and Distributed tables under the plain "
        "names for reads; empty = one server",
    )
    shard_urls: list[str] = Field(
        default_factory=list, description="with a cluster: one http(s)://host:8123 per shard, in the "
        "cluster's shard order (a replica of that shard, or a load balancer over its replicas); the "
        "worker inserts each block into one shard's <table>_local, chosen by the Kafka partition",
    )
    deduplication_window: int = Field(
        10_000, ge=100, description="with a cluster: the last inserted blocks per table and shard whose "
        "tokens each replica keeps (replicated_deduplication_window); a replayed block older than this "
        "many inserts into its shard is stored again",
    )

    @model_validator(mode="after")
    def _cluster_has_shards(self) -> ClickHouseSettings:
        if self.cluster and not self.shard_urls:
            raise ValueError("clickhouse.cluster needs clickhouse.shard_urls (one URL per shard)")
        if self.cluster and not self.url:
            raise ValueError("clickhouse.cluster needs clickhouse.url (a node, or a load balancer, for reads and DDL)")
        if self.shard_urls and not self.cluster:
            raise ValueError("clickhouse.shard_urls is only for a cluster: set clickhouse.cluster too")
        if self.cluster and not re.fullmatch(r"[A-Za-z0-9_{}.-]+", self.cluster):
            raise ValueError(f"clickhouse.cluster {self.cluster!r} is not a cluster name")
        return self
