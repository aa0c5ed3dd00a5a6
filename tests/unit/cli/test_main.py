"""The `sluice` command's local subcommands: keys, token, argument errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jwt
import pytest

from sluice.cli.main import duration, main


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("SLUICE_CONFIG", "SLUICE_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SLUICE_AUTH_JWT_SECRET", "a-test-secret-of-at-least-32-bytes!")
    return tmp_path


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("1.5d", 129600)])
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1h", "1w", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration like 30s, 15m, 1h or 7d"):
        duration(text)


def test_keys_add_and_list(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "add", "tenant-a", "--description", "A", "--events-per-second", "100"]) == 0
    assert capsys.readouterr().out == "tenant-a\n"
    assert main(["keys", "add"]) == 0
    generated = capsys.readouterr().out.strip()
    assert generated.startswith("ak_") and len(generated) == 27
    assert main(["keys", "add", "tenant-a"]) == 1
    assert capsys.readouterr().err == f"sluice: access key 'tenant-a' exists already in {data_dir / 'keys.json'}\n"
    assert main(["keys", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["access_key"] for k in listed] == sorted([generated, "tenant-a"])
    a = next(k for k in listed if k["access_key"] == "tenant-a")
    assert (a["description"], a["enabled"]) == ("A", True)
    assert (a["limits"]["bytes_per_second"], a["limits"]["events_per_second"]) == (0, 100)
    assert main(["keys", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["access_key", "enabled", "shards", "bytes/s", "events/s", "version", "description"]
    assert table[-1] == "(2 rows)"


def test_keys_routes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "add", "tenant-a", "--route", "metrics_1m=file,clickhouse"]) == 0
    assert main(["keys", "update", "tenant-a", "--route", "logs=none", "--route", "metrics_1s=file"]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--format", "json"]) == 0
    (a,) = json.loads(capsys.readouterr().out)
    assert a["routes"] == {"metrics_1m": ["file", "clickhouse"], "logs": [], "metrics_1s": ["file"]}
    with pytest.raises(SystemExit):
        main(["keys", "update", "tenant-a", "--route", "metrics_1m=disk"])
    assert "unknown sink(s) disk in 'metrics_1m=disk': use file, clickhouse or none" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "update", "tenant-a", "--route", "traces=file"])
    assert "STREAM one of logs, events, metrics_1s, metrics_1m, spans, got 'traces=file'" in capsys.readouterr().err


def test_keys_add_refuses_a_malformed_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "add", "no spaces"]) == 1
    assert "invalid access key 'no spaces'" in capsys.readouterr().err


def test_token_issue(capsys: pytest.CaptureFixture[str]) -> None:
    main(["keys", "add", "tenant-a"])
    capsys.readouterr()
    assert main(["token", "issue", "--access-key", "tenant-a", "--ttl", "15m"]) == 0
    out = capsys.readouterr()
    claims = jwt.decode(out.out.strip(), "a-test-secret-of-at-least-32-bytes!", algorithms=["HS256"])
    assert claims["sub"] == "tenant-a"
    assert claims["exp"] - claims["iat"] == 900
    assert out.err == ""


def test_token_for_an_unknown_key_warns(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    assert main(["token", "issue", "--access-key", "nobody"]) == 0
    assert capsys.readouterr().err == f"warning: 'nobody' is not in {data_dir / 'keys.json'}\n"


def test_gateway_without_a_broker_says_what_to_do(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_KAFKA_BOOTSTRAP", raising=False)
    assert main(["gateway"]) == 1
    assert capsys.readouterr().err == (
        "sluice: `sluice gateway` needs a Kafka broker but SLUICE_KAFKA_BOOTSTRAP is not set "
        "(hint: set it to host:port, or run everything here with `sluice dev`)\n"
    )


def test_invalid_settings_are_reported(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_KAFKA_PARTITIONS", "zero")
    assert main(["keys", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sluice: invalid settings:\n") and "kafka.partitions" in err
