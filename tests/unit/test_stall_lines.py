"""The loop monitor's stall line (server/loop_monitor.py) names work that held the event loop: a
request that waited across the monitor's tick (a Fetch parked at the log end until a Produce woke
it) is not "the slowest request" of a stall it merely waited through. A real broker (memory
storage) answers real request frames through the dispatcher; the test holds the loop itself."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import threading
import time
from collections.abc import AsyncIterator

import pytest

from odradek.config import BrokerConfig
from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.protocol.records import encode_batch
from odradek.server.broker import Broker
from odradek.server.dispatcher import Dispatcher
from odradek.server.handlers import ROUTES
from odradek.server.loop_monitor import IDLE_INTERVAL_S, watch_loop

WAIT_S = 30.0  # generous bounds on every wait (a loaded machine), never a timing assertion


def produce(correlation_id: int) -> bytes:
    """A Produce frame of one record to t-0 (without the size prefix, as the dispatcher takes it)."""
    batch = encode_batch([(None, b"v" * 100, ())], timestamp_ms=1_700_000_000_000)
    body = build(request_type(0, 9), transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=5),
                 topic_data=[{"name": "t", "partition_data": [{"index": 0, "records": batch}]}])
    return encode_request(0, 9, correlation_id, body)


def fetch_at_log_end(correlation_id: int, offset: int) -> bytes:
    """A Fetch from t-0's log end `offset`: it parks until a record arrives (or 30 s)."""
    body = build(request_type(1, 12), replica_id=-1, max_wait=datetime.timedelta(seconds=WAIT_S), min_bytes=1,
                 max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1, topics=[
                     {"topic": "t", "partitions": [{"partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
                                                    "last_fetched_epoch": -1, "log_start_offset": -1,
                                                    "partition_max_bytes": 1 << 20}]}],
                 forgotten_topics_data=[], rack_id="")
    return encode_request(1, 12, correlation_id, body)


async def ticks(dispatcher: Dispatcher, n: int) -> None:
    """Return once the monitor has ticked `n` times more."""
    seen, deadline = dispatcher.loop_work.tick, time.monotonic() + WAIT_S
    while n > 0:
        assert time.monotonic() < deadline, "the loop monitor stopped ticking"
        await asyncio.sleep(0.005)
        if dispatcher.loop_work.tick != seen:
            seen, n = dispatcher.loop_work.tick, n - 1


@contextlib.asynccontextmanager
async def monitored_broker() -> AsyncIterator[Dispatcher]:
    """A memory broker holding topic t (1 partition), its dispatcher, and the loop monitor
    watching with a 5 ms threshold; all stopped on the way out."""
    broker = Broker(BrokerConfig(storage="memory"))
    broker.open()
    broker.create_topic("t", 1)
    dispatcher = Dispatcher(broker, ROUTES)
    monitor = asyncio.create_task(watch_loop(broker.metrics, dispatcher, 5.0))
    try:
        yield dispatcher
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
        broker.close()


def stall_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the event loop stalled for" in r.getMessage()]


def test_a_stall_line_does_not_name_a_parked_fetch_it_woke(caplog: pytest.LogCaptureFixture) -> None:
    async def stall_after_the_fetch(dispatcher: Dispatcher, attempt: int) -> str | None:
        """Park a Fetch (t-0 holds `attempt` records), wake it with a Produce, then hold the loop
        100 ms in the same tick of the monitor: the stall line that logs (None if the monitor
        ticked between, as on a loaded machine: the caller tries again)."""
        await ticks(dispatcher, 1)
        fetch = asyncio.create_task(dispatcher.dispatch(None, fetch_at_log_end(2 * attempt, attempt)[4:]))
        await ticks(dispatcher, 2)  # the Fetch is parked, and the loop ran ticks meanwhile
        assert not fetch.done()
        answer = await dispatcher.dispatch(None, produce(2 * attempt + 1)[4:])  # wakes the Fetch
        assert answer is not None
        assert decode_response(answer[4:], 0, 9)[1].responses[0].partition_responses[0].error_code == 0
        fetched = await asyncio.wait_for(fetch, WAIT_S)
        assert fetched is not None
        assert decode_response(fetched[4:], 1, 12)[1].responses[0].partitions[0].records  # the record woke it
        work = dispatcher.loop_work
        if work.waited == 0 or work.slowest is None:  # the monitor ticked after the Produce or the Fetch
            return None
        logged = len(stall_lines(caplog))
        time.sleep(0.1)  # noqa: ASYNC251 - the point: something holds the loop 100 ms, a stall of at least 80 ms
        deadline = time.monotonic() + WAIT_S
        while len(stall_lines(caplog)) == logged:
            assert time.monotonic() < deadline, "no stall line logged"
            await asyncio.sleep(0.01)
        return stall_lines(caplog)[logged]

    async def check() -> str:
        async with monitored_broker() as dispatcher:
            for attempt in range(20):
                line = await stall_after_the_fetch(dispatcher, attempt)
                if line is not None:
                    return line
            raise AssertionError("the monitor ticked between the Fetch's answer and the stall 20 times")

    with caplog.at_level(logging.WARNING, logger="odradek.loop"):
        line = asyncio.run(check())
    # The Fetch waited ~100 ms and finished in the stalled tick; the Produce that woke it began
    # in that tick and is what the line names; the Fetch is left out, and the line says so.
    assert "Fetch" not in line, line
    assert "the slowest request begun since the tick before: Produce v9" in line, line
    assert "(requests begun before it, waiting across the tick, not counted)" in line, line
    # none names the Fetch by its wait (a line may say it began in a late tick: its first decode)
    assert not any("slowest request begun since the tick before: Fetch" in other for other in stall_lines(caplog))


