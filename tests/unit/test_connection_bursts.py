"""A connection answering a long pipelined burst (hundreds of Produce requests in one received
chunk, as librdkafka sends at 20,000 msg/s with linger.ms=0) lets the event loop run other work
between a write's worth of answers, instead of holding it for the whole burst (issue 20)."""

from __future__ import annotations

import asyncio

from test_connection_writes import connect, frames_of, produce

from odradek.server.connection import COALESCE_RESPONSES


def test_other_work_runs_while_a_long_burst_is_answered() -> None:
    async def check() -> None:
        conn, transport, broker = await connect()
        burst = COALESCE_RESPONSES * 20
        answered_when_other_work_ran: list[int] = []

        def answered() -> int:
            return sum(len(frames_of(data)) for _, data in transport.writes)

        async def other_connection() -> None:  # another client's request, a timer, the loop monitor
            while answered() < burst:
                answered_when_other_work_ran.append(answered())
                await asyncio.sleep(0)

        other = asyncio.create_task(other_connection())
        await asyncio.sleep(0)
        conn.data_received(b"".join(produce(i) for i in range(burst)))
        for _ in range(100 * burst):  # bounded: every answer is written
            if answered() == burst:
                break
            await asyncio.sleep(0)
        await asyncio.wait_for(other, 30)
        ids = [i for _, data in transport.writes for i in frames_of(data)]
        assert ids == list(range(burst))  # in order, each once
        assert broker.partition_log("t", 0).log_end_offset == burst  # type: ignore[union-attr]
        # the other work ran between slices of the burst, not only before and after it
        between = sorted({n for n in answered_when_other_work_ran if 0 < n < burst})
        assert len(between) >= 10, between
        assert all(len(frames_of(data)) <= COALESCE_RESPONSES for _, data in transport.writes)
        conn.close(None)

    asyncio.run(check())
