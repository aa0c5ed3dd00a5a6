"""A tiny run of every benchmark scenario: the benchmark code works and its rows are complete.

Benchmarks are not tests: nothing here asserts a speed, only that each system under test and
each reference ran and that the ratios name every reference.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.common import REPO, Row, envelopes, profiler_command, table
from bench.runner import SCENARIOS, report, run_bench
from bench.scenarios import Context
from sluice.tansu import Tansu

EXPECTED = {
    "gateway": {
        (f"gateway {m}", s) for m in ("Send", "Sender", "BatchSender")
        for s in ("sluice gateway", "bare grpc.aio server (ceiling)")
    },
    "worker": {
        ("worker", s) for s in (
            "sluice worker", "sluice worker, metrics routed nowhere (no windows)",
            "raw aiokafka getmany + the worker's C decoder (ceiling)",
            "raw aiokafka getmany + protobuf decode",
            "naive Faust agent, table update per event", "Quix Streams tumbling 1s window",
        )
    },
    "clickhouse": {
        ("clickhouse sink", s) for s in (
            "sluice ClickHouseSink", "raw clickhouse-connect insert", "raw clickhouse-connect columnar insert",
        )
    },
    "e2e": {("e2e fixed rate", "sluice (gateway + worker)"), ("e2e max sustained", "sluice (gateway + worker)")},
    "memory": {("memory: gateway overload", "sluice gateway (drop-newest)"), ("memory: 100k series", "sluice worker")},
}


def test_every_scenario_is_smoke_tested() -> None:
    assert set(EXPECTED) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_scenario_runs(name: str, tansu: Tansu, tmp_path: Path) -> None:
    rows = await SCENARIOS[name](Context(tansu.bootstrap, tmp_path, quick=True))
    assert {(r.scenario, r.system) for r in rows} == EXPECTED[name]
    for r in rows:
        assert r.throughput is not None and r.throughput > 0, table(rows)
    for subject in rows:
        if subject.system.startswith("sluice"):
            references = {r.system for r in rows if r.scenario == subject.scenario and r is not subject}
            assert set(subject.ratios) == references
    if name == "worker":  # the second Sluice worker routes the metrics nowhere: it writes no windows
        metric_rows = {r.system: int(re.search(r"([\d,]+) metric rows", r.note)[1].replace(",", ""))  # type: ignore[index]
                       for r in rows if r.system.startswith("sluice")}
        assert metric_rows["sluice worker, metrics routed nowhere (no windows)"] == 0
        assert metric_rows["sluice worker"] > 0


def test_the_command_writes_the_results_file(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    assert run_bench(["clickhouse"], quick=True, output=out) == 0
    text = out.read_text()
    assert text.startswith("# Sluice benchmarks\n")
    assert "Machine: " in text and "| clickhouse sink | sluice ClickHouseSink |" in text


def test_unknown_scenarios_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario.*nope"):
        run_bench(["nope"])


def test_the_report_shows_rows_without_a_result() -> None:
    text = report([Row("worker", "x", "envelopes/s", None, note="could not run: why")], ["worker"], 1.0, True)
    assert "| worker | x | -  |" in text and "could not run: why" in text


def test_the_inprocess_pipeline_runs_the_worker_scenario_load_into_chdb() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--envelopes", "4000"],
        capture_output=True, text=True, timeout=240, check=True, cwd=REPO,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    kinds = Counter(e.WhichOneof("message") for e in envelopes(4000, seed=2, span_s=1.0, t0=1_700_000_000 * 10**9))
    assert result["envelopes"] == 4000
    assert result["rows_written"]["logs"] == kinds["log"]
    assert result["rows_written"]["metrics_1s"] + result["rows_written"]["metrics_1m"] == result["metric_rows"] > 0
    assert result["envelopes_per_s"] > 0 and result["cpu_s"]["process"] > 0 and result["cpu_s"]["commit"] > 0


def test_the_profiler_samples_the_gil_holder_only_when_asked(tmp_path: Path) -> None:
    assert profiler_command("bench.raw_decode", 42, {}) is None
    command = profiler_command("bench.raw_decode", 42, {"SLUICE_BENCH_PROFILE": str(tmp_path)})
    assert command is not None and "--gil" not in command
    assert command[1:5] == ["record", "-p", "42", "-r"] and command[-1] == str(tmp_path / "bench_raw_decode-42.txt")
    gil = profiler_command("bench.raw_decode", 42, {"SLUICE_BENCH_PROFILE": str(tmp_path), "SLUICE_BENCH_PROFILE_GIL": "1"})
    assert gil == [*command[:6], "--gil", *command[6:]]


def test_profile_gil_without_a_profile_directory_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from sluice.cli.main import main

    assert main(["bench", "--profile-gil", "clickhouse"]) == 2
    assert "--profile-gil needs --profile DIR" in capsys.readouterr().err
