"""What every scenario uses: a seeded workload, child processes measured by /proc, results."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from sluice.ingress.publisher import frame_records
from sluice.records import CONTENT_TYPE_BATCH, H_CONTENT_TYPE
from sluice.tansu import terminate
from sluice.v1.envelope_pb2 import Envelope

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
MiB = 1 << 20


def progress(message: str) -> None:
    """One line of progress on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the workload ------------------------------------------------------------------------


def envelopes(n: int, *, seed: int = 7, series: int = 1000, t0: int | None = None, span_s: float = 30.0,
              logs: float = 0.25) -> list[Envelope]:
    """``n`` seeded envelopes: counters and gauges over ``series`` series, and log lines
    (``logs`` of them), timestamps spread evenly over ``span_s`` seconds from ``t0``."""
    rng = random.Random(seed)
    t0 = t0 if t0 is not None else (time.time_ns() // NS - int(span_s) - 90) * NS
    step = int(span_s * NS / max(n, 1))
    out = []
    for i in range(n):
        env = Envelope(timestamp=t0 + i * step, source_id="bench", instance_id=str(i % 4))
        s = rng.randrange(series)
        env.tags["host"] = f"h{s % 100}"
        env.tags["route"] = f"/r{s // 100}"
        r = rng.random()
        if r < logs:
            env.log.payload = b"GET /r%d 200 %dms" % (s, rng.randrange(500))
        elif r < logs + (1 - logs) / 2:
            env.counter.name = "requests"
            env.counter.delta = rng.randrange(1, 10)
            env.counter.total = i
        else:
            g = env.gauge.metrics["latency"]
            g.value = rng.random() * 100
            g.unit = "ms"
        out.append(env)
    return out


def encoded(envs: Sequence[Envelope]) -> list[bytes]:
    return [e.SerializeToString() for e in envs]


def records_of(data: Sequence[bytes], per_record: int = 500, max_record_bytes: int = 1 << 20) -> list[bytes]:
    """EnvelopeBatch record values of ``per_record`` envelopes each, framed as the gateway does."""
    out: list[bytes] = []
    for i in range(0, len(data), per_record):
        out += frame_records(data[i:i + per_record], max_record_bytes)
    return out


async def produce(bootstrap: str, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    """Write ``values`` to ``topic`` with the raw topic's headers, keyed by ``keys`` in turn,
    waiting for every ack."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_request_size=4 << 20, max_batch_size=4 << 20)
    await producer.start()
    try:
        headers = [(H_CONTENT_TYPE, CONTENT_TYPE_BATCH)]
        acks = [await producer.send(topic, v, key=keys[i % len(keys)], headers=headers) for i, v in enumerate(values)]
        for ack in acks:
            await ack
    finally:
        await producer.stop()


# -- measuring processes -------------------------------------------------------------------


class ProcessMeter:
    """CPU seconds (user + system) and peak RSS of one process tree (``children``: with its
    descendants), sampled every ``interval`` seconds from a thread until :meth:`stop`."""

    def __init__(self, pid: int, interval: float = 0.1, *, children: bool = True) -> None:
        self.proc = psutil.Process(pid)
        self._children = children
        self.peak_rss = 0
        self.samples: list[tuple[float, float, int]] = []  # (wall time, CPU seconds, RSS)
        self._cpu: dict[int, float] = {}
        self._start_cpu = self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self) -> float:
        try:
            procs = [self.proc, *(self.proc.children(recursive=True) if self._children else ())]
        except psutil.Error:
            procs = []
        rss = 0
        for p in procs:
            try:
                t = p.cpu_times()
                self._cpu[p.pid] = t.user + t.system
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak_rss = max(self.peak_rss, rss)
        cpu = sum(self._cpu.values())
        self.samples.append((time.time(), cpu, rss))
        return cpu

    def between(self, t0: float, t1: float) -> tuple[float, int]:
        """CPU seconds used and peak RSS seen between wall-clock times ``t0`` and ``t1``."""
        before = [s for s in self.samples if s[0] <= t0] or self.samples[:1]
        upto = [s for s in self.samples if s[0] <= t1 + 0.2] or self.samples[:1]
        during = [s[2] for s in self.samples if t0 - 0.2 <= s[0] <= t1 + 0.2] or [0]
        return upto[-1][1] - before[-1][1], max(during)

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def stop(self) -> tuple[float, int]:
        """CPU seconds used since the meter started, and the peak RSS in bytes."""
        self._stop.set()
        self._thread.join()
        return self._sample() - self._start_cpu, self.peak_rss


class SelfMeter(ProcessMeter):
    """A :class:`ProcessMeter` of this process alone (in-process scenarios): the runner's children,
    the broker among them, are not what is measured."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(os.getpid(), interval, children=False)


def profiler_command(module: str, pid: int, env: Mapping[str, str]) -> list[str] | None:
    """The py-spy command recording a child's collapsed stacks (for flame graphs) into the
    directory ``SLUICE_BENCH_PROFILE`` names (None: no profiling); with ``SLUICE_BENCH_PROFILE_GIL``,
    only the thread holding the GIL is sampled."""
    profile_dir = env.get("SLUICE_BENCH_PROFILE")
    if not profile_dir:
        return None
    out = Path(profile_dir) / f"{module.replace('.', '_')}-{pid}.txt"
    gil = ["--gil"] if env.get("SLUICE_BENCH_PROFILE_GIL") else []
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    return [spy, "record", "-p", str(pid), "-r", "250", *gil, "-f", "raw", "-o", str(out)]


class Child:
    """A Python child process (``python -m module args``) with its output in ``log``; it reports
    through JSON lines on stdout, read with :meth:`read_event`."""

    def __init__(self, module: str, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log: IO[bytes] = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO, env=dict(os.environ) | env | {"PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
        )
        self._spy: subprocess.Popen[bytes] | None = None
        try:
            self.meter = ProcessMeter(self.proc.pid)
            self._start_profiler(module)
        except BaseException:
            self.proc.kill()
            raise

    def _start_profiler(self, module: str) -> None:
        command = profiler_command(module, self.proc.pid, os.environ)
        if command is not None:
            self._spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._log)

    def read_event(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child prints (other lines are skipped)."""
        assert self.proc.stdout is not None
        result: list[dict[str, Any]] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith("{"):
                    result.append(json.loads(line))
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if not result:
            raise RuntimeError(f"{self.proc.args!r} said nothing within {timeout}s (exit {self.proc.poll()}):\n"
                               f"{self.log_path.read_text(errors='replace')[-3000:]}")
        return result[0]

    def stop(self, timeout: float = 20.0) -> tuple[float, int]:
        """SIGTERM (then SIGKILL), and its CPU seconds and peak RSS."""
        cpu, rss = self.meter.stop()
        terminate(self.proc, timeout)
        if self._spy is not None:
            self._spy.wait(30)
        self._log.close()
        return cpu, rss


# -- results ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


@dataclass
class Row:
    """One measured system in one scenario."""

    scenario: str
    system: str
    unit: str  # what throughput counts, e.g. "envelopes/s"
    throughput: float | None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_s: float | None = None
    rss_mib: float | None = None
    note: str = ""
    ratios: dict[str, float] = field(default_factory=dict)
    count: int | None = None  # units processed while CPU seconds were measured

    @property
    def cpu_us_per_unit(self) -> float | None:
        """CPU microseconds per envelope (row): steadier than throughput on a busy 2-core machine."""
        return None if self.cpu_s is None or not self.count else self.cpu_s / self.count * 1e6


def ratio_to(rows: list[Row], subject: Row) -> None:
    """Fill ``subject.ratios`` with its throughput over each other row's of the same scenario."""
    for r in rows:
        if r is not subject and r.scenario == subject.scenario and r.throughput and subject.throughput:
            subject.ratios[r.system] = subject.throughput / r.throughput


def _fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| scenario | system | throughput | p50 ms | p99 ms | CPU s | CPU µs/unit | peak RSS MiB | ratio (this / reference) | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        ratios = "; ".join(f"{v:.2f}× {k}" for k, v in r.ratios.items())
        lines.append(
            f"| {r.scenario} | {r.system} | {_fmt(r.throughput)} {r.unit if r.throughput else ''} | "
            f"{_fmt(r.p50_ms, 1)} | {_fmt(r.p99_ms, 1)} | {_fmt(r.cpu_s, 1)} | {_fmt(r.cpu_us_per_unit, 2)} | "
            f"{_fmt(r.rss_mib)} | {ratios} | {r.note} |"
        )
    return "\n".join(lines)


def machine() -> str:
    """A one-line description of this machine."""
    import platform

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (f"{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")
