"""HTTP bodies decompressed against a size limit: no decoder allocates more than the limit allows.

A decompression bomb (a small body that expands a thousandfold) is refused with
:class:`BodyTooLarge` (HTTP 413) once the output reaches the limit, never after producing it:

* ``gzip`` / ``deflate``: zlib's incremental decompressor asked for at most ``limit + 1`` bytes;
* ``zstd``: decompressed into a buffer of ``limit + 1`` bytes;
* ``snappy`` (block format, as Prometheus remote write sends it): its header states the
  uncompressed length, so a body stating more than the limit is refused before anything is
  allocated.

:func:`declared_size` gives what a body will expand to when its encoding says so beforehand, so
that the decoding budget (:mod:`sluice.ingress.decoding`) can be reserved before decompressing.
"""

from __future__ import annotations

import zlib

import cramjam
import grpc

from sluice.ingress.exceptions import IngressError
from sluice.ingress.protocols.lines import Malformed

_ZLIB = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 32 + zlib.MAX_WBITS}
IDENTITY = ("", "identity")
INFLUX_ENCODINGS = ("gzip", "deflate", "zstd", "identity")


class BodyTooLarge(IngressError):
    """A body larger than the limit once decompressed (HTTP 413); the message names its encoding."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "too_large"

    def __init__(self, encoding: str, limit: int, size: int | None = None) -> None:
        subject = "the body" if encoding in IDENTITY else f"the {encoding} body"
        if size is None:
            grows = "is larger" if encoding in IDENTITY else "expands to more"
            message = f"{subject} {grows} than protocols.max_http_body_bytes ({limit} bytes)"
        else:
            verb = "is" if encoding in IDENTITY else "expands to"
            message = f"{subject} {verb} {size} bytes, more than protocols.max_http_body_bytes ({limit} bytes)"
        super().__init__(message)


def normalized(encoding: str) -> str:
    """A ``Content-Encoding`` header's value as it is compared here."""
    return encoding.strip().lower()


def snappy_length(body: bytes) -> int:
    """The uncompressed length a snappy block states in its header; :class:`Malformed` if it has none."""
    try:
        return int(cramjam.snappy.decompress_raw_len(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise Malformed(f"body is not snappy block-compressed: {exc}", reason="snappy") from exc


def declared_size(body: bytes, encoding: str) -> int | None:
    """What ``body`` expands to when its encoding states it before decompressing (identity, a
    snappy block's header); ``None`` when only decompressing tells."""
    encoding = normalized(encoding)
    if encoding in IDENTITY:
        return len(body)
    if encoding == "snappy":
        return snappy_length(body)
    return None


def _zlib(body: bytes, encoding: str, limit: int) -> bytes:
    decoder = zlib.decompressobj(_ZLIB[encoding])
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise Malformed(f"the body is not valid {encoding} data: {exc}", reason="encoding") from exc
    if len(out) > limit:
        raise BodyTooLarge(encoding, limit)
    if not decoder.eof:
        raise Malformed(f"the {encoding} body is truncated", reason="encoding")
    if decoder.unused_data:
        raise Malformed(f"{len(decoder.unused_data)} byte(s) follow the {encoding} data", reason="encoding")
    return out


def _zstd(body: bytes, limit: int) -> bytes:
    buffer = bytearray(limit + 1)  # its pages are only touched as they are written
    try:
        n = int(cramjam.zstd.decompress_into(body, buffer))
    except Exception as exc:  # DecompressionError, "failed to write whole buffer" when it is full
        if "whole buffer" not in str(exc):
            raise Malformed(f"the body is not valid zstd data: {exc}", reason="encoding") from exc
        n = limit + 1
    if n > limit:
        raise BodyTooLarge("zstd", limit)
    del buffer[n:]
    return bytes(buffer)


def _snappy(body: bytes, limit: int) -> bytes:
    size = snappy_length(body)
    if size > limit:
        raise BodyTooLarge("snappy", limit, size)
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise Malformed(f"body is not snappy block-compressed: {exc}", reason="snappy") from exc


def decompress(body: bytes, encoding: str, limit: int, accepted: tuple[str, ...] = INFLUX_ENCODINGS) -> bytes:
    """``body`` decoded from its ``Content-Encoding`` (one of ``accepted``; none is identity), at
    most ``limit`` bytes of it: :class:`BodyTooLarge` past that, :class:`Malformed` naming what is
    wrong when it is not what its encoding says or the encoding is not accepted."""
    encoding = normalized(encoding)
    if encoding in IDENTITY:
        if len(body) > limit:
            raise BodyTooLarge(encoding, limit, len(body))
        return body
    known = encoding in accepted or (encoding == "x-gzip" and "gzip" in accepted)
    if not known:
        expected = accepted[0] if len(accepted) == 1 else f"{', '.join(accepted[:-1])} or {accepted[-1]}"
        raise Malformed(f"unsupported Content-Encoding {encoding[:40]!r}; expected {expected}", reason="encoding")
    if encoding in _ZLIB:
        return _zlib(body, encoding, limit)
    if encoding == "zstd":
        return _zstd(body, limit)
    return _snappy(body, limit)
