"""The protocols other clients already speak, converted to ``sluice.v1.Envelope``s.

Every protocol ends in :class:`~sluice.ingress.protocols.ingest.Ingest`, the same validate →
byte-rate limit → enqueue → wait steps as ``sluice.v1.Ingress``, so what reaches ``sluice.raw`` is
an ordinary ``EnvelopeBatch``: the worker's throttling, windows, routing and sinks need no change,
and no protocol-specific content type or decoder exists. Converting at the edge costs gateway CPU,
but it keeps one wire format in Kafka, one validator, and one place where limits are enforced.
"""
