"""A connection is an asyncio.BufferedProtocol: the transport reads into the buffer it is given.
A large frame is received straight into a buffer of its own, which never runs further ahead of
the bytes received than GROW_AHEAD times them; other reads go into one chunk a thread, copied out
before the read returns. Driven here as uvloop and asyncio drive it: get_buffer, write into the
view, buffer_updated."""

from __future__ import annotations

import asyncio
import datetime
import struct

from test_connection_writes import connect, frames_of, settle

from odradek.protocol.build import build
from odradek.protocol.framing import encode_request, request_type
from odradek.protocol.records import encode_batch
from odradek.server.connection import GATHER_FRAME, GROW_AHEAD, Connection


def big_produce(correlation_id: int, records: int) -> bytes:
    batch = encode_batch([(None, b"%08d" % i + b"v" * 92, ()) for i in range(records)],
                         timestamp_ms=1_700_000_000_000)
    body = build(request_type(0, 9), transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=5),
                 topic_data=[{"name": "t", "partition_data": [{"index": 0, "records": batch}]}])
    return encode_request(0, 9, correlation_id, body)


def feed(conn: Connection, data: bytes, chunk: int) -> list[int]:
    """Read `data` into the connection as a transport does, at most `chunk` bytes a read; the
    length of every buffer it was given."""
    given = []
    pos = 0
    while pos < len(data):
        view = conn.get_buffer(-1)
        given.append(len(view))
        n = min(chunk, len(view), len(data) - pos)
        view[:n] = data[pos : pos + n]
        del view  # the transport lets go of the buffer before telling the protocol
        conn.buffer_updated(n)
        pos += n
    return given


def test_large_and_small_frames_read_into_the_given_buffers_are_answered_in_order() -> None:
    async def check() -> None:
        conn, transport, broker = await connect()
        first, second = big_produce(1, 8000), big_produce(2, 3)  # ~870 KB, then a small one
        assert len(first) > 8 * GATHER_FRAME
        for chunk in (65536, 1000, 262144):
            transport.writes.clear()
            feed(conn, first + second, chunk)
            for _ in range(50):
                await settle()
            assert [i for _, data in transport.writes for i in frames_of(data)] == [1, 2]
        log = broker.partition_log("t", 0)
        assert log is not None and log.log_end_offset == 3 * 8003  # every record, three times over
        conn.close(None)

    asyncio.run(check())


def test_an_announced_frame_gets_memory_only_as_its_bytes_arrive() -> None:
    async def check() -> None:
        conn, transport, _ = await connect()
        announced = 90 * 1024 * 1024
        header = struct.pack(">i", announced)
        given = feed(conn, header + b"x" * 20, 8)  # a client announcing 90 MB, sending a trickle
        assert conn._big is not None and len(conn._big) <= GROW_AHEAD * 1024
        received = 16
        for _ in range(200):  # then 200 KB more, a kilobyte a read
            feed(conn, b"x" * 1024, 1024)
            received += 1024
            assert len(conn._big) <= GROW_AHEAD * received
        assert not transport.closed and not transport.writes and given
        conn.close(None)

    asyncio.run(check())


def test_the_read_chunk_is_shared_and_copied_out_before_the_next_read() -> None:
    async def check() -> None:
        a, ta, _ = await connect()
        b, tb, _ = await connect()
        assert a.get_buffer(-1).obj is b.get_buffer(-1).obj  # one chunk a thread, not one a connection
        small = big_produce(7, 2)
        assert len(small) < GATHER_FRAME
        feed(a, small[:50], 50)
        feed(b, small, 4096)  # b's read overwrites the chunk a's bytes came through
        feed(a, small[50:], 4096)
        for _ in range(50):
            await settle()
        assert [frames_of(d) for _, d in ta.writes] == [[7]] and [frames_of(d) for _, d in tb.writes] == [[7]]
        a.close(None)
        b.close(None)

    asyncio.run(check())
