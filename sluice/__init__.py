"""Sluice: telemetry ingestion from gRPC to Kafka to Faust workers to files and ClickHouse."""

__version__ = "0.1.0"
