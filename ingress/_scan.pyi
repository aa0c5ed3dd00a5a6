"""EnvelopeBatch bytes checked at the wire level (``_scan.c``): the gateway's fast path."""

from collections.abc import Sequence

from sluice.time_bounds import Window

def scan(
    data: bytes,
    window: Window,
    max_envelope_bytes: int,
    max_batch_envelopes: int,
    max_tags: int,
    max_tag_key_bytes: int,
    max_tag_value_bytes: int,
    /,
) -> tuple[int, int, bool] | None: ...
def source_ids(envelopes: Sequence[bytes], /) -> list[str]: ...
