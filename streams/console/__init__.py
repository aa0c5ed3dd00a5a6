"""The web console served by the worker at ``/console/``: the pipeline's rates, the tenants, a
metrics explorer and a key's logs, read through the scoped queries of ``/query``."""

from sluice.streams.console.views import mount

__all__ = ["mount"]