def test_a_stall_line_names_a_thread_of_the_broker_that_held_the_gil(caplog: pytest.LogCaptureFixture) -> None:
    """A thread of the broker's process that keeps the GIL (here a C loop that never lets it go:
    sum over a range) stalls the loop though the loop's thread does not run: the line says the
    thread was blocked, not waiting for a CPU, and which other thread ran."""
    async def check() -> list[str]:
        done = threading.Event()  # the holder stays alive, as a broker's pool thread does, to be named
        holder = threading.Thread(target=lambda: (sum(range(30_000_000)), done.wait(WAIT_S)), name="gil-holder")
        async with monitored_broker() as dispatcher:
            try:
                await ticks(dispatcher, 2)
                holder.start()
                deadline = time.monotonic() + WAIT_S
                while not any("gil-holder" in line for line in stall_lines(caplog)):
                    assert time.monotonic() < deadline, stall_lines(caplog)
                    await asyncio.sleep(0.01)
            finally:
                done.set()
                await asyncio.get_running_loop().run_in_executor(None, holder.join, WAIT_S)
        return [line for line in stall_lines(caplog) if "gil-holder" in line]

    with caplog.at_level(logging.WARNING, logger="odradek.loop"):
        lines = asyncio.run(check())
    held = re.compile(r"at least [1-9]\d* ms blocked \(the GIL, or a system call\); the broker's other threads "
                      r"ran [1-9]\d* ms \(most since the last sample: gil-holder \d+ ms")
    assert any(held.search(line) for line in lines), lines


def test_an_idle_loop_ticks_slowly_and_a_request_brings_the_ticks_back(caplog: pytest.LogCaptureFixture) -> None:
    """With nothing to answer the monitor ticks every IDLE_INTERVAL_S (each timer wake-up costs
    CPU); a request that begins brings the next tick within INTERVAL_S, so a stall it causes right
    after an idle stretch is seen and named (with only the slow tick under way, a 100 ms hold
    would be missed most of the time)."""
    async def check() -> tuple[float, list[str]]:
        async with monitored_broker() as dispatcher:
            await ticks(dispatcher, 2)  # the first tick saw no request: slow from the second on
            before = dispatcher.loop_work.tick
            await ticks(dispatcher, 1)
            idle_gap = dispatcher.loop_work.tick - before
            answer = await dispatcher.dispatch(None, produce(1)[4:])
            assert answer is not None
            time.sleep(0.1)  # noqa: ASYNC251 - the point: the request's tick is held 100 ms
            deadline = time.monotonic() + WAIT_S
            while not stall_lines(caplog):
                assert time.monotonic() < deadline, "no stall line logged"
                await asyncio.sleep(0.01)
        return idle_gap, stall_lines(caplog)

    with caplog.at_level(logging.WARNING, logger="odradek.loop"):
        idle_gap, lines = asyncio.run(check())
    assert idle_gap >= IDLE_INTERVAL_S * 0.9, idle_gap  # a timer is never early (a lower bound only)
    assert len(lines) == 1, lines
    assert "the slowest request begun since the tick before: Produce v9" in lines[0], lines[0]
