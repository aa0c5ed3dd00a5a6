"""Bodies decompressed against a size limit: every encoding's output, its malformed bodies, and
bombs refused without allocating what they expand to."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import cramjam
import psutil
import pytest
import snappy

from sluice.ingress.protocols.compression import BodyTooLarge, declared_size, decompress
from sluice.ingress.protocols.lines import Malformed

LINES = b"m f=1 1700000000000000000\nm f=2 1700000000000000001"
ZSTD = bytes(cramjam.zstd.compress(LINES))


@pytest.mark.parametrize(("encoding", "body"), [
    ("", LINES), ("identity", LINES), ("gzip", gzip.compress(LINES)), ("GZIP ", gzip.compress(LINES)),
    ("deflate", zlib.compress(LINES)), ("x-gzip", gzip.compress(LINES)), ("zstd", ZSTD),
    ("zstd", ZSTD + bytes(cramjam.zstd.compress(b"\nm f=3"))),  # two frames
])
def test_bodies_are_decompressed(encoding: str, body: bytes) -> None:
    expected = LINES + (b"\nm f=3" if len(body) > len(ZSTD) and encoding == "zstd" else b"")
    assert decompress(body, encoding, 1024) == expected


def test_snappy_blocks_are_decompressed() -> None:
    assert decompress(snappy.compress(LINES), "snappy", 1024, ("snappy",)) == LINES


@pytest.mark.parametrize(("encoding", "body", "reason", "message"), [
    ("gzip", b"not gzip", "encoding", "the body is not valid gzip data: Error -3 while decompressing data: incorrect header check"),
    ("deflate", b"", "encoding", "the deflate body is truncated"),
    ("gzip", gzip.compress(LINES)[:-4], "encoding", "the gzip body is truncated"),
    ("gzip", gzip.compress(LINES) + b"xx", "encoding", "2 byte(s) follow the gzip data"),
    ("zstd", b"garbage", "encoding", "the body is not valid zstd data: Unknown frame descriptor"),
    ("zstd", ZSTD[:-3], "encoding", "the body is not valid zstd data: incomplete frame"),
    ("br", b"", "encoding", "unsupported Content-Encoding 'br'; expected gzip, deflate, zstd or identity"),
])
def test_bodies_that_are_not_what_they_say_are_malformed(encoding: str, body: bytes, reason: str, message: str) -> None:
    with pytest.raises(Malformed) as info:
        decompress(body, encoding, 1024)
    assert (info.value.reason, info.value.message) == (reason, message)


@pytest.mark.parametrize(("body", "message"), [
    (b"plain protobuf, not snappy", "body is not snappy block-compressed: snappy: corrupt input (expected literal"),
    (snappy.compress(LINES)[:-5], "body is not snappy block-compressed: snappy: corrupt input"),
])
def test_bodies_that_are_not_snappy_are_malformed(body: bytes, message: str) -> None:
    with pytest.raises(Malformed) as info:
        decompress(body, "snappy", 1 << 20, ("snappy",))
    assert info.value.reason == "snappy" and info.value.message.startswith(message)


@pytest.mark.parametrize(("encoding", "message"), [
    ("gzip", "the gzip body expands to more than protocols.max_http_body_bytes (1024 bytes)"),
    ("deflate", "the deflate body expands to more than protocols.max_http_body_bytes (1024 bytes)"),
    ("zstd", "the zstd body expands to more than protocols.max_http_body_bytes (1024 bytes)"),
    ("snappy", "the snappy body expands to 1025 bytes, more than protocols.max_http_body_bytes (1024 bytes)"),
    ("identity", "the body is 1025 bytes, more than protocols.max_http_body_bytes (1024 bytes)"),
])
def test_a_body_one_byte_over_the_limit_is_too_large_naming_its_encoding(encoding: str, message: str) -> None:
    plain = b"0" * 1025
    body = {"gzip": gzip.compress, "deflate": zlib.compress, "identity": bytes,
            "zstd": lambda b: bytes(cramjam.zstd.compress(b)), "snappy": snappy.compress}[encoding](plain)
    assert decompress(body[: len(body)], encoding, 1025, ("gzip", "deflate", "zstd", "snappy", "identity")) == plain
    with pytest.raises(BodyTooLarge) as info:
        decompress(body, encoding, 1024, ("gzip", "deflate", "zstd", "snappy", "identity"))
    assert info.value.message == message


def _bomb(encoding: str, size: int) -> bytes:
    zeros = bytes(size)
    if encoding == "zstd":
        return bytes(cramjam.zstd.compress(zeros))
    return {"gzip": gzip.compress, "deflate": zlib.compress, "snappy": snappy.compress}[encoding](zeros)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the peak RSS is reset through Linux's /proc")
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "snappy"])
def test_a_bomb_is_refused_without_allocating_what_it_expands_to(encoding: str) -> None:
    body = _bomb(encoding, 512 << 20)
    assert len(body) < 30 << 20
    before = psutil.Process().memory_info().rss
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS (VmHWM) starts again from here
    with pytest.raises(BodyTooLarge):
        decompress(body, encoding, 1 << 20, ("gzip", "deflate", "zstd", "snappy"))
    status = Path("/proc/self/status").read_text()
    peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) << 10
    assert peak - before < 64 << 20, f"the process' peak RSS grew by {(peak - before) >> 20} MiB"


def test_declared_sizes() -> None:
    assert declared_size(LINES, "") == declared_size(LINES, "identity") == len(LINES)
    assert declared_size(snappy.compress(LINES), "snappy") == len(LINES)
    assert declared_size(gzip.compress(LINES), "gzip") is declared_size(ZSTD, "zstd") is None
