"""The Faust worker."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WorkerSettings(BaseModel):
    """The Faust worker."""

    app_id: str = "sluice-worker"
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    console: bool = Field(
        True, description="serve the web console at /console/ on the worker's HTTP port; when web_host is not "
        "a loopback address, its data needs a token (query.admin_token: everything; a key's JWT: that key)"
    )
    store: str = Field("memory://", description="Faust table store: memory:// or rocksdb://")
    recovery_consistency_check: bool = Field(
        True, description="with rocksdb://, refuse to start when the local state is ahead of its changelog "
        "topic (it was deleted); off on Tansu, whose end offsets fall short of the last record"
    )
    window_lateness: float = Field(
        1.0, ge=0, description="seconds a 1s window stays open after its end for late envelopes"
    )
    max_lateness: float = Field(
        86400.0, ge=0, description="metric points older than this when the gateway took them (the Kafka "
        "record's time) are dropped and counted as late per key; 0 = never"
    )
    idle_close: float = Field(
        1.0, ge=0, description="an idle partition's clock advances with wall time after this many seconds"
    )
    session_timeout: float = Field(10.0, gt=0)
    heartbeat_interval: float = Field(1.0, gt=0)
    rebalance_timeout: float = Field(10.0, gt=0)
    batch_records: int = Field(
        500, ge=1, description="records per processing batch; each batch ends with durable writes"
    )
    batch_bytes: int = Field(
        16 * 1024 * 1024, ge=1,
        description="a batch whose records hold more bytes than this is processed in several steps, each "
        "ending with durable writes: a step's memory grows with its envelopes, not its records",
    )
    batch_interval: float = Field(
        0.5, gt=0, description="seconds a batch waits for more records before it is processed"
    )
    tick_interval: float = Field(0.5, gt=0, description="seconds between checks for closed windows")
    file_max_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="a file sink's file is rotated before it grows past this; 0 = never"
    )
    file_max_age: float = Field(3600.0, ge=0, description="seconds after which a file is rotated; 0 = never")
    file_keep: int = Field(24, ge=1, description="rotated files kept per key and stream")
