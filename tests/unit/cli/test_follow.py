"""``follow``: the position is saved only for what the gateway acknowledged, across broken streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sluice.cli.follow import follow
from sluice.cli.main import build_parser, main
from sluice.cli.send import retry_policy
from sluice.client import RetryPolicy, SluiceClient
from sluice.client.tail import FileTail, Position, PositionFile
from tests.unit.client.fake_gateway import Failure, FakeGateway, start_fake
from tests.unit.client.test_retry import FakeTime


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[tuple[FakeGateway, str]]:
    server, gateway, address = await start_fake()
    yield gateway, address
    await server.stop(None)


class RecordingPositions(PositionFile):
    """Checks at each save that everything before the position is stored at the gateway."""

    def __init__(self, path: Path, gateway: FakeGateway, lines: list[bytes]) -> None:
        super().__init__(path)
        self.gateway = gateway
        self.lines = lines
        self.saved: list[int] = []

    def save(self, position: Position) -> None:
        stored = [env.log.payload for env in self.gateway.stored]
        covered = 0
        count = 0
        while covered < position.offset:
            covered += len(self.lines[count]) + 1
            count += 1
        assert covered == position.offset and set(self.lines[:count]) <= set(stored)
        self.saved.append(position.offset)
        super().save(position)


async def test_positions_follow_acknowledgements_across_a_broken_stream(
    fake: tuple[FakeGateway, str], tmp_path: Path
) -> None:
    gateway, address = fake
    gateway.failures = [Failure(after=20, store=10)]
    lines = [f"line {i}".encode() for i in range(50)]
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    positions = RecordingPositions(tmp_path / "pos", gateway, lines)
    stop = asyncio.Event()
    t = FakeTime()
    retry = RetryPolicy(sleep=t.sleep, clock=t.clock)
    async with SluiceClient(address, "ak_test", "good", retry=retry) as client:
        task = asyncio.ensure_future(
            follow(client, FileTail(log, poll_interval=0.01), positions, stop, batch=5, ack_interval=0.1)
        )
        deadline = asyncio.get_running_loop().time() + 10
        while positions.load() != Position(log.stat().st_ino, log.stat().st_size):
            assert asyncio.get_running_loop().time() < deadline, positions.saved
            await asyncio.sleep(0.01)
        stop.set()
        assert await asyncio.wait_for(task, 5) == (50, 50)
    assert [env.log.payload for env in gateway.stored] == lines
    assert positions.saved[0] == sum(len(line) + 1 for line in lines[:10])  # from x-accepted
    assert positions.saved[-1] == log.stat().st_size


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--follow"], "sluice send: --follow needs a FILE (and no --metrics)"),
        (["f.log", "--follow", "--metrics", "3"], "sluice send: --follow needs a FILE (and no --metrics)"),
        (["f.log", "--state", "p"], "sluice send: --state goes with --follow"),
    ],
)
def test_follow_argument_errors(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["send", "--access-key", "ak_x", "--token", "t", *args])
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("args", "attempts", "elapsed"),
    [([], None, 60.0), (["--follow", "f"], None, None), (["--follow", "f", "--retry-for", "5m"], None, 300.0)],
)
def test_retry_for(args: list[str], attempts: int | None, elapsed: float | None) -> None:
    parsed = build_parser().parse_args(["send", "--access-key", "ak_x", "--token", "t", *args])
    policy = retry_policy(parsed)
    assert (policy.max_attempts, policy.max_elapsed) == (attempts, elapsed)
