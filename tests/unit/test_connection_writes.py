"""A connection answers pipelined requests in order, gathering the answers of a burst into one
write, without holding an answer back behind a request that waits (a parked Fetch)."""

from __future__ import annotations

import asyncio
import datetime
import struct
import time
from typing import Any

from odradek.config import BrokerConfig
from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.protocol.records import encode_batch
from odradek.server.broker import Broker
from odradek.server.connection import COALESCE_RESPONSES, Connection
from odradek.server.dispatcher import Dispatcher
from odradek.server.handlers import ROUTES
from odradek.server.limits import ConnectionLimits


class Transport:
    def __init__(self) -> None:
        self.writes: list[tuple[float, bytes]] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.writes.append((time.monotonic(), bytes(data)))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0


def produce(correlation_id: int, partition: int = 0) -> bytes:
    batch = encode_batch([(None, b"v" * 100, ())], timestamp_ms=1_700_000_000_000)
    body = build(request_type(0, 9), transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=5),
                 topic_data=[{"name": "t", "partition_data": [{"index": partition, "records": batch}]}])
    return encode_request(0, 9, correlation_id, body)


def parked_fetch(correlation_id: int) -> bytes:
    """A Fetch from the log end that waits its whole max_wait for a byte nobody writes."""
    body = build(request_type(1, 12), replica_id=-1, max_wait=datetime.timedelta(milliseconds=1500), min_bytes=1,
                 max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1, topics=[
                     {"topic": "t", "partitions": [{"partition": 1, "current_leader_epoch": -1, "fetch_offset": 0,
                                                    "last_fetched_epoch": -1, "log_start_offset": -1,
                                                    "partition_max_bytes": 1 << 20}]}],
                 forgotten_topics_data=[], rack_id="")
    return encode_request(1, 12, correlation_id, body)


def frames_of(data: bytes) -> list[int]:
    """The correlation ids of the response frames in `data`, in order."""
    ids = []
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        ids.append(struct.unpack_from(">i", data, pos + 4)[0])
        pos += 4 + size
    assert pos == len(data)
    return ids


async def connect() -> tuple[Connection, Transport, Broker]:
    config = BrokerConfig(storage="memory")
    broker = Broker(config)
    broker.open()
    broker.create_topic("t", 2)
    conn = Connection(Dispatcher(broker, ROUTES), ConnectionLimits(config), set())
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, broker


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_pipelined_burst_is_answered_in_one_write_in_order() -> None:
    async def check() -> None:
        conn, transport, _ = await connect()
        conn.data_received(produce(1))
        await settle()
        assert [frames_of(data) for _, data in transport.writes] == [[1]]  # alone: written at once
        transport.writes.clear()
        conn.data_received(b"".join(produce(i) for i in range(10, 15)))
        await settle()
        assert [frames_of(data) for _, data in transport.writes] == [[10, 11, 12, 13, 14]]
        transport.writes.clear()
        burst = COALESCE_RESPONSES * 2 + 3
        conn.data_received(b"".join(produce(i) for i in range(100, 100 + burst)))
        await settle()
        written = [frames_of(data) for _, data in transport.writes]
        assert [i for ids in written for i in ids] == list(range(100, 100 + burst))
        assert all(len(ids) <= COALESCE_RESPONSES for ids in written) and len(written) == 3
        conn.close(None)

    asyncio.run(check())


def test_an_answer_is_not_held_back_behind_a_parked_fetch() -> None:
    async def check() -> None:
        conn, transport, broker = await connect()
        sent = time.monotonic()
        conn.data_received(produce(1) + parked_fetch(2) + produce(3))
        await asyncio.sleep(0.7)
        # the Produce before the Fetch is out while the Fetch waits
        assert [frames_of(data) for _, data in transport.writes] == [[1]]
        assert transport.writes[0][0] - sent < 0.7
        await asyncio.sleep(1.5)
        ids = [i for _, data in transport.writes for i in frames_of(data)]
        assert ids == [1, 2, 3]
        fetch = b"".join(data for _, data in transport.writes)
        first = struct.unpack_from(">i", fetch, 0)[0] + 4
        _, response = decode_response(fetch[first + 4:first + 4 + struct.unpack_from(">i", fetch, first)[0]], 1, 12)
        assert response.responses[0].partitions[0].records in (None, b"")
        assert broker.partition_log("t", 0).log_end_offset == 2  # type: ignore[union-attr]
        conn.close(None)

    asyncio.run(check())


def test_answers_gathered_before_a_close_are_written_before_it() -> None:
    async def check() -> None:
        conn, transport, _ = await connect()
        unknown_api = struct.pack(">ihhih", 10, 999, 0, 3, -1)  # closes the connection after one log line
        conn.data_received(produce(1) + produce(2) + unknown_api + produce(4))
        await settle()
        assert [i for _, data in transport.writes for i in frames_of(data)] == [1, 2]
        assert transport.closed

    asyncio.run(check())


def big_produce(correlation_id: int, records: int) -> bytes:
    batch = encode_batch([(None, bytes([i % 251]) * 100, ()) for i in range(records)], timestamp_ms=1_700_000_000_000)
    body = build(request_type(0, 9), transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=5),
                 topic_data=[{"name": "t", "partition_data": [{"index": 1, "records": batch}]}])
    return encode_request(0, 9, correlation_id, body)


def answers(transport: Transport) -> list[tuple[int, int, int]]:
    """(correlation id, error code, base offset) of each Produce answer written."""
    data = b"".join(d for _, d in transport.writes)
    out = []
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        cid, response = decode_response(data[pos + 4:pos + 4 + size], 0, 9)
        p = response.responses[0].partition_responses[0]
        out.append((cid, p.error_code, p.base_offset))
        pos += 4 + size
    return out


def test_large_frames_in_any_pieces_are_read_whole_and_in_order() -> None:
    """A frame over GATHER_FRAME arriving in pieces is gathered in its own buffer, one over
    VIEW_FRAME inside one chunk is read in place; either way every record arrives intact (the
    CRC is checked) and the answers keep the requests' order."""
    from odradek.server.connection import GATHER_FRAME, VIEW_FRAME

    big = big_produce(2, 1000)
    middle = big_produce(3, 200)
    assert len(big) > GATHER_FRAME and VIEW_FRAME < len(middle) < GATHER_FRAME
    stream = produce(1, 1) + big + middle + produce(4, 1) + big_produce(5, 700)
    for cuts in ([len(stream)], [1, 5, 9, 70_000, 70_001], list(range(3, len(stream), 65_536)),
                 [len(produce(1, 1)) + 4], list(range(1000, len(stream), 9_999))):
        async def check(cuts: list[int] = cuts) -> None:
            conn, transport, broker = await connect()
            pos = 0
            for cut in [*sorted(set(cuts)), len(stream)]:
                if cut > pos:
                    conn.data_received(stream[pos:cut])
                    pos = cut
                    await settle()
            await settle()
            assert answers(transport) == [(1, 0, 0), (2, 0, 1), (3, 0, 1001), (4, 0, 1201), (5, 0, 1202)]
            assert broker.partition_log("t", 1).log_end_offset == 1902  # type: ignore[union-attr]
            conn.close(None)

        asyncio.run(check())
